"""SQS: queue and DLQ depths, peeking at DLQ messages, the queue's Lambda consumers, and the redrive."""

from __future__ import annotations

import json
import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.backends.aws import aws_errors, client
from opsctl.backends.readonly import SQS_PEEK
from opsctl.errors import ActionError, ArgumentError, Cancelled, StepTimeout
from opsctl.records import Change, Plan

_QUEUE = {"type": "string", "minLength": 1, "description": "queue name, URL or ARN"}
_DLQ = {"type": "string", "description": "DLQ name, URL or ARN (default: the queue's RedrivePolicy target)"}


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
      with: {queue: plooral-queue}
      expect:
        - that: "result.dlq_visible == 0"
          severity: warning
          message: "{{ result.dlq_visible }} messages in {{ result.dlq.name }}"
    ```
    """

    name = "aws.sqs.stats"
    backend = "aws"
    summary = "visible / in-flight / delayed counts of a queue and its DLQ"
    schema = type_schema({"queue": _QUEUE, "dlq": _DLQ}, required=["queue"])

    def run(self) -> dict[str, Any]:
        main, dlq = queue_pair(client(self.ctx, "sqs"), self.args["queue"], self.args.get("dlq"))
        return {"queue": main, "dlq": dlq, "visible": main["visible"],
                "dlq_visible": dlq["visible"] if dlq else 0,
                "dlq_in_flight": dlq["in_flight"] if dlq else 0}

    @classmethod
    def summarize(cls, result: Any) -> str:
        dlq = result.get("dlq") or {}
        text = f"{result['queue']['name']}: {result['visible']} visible"
        return text + (f"; {dlq['name']}: {dlq['visible']} visible, {dlq['in_flight']} in flight"
                       if dlq else "; no DLQ")


@register
class Peek(Action):
    """Look at up to 10 messages without consuming them: they are received with a short
    visibility timeout and made visible again at once (their receive count does go up by one).

    ```yaml
    - id: sample
      action: aws.sqs.peek
      with: {queue: plooral-worker-dlq, count: 5}
    ```
    """

    name = "aws.sqs.peek"
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
    """Lambda event source mappings that consume a queue (is the worker reading it?).

    ```yaml
    - id: consumer
      action: aws.sqs.consumers
      with: {queue: plooral-queue}
      expect:
        - that: "result.enabled > 0"
          severity: warning
          message: no enabled Lambda trigger reads this queue
    ```
    """

    name = "aws.sqs.consumers"
    backend = "aws"
    summary = "Lambda event source mappings reading the queue, with their state"
    schema = type_schema({"queue": _QUEUE}, required=["queue"])

    def run(self) -> dict[str, Any]:
        sqs = client(self.ctx, "sqs")
        url = queue_url(sqs, self.args["queue"])
        arn = _attributes(sqs, url)["QueueArn"]
        lam = client(self.ctx, "lambda")
        with aws_errors(f"event source mappings of {arn}"):
            pages = lam.get_paginator("list_event_source_mappings").paginate(EventSourceArn=arn)
            found = [m for page in pages for m in page.get("EventSourceMappings", [])]
        mappings = [{"uuid": m["UUID"], "function": m["FunctionArn"].split(":")[6],
                     "state": m.get("State", ""), "batch_size": m.get("BatchSize")} for m in found]
        return {"mappings": mappings, "total": len(mappings),
                "enabled": sum(1 for m in mappings if m["state"] in ("Enabled", "Enabling"))}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["mappings"]:
            return "no Lambda trigger reads this queue"
        return ", ".join(f"{m['function']}: {m['state']}" for m in result["mappings"])[:160]


@register
class Redrive(Action):
    """Move messages from a DLQ back to its source queue, client-side, at-least-once.

    Batches of 10: receive -> send_message_batch -> delete_message_batch of the entries that were
    sent, with several workers, an optional rate limit and ``max_messages`` as the blast radius.
    Message attributes are kept; FIFO group ids are kept and dedup ids derived from the DLQ message.

    ```yaml
    - id: redrive
      action: aws.sqs.redrive
      with: {queue: plooral-queue, max_messages: 10000, workers: 4}
    ```
    """

    name = "aws.sqs.redrive"
    backend = "aws"
    read_only = False
    summary = "move DLQ messages back to the source queue (blast radius: max_messages)"
    schema = type_schema({
        "queue": _QUEUE, "dlq": _DLQ,
        "max_messages": {"type": "integer", "minimum": 1, "default": 10000},
        "partial": {"type": "boolean", "default": False,
                    "description": "move max_messages even when the DLQ holds more"},
        "shared_dlq": {"type": "boolean", "default": False,
                       "description": "redrive even when the DLQ also serves other source queues "
                                      "(their messages come to this queue too)"},
        "workers": {"type": "integer", "minimum": 1, "maximum": 32, "default": 4},
        "rate": {"type": ["number", "null"], "exclusiveMinimum": 0,
                 "description": "messages per second (default: unlimited)"},
        "visibility_timeout": {"type": "integer", "minimum": 1, "maximum": 43200, "default": 60},
    }, required=["queue"])

    def plan(self) -> Plan:
        main, dlq = queue_pair(client(self.ctx, "sqs"), self.args["queue"], self.args.get("dlq"))
        if dlq is None:
            raise ActionError(f"queue {main['name']} has no RedrivePolicy: give the DLQ with `dlq`")
        if (dlq["arn"] or dlq["url"]) == (main["arn"] or main["url"]):
            # moving a queue into itself never drains it: every message would be re-sent until
            # max_messages, duplicating the work of the consumers
            raise ActionError(f"the DLQ is the source queue itself ({main['name']}): give the DLQ with `dlq`")
        others = self._other_sources(dlq["url"], main["url"])
        if others and not self.args.get("shared_dlq"):
            # every DLQ message would go to this queue, including those that failed in the others
            raise ActionError(f"{dlq['name']} is also the DLQ of {', '.join(others)}: their messages would "
                              f"be sent to {main['name']}; set shared_dlq: true if that is intended")
        limit = self.args.get("max_messages", 10000)
        count = dlq["visible"]
        if count > limit and not self.args.get("partial"):
            raise ActionError(f"{dlq['name']} holds about {count} messages, more than max_messages="
                              f"{limit}; raise max_messages or set partial: true to move {limit}")
        data = {"source_url": dlq["url"], "dest_url": main["url"], "fifo": dlq["fifo"],
                "max_messages": limit, "dlq_before": count, "queue_before": main["visible"]}
        if count == 0:
            return Plan(summary=f"{dlq['name']} is empty: nothing to redrive", data=data)
        n = min(count, limit)
        change = Change(target=f"queue {dlq['name']} -> {main['name']}", operation="redrive",
                        before={"dlq": count, "queue": main["visible"]},
                        after={"dlq": count - n, "queue": main["visible"] + n},
                        detail=f"~{n} messages, {self.args.get('workers', 4)} workers"
                               + (f", {self.args['rate']}/s" if self.args.get("rate") else ""))
        warnings = [f"{dlq['in_flight']} DLQ messages are in flight (being read elsewhere)"] \
            if dlq["in_flight"] else []
        return Plan(summary=f"redrive ~{n} messages from {dlq['name']} to {main['name']}",
                    changes=[change], data=data, warnings=warnings)

    def _other_sources(self, dlq_url: str, queue: str) -> list[str]:
        """Names of the other queues whose RedrivePolicy targets this DLQ."""
        sqs = client(self.ctx, "sqs")
        with aws_errors(f"source queues of {dlq_url}"):
            pages = sqs.get_paginator("list_dead_letter_source_queues").paginate(QueueUrl=dlq_url)
            urls = [u for page in pages for u in page.get("queueUrls", [])]
        name = queue.rstrip("/").rsplit("/", 1)[-1]
        return sorted({u.rstrip("/").rsplit("/", 1)[-1] for u in urls} - {name})

    def apply(self, plan: Plan) -> dict[str, Any]:
        from opsctl.backends.sqs_redrive import Mover

        d = plan.data
        sqs = client(self.ctx, "sqs")
        main, dlq = queue_pair(sqs, self.args["queue"], self.args.get("dlq"))
        if (main["url"], dlq and dlq["url"]) != (d["dest_url"], d["source_url"]):
            raise ActionError(f"the DLQ of {main['name']} changed since the plan "
                              f"({d['source_url']} -> {dlq and dlq['url']}): plan again")
        mover = Mover(sqs, d["source_url"], d["dest_url"], max_messages=d["max_messages"],
                      fifo=d["fifo"], workers=self.args.get("workers", 4), rate=self.args.get("rate"),
                      visibility_timeout=self.args.get("visibility_timeout", 60))
        started = time.monotonic()
        with self.ctx.progress("Redriving", total=d["dlq_before"]) as bar, aws_errors("redrive"):
            done = [0]

            def tick(stats: Any) -> None:
                bar.advance(stats.moved + stats.failed - done[0], moved=stats.moved, failed=stats.failed)
                done[0] = stats.moved + stats.failed
                self.ctx.check_cancelled()  # raising here stops the workers after their batch

            try:
                stats = mover.run(on_tick=tick)
            except (Cancelled, StepTimeout) as e:  # the workers have stopped: the counts are final
                s = mover.stats
                raise e.with_partial({"moved": s.moved, "failed": s.failed, "delete_failed": s.delete_failed,
                                      "dlq_before": d["dlq_before"], "stopped": "interrupted"},
                                     f"{s.moved} message(s) moved, {s.failed} failed") from None
        elapsed = time.monotonic() - started
        after = _attributes(sqs, d["source_url"])
        return {"moved": stats.moved, "failed": stats.failed, "delete_failed": stats.delete_failed,
                "errors": stats.errors, "dlq_before": d["dlq_before"],
                "dlq_after": int(after.get("ApproximateNumberOfMessages", 0)),
                # failed sends stay hidden in the DLQ until visibility_timeout: not "gone"
                "dlq_in_flight_after": int(after.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "elapsed_s": round(elapsed, 2),
                "rate_per_s": round(stats.moved / elapsed, 1) if elapsed else 0.0,
                "stopped": "max_messages" if stats.moved >= d["max_messages"] else "drained"}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"moved {result['moved']} ({result['failed']} failed) in {result['elapsed_s']}s, "
                f"{result['rate_per_s']}/s; DLQ now {result['dlq_after']}"
                + (f" (+{result['dlq_in_flight_after']} in flight)"
                   if result.get("dlq_in_flight_after") else ""))
