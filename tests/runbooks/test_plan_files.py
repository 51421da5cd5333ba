"""Plan files (issue 11 §2) and one apply at a time (§3), rehearsed through the real CLI against a
private PostgreSQL: rb-013's root blocker (a checkout transaction holding a row lock, two billing
workers queued behind it) is planned, reviewed, and applied later, once, or refused when stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.postgres import PgServer
from tests.engine.helpers import events, run_logs
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.postgres
PARAMS = ("-p", "min_wait_seconds=1")
BLOCKED = "SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0"


def blocker(pg: PgServer, app: str = "checkout-api") -> Any:
    """A session holding a row lock in an open transaction, two workers waiting behind it."""
    with pg.connect("app") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'new') ON CONFLICT (id) DO UPDATE SET status = 'new'")
    holder = pg.open_sessions(1, app, in_transaction=True)[0]
    holder.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    return holder


@pytest.fixture
def lock_incident(pg: PgServer) -> Any:
    holder = blocker(pg)
    for i in range(2):
        pg.background(f"UPDATE orders SET status = 'billed-{i}' WHERE id = 1", "billing-worker")
    pg.wait_for(BLOCKED.replace("count(*)", "count(*) = 2"), timeout=60)
    time.sleep(1.1)  # over min_wait_seconds
    return holder


def make_plan(opsctl: Callable[..., Result], env: dict[str, str], path: Path, *extra: str) -> dict[str, Any]:
    result = opsctl("plan", "rb-013", *PARAMS, "--option", "end-blockers", "--out", str(path), *extra,
                    env=env)
    assert result.code == 0, result.output
    assert f"plan written to {path}" in result.output
    return dict(json.loads(path.read_text()))


def apply_json(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return dict(json.loads(result.stdout))


def step(doc: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in doc["steps"] if s["id"] == step_id)


def test_plan_then_apply_applies_exactly_the_plan_once(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], pg: PgServer, pg_env: dict[str, str],
        lock_incident: Any, tmp_path: Path) -> None:
    pid = lock_incident.info.backend_pid
    path = tmp_path / "plan.json"
    doc = make_plan(opsctl, pg_env, path)
    assert pg.count(f"pid = {pid}") == 1  # planning changed nothing
    assert doc["runbook"]["id"] == "rb-013" and len(doc["runbook"]["sha256"]) == 64
    assert doc["option"] == "end-blockers" and doc["digest"].startswith("sha256:")
    assert doc["params"]["min_wait_seconds"] == 1
    assert doc["diagnosis"]["locks"]["result"]["root_pids"] == [pid]
    changes = step(doc, "end_blockers")["plan"]["changes"]
    assert [c["target"] for c in changes] == [f"backend pid {pid}"]
    assert changes[0]["state"]["state"] == "idle in transaction"
    assert "idle in transaction" in changes[0]["before"]

    for fmt, marker in (("text", f"terminate backend pid {pid}"), ("markdown", f"| backend pid {pid} |")):
        shown = opsctl("show-plan", str(path), "--format", fmt, env=pg_env)
        assert shown.code == 0 and marker in shown.stdout, shown.output
        assert doc["digest"] in shown.stdout and "valid" in shown.stdout

    result = opsctl("apply", str(path), "--yes", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    out = apply_json(result)
    assert step(out, "end_blockers")["result"]["terminated"] == [pid]
    assert step(out, "locks_after")["result"]["blocked_count"] == 0
    assert pg.count(f"pid = {pid}") == 0
    pg.wait_for("SELECT status LIKE 'billed-%' FROM orders WHERE id = 1", timeout=60)
    log = events(run_logs(opsctl_env)[-1])
    assert log[0]["plan_digest"] == doc["digest"] and log[0]["run_id"] == out["run_id"]
    assert any(e["event"] == "lock" and "advisory lock" in e["lock"] for e in log)
    report = opsctl("report", out["run_id"], env=pg_env)
    assert doc["digest"] in report.stdout

    again = opsctl("apply", str(path), "--yes", env=pg_env)
    assert again.code == 3, again.output
    assert "already applied" in again.stderr and out["run_id"] in again.stderr
    shown = opsctl("show-plan", str(path), env=pg_env)
    assert f"already applied by run {out['run_id']}" in shown.stdout


def test_changed_world_makes_the_plan_stale(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], lock_incident: Any,
        tmp_path: Path) -> None:
    """Plan -> the blocker commits and another session becomes the blocker -> apply refused, naming
    what changed, and nothing terminated (the new blocker was never reviewed)."""
    old_pid = lock_incident.info.backend_pid
    path = tmp_path / "plan.json"
    make_plan(opsctl, pg_env, path)
    pg.sql("INSERT INTO orders VALUES (2, 'new') ON CONFLICT (id) DO NOTHING")
    lock_incident.execute("COMMIT")  # the old blocker ends (its waiters go through)...
    new = pg.open_sessions(1, "checkout-api-2", in_transaction=True)[0]
    new.execute("UPDATE orders SET status = 'refund' WHERE id = 2")  # ...and a new blocker appears
    pg.background("UPDATE orders SET status = 'x' WHERE id = 2", "billing-worker")
    pg.wait_for(BLOCKED.replace("count(*)", "count(*) = 1"), timeout=60)
    time.sleep(1.1)
    result = opsctl("apply", str(path), "--yes", env=pg_env)
    assert result.code == 3, result.output
    assert "stale" in result.output and f"backend pid {old_pid}" in result.output
    assert pg.count(f"pid = {new.info.backend_pid}") == 1  # not terminated: not in the plan
    assert pg.count("application_name = 'billing-worker'") >= 1


def test_before_value_change_is_refused(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], tmp_path: Path) -> None:
    """The same pid is still the root blocker but is no longer what was reviewed (another
    application name now): the drift names the before-values; its age alone is not a change."""
    holder = blocker(pg)
    pid = holder.info.backend_pid
    pg.background("UPDATE orders SET status = 'w0' WHERE id = 1", "billing-worker")
    pg.wait_for(BLOCKED.replace("count(*)", "count(*) = 1"), timeout=60)
    time.sleep(1.1)
    path = tmp_path / "plan.json"
    doc = make_plan(opsctl, pg_env, path)
    assert step(doc, "end_blockers")["plan"]["changes"][0]["state"]["application_name"] == "checkout-api"
    holder.execute("SET application_name = 'checkout-api-renamed'")
    result = opsctl("apply", str(path), "--yes", env=pg_env)
    assert result.code == 3, result.output
    assert f"backend pid {pid} changed" in result.output and "checkout-api-renamed" in result.output
    assert pg.count(f"pid = {pid}") == 1


def test_expired_tampered_and_changed_runbook_are_refused(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], lock_incident: Any,
        tmp_path: Path) -> None:
    pid = lock_incident.info.backend_pid
    path = tmp_path / "plan.json"
    make_plan(opsctl, pg_env, path, "--expires", "1s")
    time.sleep(1.5)
    result = opsctl("apply", str(path), "--yes", env=pg_env)
    assert result.code == 3 and "expired" in result.stderr, result.output

    tampered = json.loads(path.read_text())
    tampered["expires_at"] = "2999-01-01T00:00:00Z"
    path.write_text(json.dumps(tampered))
    result = opsctl("apply", str(path), "--yes", env=pg_env)
    assert result.code == 2 and "modified" in result.stderr, result.output

    rb = tmp_path / "rb-013.yaml"
    shutil.copy(REPO / "runbooks" / "rb-013-postgres-slow-queries-locks.yaml", rb)
    make_plan_path = tmp_path / "plan2.json"
    r = opsctl("plan", str(rb), *PARAMS, "--option", "end-blockers", "--out", str(make_plan_path), env=pg_env)
    assert r.code == 0, r.output
    rb.write_text(rb.read_text().replace("max_targets: {type: integer, default: 10",
                                         "max_targets: {type: integer, default: 11"))
    result = opsctl("apply", str(make_plan_path), "--yes", env=pg_env)
    assert result.code == 3 and "changed since the plan" in result.stderr, result.output
    assert pg.count(f"pid = {pid}") == 1  # none of the refusals changed anything


def test_a_held_lock_names_its_holder_and_refuses(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], lock_incident: Any,
        tmp_path: Path) -> None:
    """Another apply of rb-013 on this database holds the advisory lock: the second one waits,
    says who holds it, and is refused when the wait ends; then it goes through once released."""
    from opsctl.backends.locking import Holder, lock_key

    pid = lock_incident.info.backend_pid
    path = tmp_path / "plan.json"
    make_plan(opsctl, pg_env, path)
    other = Holder("alice", "bastion-1", "20260101T000000000Z-rb-013-cafe0001", "2026-01-01T00:00:00Z")
    conn = pg.connect("ops", "app", autocommit=True)
    try:
        conn.execute(f"SELECT pg_advisory_lock(%s) /* opsctl-lock {other.encode()} */",
                     (lock_key("opsctl:rb-013:app"),))
        result = opsctl("apply", str(path), "--yes", "--lock-wait", "1", env=pg_env)
        assert result.code == 3, result.output
        assert "alice@bastion-1" in result.output and other.run_id in result.output
        assert pg.count(f"pid = {pid}") == 1
    finally:
        conn.close()
    result = opsctl("apply", str(path), "--yes", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    assert step(apply_json(result), "end_blockers")["result"]["terminated"] == [pid]


def test_two_concurrent_applies_terminate_once(
        opsctl_env: dict[str, str], pg: PgServer, pg_env: dict[str, str], tmp_path: Path) -> None:
    """Two engineers run rb-006's kill at the same moment: the advisory lock serialises them and
    the second re-plans after taking it: only one run reports terminations."""
    pg.open_sessions(6, "checkout-api", in_transaction=True)
    time.sleep(1.1)
    before = pg.count("application_name = 'checkout-api'")
    assert before == 6
    cmd = [sys.executable, "-m", "opsctl", "run", "rb-006", "-p", "idle_in_transaction_seconds=1",
           "-p", "application_name=checkout-*", "--yes", "--option", "kill-long-queries", "-o", "json"]
    env = {**opsctl_env, **pg_env}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    docs = [json.loads(o) for o, _ in outs]
    assert [p.returncode for p in procs] == [0, 0], outs
    killed = [step(d, "kill_sessions").get("result") or {} for d in docs]
    counts = sorted(k.get("terminated_count", 0) for k in killed)
    assert counts == [0, 6], (killed, [step(d, "kill_sessions")["status"] for d in docs])
    assert sum(1 for d in docs if step(d, "kill_sessions")["status"] == "applied") >= 1
    assert pg.count("application_name = 'checkout-api'") == 0
    assert len({d["run_id"] for d in docs}) == 2


def test_two_concurrent_applies_of_one_plan_file_apply_it_once(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], pg: PgServer, pg_env: dict[str, str],
        lock_incident: Any, tmp_path: Path) -> None:
    """Two engineers apply the same approved plan at the same moment: one terminates the blocker,
    the other (which waited for the advisory lock) is refused, naming the run that applied it."""
    pid = lock_incident.info.backend_pid
    path = tmp_path / "plan.json"
    make_plan(opsctl, pg_env, path)
    cmd = [sys.executable, "-m", "opsctl", "apply", str(path), "--yes", "-o", "json"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env={**opsctl_env, **pg_env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    by_code = {p.returncode: json.loads(out) for p, (out, _) in zip(procs, outs, strict=True)}
    assert sorted(by_code) == [0, 3], outs
    winner, loser = by_code[0], by_code[3]
    assert step(winner, "end_blockers")["result"]["terminated"] == [pid]
    assert f"already applied by run {winner['run_id']}" in loser["message"], loser["message"]
    assert step(loser, "end_blockers").get("result") is None
    assert pg.count(f"pid = {pid}") == 0
