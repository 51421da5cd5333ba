"""SQS: queue and DLQ depths, peeking at DLQ messages, the queue's Lambda consumers, and whether
redriven messages get consumed (the redrive is in ``redrive.py``)."""

from __future__ import annotations

import json
import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import DLQ_ARN, QUEUE_ARN, Iam
from opsctl.backends.aws import aws_errors, client
from opsctl.backends.readonly import SQS_PEEK
from opsctl.errors import ActionError, ArgumentError

_QUEUE = {"type": "string", "minLength": 1, "description": "queue name, URL or ARN"}
_DLQ = {"type": "string", "description": "DLQ name, URL or ARN (default: the queue's RedrivePolicy target)"}
# reading a queue's and its DLQ's depths; the DLQ, when not given, is the RedrivePolicy target: any queue
_READ_PAIR = (Iam(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), QUEUE_ARN + DLQ_ARN),)


def queue_url(sqs: Any, queue: str) -> str:
    """URL of a queue given by URL, name or ARN (arn:aws:sqs:REGION:ACCOUNT:NAME, as alarms and
    the console show it; its account is passed on, its region must be the client's)."""
    if queue.startswith(("http://", "https://")):
        return queue
    kwargs = {"QueueName": queue}
    if queue.startswith("arn:"):
        parts = queue.split(":")
        if len(parts) != 6 or parts[2] != "sqs" or not parts[5]:
            raise ArgumentError(f"{queue!r} is not an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)")
        region = sqs.meta.region_name
        if parts[3] and parts[3] != region:
            raise ArgumentError(f"queue {queue} is in region {parts[3]}, but the AWS region in use is "
                                f"{region}: set aws.region / AWS_REGION to {parts[3]}")
        kwargs = {"QueueName": parts[5], **({"QueueOwnerAWSAccountId": parts[4]} if parts[4] else {})}
    with aws_errors(f"SQS queue {queue!r}"):
        return str(sqs.get_queue_url(**kwargs)["QueueUrl"])


def _attributes(sqs: Any, url: str) -> dict[str, str]:
    with aws_errors(f"SQS queue {url}"):
        return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def _dlq_url(sqs: Any, attrs: dict[str, str], override: str | None) -> str | None:
    if override:
        return queue_url(sqs, override)
    policy = attrs.get("RedrivePolicy")
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"]
    account, name = arn.split(":")[4], arn.split(":")[5]
    with aws_errors(f"DLQ {arn} (the RedrivePolicy target)"):
        return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def _depths(url: str, attrs: dict[str, str]) -> dict[str, Any]:
    return {"name": url.rstrip("/").rsplit("/", 1)[-1], "url": url, "arn": attrs.get("QueueArn", ""),
            "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
            "visibility_timeout": int(attrs.get("VisibilityTimeout", 30)),
            "fifo": attrs.get("FifoQueue") == "true"}


def queue_pair(sqs: Any, queue: str, dlq: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(queue depths, DLQ depths or None) with fresh attributes."""
    url = queue_url(sqs, queue)
    attrs = _attributes(sqs, url)
    dlq_url = _dlq_url(sqs, attrs, dlq)
    main = _depths(url, attrs)
    policy = json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else {}
    main["max_receive_count"] = int(policy.get("maxReceiveCount", 0))
    return main, (_depths(dlq_url, _attributes(sqs, dlq_url)) if dlq_url else None)


@register
class QueueStats(Action):
    """Depth of a queue and of its DLQ (found from the RedrivePolicy, or given).

    ```yaml
    - id: depth
      action: aws.sqs.stats
      with: {queue: jobs-queue}
      expect:
        - that: "result.dlq_visible == 0"
          severity: warning
          message: "{{ result.dlq_visible }} messages in {{ result.dlq.name }}"
    ```
    """

    name = "aws.sqs.stats"
    permissions = _READ_PAIR
    backend = "aws"
    summary = "visible / in-flight / delayed counts of a queue and its DLQ"
    schema = type_schema({"queue": _QUEUE, "dlq": _DLQ}, required=["queue"])

    def run(self) -> dict[str, Any]:
        main, dlq = queue_pair(client(self.ctx, "sqs"), self.args["queue"], self.args.get("dlq"))
        return {"queue": main, "dlq": dlq, "visible": main["visible"],
                "dlq_visible": dlq["visible"] if dlq else 0,
                "dlq_in_flight": dlq["in_flight"] if dlq else 0,
                # delayed messages (DelaySeconds) are not visible either, and still in the DLQ
                "dlq_delayed": dlq["delayed"] if dlq else 0}

    @classmethod
    def summarize(cls, result: Any) -> str:
        dlq = result.get("dlq") or {}
        text = f"{result['queue']['name']}: {result['visible']} visible"
        return text + (f"; {dlq['name']}: {dlq['visible']} visible, {dlq['in_flight']} in flight, "
                       f"{dlq.get('delayed', 0)} delayed" if dlq else "; no DLQ")


@register
class Peek(Action):
    """Look at up to 10 messages without consuming them: they are received with a short
    visibility timeout and made visible again at once (their receive count does go up by one).

    ```yaml
    - id: sample
      action: aws.sqs.peek
      with: {queue: jobs-worker-dlq, count: 5}
    ```
    """

    name = "aws.sqs.peek"
    permissions = (Iam(("sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage",
                        "sqs:ChangeMessageVisibility"), QUEUE_ARN),)
    backend = "aws"
    summary = "sample messages (body, attributes, age) and make them visible again"
    schema = type_schema({"queue": _QUEUE, "count": {"type": "integer", "minimum": 1, "maximum": 10,
                                                     "default": 5},
                          "max_body": {"type": "integer", "minimum": 0, "default": 200}},
                         required=["queue"])

    def run(self) -> dict[str, Any]:
        # the read-only guard lets this action, by name, receive and then make visible again
        sqs = client(self.ctx, "sqs", allow=SQS_PEEK)
        url = queue_url(sqs, self.args["queue"])
        _refuse_redrive_source(url, _attributes(sqs, url))
        with aws_errors(f"peek {url}"):
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=self.args.get("count", 5),
                                      VisibilityTimeout=10, WaitTimeSeconds=0, AttributeNames=["All"],
                                      MessageAttributeNames=["All"]).get("Messages", [])
            if got:
                sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(got)])
        now = time.time()
        limit = self.args.get("max_body", 200)
        messages = [{"message_id": m["MessageId"], "body": m["Body"][:limit],
                     "attributes": sorted(m.get("MessageAttributes") or {}),
                     "receive_count": int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
                     "age_seconds": round(now - int(m.get("Attributes", {}).get("SentTimestamp", 0))
                                          / 1000, 1)} for m in got]
        return {"count": len(messages), "messages": messages,
                "oldest_age_seconds": max((m["age_seconds"] for m in messages), default=0),
                "side_effect": f"{len(messages)} message(s) received: each one's receive count went up by "
                               "one and it was hidden until made visible again (VisibilityTimeout 0)"
                               if messages else "none (nothing received)"}

    @classmethod
    def summarize(cls, result: Any) -> str:
        first = result["messages"][0]["body"][:60] if result["messages"] else ""
        return (f"{result['count']} message(s), oldest {result['oldest_age_seconds']}s"
                + (f"; first: {first!r}" if first else ""))


def _refuse_redrive_source(url: str, attrs: dict[str, str]) -> None:
    """A peek adds one receive to every message it sees: on a queue with its own RedrivePolicy that
    can be the receive that reaches maxReceiveCount, and SQS then moves the message to the DLQ."""
    if attrs.get("RedrivePolicy"):
        policy = json.loads(attrs["RedrivePolicy"])
        raise ActionError(f"aws.sqs.peek refuses {url}: its RedrivePolicy moves a message to "
                          f"{policy.get('deadLetterTargetArn', 'its DLQ')} after "
                          f"{policy.get('maxReceiveCount')} receive(s), and a peek is a receive: it could "
                          "move what it peeks. Peek the DLQ, or use aws.sqs.stats for this queue.")


@register
class Consumers(Action):
    """Lambda event source mappings that consume a queue (is the worker reading it?); with
    ``function``, only that function's triggers count (another function on the same queue is not
    this worker); with ``alias``, ``bypassing`` counts the enabled ones that do not invoke it.

    ```yaml
    - id: consumer
      action: aws.sqs.consumers
      with: {queue: jobs-queue, function: jobs-worker, alias: LIVE}
      expect:
        - that: "result.enabled > 0"
          severity: warning
          message: no enabled Lambda trigger reads this queue
    ```
    """

    name = "aws.sqs.consumers"
    permissions = (Iam(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), QUEUE_ARN),
                   Iam(("lambda:ListEventSourceMappings",)))
    backend = "aws"
    summary = "Lambda event source mappings reading the queue, with their state and qualifier"
    schema = type_schema({"queue": _QUEUE,
                          "function": {"type": "string", "description": "count only this function's"},
                          "alias": {"type": "string", "description": "count the triggers bypassing it"}},
                         required=["queue"])

    def run(self) -> dict[str, Any]:
        from opsctl.actions.aws.triggers import ENABLED, bypassing, function_name, list_mappings

        every = list_mappings(self.ctx, queue=self.args["queue"])
        fn = self.args.get("function") or None
        mine = [m for m in every if m["function"] == function_name(fn)] if fn else every
        alias = self.args.get("alias") or None
        return {"mappings": mine, "total": len(mine),
                "enabled": sum(1 for m in mine if m["state"] in ENABLED),
                "others": len(every) - len(mine),
                "bypassing": len(bypassing(mine, alias)) if alias else 0,
                "bypassing_invokes": [m["invokes"] for m in bypassing(mine, alias)] if alias else []}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["mappings"]:
            return "no Lambda trigger reads this queue"
        return ", ".join(f"{m['invokes']}: {m['state']}" for m in result["mappings"])[:160]


@register
class Consumed(Action):
    """After a redrive: watch the queue and its DLQ until the redriven messages are consumed, or come
    back to the DLQ (the worker still fails them), for at most ``window`` seconds.

    An empty DLQ right after a redrive proves only that the messages moved: a worker that still fails
    sends them back after ``maxReceiveCount`` receives, minutes later.  This waits for the outcome:

    * ``consumed``: the queue is back to ``baseline`` messages (its depth before the redrive: visible,
      in flight and delayed; a message a worker holds is not done), and the DLQ holds no more than
      ``dlq_baseline``;
    * ``bounced``: messages came back to the DLQ (more than ``dlq_baseline``): stops at once;
    * ``idle``: for ``idle`` seconds no sign of a consumer (no enabled trigger given in ``triggers``,
      nothing in flight, the queue not shrinking): the messages wait in the queue, nothing reads it;
    * ``timeout``: a consumer reads the queue but has not finished within ``window`` (a worker that
      holds messages and fails them slowly ends here, or in ``bounced``).

    ```yaml
    - id: consumed
      action: aws.sqs.consumed
      with: {queue: jobs-queue, baseline: 0, window: 120, triggers: 1}
      expect:
        - that: "result.outcome != 'bounced'"
          message: "{{ result.back_in_dlq }} message(s) back in the DLQ: the worker still fails"
    ```
    """

    name = "aws.sqs.consumed"
    permissions = _READ_PAIR
    backend = "aws"
    summary = "watch a redriven queue: consumed, back in the DLQ, or nothing reading it"
    schema = type_schema({
        "queue": _QUEUE, "dlq": _DLQ,
        "baseline": {"type": "integer", "minimum": 0, "default": 0,
                     "description": "messages in the queue before the redrive (consumed: back to this)"},
        "dlq_baseline": {"type": "integer", "minimum": 0, "default": 0,
                         "description": "messages meant to stay in the DLQ (a partial redrive's rest)"},
        "window": {"type": "number", "minimum": 0, "maximum": 3600, "default": 120,
                   "description": "seconds to watch at most"},
        "idle": {"type": "number", "minimum": 0, "maximum": 3600, "default": 10,
                 "description": "seconds without any sign of a consumer after which nothing reads the queue"},
        "triggers": {"type": "integer", "minimum": 0, "default": 0,
                     "description": "enabled Lambda triggers known to read the queue (a consumer exists)"},
        "interval": {"type": "number", "exclusiveMinimum": 0, "maximum": 60, "default": 2,
                     "description": "seconds between two looks"}}, required=["queue"])
    window_args = ("window",)

    def run(self) -> dict[str, Any]:
        sqs = client(self.ctx, "sqs")
        a = self.args
        baseline, dlq_baseline = int(a.get("baseline", 0)), int(a.get("dlq_baseline", 0))
        window, idle = float(a.get("window", 120)), float(a.get("idle", 10))
        interval = float(a.get("interval", 2))
        seen = int(a.get("triggers", 0)) > 0  # a sign of a consumer
        start = time.monotonic()
        first: int | None = None
        checks = 0
        while True:
            main, dlq = queue_pair(sqs, a["queue"], a.get("dlq"))
            if dlq is None:
                raise ActionError(f"{main['name']} has no RedrivePolicy and no dlq was given: "
                                  "nothing tells where failed messages go")
            checks += 1
            total = main["visible"] + main["in_flight"] + main["delayed"]
            back = dlq["visible"] + dlq["in_flight"] + dlq["delayed"] - dlq_baseline
            first = total if first is None else first
            seen = seen or main["in_flight"] > 0 or total < first
            waited = time.monotonic() - start
            if back > 0:
                outcome = "bounced"
            elif total <= baseline:  # in flight counts in total: a message held by a worker is not done
                outcome, seen = "consumed", True  # what the redrive added was taken away: a consumer
            elif not seen and waited >= idle:
                outcome = "idle"
            elif waited >= window:
                outcome = "timeout"
            else:
                self.ctx.sleep(min(interval, max(0.0, window - waited)))
                continue
            return {"outcome": outcome, "consumer_seen": seen, "back_in_dlq": max(0, back),
                    "remaining": max(0, total - baseline), "queue": main, "dlq": dlq,
                    "waited_s": round(waited, 1), "checks": checks,
                    # a failing worker sends a message back after maxReceiveCount receives, each one
                    # hidden for the queue's VisibilityTimeout: the window should be longer than this
                    "retry_cycle_s": main["max_receive_count"] * main["visibility_timeout"]}

    @classmethod
    def summarize(cls, result: Any) -> str:
        what = {"consumed": "redriven messages consumed",
                "bounced": f"{result['back_in_dlq']} message(s) back in the DLQ",
                "idle": f"{result['remaining']} message(s) waiting: nothing reads the queue",
                "timeout": f"{result['remaining']} message(s) not consumed yet"}[result["outcome"]]
        return f"{what} ({result['waited_s']}s, {result['checks']} look(s))"
