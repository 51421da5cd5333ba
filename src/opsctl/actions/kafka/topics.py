"""Topics: description, DLQ depth, peeking at records (read-only, no consumer group joined)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.kafka.common import TOPIC, text
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import Cluster, make_consumer
from opsctl.errors import ActionError


@register
class DescribeTopic(Action):
    """Partitions, replication factor, leaders and in-sync replicas of a topic.

    ```yaml
    - id: topic
      action: kafka.describe_topic
      with: {topic: order.events}
    ```
    """

    name = "kafka.describe_topic"
    permissions = (KafkaAcl("Topic", "{topic}", ("Describe",)),)
    backend = "kafka"
    summary = "topic partitions, replication factor, leaders, ISR, under-replicated partitions"
    schema = type_schema({"topic": TOPIC}, required=["topic"])

    def run(self) -> dict[str, Any]:
        desc = Cluster(self.ctx).describe(self.args["topic"])
        assert desc is not None
        parts = [{"partition": p["partition_index"], "leader": p["leader_id"],
                  "replicas": p["replica_nodes"], "isr": p["isr_nodes"],
                  "offline": p.get("offline_replicas", [])} for p in desc["partitions"]]
        rf = max((len(p["replicas"]) for p in parts), default=0)
        return {"topic": desc["name"], "partition_count": len(parts), "replication_factor": rf,
                "under_replicated": sum(len(p["isr"]) < len(p["replicas"]) for p in parts),
                "offline_partitions": sum(p["leader"] < 0 for p in parts), "partitions": parts}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['topic']}: {result['partition_count']} partitions, "
                f"RF {result['replication_factor']}, {result['under_replicated']} under-replicated")


@register
class DlqDepth(Action):
    """Messages waiting in a dead-letter topic (high minus low watermark per partition).

    A missing topic is not an error: `exists` is false and `depth` 0.

    ```yaml
    - id: dlq
      action: kafka.dlq_depth
      with: {topic: order.events.dlq}
      expect:
        - that: "result.depth == 0"
          severity: warning
    ```
    """

    name = "kafka.dlq_depth"
    permissions = (KafkaAcl("Topic", "{topic}", ("Describe",)),)
    backend = "kafka"
    summary = "DLQ topic depth: messages between low and high watermark"
    schema = type_schema({"topic": TOPIC}, required=["topic"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        topic = self.args["topic"]
        tps = k.partitions(topic, missing_ok=True)
        lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
        parts = [{"partition": tp.partition, "low": lows[tp], "high": highs[tp],
                  "depth": max(0, highs[tp] - lows[tp])} for tp in tps]
        return {"topic": topic, "exists": bool(tps), "depth": sum(p["depth"] for p in parts),
                "partitions": parts}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["exists"]:
            return f"{result['topic']}: no such topic"
        return f"{result['topic']}: {result['depth']} messages"


@register
class Peek(Action):
    """Read the first records of a topic (a DLQ, typically) without joining any consumer group.

    Values are truncated to `max_value_bytes` (0 hides them); with `header`, only records carrying
    that header count as `matched` (the whole topic is scanned, up to `max_scan` records, from
    `start_offsets` where given).

    ```yaml
    - id: samples
      action: kafka.peek
      with: {topic: order.events.dlq, limit: 5, max_value_bytes: 64}
    ```
    """

    name = "kafka.peek"
    permissions = (KafkaAcl("Topic", "{topic}", ("Describe", "Read")),)
    backend = "kafka"
    summary = "first N records of a topic: key, headers, size, truncated value; optional header filter"
    schema = type_schema({"topic": TOPIC, "limit": {"type": "integer", "minimum": 0, "default": 5},
                          "max_value_bytes": {"type": "integer", "minimum": 0, "default": 64},
                          "header": {"type": "string"},
                          "max_scan": {"type": "integer", "minimum": 1, "default": 10000},
                          "start_offsets": {"type": ["array", "object"],
                                            "description": "offset to start from per partition (a list "
                                                           "indexed by partition, or partition -> offset); "
                                                           "other partitions start at the beginning"}},
                         required=["topic"])

    def _starts(self) -> dict[int, int]:
        raw = self.args.get("start_offsets") or {}
        items = enumerate(raw) if isinstance(raw, list) else raw.items()
        try:
            return {int(p): int(o) for p, o in items if o is not None}
        except (TypeError, ValueError):
            raise ActionError(f"kafka.peek: start_offsets must map partitions to offsets, "
                              f"got {raw!r}") from None

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        tps = k.partitions(self.args["topic"])
        starts = self._starts()
        limit, header = self.args.get("limit", 5), self.args.get("header")
        max_scan = self.args.get("max_scan", 10000)
        records: list[dict[str, Any]] = []
        scanned = matched = empty = 0
        consumer = make_consumer(k.conf, fetch_max_wait_ms=100)
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            for tp in tps:  # e.g. the source topic's end offsets before a redrive: only what it wrote
                if tp.partition in starts:
                    consumer.seek(tp, starts[tp.partition])
            # stop on two empty polls, not at the end offsets: some brokers under-report them
            while scanned < max_scan and empty < 2 and (header or len(records) < limit):
                batch = k.call(consumer.poll, timeout_ms=300, max_records=min(500, max_scan - scanned))
                empty = 0 if batch else empty + 1
                for rec in (r for recs in batch.values() for r in recs):
                    scanned += 1
                    if header and not any(h == header for h, _ in rec.headers or []):
                        continue
                    matched += 1
                    if len(records) < limit:
                        records.append(self._view(rec))
        finally:
            consumer.close()
        return {"topic": self.args["topic"], "records": records, "scanned": scanned,
                "matched": matched, "complete": scanned < max_scan}

    def _view(self, rec: Any) -> dict[str, Any]:
        width = self.args.get("max_value_bytes", 64)
        return {"partition": rec.partition, "offset": rec.offset, "timestamp_ms": rec.timestamp,
                "key": text(rec.key, 64), "size": len(rec.value or b""),
                "headers": {h: text(v, 64) for h, v in rec.headers or []},
                "value": text(rec.value, width) if width else None}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['topic']}: {len(result['records'])} shown, "
                f"{result['matched']} of {result['scanned']} scanned")
