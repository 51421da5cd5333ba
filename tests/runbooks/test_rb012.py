"""rb-012 (Lambda worker failure) rehearsed through the real CLI against moto in server mode."""

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
    fill,
    make_queue_with_dlq,
    make_worker,
    run_step,
)
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.aws
REAL_RUNBOOK = str(REPO / "runbooks" / "rb-012-lambda-worker-failure.yaml")


@pytest.fixture(autouse=True)
def runbook_path(tmp_path: Any) -> None:
    """The runbook with its convergence windows at 1 s per attempt (same attempts, same checks)."""
    global RUNBOOK
    RUNBOOK = fast_windows(REAL_RUNBOOK, tmp_path)


RUNBOOK = REAL_RUNBOOK
P = ["-p", "function=plooral-worker", "-p", "queue=plooral-queue"]


step = run_step


def heal_alarm_after(moto: Moto, seconds: float) -> threading.Timer:
    """The fix converges slowly: CloudWatch puts the alarm back to OK some time after the fix."""
    timer = threading.Timer(seconds, lambda: moto.client("cloudwatch").set_alarm_state(
        AlarmName="PlooralWorkerFailure", StateValue="OK", StateReason="Errors back to 0"))
    timer.start()
    return timer


def broken_worker(moto: Moto, qualifier: str = ":LIVE") -> str:
    """Version 3 is LIVE and failing: Errors datapoints, alarm in ALARM, 12 messages in the DLQ,
    an enabled SQS trigger bound to the alias (``qualifier``).  Returns the trigger's UUID."""
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 12)
    make_worker(moto, "plooral-worker", versions=3)
    arn = moto.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    # created after the messages, and the queue stays empty: moto would invoke the function
    uuid = moto.client("lambda").create_event_source_mapping(
        FunctionName=f"plooral-worker{qualifier}", EventSourceArn=arn["Attributes"]["QueueArn"])["UUID"]
    cw = moto.client("cloudwatch")
    dims = [{"Name": "FunctionName", "Value": "plooral-worker"}]
    cw.put_metric_data(Namespace="AWS/Lambda",
                       MetricData=[{"MetricName": "Errors", "Value": 7, "Dimensions": dims}])
    cw.put_metric_alarm(AlarmName="PlooralWorkerFailure", Namespace="AWS/Lambda", MetricName="Errors",
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=0,
                        ComparisonOperator="GreaterThanThreshold")
    # moto does not evaluate alarms: put it in ALARM the way CloudWatch would
    cw.set_alarm_state(AlarmName="PlooralWorkerFailure", StateValue="ALARM", StateReason="Errors > 0")
    return str(uuid)


def live(moto: Moto) -> str:
    return str(moto.client("lambda").get_alias(FunctionName="plooral-worker", Name="LIVE")["FunctionVersion"])


def trigger_state(moto: Moto, uuid: str) -> str:
    return str(moto.client("lambda").get_event_source_mapping(UUID=uuid)["State"])


def test_dry_run_diagnoses_and_changes_nothing(opsctl: Callable[..., Result], moto: Moto) -> None:
    uuid = broken_worker(moto)
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "worker")["result"]["alias_version"] == "3"
    assert step(result, "errors")["result"]["max"] == 7
    assert step(result, "depth")["result"]["dlq_visible"] == 12
    assert step(result, "alarm")["result"]["in_alarm_names"] == ["PlooralWorkerFailure"]
    assert step(result, "rollback")["plan"]["changes"][0]["after"] == {"version": "2", "routing": {}}
    assert step(result, "pause")["plan"]["changes"][0]["after"] == "Disabled"
    assert (live(moto), trigger_state(moto, uuid)) == ("3", "Enabled")


def test_rollback_alias_with_yes(opsctl: Callable[..., Result], moto: Moto) -> None:
    uuid = broken_worker(moto)
    heal_alarm_after(moto, 3)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-alias", env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "alias_now")["status"] == "ok"
    assert (live(moto), trigger_state(moto, uuid)) == ("2", "Enabled")


def test_rollback_to_an_explicit_version(opsctl: Callable[..., Result], moto: Moto) -> None:
    broken_worker(moto)
    heal_alarm_after(moto, 0)
    result = opsctl("run", RUNBOOK, "--yes", *P, "--option", "rollback-alias", "-p", "version=1",
                    env=moto.env)
    assert result.code == 0, result.output
    assert live(moto) == "1"


def test_pause_then_resume_the_trigger(opsctl: Callable[..., Result], moto: Moto) -> None:
    uuid = broken_worker(moto)
    heal_alarm_after(moto, 0)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "pause-trigger", env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "trigger_now")["result"]["enabled"] == 0
    assert (live(moto), trigger_state(moto, uuid)) == ("3", "Disabled")
    back = opsctl("run", RUNBOOK, "--yes", "--phase", "rollback", *P, env=moto.env)
    assert back.code == 0, back.output
    assert trigger_state(moto, uuid) == "Enabled"


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], moto: Moto) -> None:
    uuid = broken_worker(moto)
    result = opsctl("run", RUNBOOK, *P, "--option", "pause-trigger", env=moto.env)
    assert result.code == 3, result.output
    assert (live(moto), trigger_state(moto, uuid)) == ("3", "Enabled")


def test_function_without_an_alias_can_still_pause_its_trigger(opsctl: Callable[..., Result],
                                                                moto: Moto) -> None:
    uuid = broken_worker(moto, qualifier="")
    heal_alarm_after(moto, 0)
    moto.client("lambda").delete_alias(FunctionName="plooral-worker", Name="LIVE")
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env=moto.env)
    assert step(dry, "worker")["status"] == "ok", dry.output
    assert any(f["severity"] == "critical" and "has no alias LIVE" in f["message"]
               for f in json.loads(dry.stdout)["findings"])
    assert trigger_state(moto, uuid) == "Enabled"
    result = opsctl("run", RUNBOOK, "--yes", *P, "--option", "pause-trigger", env=moto.env)
    assert result.code == 0, result.output
    assert trigger_state(moto, uuid) == "Disabled"
    refused = opsctl("run", RUNBOOK, "--yes", *P, "--option", "rollback-alias", env=moto.env)
    assert refused.code == 1 and "Traceback" not in refused.output
    assert "ResourceNotFoundException" in refused.output


def test_healed_worker_with_yes_is_verified(opsctl: Callable[..., Result], moto: Moto) -> None:
    # the diagnosis recommends no option, so no mitigate step runs: a verify step that named
    # steps.rollback failed the whole run as invalid (exit 2) although its `when` was false
    queue, _ = make_queue_with_dlq(moto, "plooral-queue")
    make_worker(moto, "plooral-worker", versions=2)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "alias_now")["status"] == "skipped"
    assert live(moto) == "2"


def test_reserved_concurrency_zero_is_restored(opsctl: Callable[..., Result], moto: Moto) -> None:
    # every invocation throttled (seed 001 §3.2.2): the diagnosis said so, but no option fixed it
    uuid = broken_worker(moto)
    heal_alarm_after(moto, 0)
    lam = moto.client("lambda")
    lam.put_function_concurrency(FunctionName="plooral-worker", ReservedConcurrentExecutions=0)
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env=moto.env)
    assert step(dry, "concurrency")["plan"]["changes"][0]["before"] == 0
    assert lam.get_function_concurrency(FunctionName="plooral-worker")["ReservedConcurrentExecutions"] == 0
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "restore-concurrency",
                    env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "concurrency_now")["status"] == "ok"
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="plooral-worker")
    assert (live(moto), trigger_state(moto, uuid)) == ("3", "Enabled")  # nothing else touched
    again = opsctl("run", RUNBOOK, "--yes", *P, "--option", "restore-concurrency",
                   "-p", "reserved_concurrency=25", env=moto.env)
    assert again.code == 0, again.output
    assert lam.get_function_concurrency(FunctionName="plooral-worker")["ReservedConcurrentExecutions"] == 25


def test_canary_rollback_removes_every_path_to_the_bad_version(opsctl: Callable[..., Result],
                                                                moto: Moto) -> None:
    # defect 10: LIVE -> 2 with 10 % to the bad version 3; setting the version alone kept the 10 %
    broken_worker(moto)
    lam = moto.client("lambda")
    lam.update_alias(FunctionName="plooral-worker", Name="LIVE", FunctionVersion="2",
                     RoutingConfig={"AdditionalVersionWeights": {"3": 0.1}})
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "--option", "rollback-alias", env=moto.env)
    assert dry.code == 0, dry.output
    assert step(dry, "worker")["outputs"]["suspects"] == ["3"]
    change = step(dry, "rollback")["plan"]["changes"][0]
    assert change["before"] == {"version": "2", "routing": {"3": 0.1}}
    assert change["after"] == {"version": "2", "routing": {}}
    assert "version 3 (10% weighted routing)" in change["detail"]
    assert_rolled_back_to_2(opsctl, moto)



def assert_rolled_back_to_2(opsctl: Callable[..., Result], moto: Moto) -> None:
    """`--yes --option rollback-alias` with the alarm healing: LIVE serves version 2 alone, and
    verify says no path to version 3 is left."""
    heal_alarm_after(moto, 2)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-alias", env=moto.env)
    assert result.code == 0, result.output
    alias = moto.client("lambda").get_alias(FunctionName="plooral-worker", Name="LIVE")
    assert alias["FunctionVersion"] == "2"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert any("no path to version(s) 3" in f["message"] for f in step(result, "alias_now")["findings"])

@pytest.mark.parametrize(("primary", "weights"), [("3", {"2": 0.1}), ("2", {"3": 0.1, "1": 0.05})])
def test_weighted_rollback_keeps_the_older_version_whichever_side_it_is_on(
        opsctl: Callable[..., Result], moto: Moto, primary: str, weights: dict[str, float]) -> None:
    """QA: a shift in progress (LIVE -> 3, the failing version, with 10 % left on 2) was "rolled
    back" to 3 at 100 %, dropping the good version, and verified (the weighted version was taken
    for the suspect).  The newest version reached is the suspect whichever side it is on; two
    weighted versions are both removed."""
    broken_worker(moto)
    lam = moto.client("lambda")
    lam.update_alias(FunctionName="plooral-worker", Name="LIVE", FunctionVersion=primary,
                     RoutingConfig={"AdditionalVersionWeights": weights})
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "--option", "rollback-alias", env=moto.env)
    assert dry.code == 0, dry.output
    assert step(dry, "worker")["outputs"]["suspects"] == ["3"]
    change = step(dry, "rollback")["plan"]["changes"][0]
    assert change["after"] == {"version": "2", "routing": {}}
    assert_rolled_back_to_2(opsctl, moto)


def test_rollback_is_refused_when_the_trigger_does_not_invoke_the_alias(opsctl: Callable[..., Result],
                                                                        moto: Moto) -> None:
    # the trigger invokes the unqualified function ($LATEST): moving LIVE changes nothing it runs
    uuid = broken_worker(moto, qualifier="")
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env=moto.env)
    assert any("not the alias LIVE" in f["message"] for f in step(dry, "trigger")["findings"])
    assert any("changes nothing the worker runs" in f["message"] for f in step(dry, "rollback")["findings"])
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-alias", env=moto.env)
    assert result.code == 1, result.output
    reason = " ".join(step(result, "rollback")["reason"].split())
    assert "invokes plooral-worker (unqualified: $LATEST)" in reason
    assert "changes nothing the worker runs" in reason
    assert "verified" not in json.loads(result.stdout)["message"]
    assert (live(moto), trigger_state(moto, uuid)) == ("3", "Enabled")


def test_pause_finds_the_trigger_bound_to_the_alias_and_counts_only_this_function(
        opsctl: Callable[..., Result], moto: Moto) -> None:
    uuid = broken_worker(moto)
    assert moto.client("lambda").get_event_source_mapping(UUID=uuid)["FunctionArn"].endswith(":LIVE")
    # another function reads the same queue: it is not this worker, and it keeps running
    make_worker(moto, "billing-worker", versions=1)
    arn = moto.client("sqs").get_queue_attributes(QueueUrl=moto.client("sqs").get_queue_url(
        QueueName="plooral-queue")["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    other = moto.client("lambda").create_event_source_mapping(FunctionName="billing-worker",
                                                              EventSourceArn=arn)["UUID"]
    heal_alarm_after(moto, 0)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "pause-trigger", env=moto.env)
    assert result.code == 0, result.output
    plan = step(result, "pause")["plan"]
    targets = [c["target"] for c in plan["changes"]]
    assert targets == [f"trigger plooral-queue -> plooral-worker:LIVE ({uuid[:8]})"]
    got = step(result, "trigger_now")["result"]
    assert (got["enabled"], got["others"]) == (0, 1)
    assert (trigger_state(moto, uuid), trigger_state(moto, other)) == ("Disabled", "Enabled")


def test_alarm_that_stays_in_alarm_fails_verify_after_the_window(opsctl: Callable[..., Result],
                                                                 moto: Moto) -> None:
    # a fix that does not work: the alias is rolled back but the errors go on
    broken_worker(moto)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-alias", env=moto.env)
    assert result.code == 1, result.output
    alarm = step(result, "alarm_now")
    assert alarm["attempts"] == 11
    assert any(f["severity"] == "critical" and "still in ALARM after the convergence window" in f["message"]
               for f in alarm["findings"])
    assert live(moto) == "2"


# ---- fault matrix ---------------------------------------------------------------------------------
FAULT_MATRIX: dict[str, tuple[str, str]] = {
    "dead": ("test", "test_dead_endpoint_exits_4"),
    "hung": ("test", "test_hung_endpoint_exits_4_not_abandoned"),
    "slow": ("test", "test_slow_endpoint_still_diagnoses_and_plans"),
    "denied_optional": ("n/a", "the optional probes (queue depths, diagnosis alarm) share their service "
                               "with required ones (SQS for the trigger, CloudWatch for the Errors "
                               "metric the recommendation reads): the endpoint-per-service switch cannot "
                               "deny one without the other, and moto's IAM has no per-action policy"),
    "denied_required": ("test", "test_denied_lambda_is_exit_4"),
    "ordinary_role": ("n/a", "AWS has no superuser role to drop: the runbook's identity is an IAM "
                             "principal, whose limits are the denied cells"),
    "scope": ("test", "test_pause_finds_the_trigger_bound_to_the_alias_and_counts_only_this_function"),
    "converges_slowly": ("test", "test_canary_rollback_removes_every_path_to_the_bad_version"),
    "fix_fails": ("test", "test_alarm_that_stays_in_alarm_fails_verify_after_the_window"),
    "interrupt_resume": ("n/a", "each mitigation is one UpdateAlias / PutFunctionConcurrency call or "
                                "one UpdateEventSourceMapping per trigger, each applied or not; a resumed "
                                "run plans again from the live state and skips what is already done"),
}


def test_fault_matrix_cells_are_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())


def test_dead_endpoint_exits_4(opsctl: Callable[..., Result], moto: Moto) -> None:
    assert_dead_endpoint_exits_4(opsctl, moto, RUNBOOK, *P)


def test_hung_endpoint_exits_4_not_abandoned(opsctl: Callable[..., Result], moto: Moto,
                                            silent_server: Any, tmp_path: Any) -> None:
    assert_hung_endpoint_exits_4(opsctl, moto, silent_server, tmp_path, RUNBOOK, "worker", *P)


def test_slow_endpoint_still_diagnoses_and_plans(opsctl: Callable[..., Result], moto: Moto,
                                                 slow_moto: tuple[Moto, Any]) -> None:
    broken_worker(moto)
    slow, proxy = slow_moto
    proxy.delay = 0.5
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "--option", "rollback-alias",
                    env=slow.env)
    assert result.code == 0, result.output
    assert step(result, "rollback")["plan"]["changes"][0]["after"] == {"version": "2", "routing": {}}


def test_denied_lambda_is_exit_4(opsctl: Callable[..., Result], moto_iam: Moto) -> None:
    result = opsctl("run", RUNBOOK, "--dry-run", *P, env=moto_iam.env, timeout=200)
    assert result.code == 4, result.output
    assert "access denied (InvalidClientTokenId)" in result.output
