"""`opsctl run RUNBOOK --env A --env B / --all-envs / --env-tag`: one runbook over several
environments, against private PostgreSQL servers: two live ones (one with a lock incident), one
down (nothing listens on its port any more), one hung (a proxy that accepts and never answers)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opsctl.testing.postgres import PASSWORDS, PgServer, TcpProxy, start_postgres
from tests.fixtures.core import REPO, Result, free_port
from tests.timing import budget

pytestmark = pytest.mark.postgres
BLOCKED = "SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0"


@pytest.fixture(scope="module")
def pg_us(pg_server: PgServer) -> Iterator[PgServer]:
    """The second live server (pg_server, the session's, is the first)."""
    server = start_postgres(max_connections=20, stat_statements=False)
    yield server
    server.stop()


def _section(port: int, connect_timeout: int = 10) -> str:
    return (f"    postgres: {{host: 127.0.0.1, port: {port}, user: ops, dbname: app, "
            f"password: \"{PASSWORDS['ops']}\", connect_timeout: {connect_timeout}}}\n")


def _config(tmp_path: Path, envs: dict[str, tuple[int, list[str], int]]) -> None:
    text = "environments:\n"
    for name, (port, tags, connect_timeout) in envs.items():
        text += f"  {name}:\n    tags: [{', '.join(tags)}]\n" + _section(port, connect_timeout)
    (tmp_path / "opsctl.yaml").write_text(text)


def _incident(pg: PgServer) -> int:
    """A row lock held by an open transaction, one worker queued behind it; the holder's pid."""
    with pg.connect("app") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'new') ON CONFLICT (id) DO UPDATE SET status = 'new'")
    holder = pg.open_sessions(1, "checkout-api", in_transaction=True)[0]
    holder.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    pg.background("UPDATE orders SET status = 'billed' WHERE id = 1", "billing-worker")
    pg.wait_for(BLOCKED.replace("count(*)", "count(*) = 1"))
    return int(holder.info.backend_pid)


@pytest.fixture
def incidents(pg: PgServer, pg_us: PgServer) -> Iterator[tuple[int, int]]:
    yield _incident(pg), _incident(pg_us)
    pg_us.clear_faults()


def _env(opsctl_env: dict[str, str]) -> dict[str, str]:
    return {"OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}


def _runs(tmp_path: Path) -> dict[str, dict[str, object]]:
    """environment -> its latest run log's run_start and run_end events."""
    out: dict[str, dict[str, object]] = {}
    for path in sorted((tmp_path / "state" / "runs").glob("*.jsonl")):  # run ids start with the time
        events = [json.loads(line) for line in path.read_text().splitlines()]
        out[str(events[0]["environment"])] = {"start": events[0], "end": events[-1]}
    return out


def test_dry_run_over_three_environments_one_down(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], tmp_path: Path, pg: PgServer,
        pg_us: PgServer, incidents: tuple[int, int]) -> None:
    _config(tmp_path, {"prod-eu": (pg.port, ["prod", "eu"], 10), "prod-us": (pg_us.port, ["prod"], 10),
                       "prod-ap": (free_port(), ["prod"], 10), "staging": (pg.port, ["staging"], 10)})
    pg_us.clear_faults()  # prod-us is healthy; prod-eu has the lock incident
    result = opsctl("run", "rb-013", "--env-tag", "prod", "--dry-run", "-p", "min_wait_seconds=0",
                    "-o", "json", env=_env(opsctl_env))
    assert result.code == 4, result.output  # the worst: prod-ap's backend is down
    doc = json.loads(result.stdout)
    rows = {r["environment"]: r for r in doc["environments"]}
    assert list(rows) == ["prod-eu", "prod-us", "prod-ap"]  # tag prod, file order; not staging
    assert rows["prod-eu"]["exit_code"] == 0 and rows["prod-eu"]["findings"]["critical"] >= 1
    assert "waiting on locks" in rows["prod-eu"]["first_finding"]
    assert rows["prod-us"]["exit_code"] == 0 and rows["prod-us"]["findings"]["critical"] == 0
    assert rows["prod-ap"]["exit_code"] == 4 and rows["prod-ap"]["status"] == "backend_error"
    assert "cannot connect" in rows["prod-ap"]["message"]
    assert PASSWORDS["ops"] not in result.output
    # each environment's own run, in its own run log, and nothing changed anywhere
    runs = _runs(tmp_path)
    assert {env: r["end"]["exit_code"] for env, r in runs.items()} == {"prod-eu": 0, "prod-us": 0,
                                                                        "prod-ap": 4}
    assert {r["run_id"] for r in rows.values()} == {r["start"]["run_id"] for r in runs.values()}
    assert doc["runs"]["prod-eu"]["dry_run"] is True
    assert pg.sql(BLOCKED)[0][0] == 1


def test_hung_environment_costs_its_runbook_deadline_and_max_errors(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], tmp_path: Path, pg: PgServer,
        pg_us: PgServer) -> None:
    """prod-hung accepts connections and never answers; its connect_timeout (60 s) is longer than
    the runbook's step deadline (2 s): the deadline bounds it, and the others are not held up."""
    rb = (REPO / "runbooks" / "rb-013-postgres-slow-queries-locks.yaml").read_text()
    (tmp_path / "rb.yaml").write_text(rb.replace("timeout: 20s", "timeout: 2s"))
    proxy = TcpProxy(pg.port)
    proxy.freeze()
    try:
        _config(tmp_path, {"prod-hung": (proxy.port, ["prod"], 60), "prod-eu": (pg.port, ["prod"], 10),
                           "prod-us": (pg_us.port, ["prod"], 10)})
        t0 = time.monotonic()
        result = opsctl("run", str(tmp_path / "rb.yaml"), "--all-envs", "--phase", "diagnose",
                        "--max-concurrency", "3", env=_env(opsctl_env))
        took = time.monotonic() - t0
    finally:
        proxy.close()
    assert result.code in (1, 4), result.output  # timed out (1) or no answer (4): never 0, never hung
    assert took < budget(2 + 5 + 12), took  # one deadline + the watchdog's grace + start-up
    table = result.stdout[result.stdout.index("over 3 environment(s)"):]
    for name in ("prod-hung", "prod-eu", "prod-us"):
        assert name in table
    runs = _runs(tmp_path)
    assert runs["prod-eu"]["end"]["exit_code"] == 0 and runs["prod-us"]["end"]["exit_code"] == 0
    assert runs["prod-hung"]["end"]["exit_code"] == result.code

    # --max-errors 1, one at a time: after the first failure nothing else starts
    _config(tmp_path, {"prod-ap": (free_port(), ["prod"], 10), "prod-eu": (pg.port, ["prod"], 10)})
    result = opsctl("run", "rb-013", "--all-envs", "--dry-run", "--max-concurrency", "1",
                    "--max-errors", "1", "-o", "json", env=_env(opsctl_env))
    rows = {r["environment"]: r for r in json.loads(result.stdout)["environments"]}
    assert result.code == 4 and rows["prod-ap"]["exit_code"] == 4, result.output
    assert rows["prod-eu"]["exit_code"] is None and "max-errors" in rows["prod-eu"]["message"]


def test_mutations_go_one_environment_at_a_time_each_confirmed(
        opsctl_tty: Callable[..., Result], opsctl: Callable[..., Result], opsctl_env: dict[str, str],
        tmp_path: Path, pg: PgServer, pg_us: PgServer, incidents: tuple[int, int]) -> None:
    eu_holder, us_holder = incidents
    _config(tmp_path, {"prod-eu": (pg.port, ["prod"], 10), "prod-us": (pg_us.port, ["prod"], 10)})
    args = ("run", "rb-013", "--env", "prod-eu", "--env", "prod-us", "--option", "end-blockers",
            "-p", "min_wait_seconds=0")
    refused = opsctl(*args, env=_env(opsctl_env))  # no terminal, no --yes: refused in each
    assert refused.code == 3, refused.output
    assert pg.count(f"pid = {eu_holder}") == 1 and pg_us.count(f"pid = {us_holder}") == 1
    # a terminal: declined in prod-eu, approved in prod-us; one question per environment
    result = opsctl_tty(*args, answer="n\ny\n", env=_env(opsctl_env))
    assert result.code == 3, result.output  # the worst: prod-eu was declined
    out = result.stdout
    assert out.index("environment prod-eu (1/2)") < out.index("environment prod-us (2/2)")
    assert out.count("plan for end_blockers") == 2 and out.count("Apply 1 change(s)") == 2
    assert pg.count(f"pid = {eu_holder}") == 1  # declined: untouched
    pg_us.wait_for(f"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {us_holder}")
    runs = _runs(tmp_path)
    assert runs["prod-eu"]["end"]["exit_code"] == 3 and runs["prod-us"]["end"]["exit_code"] == 0


def test_selection_errors(opsctl: Callable[..., Result], opsctl_env: dict[str, str],
                          tmp_path: Path) -> None:
    _config(tmp_path, {"prod-eu": (free_port(), ["prod"], 1)})
    result = opsctl("run", "rb-013", "--env-tag", "nope", "--dry-run", env=_env(opsctl_env))
    assert result.code == 2 and "no environment tagged nope" in result.stderr and "prod-eu [prod]" in \
        result.stderr, result.output
    result = opsctl("run", "rb-013", "--env", "prod-eu", "--env", "typo", "--dry-run", env=_env(opsctl_env))
    assert result.code == 2 and "unknown environment 'typo'" in result.stderr, result.output
    (tmp_path / "opsctl.yaml").write_text("environments:\n  a:\n    tags: prod\n")
    result = opsctl("run", "rb-013", "--all-envs", "--dry-run", env=_env(opsctl_env))
    assert result.code == 4 and "tags must be a list" in result.stderr, result.output
