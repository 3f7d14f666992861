"""The sandbox of the customer attendee API (seed 000): a Starlette app served by uvicorn on
127.0.0.1 that behaves like a customer's "list of users, fields and groups in one call" API.

What belongs here: everything that makes that local server behave like the provider, one module
per responsibility -- the event settings (``config``), deterministic generated attendees
computed from a seed and an index when a page is served (``generator``), the mutable list tests
change (``dataset``), faults on demand (``faults``), the request log (``request_log``), response
bodies, cursors and badge files (``rendering``), the app with its auth, pagination and
``/_control/`` endpoints (``server``), running it in-process and the catalog source that reads
it (``handle``), and the demo events with the command that serves them (``demo``). This module
re-exports the names tests, benchmarks and the CLI use. Nothing here logs attendee data or
credentials; what every sandbox shares lives in :mod:`attendee_pipeline.sandbox`.
"""

from __future__ import annotations

from attendee_pipeline.integrations.attendee_api.sandbox.config import (
    AUTH_KINDS,
    BAD_KINDS,
    DEFAULT_FIELDS,
    DEFAULT_GROUP_POOL,
    PAGINATION_STYLES,
    REMOVE,
    AuthKind,
    PaginationStyle,
    SandboxConfig,
)
from attendee_pipeline.integrations.attendee_api.sandbox.dataset import Dataset
from attendee_pipeline.integrations.attendee_api.sandbox.demo import demo_credentials, demo_datasets, main
from attendee_pipeline.integrations.attendee_api.sandbox.faults import Faults
from attendee_pipeline.integrations.attendee_api.sandbox.handle import (
    SandboxHandle,
    catalog_source,
    run_in_thread,
    serve_sandbox,
)
from attendee_pipeline.integrations.attendee_api.sandbox.request_log import RequestLog, RequestRecord
from attendee_pipeline.integrations.attendee_api.sandbox.server import SandboxServer

__all__ = [
    "AUTH_KINDS",
    "BAD_KINDS",
    "DEFAULT_FIELDS",
    "DEFAULT_GROUP_POOL",
    "PAGINATION_STYLES",
    "REMOVE",
    "AuthKind",
    "Dataset",
    "Faults",
    "PaginationStyle",
    "RequestLog",
    "RequestRecord",
    "SandboxConfig",
    "SandboxHandle",
    "SandboxServer",
    "catalog_source",
    "demo_credentials",
    "demo_datasets",
    "main",
    "run_in_thread",
    "serve_sandbox",
]
