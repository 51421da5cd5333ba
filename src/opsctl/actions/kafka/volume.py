"""DLQ volume against the source topic's traffic, and dead-letter topics found by name."""

from __future__ import annotations

import fnmatch
import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.kafka.common import TOPIC
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import Cluster

DLQ_PATTERNS = ["*.dlq", "*-dlq", "*_dlq", "*.DLQ", "*-DLQ", "*.dead-letter", "*-dead-letter", "dlq.*",
                "*.deadletter"]


def written_since(k: Cluster, topic: str, since_ms: int | None) -> tuple[bool, int]:
    """(the topic exists, records written to it since `since_ms`, or ever without one): offsets
    count every record ever appended, retention does not lower them."""
    tps = k.partitions(topic, missing_ok=True)
    if not tps:
        return False, 0
    highs = k.offsets(tps, "latest")
    if since_ms is None:
        return True, sum(highs.values())
    starts = k.offsets_at(tps, since_ms)
    written = 0
    for tp in tps:
        start = starts.get(tp)
        written += highs[tp] - (start if start is not None else highs[tp])
    return True, written


@register
class DlqRatio(Action):
    """Records written to a dead-letter topic as a share of those written to its source topic, over
    the last `window_minutes` (ListOffsets by time: no record is read), and since the topics began.

    ```yaml
    - id: ratio
      action: kafka.dlq_ratio
      with: {topic: order.events, dlq_topic: order.events.dlq, window_minutes: 60}
      expect:
        - that: "result.ratio_pct is none or result.ratio_pct <= 0.01"
          message: "{{ result.ratio_pct }} % of the traffic goes to the DLQ"
    ```
    """

    name = "kafka.dlq_ratio"
    # Metadata and ListOffsets (latest, by time): Describe on both topics, no record is read
    permissions = (KafkaAcl("Topic", "{topic}", ("Describe",)),
                   KafkaAcl("Topic", "{dlq_topic}", ("Describe",)))
    backend = "kafka"
    summary = "DLQ records as a % of the source topic's records, over a window and since the start"
    schema = type_schema({"topic": TOPIC, "dlq_topic": TOPIC,
                          "window_minutes": {"type": "number", "minimum": 0, "maximum": 10080,
                                             "default": 60}}, required=["topic", "dlq_topic"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        window = float(self.args.get("window_minutes", 60))
        since = int((time.time() - window * 60) * 1000) if window else None
        src_exists, src = written_since(k, self.args["topic"], since)
        dlq_exists, dlq = written_since(k, self.args["dlq_topic"], since)
        _, src_total = written_since(k, self.args["topic"], None)
        _, dlq_total = written_since(k, self.args["dlq_topic"], None)
        return {"topic": self.args["topic"], "dlq_topic": self.args["dlq_topic"],
                "topic_exists": src_exists, "dlq_exists": dlq_exists, "window_minutes": window,
                "source_records": src, "dlq_records": dlq,
                "ratio_pct": round(100.0 * dlq / src, 4) if src else None,
                "source_total": src_total, "dlq_total": dlq_total,
                "total_ratio_pct": round(100.0 * dlq_total / src_total, 4) if src_total else None}

    @classmethod
    def summarize(cls, result: Any) -> str:
        ratio = f"{result['ratio_pct']} %" if result["ratio_pct"] is not None else "n/a (no traffic)"
        return (f"{result['dlq_records']} DLQ records for {result['source_records']} on "
                f"{result['topic']} in {result['window_minutes']:g} min: {ratio}")


@register
class FindDlqs(Action):
    """Dead-letter topics found by name (globs; default the usual suffixes .dlq, -dlq, _dlq,
    .dead-letter...), each with its depth (high minus low watermark), deepest first.

    ```yaml
    - id: dlqs
      action: kafka.find_dlqs
      with: {patterns: ["*.dlq"]}
    ```
    """

    name = "kafka.find_dlqs"
    # the topic list (Metadata) shows only the topics the principal may Describe; its patterns are
    # globs (suffixes), which a Kafka ACL (literal or prefixed) cannot express: every topic
    permissions = (KafkaAcl("Topic", "*", ("Describe",)),)
    backend = "kafka"
    summary = "dead-letter topics by name pattern, with their depths"
    schema = type_schema({"patterns": {"type": "array", "items": {"type": "string", "minLength": 1},
                                       "default": DLQ_PATTERNS}})

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        patterns = list(self.args.get("patterns") or DLQ_PATTERNS)
        names = sorted(t for t in k.call(k.admin.list_topics)
                       if any(fnmatch.fnmatchcase(t, p) for p in patterns))
        found = []
        for name in names:
            tps = k.partitions(name, missing_ok=True)
            lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
            found.append({"topic": name, "depth": sum(max(0, highs[tp] - lows[tp]) for tp in tps)})
        found.sort(key=lambda t: (-t["depth"], t["topic"]))
        nonempty = [t for t in found if t["depth"]]
        return {"patterns": patterns, "topics": found, "count": len(found),
                "nonempty": [t["topic"] for t in nonempty], "nonempty_count": len(nonempty),
                "total_depth": sum(t["depth"] for t in found)}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['count']} dead-letter topic(s), {result['nonempty_count']} not empty "
                f"({result['total_depth']} records)")
