"""rb-005 (database failover) rehearsed through the real CLI against moto in server mode."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

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

pytestmark = pytest.mark.aws
REAL_RUNBOOK = str(REPO / "runbooks" / "rb-005-database-failover.yaml")
RUNBOOK = REAL_RUNBOOK


@pytest.fixture(autouse=True)
def runbook_path(tmp_path: Any) -> None:
    """The runbook with its convergence windows at 1 s per attempt (same attempts, same checks)."""
    global RUNBOOK
    RUNBOOK = fast_windows(REAL_RUNBOOK, tmp_path)


step = run_step


def writer(moto: Moto, cluster: str) -> str:
    c = moto.client("rds").describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0]
    return next(m["DBInstanceIdentifier"] for m in c["DBClusterMembers"] if m["IsClusterWriter"])


def put_cpu(moto: Moto, cluster: str, value: float) -> None:
    moto.client("cloudwatch").put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "CPUUtilization", "Value": value,
        "Dimensions": [{"Name": "DBClusterIdentifier", "Value": cluster}]}])


def test_dry_run_diagnoses_and_keeps_the_writer(opsctl: Callable[..., Result], moto: Moto) -> None:
    ids = make_aurora(moto, "plooral-aurora", members=3)
    put_cpu(moto, "plooral-aurora", 97.5)  # the AuroraCPUCritical fault
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "cluster=plooral-aurora", env=moto.env)
    assert result.code == 0, result.output
    status = step(result, "status")["result"]
    assert (status["writer"], sorted(status["readers"])) == (ids[0], ids[1:])
    cpu = step(result, "cpu")
    assert cpu["result"]["max"] == 97.5
    assert any("CPU peaked at 97.5%" in f["message"] for f in cpu["findings"])
    plan = step(result, "failover")["plan"]
    assert plan["changes"][0]["before"] == {"writer": ids[0]}
    assert plan["changes"][0]["after"] == {"writer": ids[1]}
    assert writer(moto, "plooral-aurora") == ids[0]  # the server's view: nothing changed
    # nothing was failed over, so verify must not report "writer is still ..." as critical
    critical = [f for f in json.loads(result.stdout)["findings"] if f["severity"] == "critical"]
    assert critical == [], critical


def test_yes_fails_over_to_the_target_and_verify_passes(opsctl: Callable[..., Result],
                                                        moto: Moto) -> None:
    ids = make_aurora(moto, "plooral-aurora", members=3)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "cluster=plooral-aurora",
                    "-p", f"target_instance={ids[2]}", env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "failover")["result"]["writer"] == ids[2]
    assert step(result, "new_writer")["status"] == "ok"
    assert step(result, "sql")["status"] == "skipped"
    assert writer(moto, "plooral-aurora") == ids[2]


def test_unknown_target_is_refused_before_any_change(opsctl: Callable[..., Result], moto: Moto) -> None:
    ids = make_aurora(moto, "plooral-aurora")
    result = opsctl("run", RUNBOOK, "--yes", "-p", "cluster=plooral-aurora",
                    "-p", "target_instance=nope", env=moto.env)
    assert result.code == 1, result.output
    assert "nope is not a reader of cluster plooral-aurora" in result.output
    assert writer(moto, "plooral-aurora") == ids[0]


def test_multi_az_instance_reboot_with_failover(opsctl: Callable[..., Result], moto: Moto) -> None:
    moto.client("rds").create_db_instance(
        DBInstanceIdentifier="payments-db", Engine="postgres", DBInstanceClass="db.m6g.large",
        MultiAZ=True, MasterUsername="ops", MasterUserPassword="not-a-secret-1", AllocatedStorage=50)
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "instance=payments-db", env=moto.env)
    assert dry.code == 0, dry.output
    assert step(dry, "failover")["plan"]["changes"][0]["operation"] == "reboot --force-failover"
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "instance=payments-db", env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "new_writer")["result"]["available"] is True


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], moto: Moto) -> None:
    ids = make_aurora(moto, "plooral-aurora")
    result = opsctl("run", RUNBOOK, "-p", "cluster=plooral-aurora", env=moto.env)
    assert result.code == 3, result.output
    assert writer(moto, "plooral-aurora") == ids[0]


def test_rollback_phase_finds_the_latest_snapshot(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_aurora(moto, "plooral-aurora")
    moto.client("rds").create_db_cluster_snapshot(DBClusterIdentifier="plooral-aurora",
                                                  DBClusterSnapshotIdentifier="nightly")
    result = opsctl("run", RUNBOOK, "--phase", "rollback", "-o", "json", "-p", "cluster=plooral-aurora",
                    env=moto.env)
    assert result.code == 0, result.output
    got = step(result, "snapshots")["result"]
    assert "nightly" in [x["id"] for x in got["snapshots"]]
    assert got["latest"] is not None and got["latest_age_hours"] < 1


def test_unknown_cluster_is_a_clear_failure(opsctl: Callable[..., Result], moto: Moto) -> None:
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "cluster=ghost", env=moto.env)
    assert result.code != 0
    assert "DBClusterNotFoundFault" in result.output
    assert "Traceback" not in result.output


def test_verify_runs_select_1_when_a_postgres_dsn_is_configured(opsctl: Callable[..., Result], moto: Moto,
                                                                pg_env: dict[str, str]) -> None:
    ids = make_aurora(moto, "plooral-aurora")
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "cluster=plooral-aurora",
                    "-p", "sql_check=true", env={**moto.env, **pg_env})
    assert result.code == 0, result.output
    sql = step(result, "sql")
    assert sql["status"] == "ok" and sql["result"]["rows"] == [{"ok": 1}]
    assert writer(moto, "plooral-aurora") == ids[1]


def test_no_identifier_fails_cleanly_without_an_internal_error(opsctl: Callable[..., Result],
                                                                moto: Moto) -> None:
    # the CloudWatch steps get an empty dimension value: botocore's ParamValidationError must not
    # surface as an "internal error" with a crash log
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", env=moto.env)
    assert result.code == 2  # a missing identifier is bad input, not a failed step
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert "invalid request" in step(result, "cpu")["reason"]
    assert "give a DB `cluster`" in step(result, "status")["reason"]


def test_cluster_and_instance_together_are_refused(opsctl: Callable[..., Result], moto: Moto) -> None:
    members = make_aurora(moto, "both")
    before = writer(moto, "both")
    result = opsctl("run", RUNBOOK, "--yes", "-p", "cluster=both", "-p", f"instance={members[0]}",
                    env=moto.env)
    assert result.code == 2
    assert "not both" in result.output
    assert writer(moto, "both") == before


def test_wrong_region_error_page_exits_4_without_internal_error(opsctl: Callable[..., Result],
                                                                moto: Moto) -> None:
    # moto answers a region that does not exist with an HTML 500 page, as a proxy would
    make_aurora(moto, "plooral-aurora")
    env = {**moto.env, "AWS_REGION": "eu-west-9", "AWS_DEFAULT_REGION": "eu-west-9"}
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "cluster=plooral-aurora", env=env, timeout=120)
    assert result.code == 4, result.output
    assert "did not answer like AWS" in result.output
    assert "internal error" not in result.output and "Traceback" not in result.output


def db_alarm(moto: Moto, state: str = "ALARM") -> None:
    cw = moto.client("cloudwatch")
    cw.put_metric_alarm(AlarmName="AuroraCPUCritical", Namespace="AWS/RDS", MetricName="CPUUtilization",
                        Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=90,
                        ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName="AuroraCPUCritical", StateValue=state, StateReason="CPU > 90")


def test_a_stopped_writer_is_not_described_as_available(opsctl: Callable[..., Result], moto: Moto) -> None:
    ids = make_aurora(moto, "plooral-aurora")
    moto.client("rds").stop_db_instance(DBInstanceIdentifier=ids[0])
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "cluster=plooral-aurora", env=moto.env)
    status = step(result, "status")
    assert status["result"]["available"] is False
    messages = [f["message"] for f in status["findings"] if f["severity"] == "critical"]
    assert f"cluster plooral-aurora says available but its writer {ids[0]} is stopped" in messages
    assert not any(m.startswith("cluster plooral-aurora is available") for m in messages)


def test_the_only_reader_stopped_refuses_the_failover_in_the_dry_run(opsctl: Callable[..., Result],
                                                                     moto: Moto) -> None:
    # used to pass the dry-run and fail at --yes with InvalidDBClusterStateFault
    ids = make_aurora(moto, "plooral-aurora")
    moto.client("rds").stop_db_instance(DBInstanceIdentifier=ids[1])
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "cluster=plooral-aurora", env=moto.env)
    assert dry.code == 1, dry.output  # the failover would be refused: not "dry-run complete", exit 0
    assert "mitigate/failover would not run" in json.loads(dry.stdout)["message"]
    failover = step(dry, "failover")
    assert failover["status"] == "planned" and failover["plan"] is None
    assert any(f"no healthy reader to fail over to ({ids[1]} is stopped)" in f["message"]
               for f in failover["findings"])
    assert any("no healthy reader to fail over to" in f["message"] for f in step(dry, "status")["findings"])
    result = opsctl("run", RUNBOOK, "--yes", "-p", "cluster=plooral-aurora",
                    "-p", f"target_instance={ids[1]}", env=moto.env)
    assert result.code == 1, result.output
    assert f"target {ids[1]} is stopped, not available" in " ".join(result.output.split())
    assert "InvalidDBClusterStateFault" not in result.output
    assert writer(moto, "plooral-aurora") == ids[0]


def test_database_alarm_that_clears_slowly_converges(opsctl: Callable[..., Result], moto: Moto) -> None:
    ids = make_aurora(moto, "plooral-aurora")
    db_alarm(moto)

    def heal_after_the_failover() -> None:  # CloudWatch clears the alarm a while after the fix
        end = time.monotonic() + 200
        while writer(moto, "plooral-aurora") == ids[0] and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(5)
        moto.client("cloudwatch").set_alarm_state(AlarmName="AuroraCPUCritical", StateValue="OK",
                                                  StateReason="CPU back")

    threading.Thread(target=heal_after_the_failover, daemon=True).start()
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "cluster=plooral-aurora", env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "alarms")["status"] == "ok"
    assert writer(moto, "plooral-aurora") == ids[1]


def test_failover_that_does_not_clear_the_alarm_fails_verify(opsctl: Callable[..., Result],
                                                             moto: Moto) -> None:
    make_aurora(moto, "plooral-aurora")
    db_alarm(moto)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "cluster=plooral-aurora", env=moto.env)
    assert result.code == 1, result.output
    alarms = step(result, "alarms")
    assert alarms["attempts"] == 11
    assert any("still in ALARM after the convergence window: AuroraCPUCritical" in f["message"]
               for f in alarms["findings"])
    assert json.loads(result.stdout)["status"] in ("failed", "verify_failed")
    assert "verified" not in json.loads(result.stdout)["message"]


def test_ctrl_c_after_the_failover_then_resume_does_not_fail_over_again(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], tmp_path: Any, moto: Moto,
        slow_moto: tuple[Moto, Any]) -> None:
    """Ctrl-C while opsctl waits for the new writer: exit 130, the run log says the failover was
    sent; --resume plans against the live cluster (the writer already moved): nothing to fail
    over, verified, and the writer is still the one of the first failover (a second failover
    used to move it again)."""
    import signal

    from tests.fixtures.postgres import run_in_background, wait_until

    ids = make_aurora(moto, "plooral-aurora", members=3)
    slow, proxy = slow_moto
    proxy.delay = 1.0  # every request reaches moto 1 s late: the test sees the failover land first
    args = ("run", RUNBOOK, "--yes", "-o", "json", "-p", "cluster=plooral-aurora",
            "-p", f"target_instance={ids[1]}")
    rds = moto.client("rds")
    proc = run_in_background(opsctl_env, tmp_path, *args, env=slow.env)
    try:
        wait_until(lambda: writer(moto, "plooral-aurora") == ids[1], what="failover sent")
        # the new writer is stopped before opsctl's next look (1 s away): its wait cannot end
        rds.stop_db_instance(DBInstanceIdentifier=ids[1])
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    first = json.loads(stdout)
    cut = next(s for s in first["steps"] if s["id"] == "failover")
    assert cut["status"] == "interrupted" and "failover of plooral-aurora was sent" in cut["reason"]
    rds.start_db_instance(DBInstanceIdentifier=ids[1])  # the new writer serves
    second = opsctl(*args, "--resume", first["run_id"], env=moto.env)
    assert second.code == 0, second.output
    again = step(second, "failover")
    assert again["status"] == "noop", again
    assert f"the writer of plooral-aurora is already {ids[1]}, not {ids[0]} as diagnosed" in again["reason"]
    # (the resumed run applied nothing itself: its message says so)
    assert json.loads(second.stdout)["message"].startswith("verified")
    assert step(second, "new_writer")["status"] == "ok"
    assert writer(moto, "plooral-aurora") == ids[1]  # one failover, not two


# ---- fault matrix ---------------------------------------------------------------------------------
FAULT_MATRIX: dict[str, tuple[str, str]] = {
    "dead": ("test", "test_dead_endpoint_exits_4"),
    "hung": ("test", "test_hung_endpoint_exits_4_not_abandoned"),
    "slow": ("test", "test_slow_endpoint_still_diagnoses_and_plans"),
    "denied_optional": ("test", "test_denied_cloudwatch_probes_are_optional"),
    "denied_required": ("test", "test_denied_rds_is_exit_4"),
    "ordinary_role": ("n/a", "AWS has no superuser role to drop: the runbook's identity is an IAM "
                             "principal, whose limits are the two denied cells; the optional SELECT 1 "
                             "uses the application's own DSN"),
    "scope": ("test", "test_unknown_target_is_refused_before_any_change"),
    "converges_slowly": ("test", "test_database_alarm_that_clears_slowly_converges"),
    "fix_fails": ("test", "test_failover_that_does_not_clear_the_alarm_fails_verify"),
    "interrupt_resume": ("test", "test_ctrl_c_after_the_failover_then_resume_does_not_fail_over_again"),
}


def test_fault_matrix_cells_are_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())


def test_dead_endpoint_exits_4(opsctl: Callable[..., Result], moto: Moto) -> None:
    assert_dead_endpoint_exits_4(opsctl, moto, RUNBOOK, "-p", "cluster=plooral-aurora")


def test_hung_endpoint_exits_4_not_abandoned(opsctl: Callable[..., Result], moto: Moto,
                                            silent_server: Any, tmp_path: Any) -> None:
    assert_hung_endpoint_exits_4(opsctl, moto, silent_server, tmp_path, RUNBOOK, "status",
                                 "-p", "cluster=plooral-aurora")


def test_slow_endpoint_still_diagnoses_and_plans(opsctl: Callable[..., Result], moto: Moto,
                                                 slow_moto: tuple[Moto, Any]) -> None:
    ids = make_aurora(moto, "plooral-aurora")
    slow, proxy = slow_moto
    proxy.delay = 0.5
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "cluster=plooral-aurora", env=slow.env)
    assert result.code == 0, result.output
    assert step(result, "failover")["plan"]["changes"][0]["after"] == {"writer": ids[1]}


def test_denied_cloudwatch_probes_are_optional(opsctl: Callable[..., Result], moto: Moto,
                                               moto_iam: Moto) -> None:
    ids = make_aurora(moto, "plooral-aurora")
    env = {**moto.env, "AWS_ENDPOINT_URL_CLOUDWATCH": moto_iam.endpoint}
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "cluster=plooral-aurora", env=env,
                    timeout=200)
    assert result.code == 0, result.output
    assert "access denied" in step(result, "cpu")["reason"]
    assert step(result, "failover")["plan"]["changes"][0]["after"] == {"writer": ids[1]}


def test_denied_rds_is_exit_4(opsctl: Callable[..., Result], moto_iam: Moto) -> None:
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "cluster=plooral-aurora", env=moto_iam.env,
                    timeout=200)
    assert result.code == 4, result.output
    assert "access denied (InvalidClientTokenId)" in result.output
