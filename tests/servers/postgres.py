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

from tests.servers.ports import free_port

PASSWORDS = {"postgres": "pg-super-secret", "ops": "ops-s3cret-pw", "app": "app-s3cret-pw",
             "monitor": "mon-s3cret-pw", "nostats": "nostats-s3cret-pw"}


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent



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
        """Run one statement as the superuser and return its rows (the server's own view)."""
        with self.connect("postgres", dbname) as conn:
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

    def wait_for(self, condition_sql: str, timeout: float = 20.0, dbname: str = "app") -> None:
        """Poll until a boolean query is true (e.g. the fault is visible in pg_stat_activity)."""
        deadline = time.monotonic() + timeout
        while not self.sql(condition_sql, dbname=dbname)[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout}s: {condition_sql}")
            time.sleep(0.05)

    def count(self, where: str = "true") -> int:
        """Client backends in pg_stat_activity matching a condition, as the server sees them."""
        return int(self.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                            f"AND pid <> pg_backend_pid() AND {where}")[0][0])

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
        self.sql("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                 "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
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


class TcpProxy:
    """A TCP proxy in front of the server, for faults on the wire: ``delay`` holds every chunk
    the server sends for that many seconds (a slow server or link), ``freeze()`` stops forwarding
    in both directions while keeping the sockets open (a server that hangs mid-session), and
    ``hold_answers_to(text)`` holds the server's answer to a statement containing ``text`` until
    the client sends a cancel request (its Ctrl-C): a definite handshake, so a test can interrupt
    a batch exactly while one of its statements is in flight, however loaded the machine."""

    CANCEL_REQUEST = (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big")

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        import socket

        self.target_port, self.delay = target_port, delay
        self.frozen = threading.Event()
        self._hold: bytes | None = None
        self.holding = threading.Event()    # an answer is being held (the statement ran)
        self.cancelled = threading.Event()  # a cancel request came through: answers flow again
        self._stop = threading.Event()
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(64)
        self._srv.settimeout(0.1)
        self.port = int(self._srv.getsockname()[1])
        self._socks: list[Any] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        self.frozen.set()

    def hold_answers_to(self, text: str) -> None:
        """From now on, the answer to every statement whose bytes contain ``text`` is held until a
        cancel request (its client's Ctrl-C) passes through the proxy (test-side cap: 60 s)."""
        self._hold = text.encode()

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client = self._srv.accept()[0]
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            held = threading.Event()  # this connection's next answer is to be held
            for src, dst, slow in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, slow, held), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: Any, dst: Any, slow: bool, held: threading.Event) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if not slow:
                # a cancel request opens its own connection (after an SSL/GSS negotiation, if any)
                if data.startswith(self.CANCEL_REQUEST):
                    self.cancelled.set()
                elif self._hold and self._hold in data and not self.cancelled.is_set():
                    held.set()  # before the statement reaches the server: its answer comes later
            elif held.is_set():
                self.holding.set()
                self.cancelled.wait(60)
                held.clear()
            if slow and self.delay:
                time.sleep(self.delay)
            while self.frozen.is_set() and not self._stop.is_set():
                time.sleep(0.05)
            try:
                dst.sendall(data)
            except OSError:
                break
        if not self.frozen.is_set():
            with contextlib.suppress(OSError):
                dst.shutdown(2)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        self._srv.close()


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
    """initdb + start a throwaway cluster; returns when it accepts connections."""
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
