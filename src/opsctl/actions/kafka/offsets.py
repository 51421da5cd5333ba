"""Consumer-group offset reset (mutating; empty groups only)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.kafka.common import TOPIC
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import Cluster, topic_partition
from opsctl.errors import ActionError, ArgumentError
from opsctl.records import Change, Plan


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _timestamp_ms(value: Any) -> int:
    from datetime import datetime

    if isinstance(value, int | float):
        return int(value)
    try:
        return int(datetime.fromisoformat(str(value)).timestamp() * 1000)
    except ValueError:
        raise ArgumentError(f"kafka: timestamp {value!r} is neither epoch milliseconds nor ISO 8601"
                            ) from None


@register
class ResetOffsets(Action):
    """Move a consumer group's committed offsets on one topic: to the end (`latest`, skipping the
    backlog), to the first record at or after a `timestamp`, or by `shift` records (negative
    rewinds).  Refused while the group has active members; the plan lists every partition's
    old -> new offset and how many messages are skipped (max_skipped is the blast radius).

    ```yaml
    - id: skip
      action: kafka.reset_offsets
      with: {group: orders-consumer, topic: order.events, to: latest, max_skipped: 100000}
    ```
    """

    name = "kafka.reset_offsets"
    permissions = (KafkaAcl("Group", "{group}", ("Describe",)), KafkaAcl("Topic", "{topic}", ("Describe",)),
                   # an offset commit from outside the group: Read on the group and on the topic
                   KafkaAcl("Group", "{group}", ("Read",), apply=True),
                   KafkaAcl("Topic", "{topic}", ("Read",), apply=True))
    backend = "kafka"
    read_only = False
    summary = ("reset a group's offsets (latest / timestamp / shift); empty groups only "
               "(blast radius: max_skipped)")
    schema = type_schema({"group": TOPIC, "topic": TOPIC,
                          "to": {"type": "string", "enum": ["latest", "timestamp", "shift"]},
                          "timestamp": {"type": ["string", "number"]}, "shift": {"type": "integer"},
                          "max_skipped": {"type": "integer", "minimum": 0, "default": 100000}},
                         required=["group", "topic", "to"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        to = args.get("to")
        if to == "timestamp" and args.get("timestamp") is None:
            return [("timestamp", "to: timestamp needs a timestamp (ISO 8601 or epoch ms)")]
        if to == "shift" and args.get("shift") is None:
            return [("shift", "to: shift needs shift (records, negative rewinds)")]
        return []

    def _targets(self, k: Cluster, tps: list[Any], committed: dict[Any, int | None],
                 lows: dict[Any, int], highs: dict[Any, int]) -> dict[Any, int]:
        to = self.args["to"]
        if to == "latest":
            wanted = dict(highs)
        elif to == "timestamp":
            found = k.offsets_at(tps, _timestamp_ms(self.args["timestamp"]))
            wanted = {tp: highs[tp] if found.get(tp) is None else found[tp] for tp in tps}
        else:
            shift = int(self.args["shift"])
            wanted = {tp: _or(committed.get(tp), lows[tp]) + shift for tp in tps}
        return {tp: min(max(wanted[tp], lows[tp]), highs[tp]) for tp in tps}

    def plan(self) -> Plan:
        k = Cluster(self.ctx)
        group, topic = self.args["group"], self.args["topic"]
        k.require_empty_group(group, "stop the consumers first (offsets can only be reset on an "
                                       "empty group)")
        k.require_existing_group(group, k.group(group))
        tps = k.partitions(topic)
        committed = k.committed(group, topic)
        lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
        targets = self._targets(k, tps, committed, lows, highs)
        changes, rows = [], []
        for tp in tps:
            old = committed.get(tp)
            skipped = targets[tp] - (old if old is not None else lows[tp])
            if old == targets[tp]:
                continue
            rows.append({"partition": tp.partition, "old": old, "new": targets[tp], "skipped": skipped})
            detail = f"skips {skipped} messages" if skipped >= 0 else f"re-reads {-skipped} messages"
            changes.append(Change(target=f"{group} {topic}[{tp.partition}]", operation="reset offset",
                                  before=old, after=targets[tp], detail=detail))
        total = sum(max(0, r["skipped"]) for r in rows)
        limit = self.args.get("max_skipped", 100000)
        if total > limit:
            raise ActionError(f"kafka: resetting {group} on {topic} would skip {total} messages, more "
                              f"than max_skipped={limit}")
        # scope: only this group on this topic; say what the group also consumes and keeps as it is
        others = sorted({tp.topic for tp in k.committed(group)} - {topic})
        warnings = [f"out of scope, unchanged: {group}'s offsets on {', '.join(others)}"] if others else []
        return Plan(summary=f"reset {group} on {topic} to {self.args['to']}: {len(rows)} partition(s), "
                            f"{total} message(s) skipped", changes=changes, warnings=warnings,
                    data={"group": group, "topic": topic, "partitions": rows, "skipped": total,
                          "excluded_topics": others})

    def apply(self, plan: Plan) -> dict[str, Any]:
        k, d = Cluster(self.ctx), plan.data
        k.require_empty_group(d["group"], "a consumer joined since the plan; nothing was changed")
        now = k.committed(d["group"], d["topic"])
        offsets = {}
        for r in d["partitions"]:
            tp = topic_partition(d["topic"], r["partition"])
            if now.get(tp) != r["old"]:
                raise ActionError(f"kafka: {d['group']} moved on {d['topic']}[{r['partition']}] since the "
                                  "plan was made; nothing was changed, plan again")
            offsets[tp] = r["new"]
        if offsets:
            k.alter_offsets(d["group"], offsets, f"resetting {d['group']} on {d['topic']}")
        return {"group": d["group"], "topic": d["topic"], "partitions_reset": len(offsets),
                "skipped": d["skipped"]}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['group']} on {result['topic']}: {result['partitions_reset']} partition(s) reset, "
                f"{result['skipped']} message(s) skipped")
