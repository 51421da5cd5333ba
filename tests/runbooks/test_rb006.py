"""rb-006 (database pool exhausted) rehearsed through the real CLI against a private PostgreSQL
with a real incident: a "checkout-api" that leaked 16 connections idle in transaction, 90 % of
max_connections taken.  Every claim about changes is checked from the server's own view."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.postgres import KIT_APPLICATION_NAME, PASSWORDS, PgServer, TcpProxy
from tests.engine.helpers import step_started
from tests.fixtures.core import REPO, Result, SilentServer, free_port
from tests.fixtures.postgres import check_matrix, run_in_background, wait_until

pytestmark = pytest.mark.postgres
RUN = ("run", "rb-006", "-p", "idle_in_transaction_seconds=1", "-p", "application_name=checkout-*")


def sessions(pg: PgServer) -> set[tuple[int, str]]:
    """(pid, backend_start) of every client backend but ours and opsctl's: proves who was (not)
    terminated (the kit's own connections are left out: the backend of one just closed can still
    be listed, and was taken for a terminated session)."""
    return {(r[0], str(r[1])) for r in pg.sql(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND pid <> pg_backend_pid() AND application_name NOT IN ('opsctl', %s)", (KIT_APPLICATION_NAME,))}


@pytest.fixture
def incident(pg: PgServer) -> set[tuple[int, str]]:
    pg.open_sessions(16, "checkout-api", in_transaction=True)
    pg.open_sessions(2, "worker")
    time.sleep(1.1)  # over idle_in_transaction_seconds=1
    assert pg.count() == 18  # 90 % of max_connections=20
    return sessions(pg)


def report(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def step(out: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in out["steps"] if s["id"] == step_id)


def test_dry_run_diagnoses_and_terminates_nothing(opsctl: Callable[..., Result], pg: PgServer,
                                                   pg_env: dict[str, str], incident: set[Any]) -> None:
    result = opsctl(*RUN, "--dry-run", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    out = report(result)
    usage = step(out, "usage")["result"]
    assert usage["usage_pct"] == 90.0 and usage["idle_in_transaction"] == 16
    assert usage["by_application"][0]["application_name"] == "checkout-api"
    findings = {(f["step"], f["severity"]) for f in out["findings"] if f["phase"] == "diagnose"}
    assert ("usage", "warning") in findings and ("sessions", "critical") in findings
    plan = step(out, "kill_sessions")
    assert plan["status"] == "planned" and len(plan["plan"]["changes"]) == 16
    assert sessions(pg) == incident  # 0 backends terminated, from pg_stat_activity
    assert pg.count("state = 'idle in transaction'") == 16


def test_yes_terminates_the_leak_and_verifies(opsctl: Callable[..., Result], pg: PgServer,
                                              pg_env: dict[str, str], incident: set[Any]) -> None:
    result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 16
    assert step(out, "usage_after")["result"]["usage_pct"] == 10.0
    assert not [f for f in out["findings"] if f["phase"] == "verify" and f["severity"] != "ok"]
    assert pg.count("application_name = 'checkout-api'") == 0
    assert pg.count("application_name = 'worker'") == 2  # not offending: untouched


def test_without_terminal_and_yes_refuses(opsctl: Callable[..., Result], pg: PgServer,
                                          pg_env: dict[str, str], incident: set[Any]) -> None:
    result = opsctl(*RUN, "--option", "kill-long-queries", env=pg_env)
    assert result.code == 3, result.output
    assert "--yes" in result.output
    assert sessions(pg) == incident


def test_declined_confirmation_changes_nothing(opsctl_tty: Callable[..., Result], pg: PgServer,
                                               pg_env: dict[str, str], incident: set[Any]) -> None:
    result = opsctl_tty(*RUN, "--option", "kill-long-queries", answer="n\n", env=pg_env)
    assert result.code == 3, result.output
    assert sessions(pg) == incident


def test_confirmed_at_the_prompt_applies(opsctl_tty: Callable[..., Result], pg: PgServer,
                                         pg_env: dict[str, str], incident: set[Any]) -> None:
    result = opsctl_tty(*RUN, "--option", "kill-long-queries", answer="y\n", env=pg_env)
    assert result.code == 0, result.output
    assert pg.count("application_name = 'checkout-api'") == 0


def test_unreachable_server_exits_4_cleanly(opsctl: Callable[..., Result], pg_server: PgServer) -> None:
    port = free_port()
    env = {**pg_server.env("ops"), "PGPORT": str(port), "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl("run", "rb-006", "--dry-run", env=env)
    assert result.code == 4, result.output
    assert f"127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output and PASSWORDS["ops"] not in result.output


def test_malformed_database_url_never_echoes_its_password(opsctl: Callable[..., Result],
                                                          pg_server: PgServer) -> None:
    """libpq quotes a URI it cannot parse in its error; opsctl could not parse it either, so the
    password was not among the known secrets and reached the console."""
    url = f"postgresql://ops:{PASSWORDS['ops']}@[::1/app"  # unterminated IPv6 host
    env = {"DATABASE_URL": url, "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl("run", "rb-006", "--dry-run", env=env)
    assert result.code == 4, result.output
    assert "IPv6" in result.output and "Traceback" not in result.output
    assert PASSWORDS["ops"] not in result.output


@pytest.mark.parametrize("option", ["raise-pool", "restart-app"])
def test_kubernetes_option_without_a_deployment_is_exit_2(opsctl: Callable[..., Result], pg: PgServer,
                                                          pg_env: dict[str, str], incident: set[Any],
                                                          option: str) -> None:
    """Chosen without -p deployment, the option's step was skipped and the run ended on the
    verify failure ("16 offending sessions left", exit 1) as if the option had been tried.  The
    option's inputs are its `requires`: exit 2 before the diagnosis, naming them."""
    result = opsctl(*RUN, "--yes", "--option", option, env=pg_env)
    assert result.code == 2, result.output
    assert f"option {option!r} needs deployment" in result.output and "Traceback" not in result.output
    assert sessions(pg) == incident  # nothing terminated


def test_database_parameter_naming_no_database_is_bad_input(opsctl: Callable[..., Result], pg: PgServer,
                                                            pg_env: dict[str, str]) -> None:
    """-p database=... naming a database that does not exist was reported as an unreachable
    backend (exit 4); it is the parameter that is wrong (exit 2).  The environment's own
    database missing stays a backend misconfiguration (exit 4)."""
    result = opsctl("run", "rb-006", "--dry-run", "-p", "database=no_such_db", env=pg_env)
    assert result.code == 2, result.output
    assert "database 'no_such_db' does not exist" in result.output
    assert "Traceback" not in result.output and PASSWORDS["ops"] not in result.output
    misconfigured = opsctl("run", "rb-006", "--dry-run", env={**pg_env, "PGDATABASE": "no_such_db"})
    assert misconfigured.code == 4, misconfigured.output


def test_every_non_reserved_slot_taken_is_critical_whatever_the_percentage(
        opsctl: Callable[..., Result], pg: PgServer, pg_server: PgServer) -> None:
    """With few connections (or many reserved ones) the pool is exhausted well under
    critical_pct: 4 of max_connections=5 with 1 reserved is 80 %, and was only a warning while
    the application got "remaining connection slots are reserved".  Here: 19/20 with
    critical_pct=99; opsctl connects as a superuser (a reserved slot), as the docs advise."""
    pg.open_sessions(19, "checkout-api")
    env = {**pg_server.env("postgres"), "PGCONNECT_TIMEOUT": "10",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl(*RUN, "--dry-run", "-p", "critical_pct=99", "-o", "json", env=env)
    assert result.code == 0, result.output
    usage = [f for f in report(result)["findings"] if f["step"] == "usage" and f["severity"] == "critical"]
    assert [f["message"].split(" (")[0] for f in usage] == ["no connection slot left for non-superusers"]
    assert pg.count("application_name = 'checkout-api'") == 19


def test_verify_warns_about_superuser_sessions_left_idle_in_transaction(
        opsctl: Callable[..., Result], pg: PgServer, pg_env: dict[str, str]) -> None:
    """A superuser's session idle in transaction is never terminated: the run verified
    without a word that it was still there."""
    pg.open_sessions(4, "checkout-api", in_transaction=True)
    admin = pg.open_sessions(1, "admin-console", in_transaction=True, user="postgres")[0]
    time.sleep(1.1)
    result = opsctl(*RUN[:-2], "--yes", "--option", "kill-long-queries", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 4
    left = [f["message"] for f in out["findings"]
            if f["step"] == "sessions_after" and f["severity"] == "warning"]
    assert left and left[0].startswith("1 superuser / replication sessions")
    assert admin.execute("SELECT 1").fetchone() == (1,)  # untouched


def test_a_server_that_never_answers_is_tried_once_not_once_per_step(opsctl: Callable[..., Result],
                                                                      silent_server: SilentServer) -> None:
    """The four diagnose steps share one connection under a lock; when the server accepted TCP
    but never answered, each step tried again after the previous one's connect_timeout, one
    after the other (4 x 3 s before exit 4).  The steps that waited now share the failure."""
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(silent_server.port), "PGUSER": "ops",
           "PGPASSWORD": "black-hole-pw", "PGDATABASE": "app", "PGCONNECT_TIMEOUT": "2",
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    result = opsctl("run", "rb-006", "--dry-run", "-o", "json", env=env)
    assert result.code == 4, result.output
    assert "timeout expired" in report(result)["message"]
    failed = [s for s in report(result)["steps"] if s["status"] == "failed"]
    assert len(failed) == 4  # every postgres diagnose step reports the failure...
    assert len(silent_server.accepted) == 1  # ...from a single connection attempt


# ---- issue 9: convergence, scope, privileges, faults ----------------------------------------------
def _env(pg_server: PgServer, user: str, port: int | None = None) -> dict[str, str]:
    env = {**pg_server.env(user), "PGCONNECT_TIMEOUT": "10", "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    return {**env, "PGPORT": str(port)} if port else env


@pytest.mark.parametrize("user", ["postgres", "monitor", "app"])
def test_ordinary_application_role_superuser_or_monitor_opsctl(opsctl: Callable[..., Result], pg: PgServer,
                                                               pg_server: PgServer, incident: set[Any],
                                                               user: str) -> None:
    """The leaking sessions belong to the ordinary login role `app`; opsctl runs (a) as a
    superuser, (b) as a role with pg_monitor + pg_signal_backend only, (c) as the application's own
    role app (what opsctl has when it is given the application's DSN; a role may signal its own
    sessions): the same diagnosis, plan, terminations and verdict."""
    result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", "-o", "json", env=_env(pg_server, user))
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "sessions")["result"]["idle_in_transaction_count"] == 16
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 16
    assert out["message"] == "verified"
    assert pg.count("application_name = 'checkout-api'") == 0 and pg.count("application_name = 'worker'") == 2


def test_scope_excludes_other_applications_and_databases(opsctl: Callable[..., Result], pg: PgServer,
                                                         pg_env: dict[str, str]) -> None:
    """Defect 4: every scope parameter filters the targets, and the plan says what it left out.
    report-job leaks in the same database (outside application_name=checkout-*), checkout-api
    leaks in the database `other` (outside database=app): never planned, never touched."""
    pg.open_sessions(10, "checkout-api", in_transaction=True)
    pg.open_sessions(2, "report-job", in_transaction=True)
    pg.open_sessions(3, "checkout-api", in_transaction=True, dbname="other")
    time.sleep(1.1)
    outside = {(pid, start) for pid, start in sessions(pg) if pid in {r[0] for r in pg.sql(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'report-job' OR datname = 'other'")}}
    assert len(outside) == 5
    result = opsctl(*RUN, "-p", "database=app", "--yes", "--option", "kill-long-queries", "-o", "json",
                    env=pg_env)
    assert result.code == 0, result.output
    out = report(result)
    plan = step(out, "kill_sessions")["plan"]
    assert len(plan["changes"]) == 10 and all("app=checkout-api" in c["before"] for c in plan["changes"])
    assert "3 sessions of checkout-api excluded by database=app" in plan["summary"]
    assert "2 sessions of report-job excluded by application_name=checkout-*" in plan["summary"]
    assert outside <= sessions(pg)  # untouched, same backends
    assert pg.count("application_name = 'checkout-api' AND datname = 'app'") == 0
    warned = [f["message"] for f in out["findings"]
              if f["step"] == "sessions_after" and f["severity"] == "warning"]
    assert any("excluded by application_name=checkout-*" in m for m in warned)


def test_empty_database_scope_is_the_environments_database(opsctl: Callable[..., Result], pg: PgServer,
                                                           pg_env: dict[str, str]) -> None:
    """`database` empty means the environment's database (PGDATABASE=app), for the targets too:
    a leak in another database of the same server is reported as excluded, not terminated."""
    pg.open_sessions(4, "checkout-api", in_transaction=True)
    other = pg.open_sessions(2, "checkout-api", in_transaction=True, dbname="other")
    time.sleep(1.1)
    result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", "-o", "json", env=pg_env)
    assert result.code == 0, result.output
    plan = step(report(result), "kill_sessions")["plan"]
    assert len(plan["changes"]) == 4
    assert "2 sessions of checkout-api excluded by database=app" in plan["summary"]
    assert all(not pg.ended(c) for c in other)


def test_optional_probe_denied_degrades_to_a_warning(opsctl: Callable[..., Result], pg: PgServer,
                                                     pg_server: PgServer, incident: set[Any]) -> None:
    """Defect 6: `--dry-run` as a role that is not a superuser (here the application's own role,
    without pg_read_all_settings / pg_read_all_stats) aborted the P0 runbook with exit 4 on the
    optional pg_stat_statements probe.  It is a warning naming the privilege; the run goes on."""
    result = opsctl(*RUN, "--dry-run", "-o", "json", env=_env(pg_server, "app"))
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "sessions")["result"]["idle_in_transaction_count"] == 16
    assert len(step(out, "kill_sessions")["plan"]["changes"]) == 16
    if pg.stat_statements:
        [probe] = [f["message"] for f in out["findings"] if f["step"] == "slow_statements"
                   and f["severity"] == "warning" and "optional probe" in f["message"]]
        assert "needs pg_read_all_stats" in probe
    assert sessions(pg) == incident


def test_optional_probe_permission_denied_is_a_warning(opsctl: Callable[..., Result], pg: PgServer,
                                                       pg_env: dict[str, str], incident: set[Any]) -> None:
    """pg_stat_statements itself denied ("permission denied for view"): a warning, exit 0."""
    if not pg.stat_statements:
        pytest.skip("pg_stat_statements is not installed on this machine")
    pg.sql("REVOKE SELECT ON pg_stat_statements FROM PUBLIC")
    try:
        result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", "-o", "json", env=pg_env)
    finally:
        pg.sql("GRANT SELECT ON pg_stat_statements TO PUBLIC")
    assert result.code == 0, result.output
    out = report(result)
    probe = [f["message"] for f in out["findings"]
             if f["step"] == "slow_statements" and f["severity"] == "warning"]
    assert probe and "permission denied for view pg_stat_statements" in probe[0]
    assert "needs pg_read_all_stats" in probe[0]
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 16


def test_required_probe_denied_is_exit_4_naming_the_privilege(
        opsctl: Callable[..., Result], pg: PgServer, pg_server: PgServer, incident: set[Any]) -> None:
    """A role without pg_read_all_stats sees the application's sessions with no state at all:
    the leak was invisible and a run could "verify" it.  Seeing the sessions in scope is
    required: exit 4 naming the privilege, nothing terminated."""
    result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", env=_env(pg_server, "nostats"))
    assert result.code == 4, result.output
    assert "cannot see the state of 16 session(s) in scope" in result.output
    assert "needs pg_read_all_stats (GRANT pg_read_all_stats TO nostats, or pg_monitor)" in result.output
    assert "Traceback" not in result.output and PASSWORDS["nostats"] not in result.output
    assert sessions(pg) == incident


def test_verify_waits_for_the_pool_to_drain(opsctl: Callable[..., Result], opsctl_env: dict[str, str],
                                            pg: PgServer, pg_env: dict[str, str]) -> None:
    """A fix that converges slowly: 2 leaked sessions are terminated, but 16 batch sessions of a
    job that is not offending keep the pool at 80 % and only disconnect, one by one, after the
    fix.  Verify polls within its window until usage is under the threshold (exit 0)."""
    batch = [pg.connect("app", application_name="batch-job") for _ in range(16)]
    pg.open_sessions(2, "checkout-api", in_transaction=True)
    time.sleep(1.1)
    assert pg.count() == 18  # 90 %; 80 % once the leak is gone: still at the threshold

    def drain() -> None:
        wait_until(lambda: step_started(opsctl_env, "usage_after"), what="verify started")
        time.sleep(4)  # after verify's first look (2 s in)
        for conn in batch:  # the job finishes over ~4 s
            conn.close()
            time.sleep(0.25)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    try:
        result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", "-o", "json", env=pg_env)
    finally:
        drainer.join(timeout=120)
        for conn in batch:
            conn.close()
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 2
    usage = step(out, "usage_after")
    assert usage["attempts"] > 1 and usage["result"]["usage_pct"] < 80  # it waited, then saw it drained
    assert out["message"] == "verified"


def test_a_leak_that_comes_back_fails_verify_after_the_window(opsctl: Callable[..., Result], pg: PgServer,
                                                              pg_env: dict[str, str]) -> None:
    """The fix does not work: the application leaks its connections again as soon as they are
    terminated.  Verify says so (exit 1) once its window is spent, never "verified"."""
    leaked: list[Any] = pg.open_sessions(16, "checkout-api", in_transaction=True)

    def releak() -> None:
        for i, conn in enumerate(leaked):
            if pg.ended(conn):
                leaked[i] = pg.open_sessions(1, "checkout-api", in_transaction=True)[0]

    pg.keep_alive(releak, lambda: not any(pg.ended(c) for c in leaked))
    time.sleep(1.1)
    result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", "-o", "json", env=pg_env)
    assert result.code == 1, result.output
    out = report(result)
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 16
    failed = [s for s in out["steps"] if s["phase"] == "verify" and s["status"] == "failed"]
    assert failed and failed[0]["attempts"] == 7  # 1 + retries: the whole window was spent
    assert "verified" not in out["message"]


def test_slow_server_still_gives_the_right_verdict(opsctl: Callable[..., Result], pg: PgServer,
                                                  pg_server: PgServer, pg_proxy: TcpProxy,
                                                  incident: set[Any]) -> None:
    """Every answer held 0.3 s on the wire: the diagnose steps share one connection, so the last
    one spends most of its deadline waiting; the verdict and the targets are the same."""
    pg_proxy.delay = 0.3
    result = opsctl(*RUN, "--yes", "--option", "kill-long-queries", "-o", "json",
                    env=_env(pg_server, "ops", pg_proxy.port))
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 16
    assert out["message"] == "verified" and pg.count("application_name = 'worker'") == 2


def test_a_server_that_hangs_mid_run_is_exit_4_within_the_deadline(
        opsctl_env: dict[str, str], tmp_path: Path, pg: PgServer, pg_server: PgServer, pg_proxy: TcpProxy,
        incident: set[Any]) -> None:
    """The server answers the diagnosis and the mitigation, then stops answering (the proxy
    freezes the wire as verify starts): exit 4 ("does not answer") once the statement outlived its
    statement_timeout, within the step's deadline, not exit 1 from the watchdog's "abandoned"."""
    proc = run_in_background(opsctl_env, tmp_path, *RUN, "--yes", "--option", "kill-long-queries",
                             "-o", "json", env=_env(pg_server, "ops", pg_proxy.port))
    try:
        wait_until(lambda: step_started(opsctl_env, "usage_after"), what="verify started")
        pg_proxy.freeze()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, stdout + stderr
    doc = json.loads(stdout)
    # a statement in flight is cut at statement_timeout + 1 s; a (re)connection at connect_timeout
    assert "does not answer" in doc["message"] or "timeout expired" in doc["message"], doc["message"]
    assert "abandoned" not in stdout
    assert step(doc, "kill_sessions")["result"]["terminated_count"] == 16


def test_ctrl_c_while_terminating_then_resume_terminates_only_the_rest(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], tmp_path: Path, pg: PgServer,
        pg_server: PgServer, pg_proxy: TcpProxy) -> None:
    """Ctrl-C in the middle of the batch: exit 130, the run log names exactly the backends already
    terminated (a signal whose answer was lost on the wire included); --resume terminates only
    the others: nothing lost, nothing twice, the worker sessions untouched.  14 leaked sessions,
    not 16: opsctl holds two connections while it applies (the run's and the apply lock's), and
    the test must still get in to watch."""
    n = 14
    pg.open_sessions(n, "checkout-api", in_transaction=True)
    pg.open_sessions(2, "worker")
    time.sleep(1.1)
    leaked = {r[0] for r in pg.sql("SELECT pid FROM pg_stat_activity "
                                   "WHERE application_name = 'checkout-api'")}
    args = (*RUN, "--yes", "--option", "kill-long-queries", "-o", "json")
    env = _env(pg_server, "ops", pg_proxy.port)
    # in place before the run: the answer to the first pg_terminate_backend is held on the wire
    # until opsctl's Ctrl-C sends its cancel request (the signal was sent and its answer lost in
    # flight, the case the run log must still count), so the batch is always interrupted after
    # its first termination, never after its last, however loaded the machine
    pg_proxy.hold_answers_to("pg_terminate_backend")
    proc = run_in_background(opsctl_env, tmp_path, *args, env=env)
    try:
        wait_until(pg_proxy.holding.is_set, what="first termination in flight")
        wait_until(lambda: pg.count("application_name = 'checkout-api'") < n, what="first terminations")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert pg_proxy.cancelled.is_set()  # the answer was released by opsctl's own cancel request
    first = json.loads(stdout)
    partial = step(first, "kill_sessions")
    assert partial["status"] == "interrupted", partial
    gone = set(partial["result"]["terminated"])
    assert gone == leaked - {r[0] for r in pg.sql("SELECT pid FROM pg_stat_activity")}  # exact
    assert 0 < len(gone) < n and partial["result"]["not_done_count"] == n - len(gone)
    second = opsctl(*args, "--resume", first["run_id"], env=env)
    assert second.code == 0, second.output
    rest = step(json.loads(second.stdout), "kill_sessions")["result"]["terminated"]
    assert set(rest) == leaked - gone and len(rest) == n - len(gone)  # only what remained
    assert pg.count("application_name = 'checkout-api'") == 0 and pg.count("application_name = 'worker'") == 2


FAULT_MATRIX: dict[str, tuple[str | None, str]] = {
    "dead": ("test_unreachable_server_exits_4_cleanly", "closed port: exit 4 naming host:port, no password"),
    "hung": ("test_a_server_that_never_answers_is_tried_once_not_once_per_step",
             "accepts TCP, never answers: exit 4 from one attempt within connect_timeout; and "
             "test_a_server_that_hangs_mid_run_is_exit_4_within_the_deadline: a freeze mid-run is "
             "exit 4 within the step's deadline"),
    "slow": ("test_slow_server_still_gives_the_right_verdict",
             "every answer held 0.3 s: same targets, verified, the workers untouched"),
    "permission_optional": ("test_optional_probe_denied_degrades_to_a_warning",
                            "dry-run as a non-superuser: pg_stat_statements is a warning naming "
                            "pg_read_all_stats, exit 0 (and test_optional_probe_permission_denied_"
                            "is_a_warning: the view itself denied)"),
    "permission_required": ("test_required_probe_denied_is_exit_4_naming_the_privilege",
                            "a role that cannot see the sessions' state: exit 4 naming pg_read_all_stats"),
    "ordinary_role": ("test_ordinary_application_role_superuser_or_monitor_opsctl",
                      "leaks held by the ordinary role app; opsctl as superuser and as pg_monitor + "
                      "pg_signal_backend only: 16 terminated, verified"),
    "scope": ("test_scope_excludes_other_applications_and_databases",
              "application_name and database exclude sessions: never planned, never touched, the "
              "plan says 'N sessions of X excluded by ...'"),
    "converges_slowly": ("test_verify_waits_for_the_pool_to_drain",
                         "the pool drains over seconds after the fix: verify polls, exit 0"),
    "does_not_work": ("test_a_leak_that_comes_back_fails_verify_after_the_window",
                      "the application leaks again: exit 1 after the whole window"),
    "interrupt_resume": ("test_ctrl_c_while_terminating_then_resume_terminates_only_the_rest",
                         "Ctrl-C mid-batch: exit 130 with the exact terminated pids; --resume "
                         "terminates only the rest"),
}


def test_fault_matrix_every_cell_is_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())
