"""rb-011 (ECS service recovery) rehearsed through the real CLI against moto in server mode.

moto never starts ECS tasks: a new service reports 0 running (our fault), and only an update of
desiredCount makes running == desired.  The bad-deploy rehearsals (`bad_deploy`) set the count with
the deploy, so the rollback runs end to end with verify (steady service, error-rate alarm); the
fixture's moto records the deployment history AWS keeps (see tests/fixtures/aws.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.aws import (
    Moto,
    assert_dead_endpoint_exits_4,
    assert_hung_endpoint_exits_4,
    check_matrix,
    fast_windows,
    make_ecs_service,
    run_step,
)
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.aws
REAL_RUNBOOK = str(REPO / "runbooks" / "rb-011-ecs-service-recovery.yaml")
RUNBOOK = REAL_RUNBOOK


@pytest.fixture(autouse=True)
def runbook_path(tmp_path: Any) -> None:
    """The runbook with its convergence windows at 1 s per attempt (same attempts, same checks)."""
    global RUNBOOK
    RUNBOOK = fast_windows(REAL_RUNBOOK, tmp_path)
P = ["-p", "cluster=plooral-cluster", "-p", "service=plooral-api"]


step = run_step


def service(moto: Moto) -> dict[str, Any]:
    return moto.client("ecs").describe_services(cluster="plooral-cluster",
                                                services=["plooral-api"])["services"][0]


def test_dry_run_plans_every_option_and_changes_nothing(opsctl: Callable[..., Result],
                                                        moto: Moto) -> None:
    arns = make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    before = service(moto)
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "-p", "desired=5", env=moto.env)
    assert result.code == 0, result.output
    diag = step(result, "service")
    assert (diag["result"]["desired"], diag["result"]["running"]) == (3, 0)
    assert any("0/3 tasks running" in f["message"] for f in diag["findings"])
    assert step(result, "scale")["plan"]["changes"][0]["after"] == 5
    assert step(result, "rollback")["plan"]["changes"][0]["after"] == {
        "task_definition": "plooral-api:1", "images": ["plooral/api:1.0"]}
    assert step(result, "restart")["plan"]["changes"][0]["operation"] == "force-new-deployment"
    after = service(moto)
    assert (after["desiredCount"], after["taskDefinition"]) == (3, arns[1])
    assert after["deployments"][0]["id"] == before["deployments"][0]["id"]


def test_scale_with_yes_and_verify_passes(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "scale", "-p", "desired=4",
                    env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "steady")["status"] == "ok"
    s = service(moto)
    assert (s["desiredCount"], s["runningCount"]) == (4, 4)


def test_scale_above_max_desired_is_refused(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, "--yes", *P, "--option", "scale", "-p", "desired=50", env=moto.env)
    assert result.code == 1, result.output
    assert "desired=50 is above max_desired=20" in result.output
    assert service(moto)["desiredCount"] == 3


def test_scale_without_desired_is_exit_2_before_anything_changes(opsctl: Callable[..., Result],
                                                                moto: Moto) -> None:
    """The option's input is its `requires`: refused before the run starts, nothing diagnosed,
    nothing changed (it used to plan desired=0 against the service)."""
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    before = service(moto)
    result = opsctl("run", RUNBOOK, "--yes", *P, "--option", "scale", env=moto.env)
    assert result.code == 2, result.output
    assert "option 'scale' needs desired (-p desired=...)" in result.output
    after = service(moto)
    assert after["desiredCount"] == 3 and after["deployments"] == before["deployments"]


def test_rollback_points_the_service_at_the_previous_revision(opsctl: Callable[..., Result],
                                                              moto: Moto) -> None:
    arns = make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "--phase", "mitigate", *P,
                    "--option", "rollback-task-definition", env=moto.env)
    assert result.code == 0, result.output
    assert service(moto)["taskDefinition"] == arns[0]


def test_force_new_deployment_starts_a_new_deployment(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    before = service(moto)["deployments"][0]["id"]
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "--phase", "mitigate", *P,
                    "--option", "force-new-deployment", env=moto.env)
    assert result.code == 0, result.output
    assert service(moto)["deployments"][0]["id"] != before


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, *P, "--option", "scale", "-p", "desired=4", env=moto.env)
    assert result.code == 3, result.output
    assert service(moto)["desiredCount"] == 3


def test_missing_service_is_named_not_found(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "qa-cluster", "real-svc")
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "cluster=qa-cluster", "-p", "service=ghost-svc",
                    env=moto.env)
    assert result.code == 1
    assert "ECS service qa-cluster/ghost-svc not found (MISSING)" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_rollback_without_an_older_revision_changes_nothing(opsctl: Callable[..., Result],
                                                            moto: Moto) -> None:
    ecs = moto.client("ecs")
    ecs.create_cluster(clusterName="solo-cluster")
    ecs.register_task_definition(family="solo", containerDefinitions=[
        {"name": "api", "image": "plooral/api:1.0", "memory": 512}])
    ecs.create_service(cluster="solo-cluster", serviceName="solo", taskDefinition="solo:1", desiredCount=2)
    result = opsctl("run", RUNBOOK, "--yes", "--option", "rollback-task-definition",
                    "-p", "cluster=solo-cluster", "-p", "service=solo", env=moto.env)
    assert result.code == 1
    assert "cannot tell what solo ran before solo:1" in " ".join(result.output.split())
    svc = ecs.describe_services(cluster="solo-cluster", services=["solo"])["services"][0]
    assert svc["taskDefinition"].endswith(":1") and svc["desiredCount"] == 2


def test_service_scaled_to_zero_is_a_critical_finding(opsctl: Callable[..., Result], moto: Moto) -> None:
    # 0 running of 0 desired used to diagnose as healthy: an outage with no finding at all
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=0)
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env=moto.env)
    assert dry.code == 0, dry.output
    diag = step(dry, "service")
    assert diag["result"]["healthy"] is False
    assert any(f["severity"] == "critical" and "wants 0 tasks" in f["message"] for f in diag["findings"])
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "scale", "-p", "desired=2",
                    env=moto.env)
    assert result.code == 0, result.output
    assert (service(moto)["desiredCount"], service(moto)["runningCount"]) == (2, 2)


def bad_deploy(moto: Moto, alarm: str = "ALARM") -> list[str]:
    """:1 deployed, :2 registered but never deployed, :3 deployed and finished (running == desired),
    the error-rate alarm in ``alarm``."""
    ecs = moto.client("ecs")
    ecs.create_cluster(clusterName="plooral-cluster")
    arns = [ecs.register_task_definition(family="plooral-api", containerDefinitions=[
        {"name": "api", "image": f"plooral/api:{v}", "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
        for v in ("1.0", "1.1-unused", "2.0-bad")]
    ecs.create_service(cluster="plooral-cluster", serviceName="plooral-api", taskDefinition=arns[0],
                       desiredCount=3)
    ecs.update_service(cluster="plooral-cluster", service="plooral-api", taskDefinition=arns[2],
                       desiredCount=3)  # moto: running == desired after an update of the count
    cw = moto.client("cloudwatch")
    cw.put_metric_alarm(AlarmName="PlooralAPIHighErrorRate", Namespace="AWS/ApplicationELB",
                        MetricName="HTTPCode_Target_5XX_Count", Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold",
                        # no -p error_alarm: the runbook finds the alarm by the service in its dimensions
                        Dimensions=[{"Name": "TargetGroup",
                                     "Value": "targetgroup/plooral-api/6d0ecf831eec9f09"}])
    cw.set_alarm_state(AlarmName="PlooralAPIHighErrorRate", StateValue=alarm, StateReason="5xx")
    return arns


def heal_alarm_after(moto: Moto, seconds: float) -> None:
    threading.Timer(seconds, lambda: moto.client("cloudwatch").set_alarm_state(
        AlarmName="PlooralAPIHighErrorRate", StateValue="OK", StateReason="5xx back to normal")).start()


def test_finished_bad_deploy_with_the_alarm_firing_is_never_verified(opsctl: Callable[..., Result],
                                                                      moto: Moto) -> None:
    # defect 11: running == desired, one deployment, the 5xx alarm in ALARM: used to exit 0 "verified"
    arns = bad_deploy(moto)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, env=moto.env)
    assert result.code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] in ("failed", "verify_failed") and "verified" not in doc["message"]
    alarm = step(result, "alarm_now")
    assert alarm["attempts"] == 11  # the whole convergence window was given
    assert any("still in ALARM after the convergence window" in f["message"] for f in alarm["findings"])
    diag = step(result, "error_alarm")
    assert any(f["severity"] == "critical" and "it ran plooral-api:1 before" in f["message"]
               for f in diag["findings"])
    assert service(moto)["taskDefinition"] == arns[2]  # nothing was rolled back without being asked


def test_a_misspelt_error_alarm_is_exit_2_not_verified(opsctl: Callable[..., Result],
                                                       moto: Moto) -> None:
    """QA: -p error_alarm naming no alarm (a typo) while the real 5xx alarm fires: the alarm steps
    found nothing, warned "not found", and the run exited 0 "verified (no mitigation was
    applied)".  A named alarm that does not exist is bad input: exit 2 before anything changes."""
    arns = bad_deploy(moto)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "-p", "error_alarm=PlooralAPI5xxTypo",
                    env=moto.env)
    assert result.code == 2, result.output
    doc = json.loads(result.stdout)
    assert "verified" not in doc["message"]
    assert "no CloudWatch alarm named 'PlooralAPI5xxTypo'" in doc["message"]
    assert service(moto)["taskDefinition"] == arns[2]


def test_rollback_goes_to_what_the_service_ran_before_with_images(opsctl: Callable[..., Result],
                                                                 moto: Moto) -> None:
    # :2 was registered but never ran: the family's "previous revision" would deploy untested code
    arns = bad_deploy(moto)
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "--option", "rollback-task-definition",
                 env=moto.env)
    assert dry.code == 0, dry.output
    change = step(dry, "rollback")["plan"]["changes"][0]
    assert change["before"] == {"task_definition": "plooral-api:3", "images": ["plooral/api:2.0-bad"]}
    assert change["after"] == {"task_definition": "plooral-api:1", "images": ["plooral/api:1.0"]}
    assert "ListServiceDeployments" in change["detail"]
    assert step(dry, "service")["result"]["previous_task_definition"] == "plooral-api:1"
    heal_alarm_after(moto, 2)  # the fix converges slowly: the alarm returns to OK after a while
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-task-definition",
                    env=moto.env)
    assert result.code == 0, result.output
    assert service(moto)["taskDefinition"] == arns[0]
    assert step(result, "alarm_now")["status"] == "ok"


def test_an_alarm_without_data_after_the_fix_is_said_not_taken_as_proof(opsctl: Callable[..., Result],
                                                                        moto: Moto) -> None:
    """QA: after a rollback the 5xx alarm went INSUFFICIENT_DATA (its count metric emits nothing: no
    errors, or no traffic at all) and the run said "verified" with nothing said about it."""
    bad_deploy(moto, alarm="INSUFFICIENT_DATA")
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-task-definition",
                    env=moto.env)
    assert result.code == 0, result.output
    findings = step(result, "alarm_now")["findings"]
    said = [f["message"] for f in findings if f["severity"] == "warning"]
    assert any("PlooralAPIHighErrorRate without data (INSUFFICIENT_DATA)" in m
               and "no traffic reaching plooral-api" in m for m in said), findings


def test_nonexistent_task_definition_is_refused_in_the_plan(opsctl: Callable[..., Result],
                                                            moto: Moto) -> None:
    arns = bad_deploy(moto)
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "--option", "rollback-task-definition",
                 "-p", "task_definition=plooral-api:99", env=moto.env)
    assert dry.code == 2, dry.output  # the dry-run's verdict is the real run's: bad input
    rollback = step(dry, "rollback")
    assert rollback["status"] == "planned" and rollback["plan"] is None
    assert any(f["severity"] == "critical" and "'plooral-api:99' does not exist" in f["message"]
               for f in rollback["findings"])
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-task-definition",
                    "-p", "task_definition=plooral-api:99", env=moto.env)
    assert result.code == 2, result.output  # bad input, found before any change
    assert "'plooral-api:99' does not exist" in step(result, "rollback")["reason"]
    assert service(moto)["taskDefinition"] == arns[2]


# ---- fault matrix ---------------------------------------------------------------------------------
FAULT_MATRIX: dict[str, tuple[str, str]] = {
    "dead": ("test", "test_dead_endpoint_exits_4"),
    "hung": ("test", "test_hung_endpoint_exits_4_not_abandoned"),
    "slow": ("test", "test_slow_endpoint_still_diagnoses_and_plans"),
    "denied_optional": ("n/a", "the optional probes (CPU, memory) and the required error-rate alarm "
                               "are all CloudWatch calls: the endpoint-per-service switch cannot deny "
                               "one without the other, and moto's IAM has no per-action policy for the "
                               "fixture's credentials"),
    "denied_required": ("test", "test_denied_ecs_is_exit_4"),
    "ordinary_role": ("n/a", "AWS has no superuser role to drop: the runbook's identity is an IAM "
                             "principal, whose limits are the denied cells"),
    "scope": ("test", "test_other_services_of_the_cluster_are_never_touched"),
    "converges_slowly": ("test", "test_rollback_goes_to_what_the_service_ran_before_with_images"),
    "fix_fails": ("test", "test_finished_bad_deploy_with_the_alarm_firing_is_never_verified"),
    "interrupt_resume": ("n/a", "every mitigation is one UpdateService call, applied or not; a resumed "
                                "run plans again from the live service and plans nothing once the "
                                "rollback is in place (already runs), so nothing can be doubled"),
}


def test_fault_matrix_cells_are_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())


def test_dead_endpoint_exits_4(opsctl: Callable[..., Result], moto: Moto) -> None:
    assert_dead_endpoint_exits_4(opsctl, moto, RUNBOOK, *P)


def test_hung_endpoint_exits_4_not_abandoned(opsctl: Callable[..., Result], moto: Moto,
                                            silent_server: Any, tmp_path: Any) -> None:
    assert_hung_endpoint_exits_4(opsctl, moto, silent_server, tmp_path, RUNBOOK, "service", *P)


def test_slow_endpoint_still_diagnoses_and_plans(opsctl: Callable[..., Result], moto: Moto,
                                                 slow_moto: tuple[Moto, Any]) -> None:
    bad_deploy(moto)
    slow, proxy = slow_moto
    proxy.delay = 0.5
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P,
                    "--option", "rollback-task-definition", env=slow.env)
    assert result.code == 0, result.output
    assert step(result, "rollback")["plan"]["changes"][0]["after"]["task_definition"] == "plooral-api:1"


def test_denied_ecs_is_exit_4(opsctl: Callable[..., Result], moto_iam: Moto) -> None:
    result = opsctl("run", RUNBOOK, "--dry-run", *P, env=moto_iam.env, timeout=200)
    assert result.code == 4, result.output
    assert "access denied (InvalidClientTokenId)" in result.output


def test_other_services_of_the_cluster_are_never_touched(opsctl: Callable[..., Result],
                                                        moto: Moto) -> None:
    arns = bad_deploy(moto)
    ecs = moto.client("ecs")
    ecs.create_service(cluster="plooral-cluster", serviceName="billing", taskDefinition=arns[2],
                       desiredCount=2)
    heal_alarm_after(moto, 0)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-task-definition",
                    env=moto.env)
    assert result.code == 0, result.output
    assert [c["target"] for c in step(result, "rollback")["plan"]["changes"]] == [
        "ecs service plooral-cluster/plooral-api"]
    billing = ecs.describe_services(cluster="plooral-cluster", services=["billing"])["services"][0]
    assert (billing["taskDefinition"], billing["desiredCount"]) == (arns[2], 2)
