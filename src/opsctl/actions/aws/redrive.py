"""SQS DLQ redrive: exactly once from the operator's point of view, resumable, counted exactly.

Two modes.  ``client`` (the default, and the one tested against moto): opsctl's pipelined mover
(``opsctl.backends.sqs_redrive``) with a ledger (``ledger.py``) that makes an interrupted redrive
resume without losing or doubling a message.  ``server``: AWS's own redrive (``StartMessageMoveTask``,
a task that runs in SQS); ``auto`` uses it when the endpoint supports it and the redrive is a full
one (a move task cannot stop at max_messages), else the client-side mover.  The plan says which.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.aws.ledger import Ledger, ledger_path
from opsctl.actions.aws.sqs import _DLQ, _QUEUE, _attributes, queue_pair
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import DLQ_ARN, QUEUE_ARN, Iam
from opsctl.backends.aws import aws_errors, client, optional_api
from opsctl.errors import ActionError, Cancelled, StepTimeout
from opsctl.records import Change, Plan

_MOVE_DONE = ("COMPLETED", "FAILED", "CANCELLED")


def server_redrive_support(sqs: Any, dlq_arn: str) -> tuple[bool, str]:
    """(supported, why): does the endpoint implement StartMessageMoveTask (probed with the read-only
    ListMessageMoveTasks)?"""
    with optional_api() as attempt:
        sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1)
    if attempt.refused:
        return False, f"ListMessageMoveTasks answered {attempt.failure}"
    if attempt.failure:
        return False, f"ListMessageMoveTasks failed: {attempt.failure}"
    return True, "the endpoint supports StartMessageMoveTask"


@register
class Redrive(Action):
    """Move messages from a DLQ back to its source queue, exactly once, resumably.

    Client-side (default): pipelined batches of 10 (receive, send, delete overlap across
    ``workers``), a ledger in the state directory records every send, so that a redrive stopped at
    any point (Ctrl-C, timeout, crash) and run again (``--resume`` or not) deletes what was already
    sent instead of sending it twice, and counts exactly: ``moved`` of ``planned``, ``duplicates``.
    Message attributes are kept; FIFO group ids are kept and dedup ids derived from the DLQ message.
    ``mode: server`` / ``auto`` use SQS's StartMessageMoveTask where the endpoint has it.

    ```yaml
    - id: redrive
      action: aws.sqs.redrive
      with: {queue: jobs-queue, max_messages: 10000, workers: 4}
    ```
    """

    name = "aws.sqs.redrive"
    permissions = (Iam(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), QUEUE_ARN + DLQ_ARN),
                   Iam(("sqs:ListDeadLetterSourceQueues", "sqs:ListMessageMoveTasks"), DLQ_ARN),
                   Iam(("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                        "sqs:StartMessageMoveTask", "sqs:CancelMessageMoveTask"), DLQ_ARN, apply=True),
                   Iam(("sqs:SendMessage",), QUEUE_ARN, apply=True))
    backend = "aws"
    read_only = False
    summary = "move DLQ messages back to the source queue, exactly once (blast radius: max_messages)"
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
        "mode": {"enum": ["client", "server", "auto"], "default": "client",
                 "description": "client-side mover, SQS StartMessageMoveTask, or server when supported"},
        "resend_unknown": {"type": "boolean", "default": False,
                           "description": "send again the messages whose earlier send has no recorded "
                                          "outcome (the process was killed during it): may duplicate"},
        "run_id": {"type": "string", "default": "", "description": "labels the ledger session"},
    }, required=["queue"])

    # ---- plan ----------------------------------------------------------------------------------
    def plan(self) -> Plan:
        sqs = client(self.ctx, "sqs")
        main, dlq = queue_pair(sqs, self.args["queue"], self.args.get("dlq"))
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
        ledger = Ledger(ledger_path(dlq["arn"] or dlq["url"], main["arn"] or main["url"]))
        limit, partial = self.args.get("max_messages", 10000), bool(self.args.get("partial"))
        # in flight (received, hidden) and delayed (DelaySeconds) messages cannot be received now,
        # and are still in the DLQ: never "empty", never "nothing to redrive"
        visible, hidden, delayed = dlq["visible"], dlq["in_flight"], dlq.get("delayed", 0)
        warnings: list[str] = []
        if ledger.open:
            planned, before = int(ledger.session["planned"]), ledger.moved  # type: ignore[index]
            todo = max(0, planned - before)
            pending = len(set(ledger.sent) - ledger.deleted)
            warnings.append(f"continues the redrive started {ledger.session.get('started')} "  # type: ignore[union-attr]
                            f"(run {ledger.session.get('run') or '?'}): {before} of {planned} already "  # type: ignore[union-attr]
                            f"moved, {todo} to go"
                            + (f"; {pending} already sent will be deleted from the DLQ, not sent again"
                               if pending else ""))
        else:
            if visible == 0 and (hidden or delayed):
                raise ActionError(f"{dlq['name']} shows 0 visible messages but "
                                  f"{_not_visible(hidden, delayed)}: it is not empty; re-run once "
                                  "their visibility timeout (or delay) has expired")
            if visible > limit and not partial:
                raise ActionError(f"{dlq['name']} holds about {visible} messages, more than max_messages="
                                  f"{limit}; raise max_messages or set partial: true to move {limit}")
            planned = todo = min(visible, limit)
            before, pending = 0, 0
            if hidden or delayed:
                warnings.append(f"{_not_visible(hidden, delayed)} in the DLQ (not visible now): they are not "
                                "part of this redrive and stay in the DLQ")
        if ledger.unknown:
            warnings.append(f"{len(ledger.unknown)} message(s) were being sent when an earlier redrive was "
                            "killed: they may already be in the destination, so they are left in the DLQ"
                            + (" (resend_unknown: they will be sent again)" if self.args.get("resend_unknown")
                               else " (set resend_unknown: true to send them again)"))
        remain = max(0, visible + hidden + delayed - todo - pending)
        if remain:
            warnings.append(f"{remain} message(s) will remain in {dlq['name']} after this redrive"
                            + (f" (partial: max_messages={limit})" if partial else ""))
        mode, why = self._mode(sqs, dlq, partial or visible > limit or ledger.open)
        data = {"source_url": dlq["url"], "dest_url": main["url"], "source_arn": dlq["arn"],
                "dest_arn": main["arn"], "fifo": dlq["fifo"], "planned": planned, "todo": todo,
                "moved_before": before, "resumed": ledger.open, "dlq_before": visible,
                "dlq_in_flight_before": hidden, "dlq_delayed_before": delayed,
                "queue_before": main["visible"], "mode": mode,
                "remain_expected": remain, "ledger": str(ledger.path)}
        if todo == 0 and pending == 0:
            return Plan(summary=f"{dlq['name']}: nothing to redrive ({visible} visible, {hidden} in flight, "
                                f"{delayed} delayed)",
                        data=data, warnings=warnings)
        how = ("server-side: SQS StartMessageMoveTask" if mode == "server" else
               f"client-side mover, exactly once (ledger), {self.args.get('workers', 4)} workers"
               + (f", {self.args['rate']}/s" if self.args.get("rate") else ""))
        change = Change(target=f"queue {dlq['name']} -> {main['name']}", operation="redrive",
                        before={"dlq": visible, "dlq_in_flight": hidden, "dlq_delayed": delayed,
                                "queue": main["visible"]},
                        after={"dlq": visible + hidden + delayed - todo - pending,
                               "queue": main["visible"] + todo},
                        detail=f"{todo} message(s); mode {how} ({why})")
        return Plan(summary=f"redrive {todo} message(s) from {dlq['name']} to {main['name']} "
                            f"[{'server-side' if mode == 'server' else 'client-side'}]",
                    changes=[change], data=data, warnings=warnings)

    def _mode(self, sqs: Any, dlq: dict[str, Any], bounded: bool) -> tuple[str, str]:
        wanted = self.args.get("mode", "client")
        if wanted == "client":
            return "client", "mode: client"
        supported, why = server_redrive_support(sqs, dlq["arn"])
        if wanted == "server":
            if not supported:
                raise ActionError(f"mode server: the endpoint does not support StartMessageMoveTask ({why}); "
                                  "use mode client (the default)")
            if bounded:
                raise ActionError("mode server: a move task moves the whole DLQ, it cannot stop at "
                                  "max_messages or resume a client-side redrive; use mode client")
            return "server", why
        if not supported:
            return "client", f"fallback: {why}"
        if bounded:
            return "client", "partial or resumed redrive: a move task cannot stop at max_messages"
        return "server", why

    def _other_sources(self, dlq_url: str, queue: str) -> list[str]:
        """Names of the other queues whose RedrivePolicy targets this DLQ."""
        sqs = client(self.ctx, "sqs")
        with aws_errors(f"source queues of {dlq_url}"):
            pages = sqs.get_paginator("list_dead_letter_source_queues").paginate(QueueUrl=dlq_url)
            urls = [u for page in pages for u in page.get("queueUrls", [])]
        name = queue.rstrip("/").rsplit("/", 1)[-1]
        return sorted({u.rstrip("/").rsplit("/", 1)[-1] for u in urls} - {name})

    # ---- apply ---------------------------------------------------------------------------------
    def apply(self, plan: Plan) -> dict[str, Any]:
        d = plan.data
        sqs = client(self.ctx, "sqs")
        main, dlq = queue_pair(sqs, self.args["queue"], self.args.get("dlq"))
        if (main["url"], dlq and dlq["url"]) != (d["dest_url"], d["source_url"]):
            raise ActionError(f"the DLQ of {main['name']} changed since the plan "
                              f"({d['source_url']} -> {dlq and dlq['url']}): plan again")
        if d["mode"] == "server":
            return self._apply_server(sqs, d)
        return self._apply_client(sqs, d)

    def _apply_client(self, sqs: Any, d: dict[str, Any]) -> dict[str, Any]:
        from opsctl.backends.sqs_redrive import Mover, MoveStats

        ledger = Ledger(ledger_path(d["source_arn"] or d["source_url"], d["dest_arn"] or d["dest_url"]))
        if ledger.open != d["resumed"] or (ledger.open and ledger.moved != d["moved_before"]):
            raise ActionError("another redrive of this DLQ ran since the plan (its ledger changed): "
                              "plan again")
        if not ledger.open:
            ledger.start(d["planned"], self.args.get("run_id", ""), d["source_url"], d["dest_url"])
        total = MoveStats()
        started = time.monotonic()
        vis = self.args.get("visibility_timeout", 60)
        with self.ctx.progress("Redriving", total=d["todo"]) as bar, aws_errors("redrive"):
            while True:
                left = d["planned"] - ledger.moved
                mover = Mover(sqs, d["source_url"], d["dest_url"], max_messages=max(left, 0),
                              fifo=d["fifo"], workers=self.args.get("workers", 4),
                              rate=self.args.get("rate"), visibility_timeout=vis, journal=ledger,
                              resend_unknown=bool(self.args.get("resend_unknown")))
                try:
                    mover.run(on_tick=functools.partial(self._tick, bar, total.moved))
                except (Cancelled, StepTimeout) as e:  # the stages have stopped: counts are final
                    _add(total, mover.stats)
                    result = self._result(sqs, d, ledger, total, started, "interrupted")
                    raise e.with_partial(result, f"{result['moved']} of {result['planned']} message(s) "
                                                 f"moved ({total.moved} by this run), "
                                                 f"{result['duplicates']} duplicate(s)") from None
                _add(total, mover.stats)
                if not self._wait_for_hidden(sqs, d, ledger, mover.stats, vis):
                    break
        if ledger.moved >= d["planned"] and not ledger.unknown:
            ledger.close("done")
        result = self._result(sqs, d, ledger, total, started,
                              "drained" if ledger.moved >= d["planned"] else "incomplete")
        if result["remaining"] and not ledger.open:
            result["stopped"] = "max_messages" if self.args.get("partial") else result["stopped"]
        return result

    def _tick(self, bar: Any, base: int, stats: Any) -> None:
        bar.update(completed=base + stats.moved, moved=base + stats.moved, failed=stats.failed)
        self.ctx.check_cancelled()  # raising here stops the stages after their batch

    def _wait_for_hidden(self, sqs: Any, d: dict[str, Any], ledger: Ledger, last: Any, vis: int) -> bool:
        """After a pass that drained what was visible: messages of this redrive still hidden in the
        DLQ (received by a stopped run, or failed sends) come back after their visibility timeout.
        Wait for them (bounded by the step's deadline) when the pass left work undone; True to
        run another pass."""
        if ledger.moved >= d["planned"] and not (set(ledger.sent) - ledger.deleted):
            return False
        if last.moved == 0 and last.reconciled == 0:
            return False  # a pass without progress (failing sends, unknown outcomes): stop here
        end = time.monotonic() + min(vis + 2.0, self.ctx.remaining(vis + 2.0) or 0.0)
        while time.monotonic() < end:
            a = _attributes(sqs, d["source_url"])
            if int(a.get("ApproximateNumberOfMessages", 0)):
                return True
            if not int(a.get("ApproximateNumberOfMessagesNotVisible", 0)):
                return False
            self.ctx.sleep(min(1.0, max(0.05, end - time.monotonic())))
        return False

    def _result(self, sqs: Any, d: dict[str, Any], ledger: Ledger, stats: Any, started: float,
                stopped: str) -> dict[str, Any]:
        elapsed = time.monotonic() - started
        try:
            after = _attributes(sqs, d["source_url"])
        except Exception:  # noqa: BLE001 - counts are what matters when the endpoint is gone
            after = {}
        visible = int(after.get("ApproximateNumberOfMessages", -1))
        hidden = int(after.get("ApproximateNumberOfMessagesNotVisible", -1))
        return {"mode": "client", "planned": d["planned"], "moved": ledger.moved,
                "moved_now": stats.moved, "moved_before": d["moved_before"],
                "reconciled": stats.reconciled, "duplicates": ledger.duplicates,
                "unknown": len(ledger.unknown), "failed": stats.failed,
                "delete_failed": stats.delete_failed, "errors": stats.errors,
                "dlq_before": d["dlq_before"], "dlq_after": visible, "dlq_in_flight_after": hidden,
                # what is still in the DLQ: not moved (partial, failed, unknown) or arrived since
                "remaining": (visible + hidden) if visible >= 0 and hidden >= 0 else None,
                "partial": bool(self.args.get("partial")), "remain_expected": d["remain_expected"],
                "elapsed_s": round(elapsed, 2),
                "rate_per_s": round(stats.moved / elapsed, 1) if elapsed else 0.0,
                "stopped": stopped, "ledger": d["ledger"]}

    def _apply_server(self, sqs: Any, d: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        kwargs: dict[str, Any] = {"SourceArn": d["source_arn"], "DestinationArn": d["dest_arn"]}
        if self.args.get("rate"):
            kwargs["MaxNumberOfMessagesPerSecond"] = int(self.args["rate"])
        with aws_errors("StartMessageMoveTask"):
            handle = sqs.start_message_move_task(**kwargs)["TaskHandle"]
        task: dict[str, Any] = {}
        with self.ctx.progress("SQS move task", total=d["todo"]) as bar:
            try:
                while True:
                    with aws_errors("ListMessageMoveTasks"):
                        task = sqs.list_message_move_tasks(SourceArn=d["source_arn"],
                                                           MaxResults=1)["Results"][0]
                    bar.update(completed=task.get("ApproximateNumberOfMessagesMoved", 0))
                    if task.get("Status") in _MOVE_DONE:
                        break
                    self.ctx.sleep(2.0)
            except (Cancelled, StepTimeout) as e:
                with aws_errors("CancelMessageMoveTask"):
                    sqs.cancel_message_move_task(TaskHandle=handle)
                moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
                raise e.with_partial({"mode": "server", "planned": d["planned"], "moved": moved,
                                      "stopped": "interrupted", "task": handle},
                                     f"move task cancelled after ~{moved} message(s)") from None
        after = _attributes(sqs, d["source_url"])
        visible = int(after.get("ApproximateNumberOfMessages", 0))
        hidden = int(after.get("ApproximateNumberOfMessagesNotVisible", 0))
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        return {"mode": "server", "planned": d["planned"], "moved": moved, "moved_now": moved,
                "moved_before": 0, "reconciled": 0, "duplicates": 0, "unknown": 0,
                "failed": 0 if task.get("Status") == "COMPLETED" else max(0, d["planned"] - moved),
                "delete_failed": 0, "errors": [task["FailureReason"]] if task.get("FailureReason") else [],
                "dlq_before": d["dlq_before"], "dlq_after": visible, "dlq_in_flight_after": hidden,
                "remaining": visible + hidden, "partial": False, "remain_expected": 0,
                "elapsed_s": round(time.monotonic() - started, 2), "rate_per_s": 0.0,
                "stopped": str(task.get("Status", "")).lower(), "ledger": None}

    @classmethod
    def summarize(cls, result: Any) -> str:
        text = (f"moved {result['moved']} of {result['planned']} ({result['moved_now']} now, "
                f"{result.get('reconciled', 0)} reconciled, {result['duplicates']} duplicate(s), "
                f"{result['failed']} failed) [{result['mode']}]")
        if result.get("remaining"):
            text += f"; {result['remaining']} remain in the DLQ"
        return text


def _add(total: Any, s: Any) -> None:
    for k in ("moved", "failed", "delete_failed", "reconciled", "unknown", "batches"):
        setattr(total, k, getattr(total, k) + getattr(s, k))
    total.errors += s.errors[: max(0, 5 - len(total.errors))]


def _not_visible(in_flight: int, delayed: int) -> str:
    parts = [f"{in_flight} in flight (hidden by a consumer, a peek or a stopped redrive)"
             if in_flight else "",
             f"{delayed} delayed (sent with a delivery delay)" if delayed else ""]
    return " and ".join(p for p in parts if p)
