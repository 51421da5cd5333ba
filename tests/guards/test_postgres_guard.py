"""The PostgreSQL read-only guard against a real server: every read-only action (and every plan())
still works under it; a read-only code path that tries to terminate sessions or write is refused by
the server; crafted postgres.query SQL terminates nothing in a --dry-run through the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsctl.actions import load_all
from opsctl.actions.base import ActionContext
from opsctl.actions.postgres.common import PgAction
from opsctl.backends.pg_sql_guard import refusal
from opsctl.errors import ActionError, BackendError, ReadOnlyViolation
from opsctl.records import Change, Plan
from opsctl.testing.postgres import PgServer
from tests.fixtures.core import Result
from tests.guards.helpers import assert_covers, extra_actions, guarded, record, run_engine

pytestmark = pytest.mark.postgres

VICTIMS = "application_name = 'victim'"

# every registered read-only postgres action, with arguments that make it do real work
READ_ONLY: dict[str, dict[str, Any]] = {
    "postgres.connections": {"application_name": "victim"},
    "postgres.database_size": {},
    "postgres.locks": {"min_wait_seconds": 0},
    "postgres.query": {"sql": "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s",
                       "params": ["victim"]},
    "postgres.replication": {},
    "postgres.sessions": {"idle_in_transaction_seconds": 0, "long_query_seconds": 0},
    "postgres.top_statements": {"slow_ms": 0},
    "postgres.index_hints": {"min_rows": 0},
    "postgres.explain": {"statement": "UPDATE pg_class SET relname = relname WHERE oid = $1"},
}
# every registered mutating postgres action: its plan() runs under the guard too
PLANS: dict[str, dict[str, Any]] = {
    "postgres.cancel": {"application_name": "blocked", "long_query_seconds": 0},
    "postgres.terminate": {"application_name": "victim", "state": "idle in transaction"},
    "postgres.set_role_setting": {"role": "app", "setting": "idle_in_transaction_session_timeout",
                                  "value": "30s"},
}


def test_the_tables_cover_every_registered_postgres_action() -> None:
    assert_covers(READ_ONLY, "postgres", read_only=True)
    assert_covers(PLANS, "postgres", read_only=False)


@pytest.fixture
def fault(pg: PgServer, pg_actions_env: PgServer) -> PgServer:
    """Real work for the actions: 3 sessions idle in transaction, one blocked on a row lock."""
    pg.sql("CREATE TABLE IF NOT EXISTS guard_t (id int PRIMARY KEY)")
    pg.sql("INSERT INTO guard_t VALUES (1) ON CONFLICT DO NOTHING")
    pg.sql("GRANT ALL ON guard_t TO app")
    holder = pg.open_sessions(1, "victim", in_transaction=True)[0]
    holder.execute("UPDATE guard_t SET id = 1 WHERE id = 1")
    pg.open_sessions(2, "victim", in_transaction=True)
    pg.background("UPDATE guard_t SET id = 1 WHERE id = 1", "blocked")
    pg.wait_for("SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'blocked' "
                "AND wait_event_type = 'Lock'")
    return pg


def _as_role(ctx: ActionContext) -> dict[str, Any]:
    """Who the context's shared connection runs as, asked through the action API."""
    rows = load_all()["postgres.query"]({"sql": "SELECT current_user AS role, "
                                                "current_setting('default_transaction_read_only') AS ro"},
                                        ctx).run()["rows"]
    return dict(rows[0])


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_every_read_only_action_works_under_the_guard(name: str, fault: PgServer) -> None:
    clients: dict[str, Any] = {}
    ctx = guarded(clients=clients)
    result = load_all()[name](READ_ONLY[name], ctx).run()
    assert isinstance(result, dict) and result
    assert _as_role(ctx) == {"role": "pg_monitor", "ro": "on"}
    assert fault.count(VICTIMS) == 3


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_plan_works_under_the_guard_and_apply_is_not_guarded(name: str, fault: PgServer) -> None:
    clients: dict[str, Any] = {}  # one run: the plan's and the apply's contexts share the connection
    cls = load_all()[name]
    plan = cls(PLANS[name], guarded(clients=clients)).plan()
    assert plan.changes, plan.summary
    writable = ActionContext(clients=clients)
    cls(PLANS[name], writable).apply(plan)
    assert _as_role(writable) == {"role": "ops", "ro": "off"}
    if name == "postgres.terminate":
        fault.wait_for(f"SELECT count(*) = 0 FROM pg_stat_activity WHERE {VICTIMS}")


# ---- a read-only code path that tries to mutate ------------------------------------------------
class TerminateInRun(PgAction):
    """A buggy read-only action: it terminates sessions from run() (SQL sent directly, not through
    postgres.query, so only the server-side guard stands in the way)."""

    name = "guardtest.pg_terminate"
    summary = "test"

    def run(self) -> Any:
        with self.session() as conn:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                f"WHERE {VICTIMS}").fetchall()
        return {"terminated": len(rows)}


class WriteInRun(PgAction):
    name = "guardtest.pg_write"
    summary = "test"

    def run(self) -> Any:
        with self.session() as conn:
            conn.execute("INSERT INTO guard_t VALUES (2)")
        return {"written": 1}


class TerminateInPlanAndApply(PgAction):
    """Mutating: terminates in plan() (a bug) or only in apply() (correct), per its argument."""

    name = "guardtest.pg_terminate_mutating"
    read_only = False
    summary = "test"
    schema = {"type": "object", "properties": {"in_plan": {"type": "boolean"}},
              "additionalProperties": False}

    def _terminate(self) -> int:
        with self.session() as conn:
            return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    f"WHERE {VICTIMS}").fetchall())

    def plan(self) -> Plan:
        if self.args.get("in_plan"):
            self._terminate()
        return Plan(summary="terminate victims", changes=[Change(target="victims", operation="terminate")])

    def apply(self, plan: Plan) -> Any:
        return {"terminated": self._terminate()}


def _runbook(tmp_path: Path, diagnose: str, mitigate: str = "") -> Path:
    path = tmp_path / "rb-950-guard.yaml"
    text = ("id: rb-950\ntitle: guard\nseverity: P4\nsummary: guard test\n"
            f"diagnose:\n{diagnose}")
    if mitigate:
        text += (f"mitigate:\n{mitigate}"
                 "verify:\n  - id: after\n    action: core.echo\n    with: {value: 1}\n")
    path.write_text(text)
    return path


@pytest.mark.parametrize("action, refused", [
    ("guardtest.pg_terminate", "signalling a backend (pg_terminate_backend / pg_cancel_backend)"),
    ("guardtest.pg_write", "a write"),
])
def test_a_read_only_step_that_mutates_fails_and_changes_nothing(
        action: str, refused: str, fault: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rb = _runbook(tmp_path, f"  - id: bad\n    action: {action}\n")
    with extra_actions(TerminateInRun, WriteInRun):
        outcome = run_engine(rb, monkeypatch, tmp_path / "state")
    bad = record(outcome, "bad")
    assert (outcome.exit_code, bad.status, bad.error_kind) == (1, "failed", "action")
    assert f"read-only guard: postgres refused {refused}" in bad.reason
    assert bad.attempts == 1  # a violation is a bug: never retried
    assert fault.count(VICTIMS) == 3
    assert fault.sql("SELECT count(*) FROM guard_t")[0][0] == 1


def test_plan_is_guarded_even_with_yes_and_apply_is_not(fault: PgServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    step = "  - id: kill\n    action: guardtest.pg_terminate_mutating\n    with: {in_plan: %s}\n"
    noop = "  - id: probe\n    action: core.echo\n    with: {value: 1}\n"
    with extra_actions(TerminateInPlanAndApply):
        buggy = run_engine(_runbook(tmp_path, noop, step % "true"), monkeypatch, tmp_path / "s1", yes=True)
        assert record(buggy, "kill").status == "failed"
        assert "pg_terminate_backend" in record(buggy, "kill").reason
        assert fault.count(VICTIMS) == 3
        # a dry-run does not turn the violation into "the plan refuses"
        dry = run_engine(_runbook(tmp_path, noop, step % "true"), monkeypatch, tmp_path / "s2", dry_run=True)
        assert (dry.exit_code, record(dry, "kill").status) == (1, "failed")
        assert fault.count(VICTIMS) == 3
        # control: the same terminate from apply() works (the login role has pg_signal_backend)
        ok = run_engine(_runbook(tmp_path, noop, step % "false"), monkeypatch, tmp_path / "s3", yes=True)
    assert record(ok, "kill").status == "applied"
    assert record(ok, "kill").result == {"terminated": 3}
    fault.wait_for(f"SELECT count(*) = 0 FROM pg_stat_activity WHERE {VICTIMS}")


# ---- crafted SQL through the CLI ---------------------------------------------------------------
CRAFTED = [
    # the regex deny-list let these through: a quoted identifier, and SQL run from a string
    "SELECT \"pg_terminate_backend\"(pid) FROM pg_stat_activity WHERE application_name = 'victim'",
    "SELECT query_to_xml('SELECT pg_terminate_' || 'backend(pid) FROM pg_stat_activity "
    "WHERE application_name = ''victim''', true, true, '')",
    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim'",
    "WITH x AS (SELECT U&\"pg_terminate_backen\\0064\"(pid) FROM pg_stat_activity) SELECT * FROM x",
]


@pytest.mark.parametrize("sql", CRAFTED)
def test_crafted_query_in_a_dry_run_terminates_nothing(sql: str, fault: PgServer, tmp_path: Path,
                                                        opsctl: Callable[..., Result],
                                                        pg_env: dict[str, str]) -> None:
    rb = tmp_path / "rb-951-crafted.yaml"
    rb.write_text("id: rb-951\ntitle: crafted\nseverity: P4\nsummary: crafted SQL\n"
                  "params:\n  sql: {type: string, required: true}\n"
                  "diagnose:\n  - id: q\n    action: postgres.query\n    with: {sql: \"{{ params.sql }}\"}\n")
    res = opsctl("run", str(rb), "--dry-run", "-p", f"sql={sql}", "-o", "json", env=pg_env)
    assert res.code == 1, res.output
    step = json.loads(res.stdout)["steps"][0]
    assert step["status"] == "failed"
    assert "postgres.query refused" in step["reason"] and "allow-list" in step["reason"]
    assert fault.count(VICTIMS) == 3


def test_crafted_query_written_in_the_runbook_is_refused_by_validate(tmp_path: Path,
                                                                      opsctl: Callable[..., Result]) -> None:
    rb = tmp_path / "rb-952-crafted.yaml"
    rb.write_text("id: rb-952\ntitle: crafted\nseverity: P4\nsummary: crafted SQL\ndiagnose:\n"
                  "  - id: q\n    action: postgres.query\n"
                  "    with: {sql: 'SELECT \"pg_terminate_backend\"(pid) FROM pg_stat_activity'}\n")
    res = opsctl("validate", str(rb))
    assert res.code == 2
    assert "rb-952-crafted.yaml:8:17: diagnose[0].with.sql:" in res.output
    assert "pg_terminate_backend() is not on the read-only" in res.output


def test_a_dry_run_sees_the_read_only_role_through_the_cli(fault: PgServer, tmp_path: Path,
                                                           opsctl: Callable[..., Result],
                                                           pg_env: dict[str, str]) -> None:
    rb = tmp_path / "rb-953-whoami.yaml"
    rb.write_text("id: rb-953\ntitle: whoami\nseverity: P4\nsummary: who runs the diagnosis\ndiagnose:\n"
                  "  - id: q\n    action: postgres.query\n"
                  "    with: {sql: \"SELECT current_user AS role, "
                  "current_setting('default_transaction_read_only') AS ro\"}\n")
    res = opsctl("run", str(rb), "-o", "json", env=pg_env)
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["steps"][0]["result"]["rows"] == [{"role": "pg_monitor", "ro": "on"}]


# ---- the read-only role ------------------------------------------------------------------------
def _env(role: str | None) -> Any:
    from opsctl.config import Environment

    return Environment(name="t", backends={"postgres": {"read_only_role": role}} if role else {})


def test_a_configured_role_is_used_and_checked(fault: PgServer) -> None:
    fault.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'opsctl_ro') THEN "
              "CREATE ROLE opsctl_ro NOLOGIN IN ROLE pg_monitor; END IF; END $$")
    fault.sql("GRANT opsctl_ro TO ops")
    fault.sql("GRANT SELECT ON guard_t TO opsctl_ro")
    ctx = guarded(_env("opsctl_ro"))
    assert _as_role(ctx) == {"role": "opsctl_ro", "ro": "on"}
    rows = load_all()["postgres.query"]({"sql": "SELECT count(*) AS n FROM guard_t"}, ctx).run()["rows"]
    assert rows == [{"n": 1}]
    for role, why in [("pg_signal_backend", "has the privileges of pg_signal_backend"),
                      ("app", "is not granted to the login role"), ("nobody_here", "does not exist")]:
        with pytest.raises(BackendError, match=f"misconfigured: postgres.read_only_role '{role}' {why}"):
            _as_role(guarded(_env(role)))


def test_a_table_the_read_only_role_cannot_read_says_how_to_fix_it(fault: PgServer) -> None:
    with pytest.raises(BackendError, match="read-only steps run as role pg_monitor.*read_only_role"):
        load_all()["postgres.query"]({"sql": "SELECT count(*) FROM guard_t"}, guarded()).run()


def test_without_a_usable_role_the_read_only_transaction_still_holds(fault: PgServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in fault.env("app").items():  # app is not a member of pg_monitor
        monkeypatch.setenv(key, value)
    ctx = guarded()
    assert _as_role(ctx) == {"role": "app", "ro": "on"}
    with pytest.raises(ReadOnlyViolation, match="refused a write"), PgAction({}, ctx).session() as conn:
        conn.execute("INSERT INTO guard_t VALUES (3)")
    assert fault.sql("SELECT count(*) FROM guard_t")[0][0] == 1


# ---- the SQL judge on its own (no server) ------------------------------------------------------
ACCEPTED = [
    "select 1 as ok",
    "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
    "SELECT pid, now() - query_start AS age, left(query, 50) FROM pg_stat_activity ORDER BY 2 DESC",
    "WITH s AS (SELECT state, count(*) c FROM pg_stat_activity GROUP BY 1) SELECT * FROM s",
    "SELECT pg_size_pretty(pg_database_size(current_database())), extract(epoch FROM now())",
    "SELECT a.pid FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(a.pid)) OR a.pid IN (1, 2)",
    "SELECT x FROM generate_series(1, 3) x WHERE x BETWEEN 1 AND 2 AND 'a' LIKE 'a%'",
    "SELECT jsonb_build_object('a', 1) ->> 'a', has_table_privilege('pg_class', 'select')",
    "SHOW max_connections", "VALUES (1), (2)", "TABLE pg_class",
    "EXPLAIN SELECT * FROM pg_class", "SELECT pg_stat_get_backend_pid(1), pg_is_in_recovery()",
    "SELECT 'ab' SIMILAR TO 'a%', interval '1 day', NULL::information_schema.cardinal_number",
    "SELECT relname FROM pg_class ORDER BY relname USING <",
]
REFUSED = [
    ("SELECT 1; SELECT 2", "exactly one statement"),
    ("SELECT \"pg_terminate_backend\"(1)", "pg_terminate_backend() is not on the read-only allow-list"),
    ("SELECT pg_cancel_backend(1)", "pg_cancel_backend()"),
    ("SELECT set_config('role', 'postgres', false)", "set_config()"),
    ("SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
    ("SELECT nextval('s')", "nextval()"),
    ("SELECT dblink_exec('x', 'y')", "dblink_exec()"),
    ("SELECT public.lower('A')", "public.lower() is not on the read-only allow-list"),
    ("SELECT pg_sleep(100)", "pg_sleep()"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "DELETE is not allowed"),
    ("WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT 1", "UPDATE is not allowed"),
    ("SELECT * INTO t2 FROM t", "SELECT INTO is not allowed"),
    ("SELECT * FROM t FOR UPDATE", "locking clause"),
    ("SELECT * FROM t FOR SHARE SKIP LOCKED", "locking clause"),
    ("EXPLAIN ANALYZE DELETE FROM t", "DELETE is not allowed"),
    ("DELETE FROM t", "got DELETE"),
    ("SET ROLE postgres", "got VARIABLE SET"),
    ("DO $$ BEGIN PERFORM pg_terminate_backend(1); END $$", "got DO"),
    ("CALL p()", "got CALL"),
    ("SELECT 1 === 2", "operator === is not a built-in operator"),
    ("SELECT 1 OPERATOR(public.+) 2", "operator public.+"),
    ("SELEC 1", "not valid SQL"),
    # a user-defined operator or type is a function call under another name
    ("SELECT relname FROM pg_class ORDER BY relname USING OPERATOR(public.<)", "operator public.<"),
    ("SELECT 1::public.checked", "a cast to type public.checked is not allowed"),
    ("SELECT * FROM pg_class TABLESAMPLE public.sampler(1)", "TABLESAMPLE method public.sampler"),
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_the_judge_accepts_diagnostic_reads(sql: str) -> None:
    assert refusal(sql) == ""


@pytest.mark.parametrize("sql, why", REFUSED)
def test_the_judge_refuses_anything_else(sql: str, why: str) -> None:
    assert why in refusal(sql)


def test_the_judge_reads_psycopg_placeholders_with_params() -> None:
    assert refusal("SELECT %s::int + %(n)s::int, 'x' LIKE 'x%%'", with_params=True) == ""
    assert "pg_terminate_backend" in refusal("SELECT pg_terminate_backend(%s)", with_params=True)


def test_a_function_that_could_shadow_a_built_in_one_must_be_qualified(fault: PgServer) -> None:
    # overload resolution prefers the better match of argument types across the search_path:
    # upper(1) would call public.upper(int), and has_x() matches the has_* family of the allow-list
    fault.sql("CREATE OR REPLACE FUNCTION public.upper(int) RETURNS int LANGUAGE sql AS 'SELECT 42'")
    fault.sql("CREATE OR REPLACE FUNCTION public.has_x() RETURNS bool LANGUAGE sql AS 'SELECT true'")
    query = load_all()["postgres.query"]
    try:
        for sql, shadow in [("SELECT upper(1) AS u", "public.upper()"), ("SELECT has_x()", "public.has_x()")]:
            with pytest.raises(ActionError, match=f"refused: {re.escape(shadow)} exist"):
                query({"sql": sql}, guarded()).run()
        rows = query({"sql": "SELECT pg_catalog.upper('a') AS u, lower('B') AS l"}, guarded()).run()["rows"]
        assert rows == [{"u": "A", "l": "b"}]
    finally:
        fault.sql("DROP FUNCTION public.upper(int)")
        fault.sql("DROP FUNCTION public.has_x()")


def test_a_cast_to_a_domain_whose_check_terminates_is_refused(fault: PgServer) -> None:
    """A domain's CHECK runs any function when a value is cast to it: here a SECURITY DEFINER one
    (its owner may signal backends, whatever role the read-only call runs as) that terminates the
    victims.  The cast is a function call the judge must see, spelled unqualified or not."""
    fault.sql("CREATE OR REPLACE FUNCTION public.reap(int) RETURNS bool LANGUAGE sql SECURITY DEFINER "
              f"AS $$SELECT bool_and(pg_terminate_backend(pid)) IS NOT FALSE FROM pg_stat_activity "
              f"WHERE {VICTIMS}$$")
    fault.sql("CREATE DOMAIN public.checked AS int CHECK (public.reap(VALUE))")
    query = load_all()["postgres.query"]
    try:
        with pytest.raises(ActionError, match=r"refused: public\.checked exist"):
            query({"sql": "SELECT 1::checked AS n"}, guarded()).run()
        with pytest.raises(ActionError, match="a cast to type public.checked is not allowed"):
            query({"sql": "SELECT CAST(1 AS public.checked) AS n"}, guarded()).run()
        assert fault.count(VICTIMS) == 3
        rows = query({"sql": "SELECT 1::int4 AS n, '1 day'::interval AS d"}, guarded()).run()["rows"]
        assert rows[0]["n"] == 1
    finally:
        fault.sql("DROP DOMAIN public.checked")
        fault.sql("DROP FUNCTION public.reap(int)")
