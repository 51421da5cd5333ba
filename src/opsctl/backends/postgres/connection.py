"""Where and how to connect: the environment's ``postgres`` section (``dsn`` and/or ``host``,
``port``, ``user``, ``dbname``, ``password``, ``connect_timeout``, ``statement_timeout`` in seconds,
``read_only_role``: see ``opsctl.backends.pg_readonly``); without one, libpq's own variables (PGHOST,
PGPORT, PGUSER, PGPASSWORD, PGDATABASE...) or ``DATABASE_URL``.  Errors come out as one paragraph
without the password."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from opsctl.errors import ArgumentError, BackendError, Unresponsive

APPLICATION_NAME = "opsctl"
CONNECT_TIMEOUT = 3.0
STATEMENT_TIMEOUT = 15.0
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


def clean(message: str, secrets: list[str]) -> str:
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
        message = clean(str(e), settings.secrets)
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
