"""redis.* actions against a real private redis-server, with real injected faults."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from opsctl.actions import load_all
from opsctl.actions.base import ActionContext
from opsctl.errors import ActionError, BackendError
from opsctl.testing.redis import PASSWORD, RedisServer
from tests.fixtures.core import free_port

pytestmark = pytest.mark.redis


def action(name: str, **args: Any) -> Any:
    return load_all()[name](args, ActionContext())


def run(name: str, **args: Any) -> Any:
    return action(name, **args).run()


def fill(r: RedisServer, n: int, size: int = 1000, prefix: str = "k") -> None:
    client = r.client()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"{prefix}{i}", "x" * size)
    pipe.execute(raise_on_error=False)


def test_info_memory_hit_rate_and_evictions(rds: RedisServer) -> None:
    client = rds.client()
    client.config_set("maxmemory-policy", "allkeys-random")
    fill(rds, 6000)  # 6 MB into a 4 MB cache: evictions
    for i in range(100):
        client.get(f"k{i}")
        client.get(f"missing{i}")
    result = run("redis.info")
    assert result["maxmemory"] == 4 * 1024 * 1024
    assert result["memory_pct"] > 80
    assert result["evicted_keys"] == client.info("stats")["evicted_keys"] > 0
    server = client.info("stats")
    assert result["hit_rate_pct"] == round(100 * server["keyspace_hits"] /
                                           (server["keyspace_hits"] + server["keyspace_misses"]), 2) < 95
    assert result["maxmemory_policy"] == "allkeys-random" and result["role"] == "master"


def test_info_sampled_hit_rate_is_the_window(rds: RedisServer) -> None:
    client = rds.client()
    client.set("hot", "1")
    for i in range(50):
        client.get(f"missing{i}")  # old misses, outside the window
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            client.get("hot")
            time.sleep(0.005)

    threading.Thread(target=traffic, daemon=True).start()
    try:
        result = run("redis.info", sample_seconds=0.5)
    finally:
        stop.set()
    assert result["hit_rate_pct"] == 100.0
    assert run("redis.info")["hit_rate_pct"] < 100.0  # cumulative still sees the misses


def test_clients_and_client_kill(rds: RedisServer) -> None:
    rds.block_clients(3)
    idle = rds.client()
    idle.client_setname("idle-worker")
    listed = run("redis.clients", blocked=True)
    assert listed["count"] == listed["blocked_count"] == 3
    assert all(c["cmd"] == "blpop" for c in listed["clients"])
    with pytest.raises(ActionError, match="more than max_targets=2"):
        action("redis.client_kill", blocked=True, max_targets=2).plan()
    assert rds.client().info("clients")["blocked_clients"] == 3
    kill = action("redis.client_kill", blocked=True)
    plan = kill.plan()
    assert len(plan.changes) == 3 and rds.client().info("clients")["blocked_clients"] == 3
    killed = kill.apply(plan)
    assert killed["killed_count"] == 3
    remaining = {int(c["id"]) for c in rds.client().client_list()}
    assert not remaining & set(killed["killed"])
    assert rds.client().info("clients")["blocked_clients"] == 0
    assert idle.client_getname() == "idle-worker"  # not selected, still connected
    assert load_all()["redis.client_kill"].validate_args({})  # no filter: refused


def test_bigkeys_uses_scan_never_keys(rds: RedisServer) -> None:
    fill(rds, 300, size=100)
    client = rds.client()
    client.config_set("maxmemory", "64mb")  # the 1.5 MB command buffer counts against maxmemory
    client.set("huge", "y" * 1_500_000)
    hits = client.info("stats")["keyspace_hits"], client.info("stats")["keyspace_misses"]
    result = run("redis.bigkeys", max_scan=1000, min_bytes=1_000_000)
    assert result["top"][0]["key"] == "huge" and result["big_count"] == 1
    # measuring 301 keys added no keyspace hit or miss: the hit rate others read is undisturbed
    assert (client.info("stats")["keyspace_hits"], client.info("stats")["keyspace_misses"]) == hits
    assert result["scanned"] == 301 and result["complete"] is True
    stats = client.info("commandstats")
    assert "cmdstat_scan" in stats and "cmdstat_keys" not in stats
    bounded = run("redis.bigkeys", max_scan=50)
    assert bounded["scanned"] == 50 and bounded["complete"] is False


def test_set_get_delete_flags(rds: RedisServer) -> None:
    key = "flags:checkout:circuit_breaker"
    setter = action("redis.set", key=key, value="open", ttl=300)
    plan = setter.plan()
    assert (plan.changes[0].before, plan.changes[0].after) == (None, "open")
    assert rds.client().exists(key) == 0  # plan changed nothing
    setter.apply(plan)
    got = run("redis.get", key=key)
    assert got["value"] == "open" and 0 < got["ttl"] <= 300
    assert action("redis.set", key=key, value="open").plan().empty
    stale = action("redis.set", key=key, value="closed")
    stale_plan = stale.plan()
    rds.client().set(key, "half-open")  # someone else changed it after the plan
    with pytest.raises(ActionError, match="changed since the plan"):
        stale.apply(stale_plan)
    assert rds.client().get(key) == "half-open"
    delete = action("redis.delete", keys=[key, "absent"])
    dplan = delete.plan()
    assert [(c.target, c.before) for c in dplan.changes] == [(f"key {key}", "half-open")]
    assert delete.apply(dplan)["deleted"] == 1 and rds.client().exists(key) == 0


def test_config_set_plans_old_to_new(rds: RedisServer) -> None:
    change = action("redis.config_set", parameter="maxmemory-policy", value="allkeys-lru")
    plan = change.plan()
    assert (plan.changes[0].before, plan.changes[0].after) == ("noeviction", "allkeys-lru")
    assert rds.client().config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert change.apply(plan)["after"] == "allkeys-lru"
    assert rds.client().config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    assert change.plan().empty
    cls = load_all()["redis.config_set"]
    assert cls.validate_args({"parameter": "maxmemory-policy", "value": "lru-please"})
    assert "dir" not in cls.schema["properties"]["parameter"]["enum"]


def test_unreachable_and_bad_password_are_backend_errors(monkeypatch: pytest.MonkeyPatch,
                                                         redis_server: RedisServer) -> None:
    port = free_port()
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    with pytest.raises(BackendError) as err:
        run("redis.info")
    assert f"127.0.0.1:{port}" in str(err.value) and "hunter2-secret" not in str(err.value)
    monkeypatch.setenv("REDIS_URL", f"redis://:wrong-{PASSWORD}@127.0.0.1:{redis_server.port}/0")
    with pytest.raises(BackendError, match="authentication failed") as err:
        run("redis.info")
    assert PASSWORD not in str(err.value)


def test_acl_user_without_a_command_is_a_backend_error(rds: RedisServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """NOPERM from an ACL user was an ordinary failed step (exit 1); like a PostgreSQL role without
    the privilege it is misconfiguration (exit 4), and the message says what the user needs."""
    client = rds.client()
    client.acl_setuser("cache-reader", enabled=True, passwords=["+reader-pw-1"], keys=["*"],
                       commands=["+get", "+ping", "+client"])
    try:
        monkeypatch.setenv("REDIS_URL", f"redis://cache-reader:reader-pw-1@127.0.0.1:{rds.port}/0")
        with pytest.raises(BackendError,
                           match="permission denied: .*'info'.*opsctl permissions") as err:
            run("redis.info")
        assert "reader-pw-1" not in str(err.value) and "\n" not in str(err.value)
        assert run("redis.clients", blocked=True)["count"] == 0  # what it may run still works
    finally:
        client.acl_deluser("cache-reader")


def test_write_probe_succeeds_and_leaves_nothing_behind(rds: RedisServer) -> None:
    client = rds.client()
    before = client.dbsize()
    result = run("redis.write_probe", bytes=2048)
    assert result["ok"] is True and result["error"] is None
    assert result["key"].startswith("opsctl:probe:") and result["bytes"] == 2048
    assert client.dbsize() == before and not client.exists(result["key"])


def test_write_probe_reports_oom_as_the_answer_not_a_failure(rds: RedisServer) -> None:
    fill(rds, 6000)  # a full noeviction cache: the tail of the writes failed
    result = run("redis.write_probe")
    assert result["ok"] is False and result["error"].startswith("OOM command not allowed")
    rds.client().config_set("maxmemory-policy", "allkeys-lru")
    assert run("redis.write_probe")["ok"] is True  # an evicting policy makes room


def test_info_counts_keys_with_a_ttl_and_eviction_candidates(rds: RedisServer) -> None:
    client = rds.client()
    for i in range(10):
        client.set(f"k{i}", "v")
    for i in range(3):
        client.expire(f"k{i}", 600)
    result = run("redis.info")
    assert (result["keys"], result["keys_with_ttl"]) == (10, 3)
    assert result["eviction_candidates"] == 0  # noeviction evicts nothing
    client.config_set("maxmemory-policy", "volatile-lru")
    assert run("redis.info")["eviction_candidates"] == 3
    client.config_set("maxmemory-policy", "allkeys-lfu")
    assert run("redis.info")["eviction_candidates"] == 10


@pytest.mark.parametrize(("ttls", "expected"), [
    (0, "none of the 10 keys has one: it will evict nothing"),
    (4, "4 of 10 keys have one"),
    (10, None),
])
def test_config_set_warns_when_a_volatile_policy_has_nothing_to_evict(
        rds: RedisServer, ttls: int, expected: str | None) -> None:
    client = rds.client()
    for i in range(10):
        client.set(f"k{i}", "v")
    for i in range(ttls):
        client.expire(f"k{i}", 600)
    plan = action("redis.config_set", parameter="maxmemory-policy", value="volatile-lru").plan()
    if expected is None:
        assert plan.warnings == []
    else:
        assert len(plan.warnings) == 1 and expected in plan.warnings[0]
    assert action("redis.config_set", parameter="maxmemory-policy", value="allkeys-lru").plan().warnings == []
