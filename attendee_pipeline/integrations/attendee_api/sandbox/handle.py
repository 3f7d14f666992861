"""Running the attendee API sandbox in-process and pointing a catalog at it.

What belongs here: :class:`SandboxHandle` (a running sandbox's URL and its state controls for a
test), :func:`run_in_thread` and :func:`serve_sandbox` (serve on a free loopback port while a
block runs), and :func:`catalog_source` (the catalog ``source`` that reads a dataset correctly,
with the environment variables its auth names). Starting uvicorn in a thread is shared by every
sandbox: :func:`attendee_pipeline.services.listen.serve_app_in_thread`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from attendee_pipeline.integrations.attendee_api.sandbox.config import SandboxConfig
from attendee_pipeline.integrations.attendee_api.sandbox.dataset import Dataset
from attendee_pipeline.integrations.attendee_api.sandbox.request_log import RequestLog, RequestRecord
from attendee_pipeline.integrations.attendee_api.sandbox.server import SandboxServer
from attendee_pipeline.services.listen import serve_app_in_thread


class SandboxHandle:
    """A running sandbox: its base ``url`` and its state controls.

    ``handle["summit"]`` (or ``handle.dataset("summit")``) is the :class:`Dataset` with the
    mutation and fault methods; the request log is ``handle.log``.
    """

    def __init__(self, server: SandboxServer, host: str, port: int, stopper: Any = None) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        self._stopper = stopper

    def __repr__(self) -> str:
        return f"SandboxHandle(url={self.url!r}, events={self.slugs})"

    # datasets
    @property
    def slugs(self) -> list[str]:
        return list(self.server.datasets)

    def dataset(self, slug: str) -> Dataset:
        return self.server.dataset(slug)

    __getitem__ = dataset

    def event_url(self, slug: str) -> str:
        """The attendee-list URL of event ``slug``."""
        return f"{self.url}/events/{slug}/attendees"

    def records(self, slug: str) -> list[dict[str, Any]]:
        """Every record event ``slug`` serves now, exactly as the API sends them (badge URLs
        included), without an HTTP request."""
        return list(self.dataset(slug).iter_records(base_url=self.url))

    def add_dataset(self, slug: str, config: SandboxConfig | None = None, **config_kwargs: Any) -> Dataset:
        """Serve a new (or replace a) dataset; ``config_kwargs`` build or amend the config."""
        return self.server.add_dataset(slug, config, **config_kwargs)

    def remove_dataset(self, slug: str) -> None:
        self.server.remove_dataset(slug)

    def catalog_source(
        self, slug: str, *, env_prefix: str | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """A catalog ``source`` mapping that reads event ``slug`` correctly, and the environment
        variables (name -> value) its auth needs -- set those before extracting."""
        return catalog_source(self.event_url(slug), self.dataset(slug).config, env_prefix=env_prefix or slug)

    # request log
    @property
    def log(self) -> RequestLog:
        return self.server.log

    def request_count(
        self, slug: str | None = None, *, path: str | None = None, status: int | None = None
    ) -> int:
        """Requests served (control endpoints excluded), optionally for one event / path / status."""
        if slug is not None and path is None and status is None:
            return self.server.log.count(f"/events/{slug}/attendees")
        return self.server.log.count(path, slug=slug, status=status)

    def requests(self, slug: str | None = None) -> list[RequestRecord]:
        return self.server.log.list(slug)

    def clear_requests(self) -> None:
        self.server.log.clear()

    # shortcuts
    def set_fault(self, slug: str, kind: str, **params: Any) -> None:
        self.dataset(slug).set_fault(kind, **params)

    def reset_faults(self, slug: str | None = None) -> None:
        for s in [slug] if slug else self.slugs:
            self.dataset(s).reset_faults()

    def reset(self, slug: str | None = None) -> None:
        """Datasets back to their config (no overrides, no faults); clears the request log."""
        for s in [slug] if slug else self.slugs:
            self.dataset(s).reset()
        self.server.log.clear()

    def stop(self) -> None:
        if self._stopper is not None:
            self._stopper()
            self._stopper = None


def _env_name(*parts: str) -> str:
    text = "_".join(parts).upper()
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in text)
    return ("SANDBOX_" + cleaned) if not cleaned[:1].isalpha() else cleaned


def catalog_source(
    url: str, config: SandboxConfig, *, env_prefix: str = "sandbox"
) -> tuple[dict[str, Any], dict[str, str]]:
    """The catalog ``source`` (a ``RestApiSource`` mapping) for a dataset served at ``url`` and
    the secret environment variables it names (``{name: value}``)."""
    source: dict[str, Any] = {"kind": "rest_api", "url": url, "record_path": config.record_path}
    style = config.pagination
    if style == "page":
        source["pagination"] = {
            "style": "page", "page_param": config.page_param, "size_param": config.size_param,
            "size": config.page_size, "first_page": config.first_page,
        }
    elif style == "offset":
        source["pagination"] = {
            "style": "offset", "offset_param": config.offset_param, "limit_param": config.limit_param,
            "size": config.page_size,
        }
    elif style == "cursor":
        source["pagination"] = {
            "style": "cursor", "cursor_param": config.cursor_param, "cursor_path": config.cursor_path,
            "size_param": config.cursor_limit_param, "size": config.page_size,
        }
    elif style == "link":
        source["pagination"] = {"style": "link", "size_param": config.size_param, "size": config.page_size}
    else:
        source["pagination"] = {"style": "none"}
    env: dict[str, str] = {}
    creds = config.credentials
    if config.auth == "basic":
        user_env, pass_env = _env_name(env_prefix, "username"), _env_name(env_prefix, "password")
        env = {user_env: creds["username"], pass_env: creds["password"]}
        source["auth"] = {"type": "basic", "username_env": user_env, "password_env": pass_env}
    elif config.auth in ("header", "query"):
        names = {name: _env_name(env_prefix, name) for name in creds}
        env = {names[name]: value for name, value in creds.items()}
        key = "headers" if config.auth == "header" else "params"
        source["auth"] = {"type": config.auth, key: names}
    return source, env


def run_in_thread(
    datasets: Mapping[str, SandboxConfig] | SandboxServer | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    access_log: bool = False,
    log_level: str = "warning",
) -> SandboxHandle:
    """Start the sandbox in a background thread (port 0: a free port); call ``handle.stop()``."""
    server = datasets if isinstance(datasets, SandboxServer) else SandboxServer(datasets)
    bound_port, stop = serve_app_in_thread(
        server.app, host=host, port=port, name="sandbox", startup_timeout=startup_timeout,
        access_log=access_log, log_level=log_level,
    )
    return SandboxHandle(server, host, bound_port, stop)


@contextlib.contextmanager
def serve_sandbox(
    datasets: Mapping[str, SandboxConfig] | SandboxServer | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **kwargs: Any,
) -> Iterator[SandboxHandle]:
    """Serve ``datasets`` (slug -> config) on ``host:port`` (0: free) while the block runs."""
    handle = run_in_thread(datasets, host=host, port=port, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()
