"""PostgreSQL connections for the ``postgres.*`` actions.

Where to connect: the environment's ``postgres`` section (``dsn`` and/or ``host``, ``port``, ``user``,
``dbname``, ``password``, ``connect_timeout``, ``statement_timeout`` in seconds, ``read_only_role``:
see ``opsctl.backends.pg_readonly``); without one, libpq's
own variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE...) or ``DATABASE_URL``.

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

import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

from opsctl.backends import pg_readonly as pg_ro
from opsctl.errors import ActionError, ArgumentError, BackendError, Cancelled, OpsctlError, Unresponsive
from opsctl.units import seconds

APPLICATION_NAME = "opsctl"
CONNECT_TIMEOUT = 3.0
STATEMENT_TIMEOUT = 15.0
HUNG_GRACE = 1.0  # past its statement_timeout, a statement still running means a hung server
_KEYS = ("host", "port", "user", "dbname", "password")


@dataclass(frozen=True)
class PgSettings:
    conninfo: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    connect_timeout: float = CONNECT_TIMEOUT
    statement_timeout: float = STATEMENT_TIMEOUT
    database_argument: str = ""  # the step's `database` (bad input if it does not exist)
    read_only_role: str = ""  # the role read-only sessions SET ROLE to ("" = pg_monitor if we may)

    def describe(self) -> str:
        """host:port/dbname as libpq will resolve it, without the password."""
        info = _parse(self.conninfo)
        info.update({k: v for k, v in self.params.items() if v not in (None, "")})
        host = info.get("host") or os.environ.get("PGHOST") or "localhost"
        port = info.get("port") or os.environ.get("PGPORT") or "5432"
        db = info.get("dbname") or os.environ.get("PGDATABASE") or info.get("user") or ""
        return f"{host}:{port}/{db}" if db else f"{host}:{port}"

    @property
    def secrets(self) -> list[str]:
        found = [str(self.params.get("password") or ""), _parse(self.conninfo).get("password", ""),
                 os.environ.get("PGPASSWORD", "")]
        return [s for s in found if s]


def _parse(conninfo: str) -> dict[str, str]:
    if not conninfo:
        return {}
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    except Exception:  # a malformed DSN is reported by connect() itself
        return {}


def settings_from(cfg: dict[str, Any], database: str | None = None) -> PgSettings:
    """Settings from an environment section (may be empty) and an optional database override."""
    conninfo = str(cfg.get("dsn") or ("" if cfg else os.environ.get("DATABASE_URL", "")))
    params = {k: cfg[k] for k in _KEYS if cfg.get(k) not in (None, "")}
    if cfg.get("database") and "dbname" not in params:
        params["dbname"] = cfg["database"]
    if database:
        params["dbname"] = database
    return PgSettings(conninfo=conninfo, params=params, database_argument=database or "",
                      connect_timeout=float(cfg.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
                                            or CONNECT_TIMEOUT),
                      statement_timeout=float(cfg.get("statement_timeout") or STATEMENT_TIMEOUT),
                      read_only_role=str(cfg.get("read_only_role") or ""))


_URI_PASSWORD = re.compile(r"(://[^:/?#@\s\"']*:)[^\s\"']*@")


def _clean(message: str, secrets: list[str]) -> str:
    """One paragraph, no password, whatever libpq put in the message."""
    for secret in secrets:
        message = message.replace(secret, "***")
    # libpq echoes a URI it cannot parse (then the password is not among `secrets`)
    message = _URI_PASSWORD.sub(r"\1***@", message)
    return re.sub(r"\s+", " ", message).strip()


def _hint(message: str) -> str:
    if "reserved for" in message or "too many clients" in message:
        return (" The server is out of connection slots (this is likely the incident itself): connect "
                "as a role that may use the reserved slots (a superuser; pg_use_reserved_connections "
                "from PostgreSQL 16) or free a slot first.")
    return ""


def _unencoded_at(conninfo: str) -> bool:
    """A URI whose user:password part holds a raw '@': libpq splits at the first one, takes the
    rest of the password for the host name, and echoes it in its error."""
    scheme, sep, rest = conninfo.partition("://")
    if not sep or not scheme.startswith("postgres"):
        return False
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return authority.count("@") > 1


def connect(settings: PgSettings) -> Any:
    import psycopg

    if _unencoded_at(settings.conninfo):
        raise BackendError("postgres", "the connection URI's user or password contains an unencoded '@': "
                                       "percent-encode it ('@' is %40), e.g. "
                                       "postgresql://app:p%40ss@db:5432/app")
    kwargs = {**settings.params, "application_name": APPLICATION_NAME, "autocommit": True,
              "connect_timeout": max(1, math.ceil(settings.connect_timeout))}
    try:
        return psycopg.connect(settings.conninfo, **kwargs)
    except psycopg.Error as e:
        message = _clean(str(e), settings.secrets)
        db = settings.database_argument
        if db and f'database "{db}" does not exist' in message:
            # named by the runbook or -p database=...: bad input, not an unreachable backend
            raise ArgumentError(f"postgres: database {db!r} does not exist on {settings.describe()} "
                                "(the step's database argument; SELECT datname FROM pg_database "
                                "lists the databases)") from None
        # "timeout expired": the port accepts TCP and the server never answers the handshake
        kind = Unresponsive if "timeout expired" in message else BackendError
        raise kind("postgres", f"cannot connect to {settings.describe()}: {message}"
                               f"{_hint(message)}") from None


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
            threading.Thread(target=_watch, args=(conn, done, cancelled, timeout + HUNG_GRACE, hung),
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
                _shut_down_socket(conn)
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

        where, text = self.settings.describe(), _clean(str(e), self.settings.secrets)
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


class PrivilegeError(BackendError):
    """The role opsctl connects as lacks a privilege (exit 4, naming it).  A probe that the
    decision does not need catches it and degrades to a warning."""

    def __init__(self, message: str) -> None:
        super().__init__("postgres", f"permission denied: {message}")


_DENIED_ON = re.compile(r'permission denied for (view|table|relation|function|schema|sequence) "?([\w.]+)"?')


def missing_privilege(message: str, role: str = "") -> str:
    """What to grant, from PostgreSQL's "permission denied ..." text."""
    to = f" TO {role}" if role else ""
    if "terminate process" in message or "cancel query" in message or "pg_signal_backend" in message:
        return f"needs pg_signal_backend (GRANT pg_signal_backend{to})"
    if "to examine" in message:
        return f"needs pg_read_all_settings (GRANT pg_read_all_settings{to}, or pg_monitor)"
    found = _DENIED_ON.search(message)
    if found:
        kind, name = found.groups()
        if name.endswith("pg_stat_statements"):
            return (f"needs pg_read_all_stats and SELECT on {name} (GRANT pg_read_all_stats{to}; "
                    f"GRANT SELECT ON {name}{to})")
        if kind == "function":
            return f"needs EXECUTE on function {name} (GRANT EXECUTE ON FUNCTION {name}{to})"
        grant, on = ("USAGE", "SCHEMA") if kind == "schema" else ("SELECT", kind.upper() if kind == "sequence"
                                                                   else "TABLE")
        return f"needs {grant} on {kind} {name} (GRANT {grant} ON {on} {name}{to})"
    return "needs a privilege this role does not have (pg_monitor and pg_signal_backend cover opsctl)"


def _watch(conn: Any, done: threading.Event, cancelled: threading.Event | None, hung_after: float,
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
            _shut_down_socket(conn)
            return
        if cancelled is not None and cancelled.is_set():
            with suppress(Exception):  # nothing running, or the server went away: nothing to do
                conn.cancel_safe(timeout=CONNECT_TIMEOUT)
            done.wait(0.5)


def fetch(conn: Any, query: str, params: Any = None) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall()) if cur.description else []


def optional_fetch(conn: Any, query: str, params: Any = None) -> tuple[list[dict[str, Any]] | None, str]:
    """An optional probe: its rows, or None and why it could not run (a missing privilege, an
    extension not loaded), so that the caller degrades to a warning instead of failing the step.
    Autocommit: a failed statement leaves the connection usable."""
    from psycopg import errors

    try:
        return fetch(conn, query, params), ""
    except errors.InsufficientPrivilege as e:
        text = _clean(str(e), [])
        role = ""
        with suppress(Exception):
            role = str(conn.info.user)
        return None, f"permission denied ({text}): {missing_privilege(text, role)}"
    except errors.ObjectNotInPrerequisiteState as e:  # e.g. pg_stat_statements not preloaded
        return None, _clean(str(e), [])
    except errors.UndefinedTable as e:
        return None, _clean(str(e), [])


# ---- sessions: the one view of pg_stat_activity shared by diagnosis and targeting ---------------
_SESSIONS = """
SELECT a.pid, a.backend_start::text AS backend_start, a.usename AS user, a.datname AS database,
       coalesce(a.application_name, '') AS application_name, host(a.client_addr) AS client_addr,
       coalesce(a.state, '') AS state, a.backend_type, coalesce(r.rolsuper, false) AS superuser,
       coalesce(extract(epoch FROM now() - a.state_change), 0)::float AS state_seconds,
       coalesce(extract(epoch FROM now() - a.query_start), 0)::float AS query_seconds,
       coalesce(extract(epoch FROM now() - a.xact_start), 0)::float AS xact_seconds,
       a.wait_event_type, a.wait_event, left(a.query, 200) AS query, pg_blocking_pids(a.pid) AS blocked_by
FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.pid <> pg_backend_pid() AND (a.backend_type IN ('client backend', 'walsender')
   -- another role's session that this role may not look at (no pg_read_all_stats): even its
   -- backend_type is hidden; it is listed, as `hidden`, so that it is never silently missing
   OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL AND a.datname IS NOT NULL))
"""


_PASSWORD_LITERAL = re.compile(r"(password\s*=?\s*)('(?:[^']|'')*'|\S+)", re.I)


def redact_sql(text: str | None) -> str:
    """Statement text as shown to people: `PASSWORD '...'` literals (ALTER ROLE, dblink...) masked."""
    return _PASSWORD_LITERAL.sub(r"\1'***'", text or "")


HIDDEN = "<insufficient privilege>"


def list_sessions(conn: Any) -> list[dict[str, Any]]:
    """Client and walsender backends except our own, with `duration_seconds` = time in the current
    state (for an active session: since its query started).  `hidden`: a session of another role
    whose state PostgreSQL does not show to this role (it lacks pg_read_all_stats)."""
    out = []
    for s in fetch(conn, _SESSIONS):
        s["hidden"] = s["backend_type"] is None
        s["backend_type"] = s["backend_type"] or "unknown (hidden)"
        s["duration_seconds"] = round(s["query_seconds"] if s["state"] == "active" else s["state_seconds"], 1)
        s["query"] = redact_sql(s["query"])
        for k in ("state_seconds", "query_seconds", "xact_seconds"):
            s[k] = round(s[k], 1)
        out.append(s)
    return out


def current_database(conn: Any) -> str:
    return str(fetch(conn, "SELECT current_database() AS d")[0]["d"])


def require_visible(conn: Any, sessions: list[dict[str, Any]], flt: SessionFilter) -> None:
    """A required probe: the sessions in scope must be visible.  Without pg_read_all_stats,
    pg_stat_activity hides the state of other roles' sessions, so a leak held by the application's
    role looks like nothing at all, and a run would "verify" an incident it cannot see."""
    hidden = [s for s in sessions if s["hidden"] and flt.in_scope(s) and not s["superuser"]]
    if not hidden:
        return
    role = str(conn.info.user)
    apps = ", ".join(f"{n} of {a or '?'} ({u})" for (a, u), n in sorted(_tally(hidden).items()))
    raise PrivilegeError(f"role {role} cannot see the state of {len(hidden)} session(s) in scope "
                         f"({apps}): pg_stat_activity hides other roles' sessions; needs "
                         f"pg_read_all_stats (GRANT pg_read_all_stats TO {role}, or pg_monitor)")


def _tally(sessions: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for s in sessions:
        key = (s["application_name"], s["user"] or "")
        out[key] = out.get(key, 0) + 1
    return out


def excluded_by_scope(sessions: list[dict[str, Any]], flt: SessionFilter) -> list[str]:
    """Sessions the step would have selected but for its scope (database / application_name /
    user), said per application: "2 sessions of checkout-api excluded by application_name=report-job"."""
    loose = replace(flt, database=None, application_name=None, user=None)
    groups: dict[tuple[str, str], int] = {}
    for s in sessions:
        if loose.matches(s) and not flt.matches(s):
            key = (s["application_name"] or "?", flt.scope_miss(s) or "scope")
            groups[key] = groups.get(key, 0) + 1
    return [f"{n} session{'s' if n > 1 else ''} of {app} excluded by {why}"
            for (app, why), n in sorted(groups.items())]


SELECTION_SCHEMA: dict[str, Any] = {
    "database": {"type": "string", "description": "datname to match (also the database to connect to)"},
    "application_name": {"type": "string", "description": "glob on application_name"},
    "user": {"type": "string", "description": "glob on the role name"},
    "state": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
              "description": "pg_stat_activity state(s): active, idle, idle in transaction..."},
    "min_duration": {"type": "number", "minimum": 0, "description": "seconds in the current state"},
    "idle_in_transaction_seconds": {"type": "number", "minimum": 0,
                                    "description": "select sessions idle in transaction for longer"},
    "long_query_seconds": {"type": "number", "minimum": 0,
                           "description": "select active queries running for longer"},
    "pids": {"type": "array", "items": {"type": "integer"}, "description": "restrict to these pids"},
    "include_superusers": {"type": "boolean", "default": False},
    "include_replication": {"type": "boolean", "default": False},
}


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions a step selects.  The thresholds pair (idle-in-transaction / long query) selects
    a session over either one; `state` + `min_duration` is the general form; both combine with the
    database / application / user / pid filters."""

    database: str | None = None
    application_name: str | None = None
    user: str | None = None
    states: tuple[str, ...] = ()
    min_duration: float | None = None
    idle_in_transaction_seconds: float | None = None
    long_query_seconds: float | None = None
    pids: tuple[int, ...] | None = None
    include_superusers: bool = False
    include_replication: bool = False
    include_opsctl: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> SessionFilter:
        state = args.get("state")
        pids = args.get("pids")
        return cls(database=args.get("database") or None, user=args.get("user") or None,
                   application_name=args.get("application_name") or None,
                   states=tuple([state] if isinstance(state, str) else state or ()),
                   min_duration=args.get("min_duration"),
                   idle_in_transaction_seconds=args.get("idle_in_transaction_seconds"),
                   long_query_seconds=args.get("long_query_seconds"),
                   pids=tuple(pids) if pids is not None else None,
                   include_superusers=bool(args.get("include_superusers", False)),
                   include_replication=bool(args.get("include_replication", False)))

    @property
    def selective(self) -> bool:
        """False when nothing narrows the selection down (refused for mutations)."""
        return bool(self.states or self.min_duration or self.pids is not None
                    or self.idle_in_transaction_seconds is not None or self.long_query_seconds is not None)

    def in_scope(self, s: dict[str, Any]) -> bool:
        """Inside the step's scope (database, application, role), whatever its state."""
        return s["application_name"] != APPLICATION_NAME and self.scope_miss(s) is None

    def scope_miss(self, s: dict[str, Any]) -> str | None:
        """Which scope parameter leaves the session out ("application_name=report-job"), or None."""
        from fnmatch import fnmatchcase

        if self.database and s["database"] != self.database:
            return f"database={self.database}"
        if self.application_name and not fnmatchcase(s["application_name"], self.application_name):
            return f"application_name={self.application_name}"
        if self.user and not fnmatchcase(s["user"] or "", self.user):
            return f"user={self.user}"
        return None

    def matches(self, s: dict[str, Any]) -> bool:
        if not self.include_opsctl and s["application_name"] == APPLICATION_NAME:
            return False
        if (s["superuser"] and not self.include_superusers) or \
                (s["backend_type"] != "client backend" and not self.include_replication):
            return False
        if self.scope_miss(s) is not None:
            return False
        if self.pids is not None and s["pid"] not in self.pids:
            return False
        if self.states and s["state"] not in self.states:
            return False
        if self.min_duration is not None and s["duration_seconds"] < self.min_duration:
            return False
        return self._over_thresholds(s)

    def _over_thresholds(self, s: dict[str, Any]) -> bool:
        idle_tx, long_q = self.idle_in_transaction_seconds, self.long_query_seconds
        if idle_tx is None and long_q is None:
            return True
        if idle_tx is not None and s["state"].startswith("idle in transaction") and \
                s["state_seconds"] >= idle_tx:
            return True
        return long_q is not None and s["state"] == "active" and s["query_seconds"] >= long_q


def _shut_down_socket(conn: Any) -> None:
    """End a connection's socket under libpq (a call stuck on a hung server returns at once);
    the connection object itself is closed by its owner."""
    import socket

    with suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
