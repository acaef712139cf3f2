"""Loopback ports for servers and children that a test starts itself."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that nothing listens on: bound, then released at once.

    Another process may take it before the caller does; prefer port 0 wherever the server
    can report the port it got, and use this only where it cannot (a child's /metrics).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
