"""Binding and running: the socket is bound first, so ``--port 0`` can print the port it got."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys

__all__ = ["is_loopback", "bind", "serve", "new_token"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(18)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        from mtaffect.errors import UserError

        msg = f"cannot listen on {host}:{port}: {err.strerror} (try --port 0 for any free port)"
        raise UserError(msg) from err
    sock.listen(128)
    return sock


def address(sock: socket.socket, host: str, token: str | None) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(app, sock: socket.socket) -> None:  # noqa: ANN001 - an ASGI app
    """Run uvicorn on the bound socket until Ctrl-C."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    sys.stdout.flush()
    server.run(sockets=[sock])
