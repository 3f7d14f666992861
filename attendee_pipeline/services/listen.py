"""Loopback-only listening sockets for every HTTP server of the project: the push feed service
and the sandbox providers. What belongs here: refusing a host that is not a loopback address,
and binding the socket uvicorn then serves on (so a banner can name the port really bound)."""

from __future__ import annotations

import ipaddress
import socket


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
