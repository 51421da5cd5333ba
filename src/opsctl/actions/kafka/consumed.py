"""``kafka.redrive_consumed`` (read-only, verify): after a redrive, do the application's consumer
groups read the redriven records, or do the records fail again into the DLQ?

Exact counts on the source topic prove that the records moved, not that the application can now
process them: a consumer that still fails writes them to the DLQ again (a DLQ handler copies the
headers, so each one still carries the x-opsctl-redriven origin this redrive gave it)."""

from __future__ import annotations

import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.kafka.campaign import MARKER_SUFFIX, origin_of, read_marker
from opsctl.actions.kafka.common import TOPIC
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import Cluster, make_consumer

MAX_GROUPS = 200  # groups whose offsets are fetched (one request for all of them)


def _new_records(k: Cluster, tps: list[Any], start: dict[Any, int], end: dict[Any, int],
                 dlq: str) -> tuple[int, int]:
    """(records, redriven from `dlq`) between `start` and `end` of each DLQ partition."""
    todo = {tp: end[tp] for tp in tps if end.get(tp, 0) > start.get(tp, 0)}
    if not todo:
        return 0, 0
    records = refailed = empty = 0
    consumer = make_consumer(k.conf, fetch_max_wait_ms=100, max_poll_records=2000)
    try:
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, start.get(tp, 0))
        while todo and empty < 2:
            batch = k.call(consumer.poll, timeout_ms=300)
            empty = 0 if batch else empty + 1
            for tp, recs in batch.items():
                for rec in recs:
                    if tp in todo and rec.offset < todo[tp]:
                        records += 1
                        refailed += origin_of(rec, dlq) is not None
                if tp in todo and consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    finally:
        consumer.close()
    return records, refailed


@register
class RedriveConsumed(Action):
    """After a redrive: watch the application's consumer groups on the source topic and the DLQ,
    for at most ``window`` seconds, and end with an outcome:

    * ``consumed``: every application group committed past the end the source topic had when the
      watch began (the redriven records are behind it), and none of them came back to the DLQ;
    * ``bounced``: records of this redrive (their x-opsctl-redriven origin) reached the DLQ again:
      the consumer still fails them; stops at once;
    * ``timeout``: a group has not committed past them within the window;
    * ``idle``: no consumer group reads the source topic now: nothing processes the redriven records.

    Application groups: ``groups``, or every group with committed offsets on the topic and members
    now, except the redrive's own (``group``, ``group.campaign``); ``idle_groups`` names those with
    offsets and no member (stopped consumers). ``new_dlq_records`` counts every record that reached
    the DLQ meanwhile (other failures of the live traffic too).

    ```yaml
    - id: consumed
      action: kafka.redrive_consumed
      with: {dlq_topic: order.events.dlq, topic: order.events, window: 120}
      expect:
        - that: "result.outcome != 'bounced'"
          message: "{{ result.refailed }} redriven record(s) failed again"
    ```
    """

    name = "kafka.redrive_consumed"
    permissions = (KafkaAcl("Group", "*", ("Describe",)),
                   KafkaAcl("Topic", "{topic}", ("Describe",)),
                   KafkaAcl("Topic", "{dlq_topic}", ("Describe", "Read")))
    backend = "kafka"
    summary = "watch a redriven topic: consumed by the application's groups, failed again, or unread"
    schema = type_schema({
        "dlq_topic": TOPIC, "topic": TOPIC,
        "group": {"type": "string", "minLength": 1, "default": "opsctl-redrive",
                  "description": "the redrive's own group (not an application group)"},
        "groups": {"type": "array", "items": {"type": "string", "minLength": 1},
                   "description": "the application's consumer groups (default: every group with "
                                  "committed offsets on the topic, but the redrive's)"},
        "window": {"type": "number", "minimum": 0, "maximum": 3600, "default": 120,
                   "description": "seconds to watch at most"},
        "interval": {"type": "number", "exclusiveMinimum": 0, "maximum": 60, "default": 2,
                     "description": "seconds between two looks"}}, required=["dlq_topic", "topic"])
    window_args = ("window",)

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        dlq, topic = self.args["dlq_topic"], self.args["topic"]
        ours = self.args.get("group", "opsctl-redrive")
        window, interval = float(self.args.get("window", 120)), float(self.args.get("interval", 2))
        start = time.monotonic()
        tps, dtps = k.partitions(topic), k.partitions(dlq)
        target_end, dlq_start = k.offsets(tps, "latest"), k.offsets(dtps, "latest")
        # where the redrive began on the topic: a group without a commit on a partition has read
        # nothing of it since then (no marker: the whole partition)
        marker = read_marker(k, ours, dlq, topic)
        floor = {tp: (marker["target"].get(tp.partition, 0) if marker else 0) for tp in tps}
        groups, idle = list(self.args.get("groups") or []), []
        if not groups:  # the groups reading the topic now: offsets on it, and members
            others = [g for g in k.groups() if g not in (ours, ours + MARKER_SUFFIX)][:MAX_GROUPS]
            readers = sorted(g for g, offs in k.committed_of(others, topic).items() if offs)
            groups = k.with_members(readers)
            idle = [g for g in readers if g not in groups]
        out: dict[str, Any] = {"topic": topic, "dlq_topic": dlq, "groups": groups, "idle_groups": idle,
                               "behind": {}, "refailed": 0, "new_dlq_records": 0, "checks": 0}
        while True:
            out["checks"] += 1
            committed = k.committed_of(groups, topic)
            behind = {g: sum(max(0, target_end[tp] - committed[g].get(tp, floor[tp])) for tp in tps)
                      for g in groups}
            dlq_now = k.offsets(dtps, "latest")
            out["new_dlq_records"], out["refailed"] = _new_records(k, dtps, dlq_start, dlq_now, dlq)
            waited = time.monotonic() - start
            out.update({"behind": behind, "waited_s": round(waited, 1)})
            if out["refailed"]:
                out["outcome"] = "bounced"
            elif not groups:
                out["outcome"] = "idle"
            elif not any(behind.values()):
                out["outcome"] = "consumed"
            elif waited >= window:
                out["outcome"] = "timeout"
            else:
                self.ctx.sleep(min(interval, max(0.0, window - waited)))
                continue
            return out

    @classmethod
    def summarize(cls, r: Any) -> str:
        what = {"consumed": f"consumed by {', '.join(r['groups'])}",
                "bounced": f"{r['refailed']} redriven record(s) back in {r['dlq_topic']}",
                "idle": "no consumer group reads the topic",
                "timeout": "not consumed yet: " + ", ".join(f"{g} {n} behind" for g, n in r["behind"].items()
                                                           if n)}[r["outcome"]]
        return f"{what} ({r['waited_s']}s, {r['checks']} look(s))"
