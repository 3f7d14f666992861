"""Loopback-only listening sockets for every HTTP server of the project: the push feed service
and the sandbox providers. What belongs here: refusing a host that is not a loopback address,
binding the socket uvicorn then serves on (so a banner can name the port really bound), and
serving an ASGI app on it in a daemon thread (the sandboxes, the feed service in the demo and
tests)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


def check_loopback(host: str, server: str = "the sandbox", hint: str = "") -> None:
    """Refuse (ValueError, naming ``server``) a host that is not a loopback address."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"{server} only listens on loopback addresses (127.0.0.1, ::1{hint}), not {host!r}")


def check_feed_host(host: str) -> None:
    """Refuse (ValueError) a host for the feed service that is not a loopback address."""
    check_loopback(host, "the feed service", "; put a TLS reverse proxy in front of it")


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to loopback ``host:port`` (port 0: a free one) for uvicorn to serve on."""
    check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def cli_listen(host: str, port: int) -> tuple[socket.socket, str]:
    """For a command that serves until interrupted: the bound socket (port 0: a free one) and
    its URL, so the banner names the port really served; a port that cannot be bound is a
    ValueError (the command's usage error), raised before anything is printed."""
    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    return sock, f"http://{host if ':' not in host else f'[{host}]'}:{bound}"


def serve_app_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "sandbox",
    startup_timeout: float = 10.0,
    access_log: bool = False,
    log_level: str = "warning",
    lifespan: str = "off",
    server_header: bool = True,
) -> tuple[int, Callable[[], None]]:
    """Serve an ASGI app with uvicorn in a daemon thread on a loopback ``host:port`` (port 0: a
    free one) once it has started; (the bound port, a function that stops it). Used by every
    sandbox and by the feed service's in-thread server (the demo, tests)."""
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
        lifespan=lifespan,
        server_header=server_header,
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
