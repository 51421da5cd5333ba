"""Consumer-group lag, once or as a trend (read-only)."""

from __future__ import annotations

import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.kafka.common import TOPIC
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import Cluster
from opsctl.errors import ActionError, ArgumentError, BackendError, StepTimeout

WAIT_INTERVAL = 2.0
WAIT = {"type": "number", "minimum": 0, "default": 0,
        "description": "convergence window: measure again every 2 s, up to this many seconds (and "
                       "within the step's timeout), until the condition holds; not in dry-runs"}


@register
class Lag(Action):
    """Consumer-group lag per partition, per topic and in total, with the group's state and members.

    One committed-offsets request and one end-offsets request cover every partition.  With
    `wait_until_members` / `wait_until_below_threshold` (seconds) it waits for the group to have
    members / its lag to fall under `lag_threshold`, and reports the drain rate seen meanwhile.

    ```yaml
    - id: lag
      action: kafka.lag
      with: {group: orders-consumer, topic: order.events, lag_threshold: 1000}
      expect:
        - that: "result.max_partition_lag < 1000"
          message: "partition lag up to {{ result.max_partition_lag }}"
    ```
    """

    name = "kafka.lag"
    permissions = (KafkaAcl("Group", "{group}", ("Describe",)), KafkaAcl("Topic", "{topic}", ("Describe",)))
    backend = "kafka"
    # the drain rate (clears_within_window) is measured over the whole wait: not a plain re-check
    window_args = ("wait_until_below_threshold",)
    summary = "consumer-group lag per partition / topic / total, group state, members vs partitions"
    schema = type_schema({"group": TOPIC, "topic": {"type": "string"},
                          "lag_threshold": {"type": "integer", "minimum": 0},
                          "must_exist": {"type": "boolean", "default": False,
                                         "description": "fail when the group does not exist (no member, "
                                                        "no committed offset) instead of measuring the "
                                                        "whole log as its lag"},
                          "wait_until_members": WAIT, "wait_until_below_threshold": WAIT,
                          "drain_window": {"type": "number", "minimum": 0,
                                           "description": "with a wait: is the drain rate seen over the "
                                                          "wait fast enough to clear the lag within this "
                                                          "many seconds (clears_within_window)"}},
                         required=["group"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        if args.get("wait_until_below_threshold") and args.get("lag_threshold") is None:
            return [("wait_until_below_threshold", "needs lag_threshold (what 'below' means)")]
        return []

    def run(self) -> dict[str, Any]:
        """Measure once, or (a convergence window) measure again every `interval` until the
        condition holds or the wait is over; the last measurement is the result.  A broker that
        cannot be reached fails at once: a hung cluster costs one deadline, not one per attempt."""
        members_wait = float(self.args.get("wait_until_members") or 0)
        lag_wait = float(self.args.get("wait_until_below_threshold") or 0)
        wait = 0.0 if self.ctx.dry_run else max(members_wait, lag_wait)
        threshold = self.args.get("lag_threshold")

        def done(r: dict[str, Any]) -> bool:
            return ((not members_wait or r["member_count"] > 0)
                    and (not lag_wait or threshold is None or r["max_partition_lag"] < threshold))

        start = time.monotonic()
        end = start + wait
        left = self.ctx.remaining()
        if left is not None:  # the last measurement ends before the step's deadline, with its verdict
            end = min(end, start + left - min(5.0, left / 5))
        first = result = self._measure()
        checks = 1
        with self.ctx.progress(f"Waiting for {self.args['group']}", total=None) as bar:
            while wait and not done(result) and time.monotonic() < end:
                self.ctx.sleep(min(WAIT_INTERVAL, max(0.0, end - time.monotonic())))
                try:
                    result = self._measure()
                except BackendError:
                    raise  # the cluster stopped answering: no point in waiting out the window
                except ActionError as e:  # a rebalancing group, a coordinator moving: look again
                    if isinstance(e, StepTimeout | ArgumentError):
                        raise
                    bar.update(last_answer=f"error: {e}"[:100])
                    continue
                checks += 1
                bar.update(last_answer=f"lag {result['total_lag']}, {result['member_count']} member(s)")
        elapsed = time.monotonic() - start
        extra: dict[str, Any] = {"waited_s": round(elapsed, 1), "checks": checks,
                                 "lag_before": first["total_lag"]}
        if checks > 1 and elapsed > 0:
            rate = (first["total_lag"] - result["total_lag"]) / elapsed
            lag = result["total_lag"]
            eta = 0.0 if lag == 0 else (lag / rate if rate > 0 else None)
            window = self.args.get("drain_window")
            extra.update({"drain_rate_per_s": round(rate, 3),
                          "eta_seconds": round(eta, 1) if eta is not None else None,
                          "clears_within_window": ((eta is not None and eta <= window)
                                                   if window is not None else None)})
        else:
            extra.update({"drain_rate_per_s": None, "eta_seconds": 0.0 if result["total_lag"] == 0
                          else None, "clears_within_window": result["total_lag"] == 0})
        return {**result, **extra}

    def _measure(self) -> dict[str, Any]:
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
      with: {group: orders-consumer, topic: order.events, interval: 10, drain_window: 600}
    ```
    """

    name = "kafka.lag_trend"
    permissions = (KafkaAcl("Group", "{group}", ("Describe",)), KafkaAcl("Topic", "{topic}", ("Describe",)))
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
