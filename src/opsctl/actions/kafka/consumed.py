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
from opsctl.actions.kafka.campaign import MARKER_SUFFIX, read_marker, records_between
from opsctl.actions.kafka.common import TOPIC
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import Cluster

MAX_GROUPS = 200  # groups whose offsets are fetched (one request for all of them)


@register
class RedriveConsumed(Action):
    """After a redrive: watch the application's consumer groups on the source topic and the DLQ,
    for at most ``window`` seconds, and end with an outcome:

    * ``consumed``: every application group committed past the end the source topic had when the
      watch began (the redriven records are behind it), and none of them came back to the DLQ;
    * ``bounced``: records of this redrive (their x-opsctl-redriven origin) are in the DLQ again,
      past what the redrive took (before the watch began or during it): the consumer still fails
      them; stops at once;
    * ``timeout``: a group has not committed past them within the window;
    * ``idle``: no consumer group reads the source topic now: nothing processes the redriven records.

    Application groups: ``groups``, or every group with committed offsets on the topic and members
    now, except the redrive's own (``group``, ``group.campaign``); ``idle_groups`` names those with
    offsets and no member (stopped consumers). ``other_dlq_records`` counts the records that reached
    the DLQ meanwhile and were not redriven by this redrive (failures of the live traffic).

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
        # the DLQ past what the redrive took: a record it sent that failed again is there, whether
        # it came back before this watch began or during it
        lows = k.offsets(dtps, "earliest")
        taken = {tp: max(o or 0, lows[tp]) for tp, o in k.committed(ours, dlq).items() if tp in lows}
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
                               "behind": {}, "refailed": 0, "other_dlq_records": 0, "checks": 0}
        read_to = {tp: taken.get(tp, lows[tp]) for tp in dtps}  # each look reads only what is new
        while True:
            out["checks"] += 1
            committed = k.committed_of(groups, topic)
            behind = {g: sum(max(0, target_end[tp] - committed[g].get(tp, floor[tp])) for tp in tps)
                      for g in groups}
            dlq_now = k.offsets(dtps, "latest")
            _, refailed, other = records_between(k, dtps, read_to, dlq_now, dlq, after=dlq_start)
            out["refailed"] += refailed
            out["other_dlq_records"] += other
            read_to = {tp: max(read_to[tp], dlq_now.get(tp, 0)) for tp in dtps}
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
