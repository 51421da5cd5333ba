"""rb-013 (slow queries and locks) rehearsed through the real CLI against a private PostgreSQL:
a checkout transaction left open holding a row lock, billing workers queued behind it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.core import Result
from tests.servers.postgres import PgServer

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
