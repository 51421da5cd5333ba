"""The receiver's Prometheus metrics, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("opsctl_webhook_requests", "Webhook requests by endpoint and HTTP code",
                                ["endpoint", "code"], registry=r)
        self.alerts = Counter("opsctl_alerts_received", "Alerts received, by source and status",
                              ["source", "status"], registry=r)
        self.unmapped = Counter("opsctl_alerts_unmapped", "Alerts that start no run (no runbook, "
                                "two runbooks or invalid parameters)", ["reason"], registry=r)
        self.duplicates = Counter("opsctl_alerts_duplicate", "Alerts of an episode already handled "
                                  "(Alertmanager's repeat_interval re-sends)", registry=r)
        self.shed = Counter("opsctl_alerts_shed", "Alerts refused with 503: the queue was full",
                            registry=r)
        self.truncated = Counter("opsctl_alerts_truncated", "Alerts Alertmanager left out of a "
                                 "payload (truncatedAlerts)", registry=r)
        self.started = Counter("opsctl_runs_started", "Runs started, by runbook and phase",
                               ["runbook", "phase"], registry=r)
        self.finished = Counter("opsctl_runs_finished", "Runs finished, by runbook, phase and verdict",
                                ["runbook", "phase", "verdict"], registry=r)
        self.duration = Histogram("opsctl_run_duration_seconds", "Run durations",
                                  ["runbook", "phase"], registry=r,
                                  buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600))
        self.running = Gauge("opsctl_runs_running", "Runs in progress", registry=r)
        self.queued = Gauge("opsctl_runs_queued", "Alerts waiting for a run slot", registry=r)
        self.slack = Counter("opsctl_slack_posts", "Slack posts by result (ok, retried, dropped, "
                             "skipped: no webhook)", ["result"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
