"""Pytest plugin (loaded by conftest's ``pytest_plugins``): fixtures serving the sandbox providers.

What belongs here: fixtures that start real local sandbox servers on 127.0.0.1 (free ports) for
a test and stop them afterwards -- ``sandbox`` (the demo events, with the DEMO_* credentials and
ATTENDEE_PIPELINE_SANDBOX_URL pointing at it, so the demo catalog works against it),
``sandbox_factory`` (a server with the datasets a test gives) and ``sandbox_source`` (a catalog
``source`` mapping for a served dataset, with its secret environment variables set). Tests
add datasets to a running server with ``handle.add_dataset(slug, SandboxConfig(...))``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from attendee_pipeline.integrations.attendee_api.sandbox import (
    SandboxConfig,
    SandboxHandle,
    SandboxServer,
    demo_datasets,
    serve_sandbox,
)

#: Credentials of the demo events in tests (the demo catalog names these variables).
DEMO_TEST_ENV: dict[str, str] = {
    "DEMO_SUMMIT_API_KEY": "test-summit-key-5f2b",
    "DEMO_MEETUP_USERNAME": "test-meetup-user",
    "DEMO_MEETUP_SECRET": "test-meetup-secret-9c4e",
}

SandboxFactory = Callable[..., SandboxHandle]


@pytest.fixture
def sandbox_factory() -> Iterator[SandboxFactory]:
    """``start(datasets: {slug: SandboxConfig} | None = None, **serve_kwargs) -> SandboxHandle``;
    every server started is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(
            datasets: Mapping[str, SandboxConfig] | SandboxServer | None = None, **kwargs: Any
        ) -> SandboxHandle:
            return stack.enter_context(serve_sandbox(datasets, **kwargs))

        yield start


@pytest.fixture
def demo_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Sets the demo events' credential variables to known test values and returns them."""
    for name, value in DEMO_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(DEMO_TEST_ENV)


@pytest.fixture
def sandbox(
    sandbox_factory: SandboxFactory, demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> SandboxHandle:
    """The demo sandbox (events ``summit`` and ``meetup``) for one test; the demo catalog's
    URLs point at it via ATTENDEE_PIPELINE_SANDBOX_URL."""
    handle = sandbox_factory(demo_datasets())
    monkeypatch.setenv("ATTENDEE_PIPELINE_SANDBOX_URL", handle.url)
    return handle


@pytest.fixture
def sandbox_source(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """``make(handle, slug, **overrides) -> dict``: the catalog ``source`` mapping reading that
    dataset (pagination and auth matching its config), with its secret env variables set."""

    def make(handle: SandboxHandle, slug: str, **overrides: Any) -> dict[str, Any]:
        source, env = handle.catalog_source(slug)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        source.update(overrides)
        return source

    return make


# --------------------------------------------------------------------------- Procurios (seed 002)

#: The Procurios sandbox client of the tests (its credentials are set in these env variables).
PROCURIOS_ID_ENV, PROCURIOS_SECRET_ENV = "TEST_PROCURIOS_CLIENT_ID", "TEST_PROCURIOS_CLIENT_SECRET"
PROCURIOS_CREDENTIALS = {PROCURIOS_ID_ENV: "test-client-7d1f", PROCURIOS_SECRET_ENV: "test-secret-4b9a2e"}


@pytest.fixture
def procurios(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Procurios sandbox (no meetings yet: ``procurios.sandbox.add_meeting(id, MeetingConfig(...))``)
    on a free loopback port whose client's credentials are in the TEST_PROCURIOS_* variables."""
    from attendee_pipeline.integrations.procurios.sandbox import ProcuriosSandbox, serve_procurios

    for name, value in PROCURIOS_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    sandbox = ProcuriosSandbox(
        clients={PROCURIOS_CREDENTIALS[PROCURIOS_ID_ENV]: {"secret": PROCURIOS_CREDENTIALS[PROCURIOS_SECRET_ENV]}}
    )
    with serve_procurios(sandbox) as handle:
        yield handle


def procurios_entry(event_id: str, base_url: str, meeting_id: str, **overrides: Any) -> dict[str, Any]:
    """A catalog entry of a Procurios event reading ``meeting_id`` with the tests' client."""
    source = {
        "kind": "procurios",
        "base_url": base_url,
        "client_id_env": PROCURIOS_ID_ENV,
        "client_secret_env": PROCURIOS_SECRET_ENV,
        "meeting_id": meeting_id,
        **overrides.pop("source", {}),
    }
    return {
        "id": event_id,
        "name": f"Congress {event_id}",
        "timezone": "Europe/Amsterdam",
        "start": "2027-06-10T09:00",
        "end": "2027-06-11T17:00",
        "source": source,
        **overrides,
    }
