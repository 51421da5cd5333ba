"""A private PostgreSQL 15 cluster: initdb + pg_ctl as the ``postgres`` user (they refuse root).

Roles created:
* ``postgres``: superuser (trust on the unix socket only, password over TCP);
* ``ops``: what opsctl connects as: pg_monitor + pg_signal_backend + CREATEROLE, not a superuser;
* ``app``: an ordinary application role used to create faults;
* ``monitor``: pg_monitor + pg_signal_backend only (the least opsctl needs);
* ``nostats``: a login role without any of them (cannot see other roles' session states).

Databases: ``app`` (owned by ``app``) and ``other`` (sessions outside a runbook's database scope).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.testing.ports import free_port
from opsctl.testing.proxy import TcpProxy  # noqa: F401 - the proxy for the wire faults
from opsctl.testing.unavailable import Unavailable

KIT_APPLICATION_NAME = "opsctl-kit"  # the kit's own connections (sql(), count())
PASSWORDS = {"postgres": "pg-super-secret", "ops": "ops-s3cret-pw", "app": "app-s3cret-pw",
             "monitor": "mon-s3cret-pw", "nostats": "nostats-s3cret-pw"}


def _bindir() -> Path:
    """initdb/pg_ctl/psql: ``$OPSCTL_PG_BINDIR``, Debian's /usr/lib/postgresql/N/bin, or the PATH."""
    if os.environ.get("OPSCTL_PG_BINDIR"):
        return Path(os.environ["OPSCTL_PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl) under $OPSCTL_PG_BINDIR, "
                      "/usr/lib/postgresql/*/bin or on the PATH (apt-get install postgresql)")


def postgres_available() -> str | None:
    """None when a private PostgreSQL can be started here, else why not (a skip reason)."""
    try:
        bindir = _bindir()
    except Unavailable as e:
        return str(e)
    if not (bindir / "initdb").exists():
        return f"no initdb in {bindir}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (initdb refuses root)"
    return None



def _as_postgres(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + cmd, check=True, capture_output=True, text=True, **kw)


def _stat_statements_available() -> bool:
    return bool(glob.glob("/usr/share/postgresql/*/extension/pg_stat_statements.control"))


@dataclass
class PgServer:
    port: int
    datadir: Path
    pid: int
    host: str = "127.0.0.1"
    max_connections: int = 20
    stat_statements: bool = False
    _conns: list[Any] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stoppers: list[Any] = field(default_factory=list)

    def env(self, user: str = "ops", dbname: str = "app") -> dict[str, str]:
        """libpq variables to point opsctl (or psql) at this server."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": user,
                "PGPASSWORD": PASSWORDS[user], "PGDATABASE": dbname}

    def dsn(self, user: str = "ops", dbname: str = "app") -> str:
        return f"postgresql://{user}:{PASSWORDS[user]}@{self.host}:{self.port}/{dbname}"

    def connect(self, user: str = "postgres", dbname: str = "app", **kw: Any) -> Any:
        import psycopg

        kw.setdefault("autocommit", True)
        return psycopg.connect(self.dsn(user, dbname), connect_timeout=15, **kw)  # loaded CI machines

    def sql(self, query: str, params: Any = None, dbname: str = "app") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser and return its rows (the server's own view).  Its
        connection is named KIT_APPLICATION_NAME: the backend of a closed one can still be listed
        in pg_stat_activity for a moment, and count() (and the tests' views of who is connected)
        leave the kit's own connections out."""
        with self.connect("postgres", dbname, application_name=KIT_APPLICATION_NAME) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    # ---- real faults -------------------------------------------------------------------------
    def open_sessions(self, n: int, application_name: str, *, in_transaction: bool = False,
                      user: str = "app", dbname: str = "app") -> list[Any]:
        """n real connections left idle (or idle in transaction, holding a snapshot)."""
        conns = []
        for _ in range(n):
            conn = self.connect(user, dbname, application_name=application_name)
            if in_transaction:
                conn.execute("BEGIN")
                conn.execute("SELECT txid_current()")
            conns.append(conn)
            self._conns.append(conn)
        return conns

    def background(self, sql: str, application_name: str, *, user: str = "app",
                   dbname: str = "app", setup: str | None = None) -> threading.Thread:
        """Run one statement in a thread on its own connection (pg_sleep, a blocked UPDATE...);
        errors (the session being cancelled or terminated) are swallowed."""
        conn = self.connect(user, dbname, application_name=application_name)
        self._conns.append(conn)
        if setup:
            conn.execute(setup)

        def work() -> None:
            with contextlib.suppress(Exception):
                conn.execute(sql)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def leak_connections(self, count: int, application_name: str = "leaky-app", *,
                         idle_in_transaction: bool = True, user: str = "app",
                         dbname: str = "app") -> list[int]:
        """Fault: an application (an ordinary role, not a superuser) leaks ``count`` connections,
        idle in transaction by default (holding snapshots); returns their backend pids."""
        conns = self.open_sessions(count, application_name, in_transaction=idle_in_transaction,
                                   user=user, dbname=dbname)
        return [int(c.info.backend_pid) for c in conns]

    def lock_chain(self, waiters: int = 2, *, table: str = "orders", holder: str = "checkout-api",
                   waiter: str = "billing-worker", user: str = "app", dbname: str = "app") -> int:
        """Fault: a session idle in transaction holds a row lock that ``waiters`` sessions queue
        behind (each blocked in an UPDATE); returns once they all wait, with the holder's pid."""
        from psycopg import sql

        name = sql.Identifier(table)
        with self.connect(user, dbname) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY, status text)")
                         .format(name))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'new') ON CONFLICT (id) DO UPDATE "
                                 "SET status = 'new'").format(name))
        before = self.blocked(dbname)
        head = self.open_sessions(1, holder, in_transaction=True, user=user, dbname=dbname)[0]
        head.execute(sql.SQL("UPDATE {} SET status = 'held' WHERE id = 1").format(name))
        for i in range(waiters):
            stmt = sql.SQL("UPDATE {} SET status = {} WHERE id = 1").format(name, sql.Literal(f"w{i}"))
            self.background(stmt.as_string(head), waiter, user=user, dbname=dbname)
        self.wait_for(f"SELECT count(*) >= {before + waiters} FROM pg_stat_activity "
                      "WHERE cardinality(pg_blocking_pids(pid)) > 0", dbname=dbname)
        return int(head.info.backend_pid)

    def long_queries(self, count: int = 1, seconds: float = 600, application_name: str = "report-job", *,
                     user: str = "app", dbname: str = "app") -> None:
        """Fault: ``count`` queries running for ``seconds`` (pg_sleep); returns once all are active."""
        before = self.count("state = 'active' AND query LIKE 'SELECT pg_sleep%'")
        for _ in range(count):
            self.background(f"SELECT pg_sleep({float(seconds)})", application_name, user=user, dbname=dbname)
        self.wait_for(f"SELECT count(*) >= {before + count} FROM pg_stat_activity WHERE state = 'active' "
                      "AND query LIKE 'SELECT pg_sleep%'", dbname=dbname)

    def blocked(self, dbname: str = "app") -> int:
        """Sessions waiting on another session's lock, as the server sees them."""
        return int(self.sql("SELECT count(*) FROM pg_stat_activity "
                            "WHERE cardinality(pg_blocking_pids(pid)) > 0", dbname=dbname)[0][0])

    def wait_for(self, condition_sql: str, timeout: float = 20.0, dbname: str = "app") -> None:
        """Poll until a boolean query is true (e.g. the fault is visible in pg_stat_activity)."""
        deadline = time.monotonic() + timeout
        while not self.sql(condition_sql, dbname=dbname)[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout}s: {condition_sql}")
            time.sleep(0.05)

    def count(self, where: str = "true") -> int:
        """Client backends in pg_stat_activity matching a condition, as the server sees them, but the
        kit's own (KIT_APPLICATION_NAME: sql() and count() themselves)."""
        return int(self.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                            f"AND pid <> pg_backend_pid() AND application_name <> '{KIT_APPLICATION_NAME}' "
                            f"AND {where}")[0][0])

    def keep_alive(self, restore: Any, alive: Any, period: float = 0.2) -> Any:
        """A fault that comes back (an application that keeps leaking, a blocker that is
        re-created): every ``period``, ``restore()`` runs unless ``alive()``.  Returns stop()."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(period):
                with contextlib.suppress(Exception):
                    if not alive():
                        restore()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=10)

        self._stoppers.append(halt)
        return halt

    @staticmethod
    def ended(conn: Any) -> bool:
        """True when the server has ended this (idle) session: its socket is readable (the
        FATAL message, then EOF) although we sent nothing; checked without a query, which would
        reset the session's state timer."""
        import select

        if conn.closed:
            return True
        try:
            return bool(select.select([conn.fileno()], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def clear_faults(self) -> None:
        """End every fault session server-side first, let the background threads finish, and only
        then close our ends: closing a socket that a thread is still polling lets the next
        connection reuse its fd number, and the stale thread then eats that connection's replies
        (seen as a 'connection timeout expired' on a later connect)."""
        for halt in self._stoppers:  # recurring faults first, or they come back
            halt()
        self._stoppers.clear()
        # a fault that takes every slot but the superuser's, and a run that used that slot: its
        # backend can still be exiting (a loaded machine) when we ask for the slot again
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sql("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                         "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
                break
            except Exception as e:  # noqa: BLE001 - psycopg.OperationalError, imported lazily
                if "too many clients" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._conns.clear()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)  # fast shutdown: ends the sessions server-side first
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
        for thread in self._threads:
            thread.join(timeout=5)
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _write_conf(datadir: Path, port: int, max_connections: int, stat_statements: bool) -> None:
    lines = [f"port = {port}", "listen_addresses = '127.0.0.1'", f"unix_socket_directories = '{datadir}'",
             f"max_connections = {max_connections}", "superuser_reserved_connections = 1",
             "shared_buffers = 16MB", "fsync = off", "synchronous_commit = off", "full_page_writes = off",
             "logging_collector = off", "password_encryption = 'scram-sha-256'"]
    if stat_statements:
        lines += ["shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track = all"]
    with open(datadir / "postgresql.conf", "a") as f:
        f.write("\n".join(lines) + "\n")
    (datadir / "pg_hba.conf").write_text(
        "local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n")


def _bootstrap(server: PgServer, bindir: Path) -> None:
    """Roles, the `app` database and (if available) pg_stat_statements, over the unix socket."""
    script = [f"ALTER ROLE postgres PASSWORD '{PASSWORDS['postgres']}'",
              f"CREATE ROLE ops LOGIN CREATEROLE PASSWORD '{PASSWORDS['ops']}'",
              "GRANT pg_monitor, pg_signal_backend TO ops",
              f"CREATE ROLE app LOGIN PASSWORD '{PASSWORDS['app']}'",
              f"CREATE ROLE monitor LOGIN PASSWORD '{PASSWORDS['monitor']}'",
              "GRANT pg_monitor, pg_signal_backend TO monitor",
              f"CREATE ROLE nostats LOGIN PASSWORD '{PASSWORDS['nostats']}'",
              "CREATE DATABASE app OWNER app", "CREATE DATABASE other OWNER app"]
    def psql(dbname: str, stmt: str) -> None:
        _as_postgres([str(bindir / "psql"), "-h", str(server.datadir), "-p", str(server.port),
                      "-U", "postgres", "-d", dbname, "-v", "ON_ERROR_STOP=1", "-q", "-c", stmt])

    for stmt in script:
        psql("postgres", stmt)
    if server.stat_statements:
        psql("app", "CREATE EXTENSION pg_stat_statements")
        psql("app", "SELECT pg_stat_statements_reset()")  # the bootstrap's own statements are not the fault


def start_postgres(max_connections: int = 20, stat_statements: bool | None = None) -> PgServer:
    """initdb + start a throwaway cluster; returns when it accepts connections (Unavailable when
    PostgreSQL is not installed here)."""
    reason = postgres_available()
    if reason:
        raise Unavailable(reason)
    bindir = _bindir()
    if stat_statements is None:
        stat_statements = _stat_statements_available()
    root = Path(tempfile.mkdtemp(prefix="opsctl-pg-"))
    datadir = root / "data"
    shutil.chown(root, "postgres", "postgres") if os.geteuid() == 0 else None
    os.chmod(root, 0o755)
    _as_postgres([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale", "C"])
    port = free_port()
    _write_conf(datadir, port, max_connections, stat_statements)
    _as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(root / "server.log"),
                  "-w", "-t", "30", "start"])
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    server = PgServer(port=port, datadir=datadir, pid=pid, max_connections=max_connections,
                      stat_statements=stat_statements)
    try:
        _bootstrap(server, bindir)
    except BaseException:
        server.stop()
        raise
    return server
