"""The run's connection to one database (``PgClient``).

One connection per run and database, shared by the steps under a lock.  Measured on the injected
fault (max_connections 20, 18 taken): a connection per call (about 6 ms each) made the four
concurrent diagnose steps need four free slots at the very moment the pool is exhausted, and they
all failed with "remaining connection slots are reserved"; one shared connection needs one slot,
and the queries are a few milliseconds each, so serialising them costs nothing visible.
psycopg connections are not thread-safe, hence the lock.  The connection carries
``application_name=opsctl`` (recognisable, never targeted, not counted as pool usage) and every
call sets a ``statement_timeout`` bounded by the step's remaining time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

from opsctl.backends import pg_readonly as pg_ro
from opsctl.backends.postgres.connection import PgSettings, clean, connect
from opsctl.backends.postgres.privileges import PrivilegeError, missing_privilege
from opsctl.backends.postgres.watch import HUNG_GRACE, shut_down_socket, watch
from opsctl.errors import ActionError, BackendError, Cancelled, OpsctlError, Unresponsive
from opsctl.units import seconds


class PgClient:
    """The run's connection to one database, (re)opened on demand, used by one step at a time."""

    def __init__(self, settings: PgSettings) -> None:
        self.settings = settings
        self._conn: Any = None
        self._lock = threading.Lock()
        self._failures = 0  # connection attempts that failed, and the last one's error
        self._failed: OpsctlError | None = None
        self.read_only_role: str | None = None  # what read-only calls run as (None: the login role)
        self._role_for: Any = None  # the connection read_only_role was chosen on

    @contextmanager
    def session(self, remaining: float | None = None, cancelled: threading.Event | None = None,
                read_only: bool = False) -> Iterator[Any]:
        """The connection, with statement_timeout set for this call; psycopg errors become
        opsctl errors, and a broken connection is dropped so that the next call reconnects.
        When ``cancelled`` is set (Ctrl-C) while a statement runs, the server is asked to cancel
        it (a cancel request on its own connection), rather than leaving it to statement_timeout.

        ``read_only`` (read-only steps, plan(), dry-runs): every transaction of the call is READ
        ONLY and, where the server allows it, the call runs as a role without the right to signal
        backends (``opsctl.backends.pg_readonly``); the next writable call resets both.  The mode is set
        on every call, under the lock that serialises the calls on the shared connection."""
        import psycopg

        timeout = self.settings.statement_timeout if remaining is None else \
            max(0.5, min(self.settings.statement_timeout, remaining))
        seen = self._failures
        with self._lock:
            if self._conn is None or self._conn.closed:
                if self._failures != seen and self._failed is not None:
                    # the attempt made while this call waited for the lock failed: the diagnose
                    # steps wait together, and trying again one after the other made a server
                    # that does not answer cost 4 x connect_timeout instead of 1 x
                    raise self._failed
                try:
                    # never longer than the step's deadline: a server that accepts and never
                    # answers costs the step its deadline, not connect_timeout past it
                    within = self.settings if remaining is None else replace(
                        self.settings, connect_timeout=max(1.0, min(self.settings.connect_timeout,
                                                                    remaining)))
                    self._conn = connect(within)
                except OpsctlError as e:
                    self._failures, self._failed = self._failures + 1, e
                    raise
            conn, done, hung = self._conn, threading.Event(), threading.Event()
            # a statement that runs past its own statement_timeout (+ HUNG_GRACE) means the server
            # is not answering at all (stopped, or a network black hole): the watcher then cuts the
            # socket, and the step fails as "backend unreachable" within its deadline instead of
            # being abandoned by the watchdog after it
            threading.Thread(target=watch, args=(conn, done, cancelled, timeout + HUNG_GRACE, hung),
                             daemon=True, name="opsctl-pg-watch").start()
            try:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()  # an earlier step was cancelled in the middle of a transaction
                if read_only and self._role_for is not conn:  # once per connection
                    self.read_only_role = pg_ro.choose_role(conn, self.settings.read_only_role)
                    self._role_for = conn
                conn.execute(f"SET statement_timeout = {int(timeout * 1000)}; "
                             + pg_ro.mode_sql(conn, read_only, self.read_only_role))
                yield conn
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    self._conn = None
                if cancelled is not None and cancelled.is_set() and not hung.is_set():
                    raise Cancelled("interrupted") from None
                if hung.is_set():
                    self._conn = None
                    with suppress(Exception):
                        conn.close()
                    raise Unresponsive("postgres", f"{self.settings.describe()}: no answer to a statement "
                                                   f"within {seconds(timeout + HUNG_GRACE)} (its "
                                                   f"statement_timeout was {seconds(timeout)}): the server "
                                                   "accepts connections but does not answer (stopped, "
                                                   "hung or a network black hole)") from None
                if read_only:
                    violation = pg_ro.violation(e, self.read_only_role)
                    if violation is not None:
                        raise violation from None
                raise self._translate(e, read_only) from None
            finally:
                done.set()

    def close(self) -> None:
        """Called by the executor at the end of the run.  A call still holding the connection (a
        step abandoned by the watchdog, blocked on a server that does not answer) is not waited
        for: its socket is shut down (its blocked read ends at once; freeing the connection under
        a thread still inside libpq would not be safe), and the run ends on time."""
        if not self._lock.acquire(timeout=1.0):
            conn = self._conn
            if conn is not None:
                shut_down_socket(conn)
            return
        try:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        finally:
            self._lock.release()

    def role(self) -> str:
        """The role opsctl connected as (for "GRANT ... TO <role>" hints)."""
        with suppress(Exception):
            return str(self._conn.info.user) if self._conn is not None else ""
        return ""

    def _translate(self, e: Exception, read_only: bool = False) -> Exception:
        import psycopg
        from psycopg import errors

        where, text = self.settings.describe(), clean(str(e), self.settings.secrets)
        if isinstance(e, errors.QueryCanceled):
            return ActionError(f"postgres {where}: query cancelled by statement_timeout "
                               f"({seconds(self.settings.statement_timeout)} or the step's remaining time)")
        if isinstance(e, errors.InsufficientPrivilege):
            hint = pg_ro.permission_hint(self.read_only_role) if read_only else ""
            # what to GRANT, and to whom: the role the statement ran as (SET ROLE in read-only calls)
            runs_as = (self.read_only_role if read_only else None) or self.role()
            return PrivilegeError(f"{where}: {text}: {missing_privilege(text, runs_as)}{hint}")
        if isinstance(e, psycopg.OperationalError):
            return BackendError("postgres", f"{where}: connection lost: {text}")
        return ActionError(f"postgres {where}: {text}")
