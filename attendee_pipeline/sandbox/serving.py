"""Serving a sandbox's ASGI app in the test's or the demo's own process, shared by every sandbox.

What belongs here: starting uvicorn in a daemon thread on a loopback socket (port 0: a free one),
waiting until it serves, reporting a failed start to the caller, and stopping it again. What a
sandbox serves (its routes, data and faults) lives in its integration's folder; refusing a host
that is not a loopback address and binding the socket is :mod:`attendee_pipeline.services.listen`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from attendee_pipeline.services.listen import listen_socket


def serve_app_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "sandbox",
    startup_timeout: float = 10.0,
    access_log: bool = False,
    log_level: str = "warning",
) -> tuple[int, Callable[[], None]]:
    """Serve an ASGI app with uvicorn in a daemon thread on a loopback ``host:port`` (port 0: a
    free one) once it has started; (the bound port, a function that stops it). Used by every
    sandbox provider."""
    import uvicorn

    sock = listen_socket(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=bound_port,
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
    )
    uv = uvicorn.Server(config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            uv.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"{name}-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not uv.started:
        if errors or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the {name} failed to start: {errors[0] if errors else 'thread exited'}")
        if time.monotonic() > deadline:
            uv.should_exit = True
            sock.close()
            raise RuntimeError(f"the {name} did not start within {startup_timeout}s")
        time.sleep(0.01)

    def stop() -> None:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return bound_port, stop
