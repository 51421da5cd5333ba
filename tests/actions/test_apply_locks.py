"""The apply locks of issue 11 §3 against the real servers: a second holder is told who holds the
lock (user, host, run id, since), a released or expired lock can be taken, and a crashed holder
never blocks for good (the PostgreSQL lock ends with its session, Redis and Lease locks expire)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from opsctl.backends.locking import FileLock, Holder, LeaseLock, PgAdvisoryLock, RedisLock

ALICE = Holder("alice", "bastion-1", "20260101T000000000Z-rb-006-aaaa0001", "2026-01-01T00:00:00.000Z", 11)
BOB = Holder("bob", "laptop-2", "20260101T000001000Z-rb-006-bbbb0002", "2026-01-01T00:00:01.000Z", 22)


def test_file_lock_names_its_holder(tmp_path: Path) -> None:
    first = FileLock(tmp_path, "opsctl:rb-006:aws:prod", ALICE)
    second = FileLock(tmp_path, "opsctl:rb-006:aws:prod", BOB)
    other = FileLock(tmp_path, "opsctl:rb-007:aws:prod", BOB)
    assert first.try_acquire() is None
    assert second.try_acquire() == ALICE
    assert other.try_acquire() is None  # another runbook's lock is independent
    first.release()
    assert second.try_acquire() is None
    assert FileLock(tmp_path, "opsctl:rb-006:aws:prod", ALICE).try_acquire() == BOB
    second.release()
    other.release()


@pytest.mark.postgres
def test_postgres_advisory_lock_ends_with_its_session(pg: Any) -> None:
    from opsctl.backends import postgres as pg_backend

    settings = pg_backend.settings_from({"dsn": pg.dsn("ops", "app")})
    first = PgAdvisoryLock(settings, "opsctl:rb-006:app", ALICE)
    second = PgAdvisoryLock(settings, "opsctl:rb-006:app", BOB)
    assert first.try_acquire() is None
    assert second.try_acquire() == ALICE  # read back from pg_stat_activity through pg_locks
    assert pg.count("application_name = 'opsctl'") == 2  # never a target of a terminate
    first._conn.close()  # the holder crashed: its session, and so its lock, are gone
    first._conn = None
    deadline = time.monotonic() + 20
    while (holder := second.try_acquire()) is not None:  # the backend exits asynchronously
        assert holder != ALICE or time.monotonic() < deadline, "the lock outlived its session"
        assert time.monotonic() < deadline, holder
        time.sleep(0.1)
    second.release()


@pytest.mark.redis
def test_redis_lock_has_a_ttl(rds: Any) -> None:
    from opsctl.backends import redis as rb

    settings = rb.settings_from({"url": rds.url})
    first = RedisLock(settings, "opsctl:lock:rb-010", ALICE, ttl=1.0)
    second = RedisLock(settings, "opsctl:lock:rb-010", BOB, ttl=30.0)
    assert first.try_acquire() is None
    assert second.try_acquire() == ALICE
    client = rds.client()
    assert 0 < client.pttl("opsctl:lock:rb-010") <= 1000
    deadline = time.monotonic() + 20
    while second.try_acquire() is not None:  # the holder never released: the TTL frees it
        assert time.monotonic() < deadline, "the lock never expired"
        time.sleep(0.2)
    first.release()  # too late: must not release the new holder's lock
    assert RedisLock(settings, "opsctl:lock:rb-010", ALICE, ttl=5).try_acquire() == BOB
    second.release()
    assert client.exists("opsctl:lock:rb-010") == 0
    client.close()


@pytest.mark.k8s
def test_kubernetes_lease(k8s_cluster: Any, k8s_ns: str) -> None:
    from kubernetes import client

    cfg = {"kubeconfig": k8s_cluster.kubeconfig}
    first = LeaseLock(cfg, k8s_ns, "opsctl-rb-008", ALICE, ttl=15)
    second = LeaseLock(cfg, k8s_ns, "opsctl-rb-008", BOB, ttl=15)
    assert first.try_acquire() is None
    assert second.try_acquire() == ALICE
    core, _, _ = k8s_cluster.api()
    leases = client.CoordinationV1Api(core.api_client)
    lease = leases.read_namespaced_lease("opsctl-rb-008", k8s_ns)
    assert lease.spec.holder_identity == f"alice@bastion-1 {ALICE.run_id}"
    assert lease.spec.lease_duration_seconds == 15
    first.release()
    assert second.try_acquire() is None
    # a holder that died without releasing: once renewTime + duration is past, it is taken over
    second._held = False
    second.release()
    lease = leases.read_namespaced_lease("opsctl-rb-008", k8s_ns)
    lease.spec.renew_time = lease.spec.acquire_time = lease.spec.renew_time.replace(year=2020)
    leases.replace_namespaced_lease("opsctl-rb-008", k8s_ns, lease)
    third = LeaseLock(cfg, k8s_ns, "opsctl-rb-008", ALICE, ttl=15)
    assert third.try_acquire() is None
    assert LeaseLock(cfg, k8s_ns, "opsctl-rb-008", BOB, ttl=15).try_acquire() == ALICE
    third.release()
