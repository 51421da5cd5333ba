"""Broker reachability judged at the Kafka protocol level (read-only).

"TCP connect succeeded" is not "broker up": a broker whose JVM is wedged, or a proxy/load balancer
with no healthy backend, accepts connections and never answers.  ``kafka.brokers`` sends every
bootstrap server an ApiVersions (and, without SASL, a Metadata) request and counts a broker as up
only when it answers within the deadline.  The brokers are probed concurrently: a hung cluster
costs one deadline, not one per broker.  Waiting for the brokers to come back is the step's
convergence window (``within:``), not an argument of the action.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import Local
from opsctl.backends.kafka import bootstrap_targets, settings
from opsctl.backends.kafka_probe import probe_broker
from opsctl.errors import ArgumentError


@register
class Brokers(Action):
    """Each bootstrap broker probed with a Kafka request: up, hung (accepts TCP, never answers),
    dead (refused) or slow (answered after more than `slow_after` of the deadline).

    ```yaml
    - id: brokers
      action: kafka.brokers
      with: {timeout: 3}
      expect:
        - that: "result.unhealthy_count == 0"
          message: "{{ result.problems | join('; ') }}"
    ```
    """

    name = "kafka.brokers"
    permissions = (Local("kafka", "a connection to each broker (ApiVersions and Metadata need no ACL)"),)
    backend = "kafka"
    summary = ("each bootstrap broker probed with ApiVersions/Metadata within a deadline: up / hung "
               "(TCP only) / dead / slow")
    schema = type_schema({
        "targets": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                    "description": "host:port list (default: the environment's bootstrap servers)"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 3,
                    "description": "seconds for connect + every round trip, per broker"},
        "slow_after": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5,
                       "description": "an answer after this fraction of the timeout is 'slow'"}})

    def _targets(self) -> list[str]:
        raw: Any = self.args.get("targets") or ""
        items = raw if isinstance(raw, list) else str(raw).split(",")
        targets = [str(t).strip() for t in items if str(t).strip()]
        if targets:
            return targets
        try:
            return bootstrap_targets(self.ctx.backend_config("kafka"))
        except Exception as e:  # noqa: BLE001 - BackendError: no broker configured is bad input here
            raise ArgumentError(f"kafka.brokers: {getattr(e, 'message', e)}") from None

    def run(self) -> dict[str, Any]:
        targets = self._targets()
        self.ctx.check_cancelled()
        conf = {k: v for k, v in self.ctx.backend_config("kafka").items() if v is not None}
        if conf:
            conf = settings(conf)
        timeout = float(self.args.get("timeout", 3))
        left = self.ctx.remaining()
        if left is not None:  # never past the step's deadline (keep a little to report)
            timeout = max(0.1, min(timeout, left - 0.5))
        with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
            checks = list(pool.map(lambda t: probe_broker(t, timeout, conf), targets))
        slow_ms = timeout * 1000 * float(self.args.get("slow_after", 0.5))
        for c in checks:
            if c["state"] == "up" and c["latency_ms"] is not None and c["latency_ms"] > slow_ms:
                c["state"] = "slow"
        by = {s: [c["target"] for c in checks if c["state"] == s] for s in ("up", "slow", "hung", "dead",
                                                                           "error")}
        bad = [c for c in checks if not c["answered"]]
        advertised = sorted({b for c in checks for b in c["brokers"] or []})
        return {"count": len(checks), "healthy_count": len(checks) - len(bad),
                "unhealthy_count": len(bad), "unhealthy": [c["target"] for c in bad],
                # the names tcp.check used, so that templates read the same either way
                "reachable_count": len(checks) - len(bad), "unreachable_count": len(bad),
                "unreachable": [c["target"] for c in bad],
                "hung": by["hung"], "dead": by["dead"], "slow": by["slow"], "errors": by["error"],
                "problems": [f"{c['target']} {c['state']}: {c['error']}" for c in bad],
                "cluster_brokers": advertised, "timeout_s": round(timeout, 2), "checks": checks}

    @classmethod
    def summarize(cls, r: Any) -> str:
        text = f"{r['healthy_count']}/{r['count']} broker(s) answer"
        for state in ("hung", "dead", "errors", "slow"):
            if r.get(state):
                text += f"; {state}: {', '.join(r[state])}"
        return text
