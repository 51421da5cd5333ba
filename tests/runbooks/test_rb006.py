"""rb-006 (database pool exhausted) rehearsed through the real CLI against a private PostgreSQL
with a real incident: a "checkout-api" that leaked 16 connections idle in transaction, 90 % of
max_connections taken.  Every claim about changes is checked from the server's own view."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.core import REPO, Result, SilentServer, free_port
from tests.servers.postgres import PASSWORDS, PgServer

pytestmark = pytest.mark.postgres
RUN = ("run", "rb-006", "-p", "idle_in_transaction_seconds=1", "-p", "application_name=checkout-*")


def sessions(pg: PgServer) -> set[tuple[int, str]]:
    """(pid, backend_start) of every client backend but ours: proves who was (not) terminated."""
    return {(r[0], str(r[1])) for r in pg.sql(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND pid <> pg_backend_pid() AND application_name <> 'opsctl'")}


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
