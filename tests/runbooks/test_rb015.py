"""rb-015 (Aurora replication lag / writer CPU critical) rehearsed through the real CLI: the cluster,
its members and its CloudWatch metrics in moto (server mode, datapoints put for real), the writer's
sessions in a private PostgreSQL (the environment's connection plays the cluster endpoint), where
the ordinary application role `app` runs the expensive query."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsctl.testing.postgres import PgServer
from tests.fixtures.aws import (
    Moto,
    assert_dead_endpoint_exits_4,
    assert_hung_endpoint_exits_4,
    check_matrix,
    fast_windows,
    make_aurora,
    run_step,
)
from tests.fixtures.core import REPO, Result

pytestmark = [pytest.mark.aws, pytest.mark.postgres]
REAL_RUNBOOK = str(REPO / "runbooks" / "rb-015-aurora-replication-lag-cpu.yaml")
RUNBOOK = REAL_RUNBOOK
CLUSTER = "orders-db"
# long_query_seconds=1: the offending query is old enough after a second; a short verify window
P = ["-p", f"cluster={CLUSTER}", "-p", "long_query_seconds=1", "-p", "verify_window=20s"]
LONG = ("SELECT count(*) = {n} FROM pg_stat_activity WHERE application_name = '{app}' "
        "AND state = 'active'")

step = run_step


@pytest.fixture(autouse=True)
def runbook_path(tmp_path: Any) -> None:
    """The runbook with its convergence windows polling every second (same checks)."""
    global RUNBOOK
    RUNBOOK = fast_windows(REAL_RUNBOOK, tmp_path)


def put(moto: Moto, metric: str, value: float, *, role: str = "WRITER", minutes_ago: float = 0) -> None:
    """A CloudWatch datapoint of the cluster, as Aurora publishes it (DBClusterIdentifier + Role)."""
    moto.client("cloudwatch").put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": metric, "Value": value,
        "Timestamp": datetime.now(UTC) - timedelta(minutes=minutes_ago),
        "Dimensions": [{"Name": "DBClusterIdentifier", "Value": CLUSTER}, {"Name": "Role", "Value": role}]}])


def incident(moto: Moto, members: int = 2) -> list[str]:
    """The writer ran at 97 % CPU three minutes ago, the readers 2.5 s behind."""
    ids = make_aurora(moto, CLUSTER, members=members)
    put(moto, "CPUUtilization", 97.0, minutes_ago=3)
    put(moto, "DatabaseConnections", 180, minutes_ago=3)
    put(moto, "AuroraReplicaLag", 2500.0, role="READER", minutes_ago=3)
    return ids


def heal(moto: Moto) -> None:
    """The writer back to normal in the latest minute."""
    put(moto, "CPUUtilization", 35.0)
    put(moto, "AuroraReplicaLag", 20.0, role="READER")


def heal_when(moto: Moto, done: Callable[[], bool], delay: float = 0.0) -> threading.Thread:
    """Publish the healthy datapoints once the fix took effect (CloudWatch lags behind it)."""
    def watch() -> None:
        end = time.monotonic() + 240
        while not done() and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(delay)
        heal(moto)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def hot_query(pg: PgServer, app: str = "report-job", n: int = 1) -> None:
    for _ in range(n):
        pg.background("SELECT pg_sleep(120)", app)  # as the ordinary role app
    pg.wait_for(LONG.format(n=n, app=app))
    time.sleep(1.1)  # over long_query_seconds


def members(moto: Moto) -> tuple[str, list[str]]:
    c = moto.client("rds").describe_db_clusters(DBClusterIdentifier=CLUSTER)["DBClusters"][0]
    writer = next(m["DBInstanceIdentifier"] for m in c["DBClusterMembers"] if m["IsClusterWriter"])
    readers = sorted(m["DBInstanceIdentifier"] for m in c["DBClusterMembers"] if not m["IsClusterWriter"])
    return writer, readers


def gone(pg: PgServer, app: str) -> Callable[[], bool]:
    return lambda: pg.count(f"application_name = '{app}'") == 0


def test_dry_run_diagnoses_cpu_lag_and_the_query_and_changes_nothing(
        opsctl: Callable[..., Result], moto: Moto, pg: PgServer, pg_env: dict[str, str]) -> None:
    ids = incident(moto)
    hot_query(pg)
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env={**pg_env, **moto.env})
    assert result.code == 0, result.output
    doc = json.loads(result.stdout)
    cpu, lag = step(result, "cpu"), step(result, "replica_lag")
    assert (cpu["result"]["max"], lag["result"]["max"]) == (97.0, 2500.0)
    assert any("writer CPU peaked at 97.0% (critical from 90" in f["message"] for f in cpu["findings"])
    assert any("readers up to 2500.0 ms behind" in f["message"] for f in lag["findings"])
    assert step(result, "connections")["result"]["max"] == 180
    assert step(result, "long_queries")["result"]["long_running_count"] == 1
    top = step(result, "top_statements")["result"]
    if pg.stat_statements:
        assert top["available"] is True
    else:  # the honest fallback: said, and the diagnosis goes on
        assert top["available"] is False and "pg_stat_statements" in top["reason"]
    assert doc["option"] == ["add-reader", "failover", "terminate-queries"]  # a dry-run plans each
    assert step(result, "failover")["plan"]["changes"][0]["after"] == {"writer": ids[1]}
    plan = step(result, "terminate")["plan"]
    assert len(plan["changes"]) == 1 and plan["changes"][0]["target"].startswith("backend pid")
    assert pg.count("application_name = 'report-job'") == 1 and members(moto) == (ids[0], ids[1:])
    assert all(step(result, s)["status"] == "skipped" for s in ("queries_after", "cpu_after", "lag_after"))


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], moto: Moto, pg: PgServer,
                                         pg_env: dict[str, str]) -> None:
    incident(moto)
    hot_query(pg)
    result = opsctl("run", RUNBOOK, *P, env={**pg_env, **moto.env})
    assert result.code == 3, result.output
    assert pg.count("application_name = 'report-job'") == 1


def test_terminate_only_the_query_in_scope_then_verify_converges(
        opsctl: Callable[..., Result], moto: Moto, pg: PgServer, pg_env: dict[str, str]) -> None:
    """Scope + ordinary role + slow convergence: two expensive queries of the ordinary role app,
    only report-job's is in scope; CloudWatch shows the CPU down 3 s after it is gone."""
    incident(moto)
    hot_query(pg, "report-job")
    hot_query(pg, "billing")
    heal_when(moto, gone(pg, "report-job"), delay=3)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "-p", "application_name=report-job",
                    env={**pg_env, **moto.env})
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["option"] == ["terminate-queries"]  # the recommendation
    assert len(step(result, "terminate")["result"]["terminated"]) == 1
    assert step(result, "queries_after")["status"] == "ok"
    cpu = step(result, "cpu_after")
    assert cpu["status"] == "ok" and cpu["result"]["latest"] == 35.0 and cpu["attempts"] > 1
    assert step(result, "lag_after")["status"] == "ok"
    assert pg.count("application_name = 'report-job'") == 0
    assert pg.count("application_name = 'billing'") == 1  # outside the scope: untouched


def test_a_fix_that_leaves_the_cpu_high_fails_verify(opsctl: Callable[..., Result], moto: Moto,
                                                     pg: PgServer, pg_env: dict[str, str]) -> None:
    incident(moto)
    put(moto, "CPUUtilization", 96.0)  # the CPU stays up: the query was not the cause
    hot_query(pg)
    # a window of 6 s: a first check slower than the window (a loaded machine) would leave one attempt
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P[:4], "-p", "verify_window=6s",
                    env={**pg_env, **moto.env})
    assert result.code == 1, result.output
    cpu = step(result, "cpu_after")
    assert cpu["attempts"] > 1 and cpu["result"]["latest"] == 96.0
    # how long it took depends on the machine; the window and the verdict do not
    assert any(f["severity"] == "critical" and "writer CPU 96.0%, threshold 90" in f["message"]
               and "still so after " in f["message"] and "check(s) within 6 s)" in f["message"]
               for f in cpu["findings"]), cpu["findings"]
    doc = json.loads(result.stdout)
    assert doc["status"] in ("failed", "verify_failed") and "verified" not in doc["message"]


def test_add_reader_plans_creates_and_verifies(opsctl: Callable[..., Result], moto: Moto,
                                               pg: PgServer, pg_env: dict[str, str]) -> None:
    ids = incident(moto)  # no long query: more capacity is the recommendation
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env={**pg_env, **moto.env})
    assert dry.code == 0, dry.output
    change = step(dry, "add_reader")["plan"]["changes"][0]
    assert change["after"] == {"readers": [ids[1], f"{CLUSTER}-reader-1"]}
    assert "db.r6g.large" in change["detail"] and members(moto) == (ids[0], ids[1:])
    heal_when(moto, lambda: len(members(moto)[1]) == 2)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, env={**pg_env, **moto.env})
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["option"] == ["add-reader"]  # the recommendation
    assert step(result, "reader_after")["status"] == "ok"
    assert members(moto) == (ids[0], sorted([ids[1], f"{CLUSTER}-reader-1"]))


def test_add_reader_past_max_readers_is_refused(opsctl: Callable[..., Result], moto: Moto,
                                                pg: PgServer, pg_env: dict[str, str]) -> None:
    ids = incident(moto, members=3)
    result = opsctl("run", RUNBOOK, "--yes", "--option", "add-reader", *P, "-p", "max_readers=2",
                    env={**pg_env, **moto.env})
    assert result.code == 1, result.output
    assert "one more exceeds max_readers=2" in " ".join(result.output.split())
    assert members(moto) == (ids[0], ids[1:])


def test_failover_is_explicit_and_verified(opsctl: Callable[..., Result], moto: Moto, pg: PgServer,
                                           pg_env: dict[str, str]) -> None:
    ids = incident(moto)
    heal_when(moto, lambda: members(moto)[0] != ids[0])
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "failover",
                    env={**pg_env, **moto.env})
    assert result.code == 0, result.output
    assert step(result, "writer_after")["status"] == "ok"
    assert members(moto)[0] == ids[1]


FAULT_MATRIX: dict[str, tuple[str, str]] = {
    "dead": ("test", "test_dead_endpoint_exits_4"),
    "hung": ("test", "test_hung_endpoint_exits_4_not_abandoned"),
    "slow": ("test", "test_slow_endpoint_still_diagnoses_and_plans"),
    "denied_optional": ("test", "test_denied_cloudwatch_lag_and_connections_are_optional"),
    "denied_required": ("test", "test_denied_rds_is_exit_4"),
    "ordinary_role": ("test", "test_terminate_only_the_query_in_scope_then_verify_converges"),
    "scope": ("test", "test_terminate_only_the_query_in_scope_then_verify_converges"),
    "converges_slowly": ("test", "test_terminate_only_the_query_in_scope_then_verify_converges"),
    "fix_fails": ("test", "test_a_fix_that_leaves_the_cpu_high_fails_verify"),
    "interrupt_resume": ("n/a", "moto creates the reader and completes the failover within the call, so "
                                "there is no point between request and result to interrupt; a cut wait "
                                "records created / failover_sent in the run log (with_partial), and "
                                "terminate re-checks each pid and backend_start just before its signal"),
}


def test_fault_matrix_cells_are_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())


def test_dead_endpoint_exits_4(opsctl: Callable[..., Result], moto: Moto) -> None:
    assert_dead_endpoint_exits_4(opsctl, moto, RUNBOOK, "-p", f"cluster={CLUSTER}")


def test_hung_endpoint_exits_4_not_abandoned(opsctl: Callable[..., Result], moto: Moto,
                                            silent_server: Any, tmp_path: Any) -> None:
    assert_hung_endpoint_exits_4(opsctl, moto, silent_server, tmp_path, RUNBOOK, "status",
                                 "-p", f"cluster={CLUSTER}")


def test_slow_endpoint_still_diagnoses_and_plans(opsctl: Callable[..., Result], moto: Moto,
                                                 slow_moto: tuple[Moto, Any], pg: PgServer,
                                                 pg_env: dict[str, str]) -> None:
    ids = incident(moto)
    slow, proxy = slow_moto
    proxy.delay = 0.5
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "--option", "failover",
                    env={**pg_env, **slow.env})
    assert result.code == 0, result.output
    assert step(result, "failover")["plan"]["changes"][0]["after"] == {"writer": ids[1]}


def test_denied_cloudwatch_lag_and_connections_are_optional(
        opsctl: Callable[..., Result], moto: Moto, moto_iam: Moto, pg: PgServer,
        pg_env: dict[str, str]) -> None:
    """CloudWatch denied: the CPU (what the alarm is about) is a required read, exit 4; the replica
    lag and connection probes alone are optional and reported."""
    incident(moto)
    env = {**pg_env, **moto.env, "AWS_ENDPOINT_URL_CLOUDWATCH": moto_iam.endpoint}
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env=env, timeout=200)
    assert result.code == 4, result.output
    assert "access denied" in step(result, "cpu")["reason"]
    assert "access denied" in step(result, "replica_lag")["reason"]
    assert "Traceback" not in result.output


def test_denied_rds_is_exit_4(opsctl: Callable[..., Result], moto_iam: Moto) -> None:
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", f"cluster={CLUSTER}", env=moto_iam.env, timeout=200)
    assert result.code == 4, result.output
    assert "access denied" in result.output.lower() and "Traceback" not in result.output
