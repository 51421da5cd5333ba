"""Consumer-group lag, once or as a trend (read-only)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.kafka.common import TOPIC
from opsctl.backends.kafka import Cluster


@register
class Lag(Action):
    """Consumer-group lag per partition, per topic and in total, with the group's state and members.

    One committed-offsets request and one end-offsets request cover every partition.

    ```yaml
    - id: lag
      action: kafka.lag
      with: {group: order-service-group, topic: order.events, lag_threshold: 1000}
      expect:
        - that: "result.max_partition_lag < 1000"
          message: "partition lag up to {{ result.max_partition_lag }}"
    ```
    """

    name = "kafka.lag"
    backend = "kafka"
    summary = "consumer-group lag per partition / topic / total, group state, members vs partitions"
    schema = type_schema({"group": TOPIC, "topic": {"type": "string"},
                          "lag_threshold": {"type": "integer", "minimum": 0},
                          "must_exist": {"type": "boolean", "default": False,
                                         "description": "fail when the group does not exist (no member, "
                                                        "no committed offset) instead of measuring the "
                                                        "whole log as its lag"}},
                         required=["group"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        group, topic = self.args["group"], self.args.get("topic") or None
        info = k.group(group)
        exists = k.group_exists(group, info)
        if self.args.get("must_exist") and not exists:
            k.require_existing_group(group, info)
        snap = k.lag_snapshot(group, topic, info)
        rows = snap["partitions"]
        topics: dict[str, dict[str, int]] = {}
        for r in rows:
            t = topics.setdefault(r["topic"], {"partitions": 0, "lag": 0})
            t["partitions"] += 1
            t["lag"] += r["lag"]
        threshold = self.args.get("lag_threshold")
        members = len(info["members"])
        return {"group": group, "exists": exists, "state": info["state"], "member_count": members,
                "members": info["members"], "partition_count": len(rows),
                "idle_members": max(0, members - len(rows)), "total_lag": snap["total_lag"],
                "max_partition_lag": max((r["lag"] for r in rows), default=0),
                "partitions_over_threshold": (sum(r["lag"] > threshold for r in rows)
                                              if threshold is not None else None),
                "topics": [{"topic": t, **v} for t, v in topics.items()], "partitions": rows}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"group {result['group']} ({result['state']}, {result['member_count']} members / "
                f"{result['partition_count']} partitions): total lag {result['total_lag']}, "
                f"max per partition {result['max_partition_lag']}")


@register
class LagTrend(Action):
    """Sample a group's lag twice, `interval` seconds apart: drain rate and time to drain.

    ```yaml
    - id: trend
      action: kafka.lag_trend
      with: {group: order-service-group, topic: order.events, interval: 10, drain_window: 600}
    ```
    """

    name = "kafka.lag_trend"
    backend = "kafka"
    summary = "lag sampled twice: drain rate (messages/s, > 0 when draining) and ETA to zero"
    schema = type_schema({"group": TOPIC, "topic": {"type": "string"},
                          "interval": {"type": "number", "exclusiveMinimum": 0, "default": 10},
                          "drain_window": {"type": "number", "minimum": 0}}, required=["group"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        group, topic = self.args["group"], self.args.get("topic") or None
        first = k.lag_snapshot(group, topic)
        self.ctx.sleep(float(self.args.get("interval", 10)))
        second = k.lag_snapshot(group, topic)
        elapsed = max(second["taken_at"] - first["taken_at"], 1e-6)
        rate = (first["total_lag"] - second["total_lag"]) / elapsed
        lag = second["total_lag"]
        eta = 0.0 if lag == 0 else (lag / rate if rate > 0 else None)
        window = self.args.get("drain_window")
        return {"group": group, "lag_before": first["total_lag"], "total_lag": lag,
                "max_partition_lag": max((r["lag"] for r in second["partitions"]), default=0),
                "interval_s": round(elapsed, 3), "drain_rate_per_s": round(rate, 3),
                "draining": rate > 0 or lag == 0,
                "eta_seconds": round(eta, 1) if eta is not None else None,
                "clears_within_window": ((eta is not None and eta <= window)
                                         if window is not None else None)}

    @classmethod
    def summarize(cls, result: Any) -> str:
        eta = f"ETA {result['eta_seconds']}s" if result["eta_seconds"] is not None else "not draining"
        return (f"lag {result['lag_before']} -> {result['total_lag']} in {result['interval_s']}s "
                f"({result['drain_rate_per_s']}/s, {eta})")
