"""Ports for the private servers the tests start.

A port the kernel hands out (bind to port 0) comes from the ephemeral range, where every client
socket takes its local port too: between "free" and the server's own bind, a client connection of
any parallel test can take it (seen: etcd failing with "address already in use"). So servers get
ports below the ephemeral range, each pytest-xdist worker from its own slice of it.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOW = 20000  # above the well-known ports the shared services use (5432, 6379, 9092, 8080...)
SLICES = 8


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range when there is room below it."""
    top = _ephemeral_start()
    if top - LOW >= SLICES * 100:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        n = int(worker[2:]) if worker[2:].isdigit() else 0
        size = (top - LOW) // SLICES
        start = LOW + (n % SLICES) * size
        for _ in range(100):
            port = random.randrange(start, start + size)
            if _bindable(port):
                return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
