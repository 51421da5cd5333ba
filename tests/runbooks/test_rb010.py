"""rb-010 (Redis cache degradation) rehearsed through the real CLI against a private redis-server:
the cache is full under noeviction (writes fail with OOM), most reads miss, workers are blocked."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from opsctl.testing.proxy import TcpProxy
from opsctl.testing.redis import PASSWORD, RedisServer
from tests.fixtures.core import REPO, Result, free_port
from tests.timing import budget

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


# ==== fault matrix (issue 9) ==========================================================================
# Every cell is rehearsed end to end through the CLI against the real redis-server (or a real
# socket that plays the fault), or says why it cannot apply to this runbook.

FAULTS = ("dead", "hung", "slow", "denied_optional", "denied_required", "ordinary_role", "scope",
          "converges_slowly", "does_not_work", "interrupted_resume")
MATRIX: dict[str, tuple[str, str]] = {
    # cell: ("test", test function) | ("n/a", why it cannot apply)
    "dead": ("test", "test_matrix_dead_server_exits_4_before_any_change"),
    "hung": ("test", "test_matrix_hung_server_costs_one_deadline_and_exits_4"),
    "slow": ("test", "test_matrix_slow_server_answering_late_is_diagnosed"),
    "denied_optional": ("test", "test_matrix_optional_probe_denied_is_a_warning_and_the_run_goes_on"),
    "denied_required": ("test", "test_matrix_required_probe_denied_exits_4_naming_it"),
    "ordinary_role": ("test", "test_matrix_ordinary_role_diagnoses_and_stops_at_the_plan_with_exit_4"),
    "scope": ("test", "test_matrix_scope_recently_blocked_clients_are_excluded"),
    "converges_slowly": ("test", "test_matrix_fix_that_converges_slowly_is_verified"),
    "does_not_work": ("test", "test_matrix_volatile_policy_without_ttls_warns_and_fails_verify"),
    "interrupted_resume": ("test", "test_matrix_interrupted_after_the_change_resumes_without_redoing_it"),
}
# Notes on what the cells cannot cover here: rb-010 declares no target-scope parameter (one Redis
# instance is the unit); its blast-radius filters (blocked_idle_seconds, max_clients) are the scope
# cell.  Its mutations are single atomic commands (CONFIG SET; one CLIENT KILL ID per client, each
# re-checked): an interruption cannot cut one in half, so the interruption cell cuts the run between
# the change and its verification and resumes it.


def test_matrix_every_cell_is_tested_or_explained() -> None:
    assert set(MATRIX) == set(FAULTS)
    for cell, (kind, what) in MATRIX.items():
        assert kind in ("test", "n/a"), cell
        if kind == "test":
            assert callable(globals().get(what)), f"{cell}: no test named {what}"
        else:
            assert len(what) > 20, f"{cell}: say why it cannot apply"


def _acl_url(rds: RedisServer, user: str, rules: list[str]) -> str:
    rds.client().acl_setuser(user, enabled=True, passwords=["+user-pw-1"], keys=["*"], channels=["*"],
                             commands=rules, reset=True)
    return f"redis://{user}:user-pw-1@127.0.0.1:{rds.port}/0"


@pytest.fixture
def acl(rds: RedisServer) -> Any:
    made: list[str] = []

    def make(user: str, rules: list[str]) -> str:
        made.append(user)
        return _acl_url(rds, user, rules)

    yield make
    for user in made:
        rds.client().acl_deluser(user)


def _env(url: str) -> dict[str, str]:
    return {"REDIS_URL": url, "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}


def test_matrix_dead_server_exits_4_before_any_change(opsctl: Callable[..., Result]) -> None:
    port = free_port()
    t0 = time.monotonic()
    result = opsctl(*RUN, "--yes", "--option", "set-eviction-policy", env=_env(
        f"redis://:{PASSWORD}@127.0.0.1:{port}/0"))
    assert result.code == 4, result.output
    assert f"cannot reach 127.0.0.1:{port}" in result.output
    assert time.monotonic() - t0 < budget(60) and "Traceback" not in result.output
    assert PASSWORD not in result.output


def test_matrix_hung_server_costs_one_deadline_and_exits_4(opsctl: Callable[..., Result],
                                                           silent_server: Any) -> None:
    """Accepts TCP, never answers: one socket timeout (10 s), not one per step or per attempt,
    and exit 4 (unreachable), not 1 after the watchdog abandoned the step."""
    t0 = time.monotonic()
    result = opsctl(*RUN, "--yes", "--option", "set-eviction-policy", "-o", "json", env=_env(
        f"redis://:{PASSWORD}@127.0.0.1:{silent_server.port}/0"))
    took = time.monotonic() - t0
    assert result.code == 4, result.output
    report = out(result)
    assert report["status"] == "backend_error" and "Timeout" in report["message"]
    assert step(report, "eviction_policy")["status"] == "not_run"  # nothing was planned or sent
    assert took < budget(60), took  # info's own timeout is 60 s; the socket timeout (10 s) comes first


def test_matrix_slow_server_answering_late_is_diagnosed(
        opsctl: Callable[..., Result], rds: RedisServer, cache_incident: dict[str, Any]) -> None:
    proxy = TcpProxy(rds.port, 7.0, first_only=True)  # 7 s of the client's 10 s socket timeout
    try:
        result = opsctl(*RUN, "--dry-run", "-o", "json", env=_env(
            f"redis://:{PASSWORD}@127.0.0.1:{proxy.port}/0"))
    finally:
        proxy.close()
    assert result.code == 0, result.output
    report = out(result)
    assert step(report, "info")["result"]["maxmemory_policy"] == "noeviction"
    assert [(c["before"], c["after"]) for c in step(report, "eviction_policy")["plan"]["changes"]] == \
        [("noeviction", "allkeys-lru")]
    assert policy(rds) == "noeviction"


def test_matrix_optional_probe_denied_is_a_warning_and_the_run_goes_on(
        opsctl: Callable[..., Result], rds: RedisServer, acl: Any, cache_incident: dict[str, Any]) -> None:
    url = acl("ops-noslowlog", ["+@all", "-slowlog"])
    result = opsctl(*RUN, "--yes", "--option", "set-eviction-policy", "-o", "json", env=_env(url))
    assert result.code == 0, result.output
    report = out(result)
    slow = step(report, "slowlog")
    assert slow["status"] == "failed" and "permission denied" in slow["reason"]
    warnings = [f["message"] for f in report["findings"] if f["step"] == "slowlog"]
    assert warnings and warnings[0].startswith("Slow commands could not run (optional, the run goes on)")
    assert policy(rds) == "allkeys-lru" and report["message"] == "verified"
    assert "user-pw-1" not in result.output


def test_matrix_required_probe_denied_exits_4_naming_it(
        opsctl: Callable[..., Result], rds: RedisServer, acl: Any, cache_incident: dict[str, Any]) -> None:
    url = acl("ops-noinfo", ["+@all", "-info"])
    result = opsctl(*RUN, "--yes", "--option", "set-eviction-policy", env=_env(url))
    assert result.code == 4, result.output
    assert "permission denied" in result.output and "'info'" in result.output.lower()
    assert policy(rds) == "noeviction"  # nothing was changed
    assert "Traceback" not in result.output and "user-pw-1" not in result.output


def test_matrix_ordinary_role_diagnoses_and_stops_at_the_plan_with_exit_4(
        opsctl: Callable[..., Result], rds: RedisServer, acl: Any, cache_incident: dict[str, Any]) -> None:
    """The application's own user (reads, writes, INFO; no admin commands: no CONFIG, no CLIENT
    LIST/KILL, no SLOWLOG): the diagnosis reports what it can see, the optional probes degrade to
    warnings, and the run stops with exit 4 naming the permission the operator lacks, before any
    change."""
    url = acl("app", ["+@all", "-@admin", "-@dangerous", "+info", "+memory", "+scan", "+type"])
    result = opsctl(*RUN, "--yes", "--option", "set-eviction-policy", "-o", "json", env=_env(url))
    assert result.code == 4, result.output
    report = out(result)
    assert step(report, "info")["status"] == "ok"  # the incident is still described
    assert "permission denied" in report["message"]
    assert "+config" in report["message"] or "+client" in report["message"]
    assert policy(rds) == "noeviction"


def test_matrix_scope_recently_blocked_clients_are_excluded(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str]) -> None:
    import threading

    rds.block_clients(2, key="old-jobs")
    old = blocked_ids(rds)
    time.sleep(8.5)  # these two are blocked for longer than blocked_idle_seconds=8
    # a worker that blocks in BLPOP for 1 s at a time: blocked too, but never idle for long
    worker = rds.client(socket_timeout=None)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                worker.blpop("new-jobs", timeout=1)

    threading.Thread(target=poll, daemon=True).start()
    fresh_id = -1
    deadline = time.monotonic() + 30
    while fresh_id < 0 and time.monotonic() < deadline:
        fresh = blocked_ids(rds) - old
        fresh_id = fresh.pop() if fresh else -1
    result = opsctl("run", "rb-010", "-p", "sample_seconds=0", "-p", "blocked_idle_seconds=8", "--yes",
                    "--option", "kill-blocked-clients", "-o", "json", env=redis_env)
    assert result.code == 0, result.output
    report = out(result)
    planned = step(report, "kill_blocked")["plan"]["changes"]
    assert len(planned) == 2 and all(str(fresh_id) not in c["target"] for c in planned)
    alive = {int(c["id"]) for c in rds.client().client_list()}
    stop.set()
    assert fresh_id in alive and not alive & old


def _apply_ttls_when(rds: RedisServer, policy_name: str, delay: float) -> Any:
    """The application, a moment after the policy switch, starts giving its keys a TTL."""
    import threading

    def work() -> None:
        client = rds.client()
        deadline = time.monotonic() + 120
        while policy(rds) != policy_name and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter("product:*", count=1000):
            pipe.expire(key, 3600)
        pipe.execute()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


def test_matrix_fix_that_converges_slowly_is_verified(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str],
        cache_incident: dict[str, Any]) -> None:
    app = _apply_ttls_when(rds, "volatile-lru", delay=3.0)
    result = opsctl(*RUN, "--yes", "--option", "set-eviction-policy", "-p", "eviction_policy=volatile-lru",
                    "-o", "json", env=redis_env)
    app.join(timeout=60)
    assert result.code == 0, result.output
    report = out(result)
    probe = step(report, "writes_succeed")
    assert probe["status"] == "ok" and probe["result"]["ok"] is True
    assert probe["attempts"] >= 2  # it waited for the cache to converge, and said so
    assert report["message"] == "verified"
    assert rds.client().set("probe-after", "x" * 1000)  # writes really succeed now
    assert not [k for k in rds.client().scan_iter("opsctl:probe:*")]  # the scratch key is gone


def test_matrix_volatile_policy_without_ttls_warns_and_fails_verify(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str],
        cache_incident: dict[str, Any]) -> None:
    """Defect 1a: volatile-lru on a full noeviction cache whose keys have no TTL evicts nothing;
    the run said "verified" (it only checked that the policy changed) while every write still
    failed with OOM.  Now the plan warns, and verify proves writes fail: exit 1 after the window."""
    dry = out(opsctl(*RUN, "--dry-run", "--option", "set-eviction-policy", "-p",
                     "eviction_policy=volatile-lru", "-o", "json", env=redis_env))
    warnings = step(dry, "eviction_policy")["plan"]["warnings"]
    assert warnings and "none of the" in warnings[0] and "evict nothing" in warnings[0]
    t0 = time.monotonic()
    result = opsctl(*RUN, "--yes", "--option", "set-eviction-policy", "-p", "eviction_policy=volatile-lru",
                    "-p", "verify_window=3s", "-o", "json", env=redis_env)
    took = time.monotonic() - t0
    assert result.code == 1, result.output
    report = out(result)
    assert report["status"] == "verify_failed"
    assert report["message"].startswith("verification failed: writes still fail: OOM")
    assert "still so after" in report["message"]
    assert step(report, "writes_succeed")["attempts"] >= 2
    assert policy(rds) == "volatile-lru"  # the change was made: it is the fix that does not work
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        rds.client().set("probe", "x" * 1000)
    assert took < budget(120)
    # the finding counts the keys (`result.keys` is the result's value, not dict.keys: QA)
    messages = [f["message"] for s in report["steps"] for f in s.get("findings") or ()]
    ttl = [m for m in messages if "keys have a TTL" in m]
    assert ttl and all(re.search(r"\(0 of \d+ keys have a TTL\)", m) for m in ttl), ttl


def test_matrix_interrupted_after_the_change_resumes_without_redoing_it(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], rds: RedisServer,
        redis_env: dict[str, str], cache_incident: dict[str, Any]) -> None:
    import signal
    import subprocess
    import sys

    from tests.engine.helpers import events, run_logs, step_started
    from tests.fixtures.postgres import wait_until

    args = [*RUN, "--yes", "--option", "set-eviction-policy", "-p", "eviction_policy=volatile-lru", "-o",
            "json"]
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", *args], env={**opsctl_env, **redis_env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        # the change is made; verify waits for writes to work
        wait_until(lambda: proc.poll() is not None or step_started(opsctl_env, "writes_succeed"), 120,
                   "verify started")
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + \
            "".join(proc.communicate(timeout=60))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout + stderr
    first = out(Result(130, stdout, stderr))
    assert step(first, "eviction_policy")["status"] == "applied"
    first_id = first["run_id"]
    assert policy(rds) == "volatile-lru"
    config_sets = int(rds.client().info("commandstats").get("cmdstat_config|set", {}).get("calls", 0))
    # meanwhile the application gives its keys a TTL: the resumed run's verify sees writes work
    client = rds.client()
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter("product:*", count=1000):
        pipe.expire(key, 3600)
    pipe.execute()
    result = opsctl(*args, "--resume", first_id, env=redis_env)
    assert result.code == 0, result.output
    resumed = out(result)
    assert step(resumed, "eviction_policy")["reused_from"] == first_id  # not applied again
    assert step(resumed, "writes_succeed")["status"] == "ok"
    after = int(rds.client().info("commandstats").get("cmdstat_config|set", {}).get("calls", 0))
    assert after == config_sets  # nothing doubled: no second CONFIG SET
    second_log = [p for p in run_logs(opsctl_env) if first_id not in p.name][0]
    assert not [e for e in events(second_log) if e["event"] == "apply_start"]


# ==== issue 14: connections against maxclients; raising maxmemory ====================================

def test_raise_maxmemory_is_explicit_raises_only_and_verifies(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str],
        cache_incident: dict[str, Any]) -> None:
    """The full noeviction cache (4 MB): raising maxmemory to 64 MB lets writes through, verified by a
    probe write and memory under memory_pct of the new limit; a value that does not raise it is
    refused in the plan; without -p new_maxmemory the option is exit 2 before any change."""
    bare = opsctl(*RUN, "--yes", "--option", "raise-maxmemory", env=redis_env)
    assert bare.code == 2 and "needs new_maxmemory" in bare.stderr
    lower = opsctl(*RUN, "--yes", "--option", "raise-maxmemory", "-p", "new_maxmemory=2mb", env=redis_env)
    assert lower.code == 1 and "does not raise the current limit" in " ".join(lower.output.split())
    assert rds.client().config_get("maxmemory")["maxmemory"] == str(4 * 1024 * 1024)
    # not a size, or one redis would clamp to 2^64-1 (it said "verified" with an unplanned value):
    # bad input, exit 2, nothing changed (QA)
    for bad in ("abc", "1.5gb", "999999999999999999999999gb"):
        refused = opsctl(*RUN, "--yes", "--option", "raise-maxmemory", "-p", f"new_maxmemory={bad}",
                         env=redis_env)
        assert refused.code == 2 and "is not a memory size" in refused.output, refused.output
    assert rds.client().config_get("maxmemory")["maxmemory"] == str(4 * 1024 * 1024)
    result = opsctl(*RUN, "--yes", "--option", "raise-maxmemory", "-p", "new_maxmemory=64mb", "-o", "json",
                    env=redis_env)
    assert result.code == 0, result.output
    report = out(result)
    change = step(report, "raise_maxmemory")["plan"]["changes"][0]
    assert (change["before"], change["after"]) == (str(4 * 1024 * 1024), str(64 * 1024 * 1024))
    assert step(report, "writes_succeed")["result"]["ok"] is True
    assert rds.client().config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
    assert policy(rds) == "noeviction" and rds.client().set("probe", "x" * 1000)


def test_connections_near_maxclients_and_refused_ones_are_found(
        opsctl: Callable[..., Result], rds: RedisServer, redis_env: dict[str, str]) -> None:
    """The application's pools fill maxclients: the next connection is refused (rejected_connections),
    which INFO alone shows; the diagnosis reports both, and names the limit."""
    admin = rds.client()
    limit = len(admin.client_list()) + 20
    admin.config_set("maxclients", limit)
    pools: list[Any] = []
    try:
        while len(pools) < 30:
            conn = rds.client()
            try:
                conn.ping()
            except redis.exceptions.ConnectionError:  # ERR max number of clients reached
                break
            pools.append(conn)
        assert admin.info("stats")["rejected_connections"] >= 1
        for conn in pools[:4]:  # room for opsctl's own connections
            conn.close()
        result = opsctl(*RUN, "--dry-run", "-o", "json", env=redis_env)
        assert result.code == 0, result.output
        info = step(out(result), "info")
        assert info["result"]["maxclients"] == limit and info["result"]["clients_pct"] >= 80
        messages = {f["severity"]: f["message"] for f in info["findings"]}
        assert "connections refused (maxclients" in messages["critical"]
        assert f"of maxclients {limit} connections" in messages["warning"]
    finally:
        for conn in pools:
            conn.close()
        admin.config_set("maxclients", 10000)
