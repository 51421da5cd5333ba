"""Redis client for the ``redis.*`` actions.

Where to connect: the environment's ``redis`` section (``url`` and/or ``host``, ``port``, ``db``,
``password``, ``username``, ``connect_timeout``, ``timeout``), else ``REDIS_URL``, else
127.0.0.1:6379.  A redis-py client is thread-safe (it has its own connection pool), so one client is
cached per run and shared by concurrent diagnose steps.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opsctl.errors import ActionError, BackendError

CONNECT_TIMEOUT = 3.0
SOCKET_TIMEOUT = 10.0


@dataclass(frozen=True)
class RedisSettings:
    url: str
    overrides: tuple[tuple[str, Any], ...] = ()
    connect_timeout: float = CONNECT_TIMEOUT
    timeout: float = SOCKET_TIMEOUT

    def describe(self) -> str:
        """host:port/db, never more of the URL: a malformed one can hold its password anywhere."""
        parts = _split(self.url)
        extra = dict(self.overrides)
        if parts is None or parts.scheme not in ("redis", "rediss", "unix"):
            return "(a malformed URL, not shown)"
        host = extra.get("host") or parts.hostname or "127.0.0.1"
        try:
            url_port: int | str | None = parts.port
        except ValueError:  # not a number: make_client reports it
            url_port = "?"
        port = extra.get("port") or url_port or 6379
        path = (parts.path or "/0").strip("/") or "0"
        return f"{host}:{port}/{extra.get('db', path if path.isdigit() else '?')}"

    @property
    def secrets(self) -> list[str]:
        parts = _split(self.url)
        found = [str(dict(self.overrides).get("password") or ""), (parts.password if parts else "") or ""]
        return [s for s in found if s]

    @property
    def has_password(self) -> bool:
        return bool(self.secrets)


def _split(url: str) -> Any:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL"
        return None


def settings_from(cfg: dict[str, Any]) -> RedisSettings:
    url = str(cfg.get("url") or ("" if cfg else os.environ.get("REDIS_URL", "")) or "redis://127.0.0.1:6379/0")
    overrides = tuple((k, cfg[k]) for k in ("host", "port", "db", "username", "password")
                      if cfg.get(k) not in (None, ""))
    return RedisSettings(url=url, overrides=overrides,
                         connect_timeout=float(cfg.get("connect_timeout") or CONNECT_TIMEOUT),
                         timeout=float(cfg.get("timeout") or SOCKET_TIMEOUT))


def make_client(settings: RedisSettings) -> Any:
    import redis

    try:
        return redis.Redis.from_url(settings.url, **dict(settings.overrides), decode_responses=True,
                                    encoding_errors="backslashreplace", client_name="opsctl",
                                    socket_connect_timeout=settings.connect_timeout,
                                    socket_timeout=settings.timeout, retry_on_timeout=False)
    except (ValueError, TypeError) as e:  # a malformed URL (scheme, port, db...) is misconfiguration
        raise BackendError("redis", f"invalid Redis URL {settings.describe()}: "
                                    f"{_clean(str(e), settings.secrets)}") from None


def client_for(ctx: Any, settings: RedisSettings, *, probe: bool = False) -> Any:
    """The run's client (one connection pool, shared by the steps); for read-only code
    (``ctx.read_only``) a separate client on the same pool that only sends read commands
    (``probe``: plus SET/DEL of an ``opsctl:probe:*`` scratch key with an expiry, for the write
    probe; never in a dry-run)."""
    client = ctx.client("redis:client", lambda: make_client(settings))
    if not ctx.read_only:
        return client
    from opsctl.backends.readonly import read_only_redis

    if probe and not ctx.dry_run:
        return ctx.client("redis:client:probe", lambda: read_only_redis(client, allow=_probe_write))
    return ctx.client("redis:client:read-only", lambda: read_only_redis(client))


PROBE_PREFIX = "opsctl:probe:"


def _probe_write(args: tuple[Any, ...]) -> bool:
    """SET opsctl:probe:<hex> VALUE PX <= 60000, or DEL of one such key: nothing else."""
    words = [str(a) for a in args]
    if len(words) < 2 or not words[1].startswith(PROBE_PREFIX) or not words[1][len(PROBE_PREFIX):].isalnum():
        return False
    head = words[0].upper()
    if head == "DEL":
        return len(words) == 2
    if head == "SET" and len(words) == 5 and words[3].upper() == "PX":
        return words[4].isdigit() and 0 < int(words[4]) <= 60000
    return False


def _clean(message: str, secrets: list[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "***")
    return re.sub(r"\s+", " ", message).strip()


def _auth_hint(settings: RedisSettings) -> str:
    if settings.has_password:
        return ""
    return (" (no password was given: the server requires one; put it in REDIS_URL as "
            "redis://:PASSWORD@host:port/db or in the environment's redis.password)")


@contextmanager
def errors(settings: RedisSettings) -> Iterator[None]:
    """redis-py exceptions -> opsctl errors (exit 4 for connection and auth problems)."""
    import redis

    where = settings.describe()
    try:
        yield
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as e:
        raise BackendError("redis", f"{where}: authentication failed: "
                                    f"{_clean(str(e), settings.secrets)}{_auth_hint(settings)}") from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BackendError("redis", f"cannot reach {where}: {_clean(str(e), settings.secrets)}") from None
    except redis.exceptions.NoPermissionError as e:  # an ACL user without the command: like a wrong role
        import re

        named = re.search(r"run the '([a-z|_-]+)' command", str(e))
        rule = f"the ACL user needs +{named.group(1)}; " if named else ""
        raise BackendError("redis", f"{where}: permission denied: {_clean(str(e), settings.secrets)} "
                                    f"({rule}`opsctl permissions RUNBOOK --for redis` prints the ACL "
                                    "rule the runbook needs)") from None
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            raise BackendError("redis", f"{where}: authentication failed: "
                                        f"{_clean(str(e), settings.secrets)}{_auth_hint(settings)}") from None
        if "DB index is out of range" in str(e):  # the URL's /db: a configuration error, not the action's
            raise BackendError("redis", f"{where}: {_clean(str(e), settings.secrets)} (check the database "
                                        "number in REDIS_URL or the environment's redis.db)") from None
        raise ActionError(f"redis {where}: {_clean(str(e), settings.secrets)}") from None


def set_if_unchanged(client: Any, key: str, expected: str | None, value: str, ttl: int | None = None) -> str:
    """SET ``key`` to ``value`` (EX ``ttl``) only if it still holds ``expected`` (None: absent), in one
    WATCH/MULTI/EXEC: "set", "changed" (it no longer held ``expected``) or "raced" (another client
    wrote it between the check and the EXEC, which then did nothing)."""
    import redis

    try:
        with client.pipeline() as pipe:
            pipe.watch(key)
            if pipe.get(key) != expected:
                return "changed"
            pipe.multi()
            pipe.set(key, value, ex=ttl)
            pipe.execute()
    except redis.WatchError:
        return "raced"
    return "set"


def write_refusal(client: Any, key: str, value: str, px: int) -> str | None:
    """SET ``key`` (PX ``px``): None when the write succeeded, else the server's refusal as it says it
    (``OOM ...``, ``READONLY ...``, ``MISCONF ...``: the write path is broken, an answer, not an
    error).  Any other error propagates (``errors()`` translates it)."""
    import redis

    try:
        client.set(key, value, px=px)
    except redis.exceptions.OutOfMemoryError as e:  # redis-py drops the "OOM" prefix
        return f"OOM {str(e).splitlines()[0][:200]}"
    except redis.exceptions.ReadOnlyError as e:
        return f"READONLY {str(e).splitlines()[0][:200]}"
    except redis.exceptions.ResponseError as e:
        if not str(e).startswith(("OOM", "READONLY", "MISCONF")):
            raise
        return str(e).split("\n")[0][:200]
    return None


def parse_clients(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CLIENT LIST entries (redis-py keeps every field a string) -> typed dicts."""
    out = []
    for f in raw:
        flags = str(f.get("flags", ""))
        out.append({"id": int(f.get("id", 0)), "addr": f.get("addr", ""), "name": f.get("name", ""),
                    "age": int(f.get("age", 0)), "idle": int(f.get("idle", 0)), "flags": flags,
                    "db": int(f.get("db", 0)), "cmd": f.get("cmd", ""), "blocked": "b" in flags,
                    "replication": any(x in flags for x in "MS")})
    return out
