"""rb-007: messages in a DLQ that cannot be received right now are not an empty DLQ (issue 9,
defect 12).  In-flight messages (received, hidden) are tested in tests/runbooks/test_rb007.py;
here the other kind SQS counts apart: *delayed* messages (ApproximateNumberOfMessagesDelayed: sent
with DelaySeconds, or to a queue with a delivery delay).  They were in no count: the diagnosis saw
an empty DLQ, the plan had nothing to move and verify said "verified" with them still there."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.fixtures.aws import Moto, depth, make_queue_with_dlq, run_step
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.aws
RUNBOOK = str(REPO / "runbooks" / "rb-007-sqs-dlq-redrive.yaml")

_step = run_step


def test_delayed_messages_in_the_dlq_are_not_an_empty_dlq(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "delayq")
    sqs = moto.client("sqs")
    for i in range(7):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"late-{i}", DelaySeconds=600)
    attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "7" and attrs["ApproximateNumberOfMessages"] == "0"
    result = opsctl("run", RUNBOOK, "--yes", "-p", "consumer_idle=1s", "-o", "json", "-p", "queue=delayq",
                    env=moto.env)
    assert result.code != 0, result.output
    report = json.loads(result.stdout)
    assert "verified" not in report["message"], report["message"]
    depth_step = _step(result, "depth")
    assert depth_step["result"]["dlq_delayed"] == 7
    assert any("7 more delayed" in f["message"] for f in depth_step["findings"]), depth_step["findings"]
    assert "is empty" not in result.output
    reason = _step(result, "redrive")["reason"]
    assert "0 visible messages but 7 delayed" in reason and "it is not empty" in reason, reason
    assert depth(moto, queue) == 0
