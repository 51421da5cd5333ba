"""The hung-call watcher: Ctrl-C cancels the running statement on the server, and a statement that
outlives its own statement_timeout (the server does not answer) has its socket shut down."""

from __future__ import annotations

import os
import threading
import time
from contextlib import suppress
from typing import Any

from opsctl.backends.postgres.connection import CONNECT_TIMEOUT

HUNG_GRACE = 1.0  # past its statement_timeout, a statement still running means a hung server


def watch(conn: Any, done: threading.Event, cancelled: threading.Event | None, hung_after: float,
           hung: threading.Event) -> None:
    """Until ``done``: once ``cancelled`` is set (Ctrl-C), cancel what the connection is running,
    again every half second (a cancel that lands between a prepared statement's Parse and its
    Execute is ignored by the server, and the step may go on to a next statement anyway).  A
    statement that has been running for ``hung_after`` seconds outlived its own statement_timeout:
    the server does not answer, and a cancel request would hang as well, so the socket is shut
    down, which ends the blocked read in the step's thread at once."""
    import psycopg

    busy_since: float | None = None
    while not done.wait(0.1):
        try:
            active = conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.ACTIVE
        except Exception:  # closed meanwhile
            return
        now = time.monotonic()
        busy_since = (busy_since or now) if active else None
        if busy_since is not None and now - busy_since > hung_after:
            hung.set()
            shut_down_socket(conn)
            return
        if cancelled is not None and cancelled.is_set():
            with suppress(Exception):  # nothing running, or the server went away: nothing to do
                conn.cancel_safe(timeout=CONNECT_TIMEOUT)
            done.wait(0.5)


def shut_down_socket(conn: Any) -> None:
    """End a connection's socket under libpq (a call stuck on a hung server returns at once);
    the connection object itself is closed by its owner."""
    import socket

    with suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
