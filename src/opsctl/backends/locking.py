"""Apply locks, one kind per backend (the engine side is ``opsctl.locks``).

Every lock offers ``try_acquire() -> Holder | None`` (None: taken by us; else who holds it) and
``release()``.  The holder (user, host, run id, since when) is stored where the second engineer's
opsctl can read it:

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``, key = sha256 of
  "opsctl:<runbook>:<database>") on a dedicated connection named ``opsctl`` (never a target, not
  counted as pool usage); the holder is in that connection's last statement, a comment that
  ``pg_stat_activity.query`` shows, found through ``pg_locks``.  The lock ends with the connection,
  so a crashed opsctl never leaves it behind.
* Redis: redis-py's ``Lock`` (SET NX PX + a compare-and-delete script) with a TTL; the token is
  the holder record.
* Kubernetes: a ``coordination.k8s.io/v1`` Lease ``opsctl-<runbook>`` in the target namespace,
  taken over when expired (renewTime + leaseDurationSeconds in the past).
* A local lock file (``fcntl.flock``) in the state directory: the fallback for every other backend.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from opsctl.actions.needs import Kube, Need, RedisAcl
from opsctl.errors import BackendError

# What taking the apply lock of a mutating step needs in the step's backend, declared like the
# actions' permissions (``opsctl permissions`` adds them; ``{runbook}`` is the runbook's id): without
# them the lock falls back to the host's lock file, which serialises nothing across machines.  A
# PostgreSQL advisory lock needs no privilege (the holder's query is read with pg_monitor).
NEEDS: dict[str, tuple[Need, ...]] = {
    "kubernetes": (Kube("coordination.k8s.io", ("leases",), ("get", "create", "update", "delete"),
                        apply=True),),
    # SET NX PX to take it, GET to name its holder, the release script (GET + DEL) by EVALSHA
    "redis": (RedisAcl(("set", "get", "del", "evalsha", "script|load"), keys="opsctl:lock:{runbook}",
                       apply=True),),
}


@dataclass(frozen=True)
class Holder:
    user: str
    host: str
    run_id: str
    since: str
    pid: int = 0

    def __str__(self) -> str:
        return f"{self.user}@{self.host} (run {self.run_id}, since {self.since})"

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes | None, fallback: str = "unknown holder") -> Holder:
        try:
            d = json.loads(text or "")
            return cls(str(d["user"]), str(d["host"]), str(d["run_id"]), str(d["since"]),
                       int(d.get("pid", 0)))
        except (ValueError, KeyError, TypeError):
            return cls("?", "?", "?", "?") if not fallback else cls(fallback, "?", "?", "?")


def lock_key(name: str) -> int:
    """A non-negative 63-bit advisory lock key for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


# ---- local lock file ---------------------------------------------------------------------------

class FileLock:
    kind = "local lock file"

    def __init__(self, directory: Path, name: str, holder: Holder) -> None:
        self.name, self.holder = name, holder
        self.path = directory / (hashlib.sha256(name.encode()).hexdigest()[:24] + ".lock")
        self._fd: int | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.path} ({self.name})"

    def try_acquire(self) -> Holder | None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0)
            os.close(fd)
            return Holder.decode(text)
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.holder.encode().encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


# ---- PostgreSQL advisory lock ------------------------------------------------------------------

_HOLDER = """
SELECT a.query, a.pid, a.usename, host(a.client_addr) AS addr, a.state_change::text AS since
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::bigint::oid
  AND l.objid = %s::bigint::oid AND l.objsubid = 1
"""


class PgAdvisoryLock:
    kind = "PostgreSQL advisory lock"

    def __init__(self, settings: Any, name: str, holder: Holder) -> None:
        self.settings, self.name, self.holder = settings, name, holder
        self.key = lock_key(name)
        self._conn: Any = None

    def describe(self) -> str:
        return f"{self.kind} {self.name!r} on {self.settings.describe()}"

    def try_acquire(self) -> Holder | None:
        import psycopg

        from opsctl.backends import postgres as pg

        if self._conn is None:
            self._conn = pg.connect(self.settings)
        # the comment is what a second opsctl reads in pg_stat_activity.query
        note = self.holder.encode().replace("*/", "* /").replace("%", "%%")
        try:
            got = self._conn.execute(f"SELECT pg_try_advisory_lock(%s) /* opsctl-lock {note} */",
                                     (self.key,)).fetchone()[0]
            if got:
                return None
            row = self._conn.execute(_HOLDER, (self.key >> 32, self.key & 0xFFFF_FFFF)).fetchone()
        except psycopg.Error as e:
            self.release()
            raise BackendError("postgres", f"{self.settings.describe()}: apply lock: "
                                           f"{pg.clean(str(e), self.settings.secrets)}") from None
        if row is None:  # released between the two statements: try again
            return Holder("?", "?", "?", "just released")
        query, pid, user, addr, since = row
        _, _, text = (query or "").partition("/* opsctl-lock ")
        found = Holder.decode(text.rpartition(" */")[0], fallback="")
        if found.user == "?":  # the statement is not visible to us (another role): what we can see
            found = Holder(user or "?", addr or "local socket", "?", since or "?", pid or 0)
        return found

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # a session-level advisory lock ends with its session
            self._conn = None


# ---- Redis lock with a TTL ---------------------------------------------------------------------

class RedisLock:
    kind = "Redis lock"

    def __init__(self, settings: Any, name: str, holder: Holder, ttl: float) -> None:
        self.settings, self.name, self.holder, self.ttl = settings, name, holder, ttl
        self._client: Any = None
        self._lock: Any = None

    def describe(self) -> str:
        return f"{self.kind} {self.name!r} on {self.settings.describe()} (TTL {self.ttl:.0f}s)"

    def try_acquire(self) -> Holder | None:
        import redis

        from opsctl.backends import redis as rb

        with rb.errors(self.settings):
            if self._client is None:
                self._client = rb.make_client(self.settings)
                self._lock = self._client.lock(self.name, timeout=self.ttl, blocking=False)
            try:
                acquired = self._lock.acquire(token=self.holder.encode())
            except (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError) as e:
                # a full noeviction cache (rb-010's very incident) or a replica cannot take the
                # lock key: the caller falls back to the host's lock file, the fix still applies
                raise BackendError("redis", f"cannot write the lock key on {self.settings.describe()}: "
                                            f"{str(e).splitlines()[0][:120]}") from None
            if acquired:
                return None
            return Holder.decode(self._client.get(self.name))

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(Exception):  # expired meanwhile: nothing left to release
                self._lock.release()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = self._lock = None


# ---- Kubernetes Lease --------------------------------------------------------------------------

class LeaseLock:
    kind = "Kubernetes Lease"

    def __init__(self, cfg: dict[str, Any], namespace: str, name: str, holder: Holder, ttl: float) -> None:
        self.cfg, self.namespace, self.holder, self.ttl = cfg, namespace, holder, int(max(15, ttl))
        self.name = name[:63].rstrip("-.")
        self._api: Any = None
        self._held = False

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def _body(self, resource_version: str | None = None) -> Any:
        from kubernetes import client

        now = dt.datetime.now(dt.UTC)
        meta = client.V1ObjectMeta(name=self.name, resource_version=resource_version,
                                   annotations={"opsctl/holder": self.holder.encode()})
        who = f"{self.holder.user}@{self.holder.host} {self.holder.run_id}"
        spec = client.V1LeaseSpec(holder_identity=who,
                                  lease_duration_seconds=self.ttl, acquire_time=now, renew_time=now)
        return client.V1Lease(metadata=meta, spec=spec)

    def try_acquire(self) -> Holder | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        from opsctl.backends.kubernetes import connect

        if self._api is None:
            kube = connect(self.cfg)
            self._api = (kube, client.CoordinationV1Api(kube.api_client))
        kube, api = self._api
        try:
            kube.call(api.create_namespaced_lease, self.namespace, self._body(), what="lease")
            self._held = True
            return None
        except Exception as e:  # 409: someone holds it (or held it and let it expire)
            if "conflict" not in str(e):
                raise
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace, _request_timeout=(5, 30))
        except ApiException as e:
            if e.status == 404:  # released meanwhile
                return Holder("?", "?", "?", "just released")
            raise BackendError("kubernetes", f"lease {self.namespace}/{self.name}: {e.reason}") from None
        spec = lease.spec
        renewed = spec.renew_time or spec.acquire_time
        if renewed is not None and spec.lease_duration_seconds and \
                renewed + dt.timedelta(seconds=spec.lease_duration_seconds) < dt.datetime.now(dt.UTC):
            try:  # expired: take it over, unless someone else does first (resourceVersion)
                api.replace_namespaced_lease(self.name, self.namespace,
                                             self._body(lease.metadata.resource_version),
                                             _request_timeout=(5, 30))
                self._held = True
                return None
            except ApiException:
                pass
        note = (lease.metadata.annotations or {}).get("opsctl/holder")
        found = Holder.decode(note, fallback="")
        if found.user == "?":
            found = Holder(spec.holder_identity or "?", "?", "?", str(spec.acquire_time or "?"))
        return found

    def release(self) -> None:
        if self._held and self._api is not None:
            kube, api = self._api
            with contextlib.suppress(Exception):
                api.delete_namespaced_lease(self.name, self.namespace, _request_timeout=(5, 30))
        self._held = False
        if self._api is not None:
            with contextlib.suppress(Exception):
                self._api[0].api_client.close()
        self._api = None
