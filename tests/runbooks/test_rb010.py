"""rb-010 (Redis cache degradation) rehearsed through the real CLI against a private redis-server:
the cache is full under noeviction (writes fail with OOM), most reads miss, workers are blocked."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.fixtures.core import REPO, Result, free_port
from tests.servers.redis import PASSWORD, RedisServer

pytestmark = pytest.mark.redis
RUN = ("run", "rb-010", "-p", "sample_seconds=0", "-p", "blocked_idle_seconds=1")


@pytest.fixture
def cache_incident(rds: RedisServer) -> dict[str, Any]:
    client = rds.client()
    pipe = client.pipeline(transaction=False)
    for i in range(6000):  # 6 MB into a 4 MB noeviction cache: the tail of the writes fail
        pipe.set(f"product:{i}", "x" * 1000)
    pipe.execute(raise_on_error=False)
    for i in range(300):
        client.get(f"session:{i}")  # misses
    for i in range(5):
        client.get(f"product:{i}")
    rds.block_clients(2)
    time.sleep(1.1)  # blocked for longer than blocked_idle_seconds
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "x" * 1000)
    return {"keys": client.dbsize(), "blocked": blocked_ids(rds)}


def blocked_ids(rds: RedisServer) -> set[int]:
    return {int(c["id"]) for c in rds.client().client_list() if "b" in c["flags"]}


def policy(rds: RedisServer) -> str:
    return str(rds.client().config_get("maxmemory-policy")["maxmemory-policy"])


def out(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def step(report: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["id"] == step_id)


def test_dry_run_diagnoses_and_changes_nothing(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str],
        cache_incident: dict[str, Any]) -> None:
    result = opsctl(*RUN, "--dry-run", "-o", "json", env=redis_env)
    assert result.code == 0, result.output
    report = out(result)
    info = step(report, "info")["result"]
    assert info["hit_rate_pct"] < 95 and info["memory_pct"] >= 80 and info["maxmemory_policy"] == "noeviction"
    critical = {f["message"].split()[0] for f in report["findings"]
                if f["step"] == "info" and f["severity"] == "critical"}
    assert critical == {"hit", "memory"}
    changes = step(report, "eviction_policy")["plan"]["changes"]
    assert [(c["before"], c["after"]) for c in changes] == [("noeviction", "allkeys-lru")]
    assert len(step(report, "kill_blocked")["plan"]["changes"]) == 2
    assert policy(rds) == "noeviction"  # 0 settings changed
    assert rds.client().dbsize() == cache_incident["keys"]  # 0 keys changed
    assert blocked_ids(rds) == cache_incident["blocked"]  # 0 clients killed


def test_yes_switches_to_lru_and_writes_succeed(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str],
        cache_incident: dict[str, Any]) -> None:
    result = opsctl(*RUN, "--yes", "-o", "json", env=redis_env)  # no --option: the recommendation
    assert result.code == 0, result.output
    assert out(result)["option"] == ["set-eviction-policy"]
    assert policy(rds) == "allkeys-lru"
    assert rds.client().set("probe", "x" * 1000)  # was OOM before


def test_kill_blocked_clients(opsctl: Callable[..., Result], rds: RedisServer,
                              redis_env: dict[str, str], cache_incident: dict[str, Any]) -> None:
    result = opsctl(*RUN, "--yes", "--option", "kill-blocked-clients", "-o", "json", env=redis_env)
    assert result.code == 0, result.output
    assert step(out(result), "kill_blocked")["result"]["killed_count"] == 2
    alive = {int(c["id"]) for c in rds.client().client_list()}
    assert not alive & cache_incident["blocked"]
    assert policy(rds) == "noeviction"  # the other option did not run


def test_no_terminal_and_declined_refuse(opsctl: Callable[..., Result], opsctl_tty: Callable[..., Result],
                                         rds: RedisServer, redis_env: dict[str, str],
                                         cache_incident: dict[str, Any]) -> None:
    assert opsctl(*RUN, "--option", "set-eviction-policy", env=redis_env).code == 3
    assert opsctl_tty(*RUN, "--option", "set-eviction-policy", answer="n\n", env=redis_env).code == 3
    assert policy(rds) == "noeviction"


def test_unreachable_exits_4(opsctl: Callable[..., Result]) -> None:
    port = free_port()
    env = {"REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl(*RUN, "--dry-run", env=env)
    assert result.code == 4, result.output
    assert f"127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:{port}/0", "no password was given"),             # requirepass, none given
    ("redis://:{pw}@127.0.0.1:{port}/99", "DB index is out of range"),   # no such database
    ("redis://:{pw}@127.0.0.1:notaport/0", "invalid Redis URL"),         # malformed port
    ("http://:{pw}@127.0.0.1:{port}/0", "invalid Redis URL"),            # wrong scheme
])
def test_misconfigured_url_exits_4_with_one_clear_line(opsctl: Callable[..., Result],
                                                         redis_server: RedisServer, url: str,
                                                         expected: str) -> None:
    """A wrong REDIS_URL is misconfiguration (exit 4), not a failed step (exit 1) or an internal error."""
    env = {"REDIS_URL": url.format(pw=PASSWORD, port=redis_server.port),
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl(*RUN, "--dry-run", env=env)
    assert result.code == 4, result.output
    assert expected in result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert PASSWORD not in result.output


def test_sampled_hit_rate_does_not_count_opsctls_own_key_scan(opsctl: Callable[..., Result],
                                                               rds: RedisServer,
                                                               redis_env: dict[str, str]) -> None:
    """Every MEMORY USAGE of the big-key scan is a keyspace hit on the server.  The scan ran
    concurrently with the info step's sampling window, so a cache where every real read misses
    was reported at ~90 % hits and the critical finding disappeared."""
    import threading

    client = rds.client()
    pipe = client.pipeline(transaction=False)
    for i in range(2000):  # a populated keyspace (small values: well under maxmemory)
        pipe.set(f"product:{i}", "x")
    pipe.execute()
    client.config_resetstat()
    stop = threading.Event()

    def misses() -> None:  # the application's traffic during the window: all misses
        reader = rds.client()
        while not stop.is_set():
            for j in range(10):
                reader.get(f"session:{j}")
            time.sleep(0.05)

    thread = threading.Thread(target=misses, daemon=True)
    thread.start()
    try:
        result = opsctl("run", "rb-010", "--dry-run", "-p", "sample_seconds=2", "-o", "json", env=redis_env)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert result.code == 0, result.output
    report = out(result)
    assert step(report, "bigkeys")["result"]["scanned"] == 2000  # the scan did run
    assert step(report, "info")["result"]["hit_rate_pct"] == 0.0
    assert any(f["step"] == "info" and f["severity"] == "critical" and "hit rate" in f["message"]
               for f in report["findings"])


def test_no_applicable_option_is_not_verified_while_the_cache_is_degraded(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str]) -> None:
    """Full and evicting under allkeys-lru, reads missing: no option is recommended (the policy
    already evicts, nobody is blocked), mitigate is skipped, and every verify check was
    conditioned on the option, so the run said "verified" (exit 0) with the cache as bad as before."""
    client = rds.client()
    client.config_set("maxmemory-policy", "allkeys-lru")
    pipe = client.pipeline(transaction=False)
    for i in range(6000):  # 6 MB into a 4 MB cache: keys are evicted
        pipe.set(f"product:{i}", "x" * 1000)
    pipe.execute()
    for i in range(300):
        client.get(f"session:{i}")  # misses
    assert client.info("stats")["evicted_keys"] > 0
    result = opsctl(*RUN, "--yes", "-o", "json", env=redis_env)
    assert result.code == 1, result.output
    report = out(result)
    assert report["option"] is None and report["status"] == "verify_failed"
    assert report["message"].startswith("verification failed: no mitigation ran and memory is still at")
    assert policy(rds) == "allkeys-lru"  # nothing was changed
    # an option that ran is judged by what it promises, as before: the dry-run plans both
    dry = out(opsctl(*RUN, "--dry-run", "-o", "json", env=redis_env))
    assert not [f for f in dry["findings"] if f["phase"] == "verify" and "no mitigation ran" in f["message"]]


def test_a_partial_key_scan_is_not_reported_as_no_big_key(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str]) -> None:
    """max_scan stops the SCAN at 10000 keys: a 2 MB key further on went unseen and the step
    passed as "0 keys over 1 MiB"; now the incomplete scan is a warning."""
    client = rds.client()
    client.config_set("maxmemory", "64mb")
    for b in range(6):
        pipe = client.pipeline(transaction=False)
        for i in range(5000):
            pipe.set(f"p:{b}:{i}", "x")
        pipe.execute()
    client.set("huge", "y" * 2_000_000)
    result = opsctl(*RUN, "--dry-run", "-o", "json", env=redis_env)
    assert result.code == 0, result.output
    report = out(result)
    big = step(report, "bigkeys")["result"]
    assert big["scanned"] == 10000 and big["complete"] is False
    assert any(f["step"] == "bigkeys" and f["severity"] == "warning" and
               f["message"].startswith("only 10000 of 30001 keys scanned") for f in report["findings"])
