"""The AWS read-only guard against moto in server mode (every call is real HTTP): every read-only
action and every plan() works through the guarded clients; a mutating call from read-only code is
refused before it is sent; aws.sqs.peek receives by name only, and never on a redrive source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opsctl.actions import load_all
from opsctl.actions.base import Action, ActionContext
from opsctl.backends.aws import client
from opsctl.backends.readonly import SQS_PEEK, aws_is_read
from opsctl.errors import ActionError, ReadOnlyViolation
from opsctl.records import Plan
from tests.fixtures.aws import (
    Moto,
    depth,
    fill,
    make_aurora,
    make_ecs_service,
    make_queue_with_dlq,
    make_worker,
)
from tests.guards.helpers import assert_covers, extra_actions, record, run_engine

pytestmark = pytest.mark.aws

READ_ONLY: dict[str, dict[str, Any]] = {
    "aws.cloudwatch.alarms": {"prefix": "orders"},
    "aws.cloudwatch.metric": {"namespace": "AWS/SQS", "metric": "ApproximateNumberOfMessagesVisible",
                              "dimensions": {"QueueName": "orders"}},
    "aws.ecs.service": {"cluster": "c", "service": "api"},
    "aws.lambda.function": {"function": "w", "alias": "LIVE"},
    "aws.rds.describe": {"cluster": "db"},
    "aws.rds.events": {"cluster": "db"},
    "aws.rds.snapshots": {"cluster": "db"},
    "aws.sqs.consumed": {"queue": "orders", "dlq_baseline": 5},  # the world's DLQ holds 5
    "aws.sqs.consumers": {"queue": "orders"},
    "aws.sqs.peek": {"queue": "orders-dlq", "count": 3},
    "aws.sqs.stats": {"queue": "orders"},
}
PLANS: dict[str, dict[str, Any]] = {
    "aws.ecs.force_deployment": {"cluster": "c", "service": "api"},
    "aws.ecs.rollback": {"cluster": "c", "service": "api"},
    "aws.ecs.scale": {"cluster": "c", "service": "api", "desired": 3},
    "aws.lambda.concurrency": {"function": "w", "reserved": 0},
    "aws.lambda.rollback_alias": {"function": "w", "alias": "LIVE"},
    "aws.lambda.trigger": {"function": "w", "queue": "orders", "enabled": False},
    "aws.rds.add_reader": {"cluster": "db"},
    "aws.rds.failover": {"cluster": "db"},
    "aws.sqs.redrive": {"queue": "orders"},
}


def test_the_tables_cover_every_registered_aws_action() -> None:
    assert_covers(READ_ONLY, "aws", read_only=True)
    assert_covers(PLANS, "aws", read_only=False)


@pytest.fixture
def world(moto: Moto) -> dict[str, str]:
    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 5)
    make_worker(moto, "w", versions=2)
    arn = moto.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    moto.client("lambda").create_event_source_mapping(FunctionName="w",
                                                      EventSourceArn=arn["Attributes"]["QueueArn"])
    make_ecs_service(moto, "c", "api", desired=2)
    make_aurora(moto, "db", members=2)
    moto.client("cloudwatch").put_metric_alarm(
        AlarmName="orders-dlq-depth", Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
        Dimensions=[{"Name": "QueueName", "Value": "orders-dlq"}], Statistic="Maximum", Period=60,
        EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold")
    return {"queue": queue, "dlq": dlq}


def _ctx(aws_ctx: ActionContext, clients: dict[str, Any], read_only: bool = True) -> ActionContext:
    return ActionContext(environment=aws_ctx.environment, clients=clients, read_only=read_only)


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_every_read_only_action_works_under_the_guard(name: str, world: dict[str, str], moto: Moto,
                                                      aws_ctx: ActionContext) -> None:
    clients: dict[str, Any] = {}
    result = load_all()[name](READ_ONLY[name], _ctx(aws_ctx, clients)).run()
    assert isinstance(result, dict) and result
    made = [key for key in clients if "aws-session:" not in key]  # the run's session, and its clients
    assert made and all(":read-only:" in key for key in made)  # only guarded clients were made
    assert depth(moto, world["dlq"]) == 5 and depth(moto, world["queue"]) == 0


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_plan_works_under_the_guard(name: str, world: dict[str, str], moto: Moto,
                                          aws_ctx: ActionContext) -> None:
    clients: dict[str, Any] = {}
    plan = load_all()[name](PLANS[name], _ctx(aws_ctx, clients)).plan()
    assert isinstance(plan, Plan)
    assert all(":read-only:" in key for key in clients if "aws-session:" not in key)
    assert depth(moto, world["dlq"]) == 5


def test_a_guarded_client_refuses_writes_before_sending(world: dict[str, str], moto: Moto,
                                                         aws_ctx: ActionContext) -> None:
    clients: dict[str, Any] = {}
    sqs = client(_ctx(aws_ctx, clients), "sqs")
    for call, operation in [(lambda: sqs.send_message(QueueUrl=world["queue"], MessageBody="x"),
                             "SendMessage"),
                            (lambda: sqs.purge_queue(QueueUrl=world["dlq"]), "PurgeQueue"),
                            (lambda: sqs.delete_queue(QueueUrl=world["dlq"]), "DeleteQueue"),
                            (lambda: sqs.receive_message(QueueUrl=world["dlq"]), "ReceiveMessage")]:
        with pytest.raises(ReadOnlyViolation, match=f"read-only guard: aws refused sqs:{operation}"):
            call()
    ecs = client(_ctx(aws_ctx, clients), "ecs")
    with pytest.raises(ReadOnlyViolation, match="ecs:UpdateService"):
        ecs.update_service(cluster="c", service="api", desiredCount=0)
    assert depth(moto, world["dlq"]) == 5 and depth(moto, world["queue"]) == 0
    service = moto.client("ecs").describe_services(cluster="c", services=["api"])["services"][0]
    assert service["desiredCount"] == 2
    # apply()'s client, in the same run, is another object and is not guarded
    writable = client(_ctx(aws_ctx, clients, read_only=False), "sqs")
    assert writable is not sqs
    writable.send_message(QueueUrl=world["queue"], MessageBody="from apply")
    assert depth(moto, world["queue"]) == 1
    # all made from the run's one session: the guard is on each client's own hooks, not the session's
    assert [key for key in clients if key.startswith("aws-session:")] == ["aws-session:None:eu-west-1"]
    with pytest.raises(ReadOnlyViolation, match="sqs:SendMessage"):
        sqs.send_message(QueueUrl=world["queue"], MessageBody="x")
    assert depth(moto, world["queue"]) == 1


def test_peek_may_only_make_messages_visible_again(world: dict[str, str], aws_ctx: ActionContext) -> None:
    sqs = client(_ctx(aws_ctx, {}), "sqs", allow=SQS_PEEK)
    got = sqs.receive_message(QueueUrl=world["dlq"], MaxNumberOfMessages=1, VisibilityTimeout=30)
    handle = got["Messages"][0]["ReceiptHandle"]
    with pytest.raises(ReadOnlyViolation, match="ChangeMessageVisibility:.*only VisibilityTimeout=0"):
        sqs.change_message_visibility(QueueUrl=world["dlq"], ReceiptHandle=handle, VisibilityTimeout=600)
    with pytest.raises(ReadOnlyViolation, match="sqs:DeleteMessage"):
        sqs.delete_message(QueueUrl=world["dlq"], ReceiptHandle=handle)
    sqs.change_message_visibility(QueueUrl=world["dlq"], ReceiptHandle=handle, VisibilityTimeout=0)


def test_peek_shows_its_side_effect(world: dict[str, str], aws_ctx: ActionContext) -> None:
    got = load_all()["aws.sqs.peek"]({"queue": "orders-dlq", "count": 2}, _ctx(aws_ctx, {})).run()
    assert got["count"] == 2 and all(m["receive_count"] >= 1 for m in got["messages"])
    assert "receive count went up by one" in got["side_effect"]


def test_peek_refuses_a_queue_whose_redrive_policy_could_move_what_it_peeks(
        moto: Moto, aws_ctx: ActionContext) -> None:
    queue, _ = make_queue_with_dlq(moto, "jobs", max_receive=2)  # no consumer: nothing else receives
    fill(moto, queue, 2)
    with pytest.raises(ActionError, match=r"refuses .*jobs: its RedrivePolicy moves a message to "
                                          r"arn:aws:sqs:.*jobs-dlq after 2 receive\(s\)"):
        load_all()["aws.sqs.peek"]({"queue": "jobs"}, _ctx(aws_ctx, {})).run()
    sqs = moto.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "2"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    first = sqs.receive_message(QueueUrl=queue, AttributeNames=["All"])["Messages"][0]
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"  # the refused peek received nothing


class SendFromRun(Action):
    name = "guardtest.aws_send"
    backend = "aws"
    summary = "test"

    def run(self) -> Any:
        queue = self.ctx.environment.settings["queue"]
        client(self.ctx, "sqs").send_message(QueueUrl=queue, MessageBody="x")
        return {"sent": 1}


def test_a_read_only_step_that_writes_fails_with_the_operation_named(
        world: dict[str, str], moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rb = tmp_path / "rb-960-aws.yaml"
    rb.write_text("id: rb-960\ntitle: t\nseverity: P4\nsummary: t\ndiagnose:\n"
                  "  - id: bad\n    action: guardtest.aws_send\n    retries: 2\n    interval: 0.1s\n")
    config = tmp_path / "opsctl.yaml"
    config.write_text(json.dumps({"default_environment": "t", "environments": {"t": {
        "settings": {"queue": world["queue"]},
        "aws": {"endpoint_url": moto.endpoint, "region": "eu-west-1"}}}}))
    monkeypatch.chdir(tmp_path)
    with extra_actions(SendFromRun):
        outcome = run_engine(rb, monkeypatch, tmp_path / "state")
    bad = record(outcome, "bad")
    assert (outcome.exit_code, bad.status, bad.attempts) == (1, "failed", 1)
    assert "read-only guard: aws refused sqs:SendMessage" in bad.reason
    assert depth(moto, world["queue"]) == 0


@pytest.mark.parametrize("operation, read", [
    ("DescribeDBClusters", True), ("ListQueues", True), ("GetQueueAttributes", True),
    ("BatchGetItem", True), ("FilterLogEvents", True), ("HeadObject", True),
    ("GetClusterCredentials", False), ("SendMessage", False), ("ReceiveMessage", False),
    ("UpdateService", False), ("FailoverDBCluster", False), ("PutMetricData", False),
    ("DeleteMessageBatch", False), ("StartQueryExecution", False),
])
def test_the_read_allow_list(operation: str, read: bool) -> None:
    assert aws_is_read(operation) is read
