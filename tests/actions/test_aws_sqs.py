"""SQS actions against moto in server mode: depths, peek, consumers, and the client-side redrive."""

from __future__ import annotations

import threading
import time

import pytest

from opsctl.actions.aws.redrive import Redrive
from opsctl.actions.aws.sqs import Consumers, Peek, QueueStats
from opsctl.actions.base import ActionContext
from opsctl.errors import ActionError, Cancelled
from tests.fixtures.aws import Moto, depth, drain_bodies, fill, make_queue_with_dlq, make_worker
from tests.timing import budget

pytestmark = pytest.mark.aws


def test_stats_finds_the_dlq_from_the_redrive_policy(moto: Moto, aws_ctx: ActionContext) -> None:
    _, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 25)
    got = QueueStats({"queue": "orders"}, aws_ctx).run()
    assert got["dlq"]["name"] == "orders-dlq"
    assert (got["visible"], got["dlq_visible"]) == (0, 25)
    assert got["queue"]["max_receive_count"] == 3


def test_peek_returns_the_messages_to_the_queue(moto: Moto, aws_ctx: ActionContext) -> None:
    _, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 4)
    got = Peek({"queue": "orders-dlq", "count": 10}, aws_ctx).run()
    assert got["count"] == 4
    assert sorted(m["body"] for m in got["messages"]) == [f"msg-{i:06d}" for i in range(4)]
    assert got["messages"][0]["attributes"] == ["seq", "tenant"]
    stats = QueueStats({"queue": dlq}, aws_ctx).run()["queue"]
    assert (stats["visible"], stats["in_flight"]) == (4, 0)  # visible again, not consumed


def test_consumers_report_the_mapping_state(moto: Moto, aws_ctx: ActionContext) -> None:
    queue, _ = make_queue_with_dlq(moto, "jobs")
    make_worker(moto, "worker")
    arn = moto.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    moto.client("lambda").create_event_source_mapping(
        FunctionName="worker", EventSourceArn=arn["Attributes"]["QueueArn"], Enabled=False)
    got = Consumers({"queue": "jobs"}, aws_ctx).run()
    assert (got["total"], got["enabled"]) == (1, 0)
    assert got["mappings"][0]["function"] == "worker"


def test_redrive_plan_refuses_more_than_max_messages(moto: Moto, aws_ctx: ActionContext) -> None:
    _, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 30)
    with pytest.raises(ActionError, match="more than max_messages=20"):
        Redrive({"queue": "orders", "max_messages": 20}, aws_ctx).plan()
    plan = Redrive({"queue": "orders", "max_messages": 20, "partial": True}, aws_ctx).plan()
    assert plan.changes[0].after == {"dlq": 10, "queue": 20}
    assert depth(moto, dlq) == 30  # planning changed nothing


def test_redrive_empty_dlq_is_an_empty_plan(moto: Moto, aws_ctx: ActionContext) -> None:
    make_queue_with_dlq(moto, "orders")
    assert Redrive({"queue": "orders"}, aws_ctx).plan().empty


def test_redrive_partial_moves_exactly_max_messages(moto: Moto, aws_ctx: ActionContext) -> None:
    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 95)
    action = Redrive({"queue": "orders", "max_messages": 42, "partial": True}, aws_ctx)
    got = action.apply(action.plan())
    assert (got["moved"], got["planned"], got["remaining"], got["stopped"]) == (42, 42, 53, "max_messages")
    assert (depth(moto, queue), depth(moto, dlq)) == (42, 53)


def cancel_once_moving(moto: Moto, queue: str, cancel: threading.Event, at_least: int) -> None:
    """Ctrl-C once the redrive has visibly started (a timer races the start on a loaded machine)."""
    def watch() -> None:
        end = time.monotonic() + 120
        while depth(moto, queue) < at_least and time.monotonic() < end:
            time.sleep(0.05)
        cancel.set()

    threading.Thread(target=watch, daemon=True).start()


def test_redrive_interrupted_then_resumed_counts_exactly(moto: Moto, aws_ctx: ActionContext) -> None:
    queue, dlq = make_queue_with_dlq(moto, "orders")
    sent = fill(moto, dlq, 2000)
    cancel = threading.Event()
    ctx = ActionContext(environment=aws_ctx.environment, cancelled=cancel)
    first = Redrive({"queue": "orders", "workers": 6, "visibility_timeout": 4, "rate": 800}, ctx)
    plan = first.plan()
    assert plan.changes[0].before == {"dlq": 2000, "dlq_in_flight": 0, "dlq_delayed": 0, "queue": 0}
    assert "client-side mover" in plan.changes[0].detail
    cancel_once_moving(moto, queue, cancel, 100)
    started = time.monotonic()
    with pytest.raises(Cancelled) as stopped:
        first.apply(plan)
    assert time.monotonic() - started < budget(6)  # stops promptly, after the batches in flight
    moved = depth(moto, queue)
    assert 0 < moved < 2000
    # what was done before the stop travels with the error, for the run log
    partial = stopped.value.partial
    assert isinstance(partial, dict)
    assert (partial["moved"], partial["planned"], partial["duplicates"], partial["stopped"]) == (
        moved, 2000, 0, "interrupted")
    assert stopped.value.partial_note.startswith(f"{moved} of 2000 message(s) moved")
    # on Ctrl-C nothing is left hidden: the batches not sent were made visible again at once
    assert moved + depth(moto, dlq) == 2000
    again = Redrive({"queue": "orders", "workers": 6}, aws_ctx)
    plan = again.plan()
    assert f"{moved} of 2000 already moved, {2000 - moved} to go" in " ".join(plan.warnings)
    got = again.apply(plan)
    assert (got["moved"], got["planned"], got["moved_now"], got["duplicates"], got["failed"]) == (
        2000, 2000, 2000 - moved, 0, 0)
    assert (got["dlq_after"], got["remaining"]) == (0, 0)
    assert sorted(drain_bodies(moto, queue)) == sent


def test_redrive_deletes_what_an_earlier_run_sent_instead_of_sending_it_again(
        moto: Moto, aws_ctx: ActionContext) -> None:
    # a stop between send and delete (a killed process, a failed delete): the ledger says these
    # DLQ messages already have their copy in the queue
    from opsctl.actions.aws.ledger import Ledger

    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 30)
    sqs = moto.client("sqs")
    plan = Redrive({"queue": "orders"}, aws_ctx).plan()
    ledger = Ledger(__import__("pathlib").Path(plan.data["ledger"]))
    ledger.start(30, "earlier-run", dlq, queue)
    got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=1)["Messages"]
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": m["Body"]}
                                                    for i, m in enumerate(got)])
    ledger.record("sending", ids=[m["MessageId"] for m in got])
    ledger.record("sent", ids=[m["MessageId"] for m in got], copies=[])
    time.sleep(1.1)  # the earlier run died: its messages are visible in the DLQ again
    assert (depth(moto, queue), depth(moto, dlq)) == (10, 30)
    action = Redrive({"queue": "orders"}, aws_ctx)
    plan = action.plan()
    assert "10 already sent will be deleted from the DLQ, not sent again" in " ".join(plan.warnings)
    result = action.apply(plan)
    assert (result["moved"], result["moved_now"], result["reconciled"], result["duplicates"]) == (
        30, 20, 10, 0)
    assert (depth(moto, queue), depth(moto, dlq)) == (30, 0)
    bodies = drain_bodies(moto, queue)
    assert len(bodies) == len(set(bodies)) == 30


def test_redrive_leaves_messages_of_unknown_outcome_in_the_dlq(moto: Moto, aws_ctx: ActionContext) -> None:
    # killed during send_message_batch: "sending" without an answer; sending again might double
    from opsctl.actions.aws.ledger import Ledger

    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 15)
    plan = Redrive({"queue": "orders", "visibility_timeout": 1}, aws_ctx).plan()
    sqs = moto.client("sqs")
    ledger = Ledger(__import__("pathlib").Path(plan.data["ledger"]))
    ledger.start(15, "killed-run", dlq, queue)
    got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=5, VisibilityTimeout=0)["Messages"]
    ledger.record("sending", ids=[m["MessageId"] for m in got])
    action = Redrive({"queue": "orders", "visibility_timeout": 1}, aws_ctx)
    plan = action.plan()
    assert "5 message(s) were being sent when an earlier redrive was killed" in " ".join(plan.warnings)
    result = action.apply(plan)
    assert (result["moved"], result["unknown"], result["duplicates"], result["remaining"]) == (10, 5, 0, 5)
    forced = Redrive({"queue": "orders", "resend_unknown": True}, aws_ctx)
    time.sleep(1.1)
    result = forced.apply(forced.plan())
    assert (result["moved"], result["planned"], result["unknown"], result["remaining"]) == (15, 15, 0, 0)


def test_redrive_interrupted_then_resumed_loses_no_body(moto: Moto, aws_ctx: ActionContext) -> None:
    queue, dlq = make_queue_with_dlq(moto, "orders")
    sent = fill(moto, dlq, 1000)
    cancel = threading.Event()
    ctx = ActionContext(environment=aws_ctx.environment, cancelled=cancel)
    action = Redrive({"queue": "orders", "visibility_timeout": 2, "rate": 300}, ctx)
    plan = action.plan()
    cancel_once_moving(moto, queue, cancel, 50)
    with pytest.raises(Cancelled):
        action.apply(plan)
    assert 0 < depth(moto, queue) < 1000
    time.sleep(2.1)
    again = Redrive({"queue": "orders"}, aws_ctx)
    assert again.apply(again.plan())["dlq_after"] == 0
    assert sorted(drain_bodies(moto, queue)) == sent


def test_redrive_fifo_keeps_groups_and_order(moto: Moto, aws_ctx: ActionContext) -> None:
    queue, dlq = make_queue_with_dlq(moto, "payments", fifo=True)
    sent = fill(moto, dlq, 200, fifo=True, groups=4)
    action = Redrive({"queue": queue, "workers": 4}, aws_ctx)
    got = action.apply(action.plan())
    assert got["moved"] == 200
    sqs = moto.client("sqs")
    seen: dict[str, list[int]] = {}
    while True:
        msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                   AttributeNames=["MessageGroupId"]).get("Messages", [])
        if not msgs:
            break
        for m in msgs:
            seen.setdefault(m["Attributes"]["MessageGroupId"], []).append(int(m["Body"].split("-")[1]))
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
    assert sorted(seen) == ["g0", "g1", "g2", "g3"]
    assert all(v == sorted(v) and all(n % 4 == int(g[1]) for n in v) for g, v in seen.items())
    assert sum(len(v) for v in seen.values()) == len(sent)


def test_redrive_plan_without_dlq_is_refused(moto: Moto, aws_ctx: ActionContext) -> None:
    moto.client("sqs").create_queue(QueueName="plain")
    with pytest.raises(ActionError, match="no RedrivePolicy"):
        Redrive({"queue": "plain"}, aws_ctx).plan()


def test_redrive_stops_at_the_step_deadline(moto: Moto, aws_ctx: ActionContext) -> None:
    from opsctl.errors import StepTimeout

    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 400)
    ctx = ActionContext(environment=aws_ctx.environment)
    action = Redrive({"queue": "orders", "rate": 50, "visibility_timeout": 1}, ctx)
    plan = action.plan()
    ctx.deadline = time.monotonic() + 4  # apply's own deadline (the plan's may be used up on a busy machine)
    with pytest.raises(StepTimeout) as stopped:
        action.apply(plan)
    assert ctx.timed_out
    time.sleep(1.1)
    moved = depth(moto, queue)
    assert 0 < moved < 400 and moved + depth(moto, dlq) == 400
    assert isinstance(stopped.value.partial, dict) and stopped.value.partial["moved"] == moved


def test_redrive_refuses_when_the_dlq_changed_since_the_plan(moto: Moto, aws_ctx: ActionContext) -> None:
    import json

    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 5)
    action = Redrive({"queue": "orders"}, aws_ctx)
    plan = action.plan()
    sqs = moto.client("sqs")
    other = sqs.create_queue(QueueName="orders-dlq-2")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})
    with pytest.raises(ActionError, match="changed since the plan"):
        action.apply(plan)
    assert (depth(moto, queue), depth(moto, dlq)) == (0, 5)


def test_stop_while_rate_limited_sends_nothing_more(moto: Moto) -> None:
    # 4 workers each hold a batch of 10 while the 2 msg/s bucket makes them wait: a stop (Ctrl-C,
    # step timeout) must not flush those batches at once; they go back to the DLQ, visible
    from opsctl.backends.sqs_redrive import Mover

    queue, dlq = make_queue_with_dlq(moto, "limited")
    fill(moto, dlq, 40)
    mover = Mover(moto.client("sqs"), dlq, queue, max_messages=40, workers=4, rate=2.0)
    threading.Timer(2.0, mover.stop.set).start()
    stats = mover.run()
    assert stats.moved <= 10, stats
    assert depth(moto, queue) == stats.moved
    a = moto.client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert int(a["ApproximateNumberOfMessages"]) == 40 - stats.moved  # visible again, not hidden


def test_mover_does_not_end_while_a_reconciling_receive_hides_the_last_batch(moto: Moto, tmp_path) -> None:
    # The budget is the DLQ's exact count (as the action plans it).  Once one worker has reserved
    # the last 7, another finds the budget empty and, the ledger having a sent-but-undeleted
    # message of an earlier run, receives to reconcile: it used to get the 7 fresh ones, hide them
    # until it handed them back, and the reserving worker found the DLQ "empty" and stopped; the
    # mover ended with moved 0 of 7 and all 7 in the DLQ (the bench's 2,990 of 3,000).
    from opsctl.actions.aws.ledger import Ledger
    from opsctl.backends.sqs_redrive import Mover

    queue, dlq = make_queue_with_dlq(moto, "last")
    fill(moto, dlq, 7)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.start(1, "earlier", dlq, queue)
    ledger.record("sent", ids=["sent-by-an-earlier-run"], copies=["c"])  # its delete was lost
    ledger.close("done")
    ledger.start(7, "now", dlq, queue)
    reconciled, reserved = threading.Event(), threading.Event()
    asked: dict[int, int] = {}

    def before(params: dict, **_: object) -> None:
        asked[threading.get_ident()] = params.get("MaxNumberOfMessages", 0)
        if params.get("MaxNumberOfMessages") == 7:  # the receive of the reserved last 7...
            reconciled.wait(budget(0.5))  # ...lands after a reconciling receive, if there is one

    def after(**_: object) -> None:
        (reserved if asked.get(threading.get_ident()) == 7 else reconciled).set()

    def release(**_: object) -> None:  # a reconciling worker hands back fresh messages after that
        reserved.wait(budget(2.0))

    sqs = moto.client("sqs")
    sqs.meta.events.register("before-parameter-build.sqs.ReceiveMessage", before)
    sqs.meta.events.register("after-call.sqs.ReceiveMessage", after)
    sqs.meta.events.register("before-call.sqs.ChangeMessageVisibilityBatch", release)
    stats = Mover(sqs, dlq, queue, max_messages=7, workers=2, wait_seconds=0, journal=ledger).run()
    assert (stats.moved, ledger.moved, ledger.duplicates) == (7, 7, 0), stats
    assert (depth(moto, queue), depth(moto, dlq)) == (7, 0)


def _send_big(moto: Moto, url: str, n: int, size: int) -> list[str]:
    import os

    sqs, bodies = moto.client("sqs"), []
    for i in range(n):
        body = f"{i:03d}" + "x" * size
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
            "s": {"DataType": "String", "StringValue": "é unicode"},
            "n": {"DataType": "Number", "StringValue": "-1.5e3"},
            "b": {"DataType": "Binary", "BinaryValue": os.urandom(64)},
            "c": {"DataType": "String.custom", "StringValue": "x"},
            "nf": {"DataType": "Number.float", "StringValue": "3.14"},
            "bz": {"DataType": "Binary.gzip", "BinaryValue": b"\x00\x01"}})
        bodies.append(body)
    return bodies


def test_redrive_large_messages_with_every_attribute_type(moto: Moto, aws_ctx: ActionContext) -> None:
    # 10 x 200 KB: one send_message_batch of the received 10 would be 2 MB, over SQS's batch limit,
    # and the whole batch used to fail (moved 0, failed 10)
    queue, dlq = make_queue_with_dlq(moto, "big")
    bodies = _send_big(moto, dlq, 10, 200_000)
    action = Redrive({"queue": "big", "workers": 1, "visibility_timeout": 5}, aws_ctx)
    got = action.apply(action.plan())
    assert (got["moved"], got["failed"], got["dlq_after"], got["dlq_in_flight_after"]) == (10, 0, 0, 0)
    sqs = moto.client("sqs")
    one = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"][0]
    assert one["Body"] in bodies
    attrs = one["MessageAttributes"]
    assert {k: v["DataType"] for k, v in attrs.items()} == {
        "s": "String", "n": "Number", "b": "Binary", "c": "String.custom", "nf": "Number.float",
        "bz": "Binary.gzip"}
    assert (attrs["s"]["StringValue"], attrs["bz"]["BinaryValue"]) == ("é unicode", b"\x00\x01")
    assert sorted(drain_bodies(moto, queue) + [one["Body"]]) == bodies


def test_redrive_halves_a_batch_the_endpoint_finds_too_long(moto: Moto, aws_ctx: ActionContext,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # if opsctl's size estimate is above the endpoint's limit, BatchRequestTooLong splits the batch
    from opsctl.backends import sqs_redrive

    monkeypatch.setattr(sqs_redrive, "BATCH_BYTES", 100 * 1024 * 1024)
    queue, dlq = make_queue_with_dlq(moto, "big")
    bodies = _send_big(moto, dlq, 10, 300_000)
    mover = sqs_redrive.Mover(moto.client("sqs"), dlq, queue, max_messages=10, workers=1)
    stats = mover.run()
    assert (stats.moved, stats.failed) == (10, 0), stats.errors
    assert sorted(drain_bodies(moto, queue)) == bodies


def test_queue_and_dlq_given_by_arn(moto: Moto, aws_ctx: ActionContext) -> None:
    # alarms and the console show queues by ARN; get_queue_url(QueueName=<arn>) is NonExistentQueue
    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, dlq, 15)
    arn = "arn:aws:sqs:eu-west-1:123456789012:orders"
    got = QueueStats({"queue": arn, "dlq": arn + "-dlq"}, aws_ctx).run()
    assert (got["queue"]["url"], got["dlq"]["url"], got["dlq_visible"]) == (queue, dlq, 15)
    action = Redrive({"queue": arn}, aws_ctx)
    assert action.apply(action.plan())["moved"] == 15
    assert depth(moto, queue) == 15


def test_queue_arn_of_another_region_or_service_is_bad_input(moto: Moto, aws_ctx: ActionContext) -> None:
    from opsctl.errors import ArgumentError

    make_queue_with_dlq(moto, "orders")
    with pytest.raises(ArgumentError, match="in region us-east-1, but the AWS region in use is eu-west-1"):
        QueueStats({"queue": "arn:aws:sqs:us-east-1:123456789012:orders"}, aws_ctx).run()
    with pytest.raises(ArgumentError, match="not an SQS queue ARN"):
        QueueStats({"queue": "arn:aws:sns:eu-west-1:123456789012:orders"}, aws_ctx).run()
