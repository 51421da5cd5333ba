"""The generated PostgreSQL GRANTs and Redis ACL rule are enough: a login role made from exactly
`opsctl permissions RUNBOOK --for postgres` runs rb-006 and rb-013 (its ALTER ROLE option too) to
"verified", and a Redis ACL user made from exactly `--for redis` runs rb-010 (diagnosis, plan,
apply, verify) on the real servers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from opsctl.testing.postgres import PgServer
from opsctl.testing.redis import RedisServer
from tests.fixtures.core import REPO, Result
from tests.runbooks.test_rb006 import RUN as RB006
from tests.runbooks.test_rb006 import incident  # noqa: F401 - a fixture
from tests.runbooks.test_rb010 import RUN as RB010
from tests.runbooks.test_rb010 import cache_incident, policy  # noqa: F401 - a fixture
from tests.runbooks.test_rb013 import RUN as RB013
from tests.runbooks.test_rb013 import lock_incident  # noqa: F401 - a fixture

PASSWORD = "generated-grants-1"


def report(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def lock_fallbacks(result: Result) -> list[str]:
    """The run's notes that its apply lock fell back to the host's lock file (a permission missing)."""
    return [line.strip() for line in result.output.splitlines() if "(lock file)" in line]


def step(out: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in out["steps"] if s["id"] == step_id)


@pytest.fixture
def generated_role(opsctl: Callable[..., Result], pg: PgServer) -> Iterator[Callable[..., dict[str, str]]]:
    """Apply `opsctl permissions ... --for postgres` as printed (statement by statement, as psql
    would), give the role a password, return the libpq variables to log in as it."""
    made: list[str] = []

    def make(*args: str) -> dict[str, str]:
        printed = opsctl("permissions", *args, "--for", "postgres")
        assert printed.code == 0, printed.output
        statements = printed.stdout.strip().splitlines()
        role = statements[1].split(" TO ")[1].rstrip(";")
        with pg.connect("postgres") as conn:
            for stmt in statements:
                conn.execute(stmt)
            conn.execute(f"ALTER ROLE {role} PASSWORD '{PASSWORD}'")
        made.append(role)
        granted = pg.sql("SELECT b.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                         "JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = %s ORDER BY 1", (role,))
        assert [g[0] for g in granted] == sorted(s.split()[1] for s in statements if s.startswith("GRANT"))
        return {"PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": role, "PGPASSWORD": PASSWORD,
                "PGDATABASE": "app", "PGCONNECT_TIMEOUT": "10", "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}

    yield make
    for role in made:
        pg.sql(f"DROP ROLE IF EXISTS {role}")


def test_rb006_runs_with_exactly_the_generated_grants(
        opsctl: Callable[..., Result], pg: PgServer, generated_role: Callable[..., dict[str, str]],
        incident: set[Any]) -> None:  # noqa: F811 - the imported fixture
    env = generated_role("rb-006", "--option", "kill-long-queries")
    assert pg.sql("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (env["PGUSER"],)) == [(False,)]
    result = opsctl(*RB006, "--yes", "--option", "kill-long-queries", "-o", "json", env=env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert step(out, "kill_sessions")["result"]["terminated_count"] == 16
    assert pg.count("application_name = 'checkout-api'") == 0 and pg.count("application_name = 'worker'") == 2


def test_rb013_runs_with_exactly_the_generated_grants(
        opsctl: Callable[..., Result], pg: PgServer, generated_role: Callable[..., dict[str, str]],
        lock_incident: int) -> None:  # noqa: F811 - the imported fixture
    env = generated_role("rb-013", "--option", "end-blockers")
    result = opsctl(*RB013, "--yes", "--option", "end-blockers", "-o", "json", env=env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "end_blockers")["result"]["terminated"] == [lock_incident]
    assert step(out, "locks_after")["result"]["blocked_count"] == 0
    assert pg.count(f"pid = {lock_incident}") == 0


def test_rb013_statement_timeout_guard_with_the_generated_role_attribute(
        opsctl: Callable[..., Result], pg: PgServer, generated_role: Callable[..., dict[str, str]]) -> None:
    env = generated_role("rb-013", "--option", "statement-timeout")
    assert pg.sql("SELECT rolcreaterole, rolsuper FROM pg_roles WHERE rolname = %s",
                  (env["PGUSER"],)) == [(True, False)]  # ALTER ROLE ... CREATEROLE, as generated
    result = opsctl(*RB013, "--yes", "--option", "statement-timeout", "-p", "role=app", "-p", "database=app",
                    "-p", "statement_timeout=20s", env=env)
    assert result.code == 0, result.output
    assert pg.sql("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                  "WHERE r.rolname = 'app'") == [(["statement_timeout=20s"],)]


def test_rb010_runs_as_an_acl_user_made_from_the_generated_rule(
        opsctl: Callable[..., Result], rds: RedisServer, cache_incident: dict[str, Any]) -> None:  # noqa: F811
    printed = opsctl("permissions", "rb-010", "--for", "redis")
    assert printed.code == 0, printed.output
    words = printed.stdout.split()
    assert words[:2] == ["ACL", "SETUSER"] and "+config|set" in words and "+@all" not in words
    user = words[2]
    admin = rds.client()
    admin.execute_command("ACL", "SETUSER", user, "reset", f">{PASSWORD}")
    admin.execute_command(*words)  # as printed (Redis merges the "(...)" selector words itself)
    try:
        url = f"redis://{user}:{PASSWORD}@127.0.0.1:{rds.port}/0"
        env = {"REDIS_URL": url, "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
        result = opsctl(*RB010, "--yes", "-o", "json", env=env)
        assert result.code == 0, result.output
        assert report(result)["option"] == ["set-eviction-policy"]
        assert report(result)["message"] == "verified"
        # the full cache refused the apply lock's key (noeviction OOM: the incident itself), so the
        # run used the host's lock file; now that it has room, the user takes and releases it
        assert "cannot write the lock key" in "".join(lock_fallbacks(result))
        from opsctl.backends import locking
        from opsctl.backends import redis as rb

        lock = locking.RedisLock(rb.settings_from({"url": url}), "opsctl:lock:rb-010",
                                 locking.Holder("u", "h", "run", "now"), 30)
        assert lock.try_acquire() is None and rds.client().exists("opsctl:lock:rb-010")
        lock.release()
        assert not rds.client().exists("opsctl:lock:rb-010")
        assert policy(rds) == "allkeys-lru"
        assert rds.client().set("probe", "x" * 1000)  # OOM before
        import redis

        denied = redis.Redis(host="127.0.0.1", port=rds.port, username=user, password=PASSWORD)
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied.flushall()  # the rule is not +@all: what no action needs stays refused
    finally:
        admin.execute_command("ACL", "DELUSER", user)
