"""rb-013 (slow queries and locks) rehearsed through the real CLI against a private PostgreSQL:
a checkout transaction left open holding a row lock, billing workers queued behind it."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.postgres import PASSWORDS, PgServer, TcpProxy
from tests.engine.helpers import step_started
from tests.fixtures.core import REPO, Result, SilentServer, free_port
from tests.fixtures.postgres import check_matrix, run_in_background, wait_until
from tests.timing import budget

pytestmark = pytest.mark.postgres
RUN = ("run", "rb-013", "-p", "min_wait_seconds=1")
BLOCKED = "SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0"


@pytest.fixture
def lock_incident(pg: PgServer) -> int:
    with pg.connect("app") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'new') ON CONFLICT (id) DO UPDATE SET status = 'new'")
    holder = pg.open_sessions(1, "checkout-api", in_transaction=True)[0]
    holder.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    for i in range(2):
        pg.background(f"UPDATE orders SET status = 'billed-{i}' WHERE id = 1", "billing-worker")
    pg.wait_for(f"{BLOCKED.replace('count(*)', 'count(*) = 2')}")
    time.sleep(1.1)  # over min_wait_seconds
    return int(holder.info.backend_pid)


def out(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def step(report: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["id"] == step_id)


def test_dry_run_finds_the_root_blocker_and_changes_nothing(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], lock_incident: int) -> None:
    result = opsctl(*RUN, "--dry-run", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    report = out(result)
    locks = step(report, "locks")["result"]
    assert locks["blocked_count"] == 2 and locks["root_pids"] == [lock_incident]
    assert ("locks", "critical") in {(f["step"], f["severity"]) for f in report["findings"]}
    plan = step(report, "end_blockers")["plan"]
    assert [c["target"] for c in plan["changes"]] == [f"backend pid {lock_incident}"]
    assert pg.sql(BLOCKED)[0][0] == 2 and pg.count(f"pid = {lock_incident}") == 1


def test_yes_takes_the_recommended_option_and_unblocks(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], lock_incident: int) -> None:
    result = opsctl(*RUN, "--yes", "-o", "json", env=pg_env)  # no --option: the recommendation
    assert result.code == 0, result.output
    report = out(result)
    assert report["option"] == ["end-blockers"]
    assert step(report, "end_blockers")["result"]["terminated"] == [lock_incident]
    assert step(report, "locks_after")["result"]["blocked_count"] == 0
    assert pg.count(f"pid = {lock_incident}") == 0
    pg.wait_for("SELECT status LIKE 'billed-%' FROM orders WHERE id = 1")  # the queue drained


def test_no_terminal_refuses(opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str],
                             lock_incident: int) -> None:
    result = opsctl(*RUN, "--option", "end-blockers", env=pg_env)
    assert result.code == 3, result.output
    assert pg.sql(BLOCKED)[0][0] == 2 and pg.count(f"pid = {lock_incident}") == 1


def test_declined_refuses(opsctl_tty: Callable[..., Result], pg: PgServer, pg_env: dict[str, str],
                          lock_incident: int) -> None:
    result = opsctl_tty(*RUN, "--option", "end-blockers", answer="n\n", env=pg_env)
    assert result.code == 3, result.output
    assert pg.count(f"pid = {lock_incident}") == 1


def test_cancel_slow_queries_keeps_sessions(opsctl: Callable[..., Result], pg: PgServer,
                                            pg_env: dict[str, str]) -> None:
    pg.background("SELECT pg_sleep(60)", "report-job")
    pg.wait_for("SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'report-job' "
                "AND state = 'active'")
    time.sleep(1.1)
    result = opsctl(*RUN, "-p", "long_query_seconds=1", "--yes", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    assert out(result)["option"] == ["cancel-slow-queries"]
    pg.wait_for("SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'report-job' "
                "AND state = 'active'")
    assert pg.count("application_name = 'report-job'") == 1


def test_statement_timeout_guard_is_explicit(opsctl: Callable[..., Result], pg: PgServer,
                                             pg_env: dict[str, str]) -> None:
    result = opsctl(*RUN, "--yes", "--option", "statement-timeout", "-p", "role=app", "-p", "database=app",
                    "-p", "statement_timeout=20s", env=pg_env)
    assert result.code == 0, result.output
    rows = pg.sql("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                  "WHERE r.rolname = 'app'")
    assert rows == [(["statement_timeout=20s"],)]


def test_statement_timeout_without_a_role_is_invalid_not_verified(opsctl: Callable[..., Result], pg: PgServer,
                                                                   pg_env: dict[str, str]) -> None:
    """The option chosen explicitly without -p role: the step used to be skipped and the run
    reported "verified" (exit 0) with nothing changed.  Now it is a parameter error (exit 2)."""
    result = opsctl(*RUN, "--yes", "--option", "statement-timeout", env=pg_env)
    assert result.code == 2, result.output
    assert "role" in result.output and "verified" not in result.output
    assert pg.sql("SELECT count(*) FROM pg_db_role_setting")[0][0] == 0  # nothing changed
    dry = opsctl(*RUN, "--dry-run", env=pg_env)  # a dry-run plans every option: still fine without one
    assert dry.code == 0, dry.output


# ---- issue 9: convergence, scope, faults ----------------------------------------------------------
@pytest.mark.parametrize(("waiters", "hold"), [(3, 3.0), (6, 2.5)])
def test_verify_waits_for_the_queue_to_drain(opsctl: Callable[..., Result], pg: PgServer,
                                             pg_env: dict[str, str], waiters: int, hold: float) -> None:
    """Defect 2: the root blocker was terminated and verify looked 1-5 ms later, saw the waiters
    still queued and said "verification failed" (exit 1) after a fix that worked.  Here each
    waiter, once it has the lock, holds it for a few seconds: the queue drains over ~9 s, or ~15 s
    with six (longer than the 8 retries x 1 s verify once gave it: exit 1 then), and verify polls
    within its window (verify_window) until it has (converges slowly -> exit 0)."""
    with pg.connect("app") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'new') ON CONFLICT (id) DO UPDATE SET status = 'new'")
    holder = pg.open_sessions(1, "checkout-api", in_transaction=True)[0]
    holder.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    for i in range(waiters):
        pg.background(f"BEGIN; UPDATE orders SET status = 'billed-{i}' WHERE id = 1; "
                      f"SELECT pg_sleep({hold}); COMMIT", "billing-worker")
    pg.wait_for(BLOCKED.replace("count(*)", f"count(*) = {waiters}"))
    time.sleep(1.1)
    result = opsctl(*RUN, "--yes", "--option", "end-blockers", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    report = out(result)
    assert report["message"] == "verified"
    after = step(report, "locks_after")
    assert after["attempts"] > 1 and after["result"]["blocked_count"] == 0  # it waited, then saw it drained
    assert step(report, "end_blockers")["result"]["terminated"] == [holder.info.backend_pid]
    pg.wait_for("SELECT status LIKE 'billed-%' FROM orders WHERE id = 1")


def _recreated_blocker(pg: PgServer) -> None:
    """The fix does not work: the application re-creates the blocking transaction as soon as it
    is terminated, and new billing updates queue behind it."""
    holders: list[Any] = []

    def restore() -> None:
        holder = pg.open_sessions(1, "checkout-api", in_transaction=True)[0]
        holder.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
        holders.append(holder)
        for i in range(2):
            pg.background(f"UPDATE orders SET status = 'billed-{i}' WHERE id = 1", "billing-worker")

    with pg.connect("app") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'new') ON CONFLICT (id) DO UPDATE SET status = 'new'")
    restore()
    pg.keep_alive(restore, lambda: not pg.ended(holders[-1]))


def test_a_blocker_that_comes_back_fails_verify_after_the_window(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str]) -> None:
    """The other side of the window: the blocker is re-created, so the waiters never drain and
    verify says so (exit 1) once its window is spent, never "verified"."""
    _recreated_blocker(pg)
    pg.wait_for(BLOCKED.replace("count(*)", "count(*) = 2"))
    time.sleep(1.1)
    result = opsctl(*RUN, "--yes", "--option", "end-blockers", "-o", "json", "-p", "verify_window=6s",
                    env=pg_env)
    assert result.code == 1, result.output
    report = out(result)
    after = step(report, "locks_after")
    assert after["status"] == "failed" and after["attempts"] > 1  # it looked again for the whole window
    assert "within 6 s" in after["reason"], after["reason"]
    assert after["result"]["blocked_in_scope_count"] > 0
    assert step(report, "end_blockers")["result"]["terminated_count"] == 1
    assert "verified" not in report["message"]


def _two_chains(pg: PgServer) -> tuple[int, int]:
    """checkout-api holds row 1 (billing-worker waits), report-job holds row 2 (report-job waits)."""
    with pg.connect("app") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'new'), (2, 'new') "
                     "ON CONFLICT (id) DO UPDATE SET status = 'new'")
    checkout = pg.open_sessions(1, "checkout-api", in_transaction=True)[0]
    checkout.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    report = pg.open_sessions(1, "report-job", in_transaction=True)[0]
    report.execute("UPDATE orders SET status = 'reported' WHERE id = 2")
    pg.background("UPDATE orders SET status = 'billed' WHERE id = 1", "billing-worker")
    pg.background("UPDATE orders SET status = 'totals' WHERE id = 2", "report-job")
    pg.wait_for(BLOCKED.replace("count(*)", "count(*) = 2"))
    time.sleep(1.1)
    return int(checkout.info.backend_pid), int(report.info.backend_pid)


@pytest.mark.parametrize("user", ["postgres", "monitor"])
def test_scope_only_the_root_blocker_in_scope_is_planned_and_touched(
        opsctl: Callable[..., Result], pg: PgServer, pg_server: PgServer, user: str) -> None:
    """Defect 4: `--yes -p application_name=report-job` terminated a checkout-api session.  The
    scope filters the root blockers; the plan says what it left out; the application runs as an
    ordinary role, opsctl as a superuser or as a role with pg_monitor + pg_signal_backend only."""
    checkout, report_pid = _two_chains(pg)
    env = {**pg_server.env(user), "PGCONNECT_TIMEOUT": "10", "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    dry = opsctl(*RUN, "--dry-run", "-p", "application_name=report-job", "-o", "json", env=env)
    assert dry.code == 0, dry.output
    plan = step(out(dry), "end_blockers")["plan"]
    assert [c["target"] for c in plan["changes"]] == [f"backend pid {report_pid}"]
    assert "1 session of checkout-api excluded by application_name=report-job" in plan["summary"]
    result = opsctl(*RUN, "--yes", "--option", "end-blockers", "-p", "application_name=report-job",
                    "-o", "json", env=env)
    assert result.code == 0, result.output
    doc = out(result)
    assert step(doc, "end_blockers")["result"]["terminated"] == [report_pid]
    assert pg.count(f"pid = {checkout}") == 1 and pg.count(f"pid = {report_pid}") == 0
    assert pg.sql("SELECT status FROM orders WHERE id = 1") == [("new",)]  # checkout's chain intact
    left = [f["message"] for f in doc["findings"]
            if f["step"] == "locks_after" and f["severity"] == "warning"]
    assert left and "checkout-api excluded by application_name=report-job" in left[0]


def test_scope_excluding_the_only_root_blocker_touches_nothing(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], lock_incident: int) -> None:
    """The issue's exact case: the only root blocker is checkout-api, the scope report-job."""
    result = opsctl(*RUN, "--yes", "--option", "end-blockers", "-p", "application_name=report-job",
                    "-o", "json", env=pg_env)
    report = out(result)
    plan = step(report, "end_blockers")
    assert plan["status"] == "noop" and plan["plan"]["changes"] == []
    assert "1 session of checkout-api excluded by application_name=report-job" in plan["plan"]["summary"]
    assert pg.count(f"pid = {lock_incident}") == 1 and pg.sql(BLOCKED)[0][0] == 2
    assert "Traceback" not in result.output


def test_dead_server_is_exit_4(opsctl: Callable[..., Result], pg_server: PgServer) -> None:
    port = free_port()
    env = {**pg_server.env("ops"), "PGPORT": str(port), "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl(*RUN, "--yes", "--option", "end-blockers", env=env)
    assert result.code == 4, result.output
    assert f"127.0.0.1:{port}" in result.output and "Traceback" not in result.output
    assert PASSWORDS["ops"] not in result.output


def test_a_server_that_never_answers_is_exit_4_within_the_deadline(
        opsctl: Callable[..., Result], silent_server: SilentServer) -> None:
    """Accepts TCP, never answers: exit 4 (unreachable), from one connection attempt, within
    connect_timeout; never exit 1 after the watchdog gave up on the step."""
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(silent_server.port), "PGUSER": "ops",
           "PGPASSWORD": "black-hole-pw", "PGDATABASE": "app", "PGCONNECT_TIMEOUT": "2",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl(*RUN, "--yes", "--option", "end-blockers", "-o", "json", env=env)
    assert result.code == 4, result.output
    assert "timeout expired" in out(result)["message"]
    assert "abandoned" not in result.output and len(silent_server.accepted) == 1


def test_a_server_that_hangs_mid_run_is_exit_4_within_the_deadline(
        opsctl_env: dict[str, str], tmp_path: Path, pg: PgServer, pg_server: PgServer,
        pg_proxy: TcpProxy, lock_incident: int) -> None:
    """The server answers the diagnosis and the mitigation, then stops answering (the proxy
    freezes the wire as verify starts): verify's query outlives its statement_timeout, the socket
    is cut, exit 4 ("does not answer") within the step's deadline instead of the watchdog's
    "abandoned" (exit 1)."""
    env = {**pg_server.env("ops"), "PGPORT": str(pg_proxy.port), "PGCONNECT_TIMEOUT": "10",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    proc = run_in_background(opsctl_env, tmp_path, *RUN, "--yes", "--option", "end-blockers",
                             "-o", "json", env=env)
    try:
        wait_until(lambda: step_started(opsctl_env, "locks_after"), what="verify started")
        pg_proxy.freeze()
        frozen_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, stdout + stderr
    # one deadline (the step's 30 s), not one per retry: the retries of locks_after used to
    # reconnect to the frozen server 8 times, 10 s each (over 2 minutes)
    assert time.monotonic() - frozen_at < budget(50), stdout
    doc = json.loads(stdout)
    # a statement in flight is cut at statement_timeout + 1 s; a (re)connection at connect_timeout
    assert "does not answer" in doc["message"] or "timeout expired" in doc["message"], doc["message"]
    assert "abandoned" not in stdout
    assert step(doc, "end_blockers")["result"]["terminated"] == [lock_incident]


def test_slow_server_still_gives_the_right_verdict(opsctl: Callable[..., Result], pg: PgServer,
                                                  pg_server: PgServer, pg_proxy: TcpProxy,
                                                  lock_incident: int) -> None:
    """Every answer of the server held 0.3 s on the wire (the diagnosis' steps share one
    connection, so the last one waits for the others: most of its deadline): same verdict."""
    pg_proxy.delay = 0.3
    env = {**pg_server.env("ops"), "PGPORT": str(pg_proxy.port), "PGCONNECT_TIMEOUT": "10",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl(*RUN, "--yes", "--option", "end-blockers", "-o", "json", env=env)
    assert result.code == 0, result.output
    report = out(result)
    assert step(report, "end_blockers")["result"]["terminated"] == [lock_incident]
    assert report["message"] == "verified"


def test_optional_probe_denied_is_a_warning(opsctl: Callable[..., Result], pg: PgServer,
                                            pg_env: dict[str, str], lock_incident: int) -> None:
    """pg_stat_statements not readable by opsctl's role: the slowest-statements probe is not
    needed to end the blockers, so it says which privilege is missing and the run goes on."""
    if not pg.stat_statements:
        pytest.skip("pg_stat_statements is not installed on this machine")
    pg.sql("REVOKE SELECT ON pg_stat_statements FROM PUBLIC")
    try:
        result = opsctl(*RUN, "--yes", "--option", "end-blockers", "-o", "json", env=pg_env)
    finally:
        pg.sql("GRANT SELECT ON pg_stat_statements TO PUBLIC")
    assert result.code == 0, result.output
    report = out(result)
    warning = [f["message"] for f in report["findings"] if f["step"] == "top_statements"]
    assert warning and "needs pg_read_all_stats" in warning[0]
    assert step(report, "end_blockers")["result"]["terminated"] == [lock_incident]


def test_required_probe_denied_is_exit_4_naming_the_privilege(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str], lock_incident: int) -> None:
    """pg_locks not readable: the lock chains cannot be judged, so exit 4 naming what to grant,
    and nothing is terminated."""
    pg.sql("REVOKE SELECT ON pg_catalog.pg_locks FROM PUBLIC")
    try:
        result = opsctl(*RUN, "--yes", "--option", "end-blockers", env=pg_env)
    finally:
        pg.sql("GRANT SELECT ON pg_catalog.pg_locks TO PUBLIC")
    assert result.code == 4, result.output
    assert "needs SELECT on view pg_locks (GRANT SELECT ON TABLE pg_locks TO " in result.output
    assert "Traceback" not in result.output and pg.count(f"pid = {lock_incident}") == 1


def test_ctrl_c_while_ending_blockers_then_resume_ends_only_the_rest(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], tmp_path: Path, pg: PgServer,
        pg_server: PgServer, pg_proxy: TcpProxy) -> None:
    """Six chains, six root blockers; Ctrl-C once the first ones are gone: the run log says
    exactly which were terminated; --resume terminates only the others (nothing twice)."""
    with pg.connect("app") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 6) g "
                     "ON CONFLICT (id) DO UPDATE SET status = 'new'")
    roots = []
    for i in range(1, 7):
        holder = pg.open_sessions(1, "checkout-api", in_transaction=True)[0]
        holder.execute(f"UPDATE orders SET status = 'paid' WHERE id = {i}")
        roots.append(int(holder.info.backend_pid))
        pg.background(f"UPDATE orders SET status = 'billed' WHERE id = {i}", "billing-worker")
    pg.wait_for(BLOCKED.replace("count(*)", "count(*) = 6"))
    time.sleep(1.1)
    env = {**pg_server.env("ops"), "PGPORT": str(pg_proxy.port), "PGCONNECT_TIMEOUT": "10",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    args = (*RUN, "--yes", "--option", "end-blockers", "-o", "json")
    # in place before the run (as rb-006's twin test): the answer to the first pg_terminate_backend
    # is held on the wire until opsctl's Ctrl-C sends its cancel request, so the batch is always
    # interrupted after its first termination, never after its last, however loaded the machine
    # (a 1 s delay set once the step had started came too late under load now and then: all six
    # were gone before the Ctrl-C)
    pg_proxy.hold_answers_to("pg_terminate_backend")
    proc = run_in_background(opsctl_env, tmp_path, *args, env=env)
    alive = lambda: pg.count(f"pid IN ({','.join(map(str, roots))})")  # noqa: E731
    try:
        wait_until(pg_proxy.holding.is_set, what="first termination in flight")
        wait_until(lambda: alive() < 6, what="a first root blocker terminated")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert pg_proxy.cancelled.is_set()  # the answer was released by opsctl's own cancel request
    first = json.loads(stdout)
    partial = step(first, "end_blockers")
    assert partial["status"] == "interrupted", partial
    gone_first = set(partial["result"]["terminated"])
    assert gone_first == {p for p in roots if not pg.count(f"pid = {p}")}  # exact, from the server
    assert 0 < len(gone_first) < 6 and partial["result"]["not_done_count"] == 6 - len(gone_first)
    second = opsctl(*args, "--resume", first["run_id"], env=env)
    assert second.code == 0, second.output
    rest = set(step(json.loads(second.stdout), "end_blockers")["result"]["terminated"])
    assert rest == set(roots) - gone_first  # only what remained: nothing lost, nothing twice
    assert alive() == 0


FAULT_MATRIX: dict[str, tuple[str | None, str]] = {
    "dead": ("test_dead_server_is_exit_4", "closed port: exit 4 naming host:port, no password, no traceback"),
    "hung": ("test_a_server_that_never_answers_is_exit_4_within_the_deadline",
             "accepts TCP, never answers: exit 4 from one connect attempt within connect_timeout; "
             "and test_a_server_that_hangs_mid_run_is_exit_4_within_the_deadline: a freeze "
             "mid-run is exit 4 within the step's deadline"),
    "slow": ("test_slow_server_still_gives_the_right_verdict",
             "every answer held 0.3 s: the same plan, the same target terminated, verified"),
    "permission_optional": ("test_optional_probe_denied_is_a_warning",
                            "pg_stat_statements denied: warning naming pg_read_all_stats, run goes on"),
    "permission_required": ("test_required_probe_denied_is_exit_4_naming_the_privilege",
                            "pg_locks denied: exit 4 naming the GRANT, nothing terminated"),
    "ordinary_role": ("test_scope_only_the_root_blocker_in_scope_is_planned_and_touched",
                      "the blocking sessions belong to the ordinary role app; opsctl as a superuser "
                      "and as pg_monitor + pg_signal_backend only: same plan, same result"),
    "scope": ("test_scope_excluding_the_only_root_blocker_touches_nothing",
              "a root blocker outside application_name is never planned nor touched; the plan says "
              "'1 session of checkout-api excluded by application_name=report-job'"),
    "converges_slowly": ("test_verify_waits_for_the_queue_to_drain",
                         "the queue drains over seconds after the fix: verify polls, exit 0"),
    "does_not_work": ("test_a_blocker_that_comes_back_fails_verify_after_the_window",
                      "the blocker is re-created: exit 1 after the whole window, never verified"),
    "interrupt_resume": ("test_ctrl_c_while_ending_blockers_then_resume_ends_only_the_rest",
                         "Ctrl-C mid-batch: exit 130, the run log names exactly the terminated pids; "
                         "--resume terminates only the rest"),
}


def test_fault_matrix_every_cell_is_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())


def test_opsctl_as_the_applications_own_ordinary_role_ends_the_blocker(
        opsctl: Callable[..., Result], pg: PgServer, pg_server: PgServer, lock_incident: int) -> None:
    """The usual set-up: opsctl has only the application's DSN (role app: no pg_monitor, no
    pg_signal_backend). It still sees its own role's sessions and locks, and may signal them."""
    env = {**pg_server.env("app"), "PGCONNECT_TIMEOUT": "10",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    dry = opsctl(*RUN, "--dry-run", "-o", "json", env=env)
    assert dry.code == 0, dry.output
    assert step(out(dry), "locks")["result"]["root_pids"] == [lock_incident]
    result = opsctl(*RUN, "--yes", "-o", "json", env=env)
    assert result.code == 0, result.output
    assert step(out(result), "end_blockers")["result"]["terminated"] == [lock_incident]
    assert pg.count(f"pid = {lock_incident}") == 0


def test_index_hints_and_the_plan_of_the_slowest_statement_on_request(
        opsctl: Callable[..., Result], pg: PgServer, pg_server: PgServer) -> None:
    """A table the application reads by an unindexed column (sequential scans over 100k rows) and
    an index nobody uses: both are hinted; with explain_top the slowest statement's plan (a generic
    plan of the normalized UPDATE, EXPLAIN without ANALYZE) shows the sequential scan, and the
    UPDATE did not run: no row changed."""
    with pg.connect("app") as conn:
        conn.execute("DROP TABLE IF EXISTS ledger")
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, account text, note text)")
        conn.execute("INSERT INTO ledger SELECT g, 'acct-' || (g % 500), md5(g::text) "
                     "FROM generate_series(1, 100000) g")
        conn.execute("CREATE INDEX ledger_note_unused ON ledger (note)")
        conn.execute("ANALYZE ledger")
    if pg.stat_statements:
        pg.sql("SELECT pg_stat_statements_reset()")
    with pg.connect("app") as conn:
        for i in range(3):
            conn.execute("UPDATE ledger SET note = note || '+' WHERE account = %s", (f"acct-{i}",))
    touched = "SELECT count(*) FROM ledger WHERE note LIKE '%+'"
    before = pg.sql(touched)[0][0]
    env = {**pg_server.env("app"), "PGCONNECT_TIMEOUT": "10",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl(*RUN, "--dry-run", "-o", "json", "-p", "explain_top=true", "-p", "min_table_rows=1000",
                    "-p", "slow_ms=1", env=env)
    assert result.code == 0, result.output
    report = out(result)
    hints = step(report, "index_hints")
    assert [t["table"] for t in hints["result"]["seq_scanned"]] == ["ledger"]
    assert "ledger_note_unused" in [i["index"] for i in hints["result"]["unused"]]
    assert "ledger_pkey" not in [i["index"] for i in hints["result"]["unused"]]  # a primary key is kept
    messages = " ".join(f["message"] for f in hints["findings"])
    assert "ledger (" in messages and "seq scans reading" in messages and "ledger_note_unused" in messages
    explain = step(report, "explain_top")
    if not pg.stat_statements:
        assert explain["status"] == "skipped"
        return
    plan = explain["result"]
    assert plan and plan["available"] is True, (explain["status"], explain.get("reason"),
                                                 step(report, "top_statements")["result"])
    assert plan["generic_plan"] is True and plan["statement"].startswith("UPDATE ledger")
    assert [s["relation"] for s in plan["seq_scans"]] == ["ledger"]
    assert any("ledger by a sequential scan" in f["message"] for f in explain["findings"])
    assert pg.sql(touched)[0][0] == before  # the UPDATE was planned, never executed


def test_explain_refuses_anything_but_one_plain_statement() -> None:
    from opsctl.backends.pg_sql_guard import explainable

    assert explainable("UPDATE t SET a = $2 WHERE id = $1") == ("", 2)
    assert explainable("EXPLAIN ANALYZE DELETE FROM t")[0].startswith("only SELECT, INSERT, UPDATE")
    assert explainable("SELECT 1; DROP TABLE t")[0] == "exactly one statement can be explained, got 2"
