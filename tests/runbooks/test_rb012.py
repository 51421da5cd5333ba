"""rb-012 (Lambda worker failure) rehearsed through the real CLI against moto in server mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.aws import Moto, fill, make_queue_with_dlq, make_worker
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.aws
RUNBOOK = str(REPO / "runbooks" / "rb-012-lambda-worker-failure.yaml")
P = ["-p", "function=plooral-worker", "-p", "queue=plooral-queue"]


def step(result: Result, step_id: str) -> dict[str, Any]:
    return next(s for s in json.loads(result.stdout)["steps"] if s["id"] == step_id)


def broken_worker(moto: Moto) -> str:
    """Version 3 is LIVE and failing: Errors datapoints, alarm in ALARM, 12 messages in the DLQ,
    an enabled SQS trigger.  Returns the trigger's UUID."""
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 12)
    make_worker(moto, "plooral-worker", versions=3)
    arn = moto.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    # created after the messages, and the queue stays empty: moto would invoke the function
    uuid = moto.client("lambda").create_event_source_mapping(
        FunctionName="plooral-worker", EventSourceArn=arn["Attributes"]["QueueArn"])["UUID"]
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
    assert step(result, "rollback")["plan"]["changes"][0]["after"] == "2"
    assert step(result, "pause")["plan"]["changes"][0]["after"] == "Disabled"
    assert (live(moto), trigger_state(moto, uuid)) == ("3", "Enabled")


def test_rollback_alias_with_yes(opsctl: Callable[..., Result], moto: Moto) -> None:
    uuid = broken_worker(moto)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "rollback-alias", env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "alias_now")["status"] == "ok"
    assert (live(moto), trigger_state(moto, uuid)) == ("2", "Enabled")


def test_rollback_to_an_explicit_version(opsctl: Callable[..., Result], moto: Moto) -> None:
    broken_worker(moto)
    result = opsctl("run", RUNBOOK, "--yes", *P, "--option", "rollback-alias", "-p", "version=1",
                    env=moto.env)
    assert result.code == 0, result.output
    assert live(moto) == "1"


def test_pause_then_resume_the_trigger(opsctl: Callable[..., Result], moto: Moto) -> None:
    uuid = broken_worker(moto)
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
    uuid = broken_worker(moto)
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
