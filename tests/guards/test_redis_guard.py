"""The Redis read-only guard against a real redis-server: every read-only action and plan() works on
the guarded client; a write from read-only code (direct, in a pipeline, in a MULTI) is refused before
it is sent, and apply()'s client in the same run is another object that writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opsctl.actions import load_all
from opsctl.actions.base import ActionContext
from opsctl.actions.redis import RedisAction
from opsctl.backends import redis as rb
from opsctl.backends.readonly import redis_check
from opsctl.errors import ReadOnlyViolation
from opsctl.records import Plan
from opsctl.testing.redis import RedisServer
from tests.guards.helpers import assert_covers, extra_actions, guarded, record, run_engine

pytestmark = pytest.mark.redis

READ_ONLY: dict[str, dict[str, Any]] = {
    "redis.bigkeys": {"min_bytes": 100},
    "redis.clients": {"min_idle_seconds": 0},
    "redis.get": {"key": "flag"},
    "redis.info": {"sample_seconds": 0.2},
    "redis.slowlog": {"count": 5},
    "redis.write_probe": {"bytes": 64},  # SET + DEL of its own opsctl:probe:* scratch key only
}
PLANS: dict[str, dict[str, Any]] = {
    "redis.client_kill": {"name": "victim"},
    "redis.config_set": {"parameter": "maxmemory-policy", "value": "allkeys-lru"},
    "redis.delete": {"keys": ["k1", "k2"]},
    "redis.set": {"key": "flag", "value": "closed"},
}


def test_the_tables_cover_every_registered_redis_action() -> None:
    assert_covers(READ_ONLY, "redis", read_only=True)
    assert_covers(PLANS, "redis", read_only=False)


@pytest.fixture
def world(rds: RedisServer) -> Any:
    client = rds.client()
    client.set("flag", "open")
    client.mset({"k1": "x" * 500, "k2": "y" * 500})
    victim = rds.client()
    victim.client_setname("victim")
    victim.ping()
    client.config_set("slowlog-log-slower-than", "0")  # every command lands in the slowlog
    yield client
    victim.close()


def _state(client: Any) -> tuple[Any, ...]:
    return (client.get("flag"), client.exists("k1", "k2"), client.config_get("maxmemory-policy"),
            sorted(c["name"] for c in client.client_list() if c["name"] not in ("", "opsctl")))


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_every_read_only_action_works_under_the_guard(name: str, world: Any) -> None:
    before = _state(world)
    result = load_all()[name](READ_ONLY[name], guarded()).run()
    assert isinstance(result, dict) and result
    assert _state(world) == before


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_plan_works_under_the_guard_and_apply_is_not_guarded(name: str, world: Any) -> None:
    clients: dict[str, Any] = {}
    cls, before = load_all()[name], _state(world)
    plan = cls(PLANS[name], guarded(clients=clients)).plan()
    assert isinstance(plan, Plan) and plan.changes
    assert _state(world) == before
    cls(PLANS[name], ActionContext(clients=clients)).apply(plan)
    assert _state(world) != before


@pytest.mark.parametrize("write, command", [
    (lambda c: c.set("flag", "closed"), "SET"),
    (lambda c: c.delete("k1"), "DEL"),
    (lambda c: c.config_set("maxmemory-policy", "allkeys-lru"), "CONFIG SET"),
    (lambda c: c.execute_command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"), "CONFIG SET"),
    (lambda c: c.client_kill_filter(_id=1), "CLIENT KILL"),
    (lambda c: c.flushall(), "FLUSHALL"),
    (lambda c: c.slowlog_reset(), "SLOWLOG RESET"),
    (lambda c: c.eval("return redis.call('set', 'flag', 'x')", 0), "EVAL"),
    (lambda c: c.publish("ch", "x"), "PUBLISH"),
    (lambda c: c.pipeline(transaction=False).get("flag").set("flag", "x").execute(), "SET"),
    (lambda c: c.transaction(lambda p: p.delete("k1"), "k1"), "DEL"),
    (lambda c: c.pubsub(), "SUBSCRIBE"),
    (lambda c: c.execute_command("SELECT", 1), "SELECT"),
    (lambda c: c.execute_command(b"CONFIG", b"SET", b"maxmemory", b"1"), "CONFIG SET"),  # named as sent
    (lambda c: c.register_script("return redis.call('del', 'k1')")(), "EVALSHA"),
    (lambda c: c.lock("opsctl-test-lock").acquire(blocking=False), "SET"),
])
def test_a_guarded_client_refuses_writes_before_sending(write: Any, command: str, world: Any) -> None:
    before = _state(world)
    client = rb.client_for(guarded(), rb.settings_from({}))
    with pytest.raises(ReadOnlyViolation, match=f"read-only guard: redis refused {command}"):
        write(client)
    assert _state(world) == before


def test_guarded_and_writable_clients_are_different_objects_on_one_pool(world: Any) -> None:
    clients: dict[str, Any] = {}
    settings = rb.settings_from({})
    ro = rb.client_for(guarded(clients=clients), settings)
    rw = rb.client_for(ActionContext(clients=clients), settings)
    assert ro is not rw and ro.connection_pool is rw.connection_pool
    assert ro.get("flag") == "open"
    rw.set("flag", "closed")
    assert ro.get("flag") == "closed"
    with pytest.raises(ReadOnlyViolation):
        ro.set("flag", "open")


class SetFromRun(RedisAction):
    name = "guardtest.redis_set"
    summary = "test"

    def run(self) -> Any:
        return {"set": self.call(lambda c: c.set("flag", "closed"))}


def test_a_read_only_step_that_writes_fails_and_the_flag_is_unchanged(
        world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runbook = tmp_path / "rb-970-redis.yaml"
    runbook.write_text("id: rb-970\ntitle: t\nseverity: P4\nsummary: t\ndiagnose:\n"
                       "  - id: bad\n    action: guardtest.redis_set\n")
    with extra_actions(SetFromRun):
        outcome = run_engine(runbook, monkeypatch, tmp_path / "state")
    bad = record(outcome, "bad")
    assert (outcome.exit_code, bad.status) == (1, "failed")
    assert "read-only guard: redis refused SET" in bad.reason
    assert world.get("flag") == "open"


@pytest.mark.parametrize("args, allowed", [
    (("GET", "k"), True), (("SCAN", 0), True), (("MEMORY USAGE", "k"), True), (("CLIENT LIST",), True),
    (("CONFIG", "GET", "maxmemory"), True), (("SLOWLOG GET", 10), True), (("INFO", "all"), True),
    (("SLOWLOG RESET",), False), (("CONFIG REWRITE",), False), (("CLIENT", "PAUSE", 100), False),
    (("SHUTDOWN",), False), (("DEBUG", "SLEEP", 1), False), (("SCRIPT", "FLUSH"), False),
    (("GETDEL", "k"), False), (("SORT", "k"), False), (("PFCOUNT", "k"), False),
])
def test_the_command_allow_list(args: tuple[Any, ...], allowed: bool) -> None:
    if allowed:
        redis_check(args)
    else:
        with pytest.raises(ReadOnlyViolation):
            redis_check(args)
