"""The demo events of the attendee API sandbox and the command that serves them.

What belongs here: the demo catalog's two events (:func:`demo_datasets`, with their credentials
from the DEMO_* environment variables) and :func:`main`, which serves them until interrupted
for ``attendee-pipeline sandbox attendee-api`` (and for the benchmarks' sandbox process), with
overrides of size, pagination, auth and seed; query credentials are masked in its access log.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import parse_qsl, urlencode

from attendee_pipeline.integrations.attendee_api.sandbox.config import DEFAULT_GROUP_POOL, SandboxConfig
from attendee_pipeline.integrations.attendee_api.sandbox.server import SandboxServer
from attendee_pipeline.services.listen import check_loopback, cli_listen


def demo_credentials() -> dict[str, str]:
    """The demo's expected credentials from the environment (defaults when unset)."""
    return {
        "DEMO_SUMMIT_API_KEY": os.environ.get("DEMO_SUMMIT_API_KEY") or "demo-summit-key",
        "DEMO_MEETUP_USERNAME": os.environ.get("DEMO_MEETUP_USERNAME") or "demo-meetup",
        "DEMO_MEETUP_SECRET": os.environ.get("DEMO_MEETUP_SECRET") or "demo-meetup-secret",
    }


def demo_datasets() -> dict[str, SandboxConfig]:
    """The demo catalog's two events (read the DEMO_* credentials from the environment now).

    * ``summit``: 240 attendees, groups, badges on ~40%, ~5% delete-flagged, page-number
      pagination (page / per_page), header ``X-Api-Key`` = ``$DEMO_SUMMIT_API_KEY``.
    * ``meetup``: 60 attendees in one page under ``data.users``, query auth ``username`` +
      ``secret_key`` (``$DEMO_MEETUP_USERNAME`` / ``$DEMO_MEETUP_SECRET``), the same group pool,
      two deliberately bad records (position 7: invalid e-mail, 23: no last name).
    """
    creds = demo_credentials()
    return {
        "summit": SandboxConfig(
            records=240,
            seed=2027,
            groups=DEFAULT_GROUP_POOL,
            badge_fraction=0.4,
            deleted_fraction=0.05,
            pagination="page",
            page_size=100,
            auth="header",
            credentials={"X-Api-Key": creds["DEMO_SUMMIT_API_KEY"]},
            id_prefix="sum-",
        ),
        "meetup": SandboxConfig(
            records=60,
            seed=11,
            groups=DEFAULT_GROUP_POOL,
            max_groups=2,
            record_path="data.users",
            pagination="none",
            auth="query",
            credentials={
                "username": creds["DEMO_MEETUP_USERNAME"],
                "secret_key": creds["DEMO_MEETUP_SECRET"],
            },
            bad_records={7: "invalid_email", 23: "missing_last_name"},
            id_prefix="meet-",
        ),
    }


class _HideQueryCredentials(logging.Filter):
    """Shows the values of query-auth credentials in uvicorn's access-log lines as ``***``."""

    def __init__(self, server: SandboxServer) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and "?" in str(args[2]):
            secret = self.server.query_credential_names()
            path, _, query = str(args[2]).partition("?")
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(name in secret for name, _ in pairs):
                query = urlencode([(k, "***" if k in secret else v) for k, v in pairs], safe="*")
                record.args = (*args[:2], f"{path}?{query}", *args[3:])
        return True


def main(
    host: str = "127.0.0.1",
    port: int = 8765,
    records: int | None = None,
    page_size: int | None = None,
    pagination: str | None = None,
    auth: str | None = None,
    seed: int | None = None,
    access_log: bool = False,
) -> None:
    """Serve the demo events until interrupted (for ``attendee-pipeline sandbox attendee-api``).

    ``records`` / ``page_size`` / ``pagination`` / ``seed`` override every demo event; ``auth``
    ("none", "basic", "header", "query") too, with the DEMO_* credentials (basic: username
    ``$DEMO_MEETUP_USERNAME``, password ``$DEMO_MEETUP_SECRET``; header ``X-Api-Key``
    ``$DEMO_SUMMIT_API_KEY``; query ``username`` + ``secret_key``).
    """
    import uvicorn

    check_loopback(host)
    datasets = demo_datasets()
    creds = demo_credentials()
    user, secret = creds["DEMO_MEETUP_USERNAME"], creds["DEMO_MEETUP_SECRET"]
    auth_presets: dict[str, tuple[str, dict[str, str]]] = {
        "none": ("none", {}),
        "basic": ("basic", {"username": user, "password": secret}),
        "header": ("header", {"X-Api-Key": creds["DEMO_SUMMIT_API_KEY"]}),
        "query": ("query", {"username": user, "secret_key": secret}),
    }
    if auth is not None and auth not in auth_presets:
        raise ValueError(f"auth must be one of {', '.join(auth_presets)}")
    for slug, config in list(datasets.items()):
        changes: dict[str, Any] = {}
        if records is not None:
            changes["records"] = records
        if page_size is not None:
            changes["page_size"] = page_size
        if pagination is not None:
            changes["pagination"] = pagination
            if pagination == "cursor" and not config.record_path:
                changes["record_path"] = "data"
        if seed is not None:
            changes["seed"] = seed
        if auth is not None:
            changes["auth"], changes["credentials"] = auth_presets[auth]
        datasets[slug] = config.replace(**changes)
    server = SandboxServer(datasets)
    sock, url = cli_listen(host, port)
    port = sock.getsockname()[1]
    summary = ", ".join(
        f"{slug} ({d.total} attendees, pagination {d.config.pagination}, auth {d.config.auth})"
        for slug, d in server.datasets.items()
    )
    print(f"sandbox attendee API on {url} serving {summary}", flush=True)
    print(f"  e.g. GET {url}/events/summit/attendees ; state: /_control/state", flush=True)
    config = uvicorn.Config(
        server.app, host=host, port=port, log_level="warning", access_log=access_log, lifespan="off"
    )
    if access_log:  # request lines are INFO records; the rest of uvicorn's log stays at warning
        access_logger = logging.getLogger("uvicorn.access")
        access_logger.setLevel(logging.INFO)
        access_logger.addFilter(_HideQueryCredentials(server))
    uvicorn.Server(config).run(sockets=[sock])
