"""Alerts in, read-only runs out: the queue, the worker pool and the episode ledger.

- one run per alert episode: a firing alert's key is ``fingerprint@startsAt`` (Alertmanager re-sends
  it every repeat_interval), a resolved one adds ``#resolved``; repeats are counted, not run;
- at most ``concurrency`` runs at once, the rest wait in a bounded queue; when it is full the alert is
  refused (the HTTP layer answers 503, Alertmanager retries) and not remembered, so the retry runs;
- a firing alert runs the diagnosis (+ the recommended option's plan, dry-run), a resolved one the
  verify phase after its firing run ended, reusing that run's results;
- every outcome goes to Slack through the sender thread, and to the metrics.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from opsctl.alerts import message, runner
from opsctl.alerts.bindings import Catalogue, Mapping
from opsctl.alerts.payloads import Alert, Batch
from opsctl.config import Environment
from opsctl.serve.metrics import Metrics
from opsctl.serve.slack import SlackSender

MAX_REMEMBERED = 100_000  # alert episodes remembered for de-duplication
RESOLVE_WAIT = 900.0  # how long a resolved alert waits for its firing run to end
REMEMBER_SECONDS = 7 * 86400.0  # episodes found in run logs this recent are not run again


@dataclass
class Job:
    alert: Alert
    mapping: Mapping
    key: str
    done: threading.Event = field(default_factory=threading.Event)
    run_id: str | None = None


@dataclass
class Submitted:
    accepted: int = 0
    duplicates: int = 0
    unmapped: list[str] = field(default_factory=list)
    shed: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "shed": self.shed,
                "unmapped": self.unmapped, "warnings": self.warnings}


class AlertService:
    def __init__(self, catalogue: Catalogue, environment: Environment, metrics: Metrics,
                 slack: SlackSender, *, concurrency: int = 4, queue_size: int = 1000) -> None:
        self.catalogue, self.environment, self.metrics, self.slack = catalogue, environment, metrics, slack
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.queue: queue.Queue[Job] = queue.Queue(queue_size)
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.processed = 0
        self.past = remembered_episodes()  # key -> run id, from the run logs of earlier processes
        self.workers = [threading.Thread(target=self._work, name=f"run-{i}", daemon=True)
                        for i in range(concurrency)]
        for w in self.workers:
            w.start()

    # ---- intake (called by the HTTP layer; never waits on a run) -------------------------------
    def submit(self, batch: Batch) -> Submitted:
        out = Submitted(warnings=list(batch.warnings))
        for warning in batch.warnings:  # the sender ignores the answer's body: say it where people look
            _log(f"warning: {warning}")
        if batch.truncated:
            self.metrics.truncated.inc(batch.truncated)
        for alert in batch.alerts:
            self.metrics.alerts.labels(alert.source, alert.status).inc()
            key = alert.key + ("#resolved" if alert.status == "resolved" else "")
            with self.lock:
                if key in self.jobs or key in self.past:
                    out.duplicates += 1
                    self.metrics.duplicates.inc()
                    continue
            mapping = self.catalogue.map(alert)
            if mapping.problem:
                out.unmapped.append(mapping.problem)
                self.metrics.unmapped.labels(mapping.status).inc()
                _log(f"no run: {mapping.problem}")
                continue
            job = Job(alert, mapping, key)
            with self.lock:
                if key in self.jobs:  # the same alert twice in one payload
                    out.duplicates += 1
                    self.metrics.duplicates.inc()
                    continue
                try:
                    self.queue.put_nowait(job)
                except queue.Full:
                    out.shed += 1
                    self.metrics.shed.inc()
                    continue
                self.jobs[key] = job
                while len(self.jobs) > MAX_REMEMBERED:
                    self.jobs.popitem(last=False)
                self.metrics.queued.set(self.queue.qsize())
            out.accepted += 1
        return out

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"status": "ok", "queued": self.queue.qsize(), "running": self.running,
                    "max_running": self.max_running, "processed": self.processed,
                    "concurrency": len(self.workers), "episodes": len(self.jobs),
                    "runbooks": len(self.catalogue.runbooks)}

    # ---- the workers -------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self.queue.get()
            with self.lock:
                self.running += 1
                self.max_running = max(self.max_running, self.running)
                self.metrics.running.set(self.running)
                self.metrics.queued.set(self.queue.qsize())
            try:
                self._run(job)
            except Exception:  # a bug must not kill the worker: it is logged, the next alert runs
                _log(f"run of {job.alert.describe()} crashed:\n{traceback.format_exc()}")
            finally:
                job.done.set()
                with self.lock:
                    self.running -= 1
                    self.processed += 1
                    self.metrics.running.set(self.running)

    def _run(self, job: Job) -> None:
        alert, match = job.alert, job.mapping.matches[0]
        rb = self.catalogue.runbooks[match.runbook]
        phase = "verify" if alert.status == "resolved" else "diagnose"
        argv = ["serve", alert.source, alert.name, alert.key]
        self.metrics.started.labels(rb.id, phase).inc()
        t0 = time.monotonic()
        verdict = "error"
        try:
            if phase == "diagnose":
                result = runner.diagnose(rb, alert, match, self.environment, argv=argv)
            else:
                with self.lock:
                    firing = self.jobs.get(alert.key)
                if firing is not None:
                    firing.done.wait(RESOLVE_WAIT)
                previous = firing.run_id if firing else self.past.get(alert.key)
                result = runner.verify(rb, alert, match, self.environment, previous_run=previous,
                                       argv=argv)
            job.run_id = result.run_id
            verdict = result.outcome.status
            _log(f"{alert.describe()} -> {rb.id} {phase}: {verdict} ({result.outcome.message}); "
                 f"run {result.run_id}")
            self.slack.send(message.blocks(result))
        finally:
            self.metrics.finished.labels(rb.id, phase, verdict).inc()
            self.metrics.duration.labels(rb.id, phase).observe(time.monotonic() - t0)


def remembered_episodes(max_age: float = REMEMBER_SECONDS) -> dict[str, str]:
    """Alert episodes that already have a run (a restarted receiver must not run them again):
    the ``alert`` event of the recent run logs (their second line)."""
    import json

    from opsctl.audit import state_dir

    out: dict[str, str] = {}
    runs = state_dir() / "runs"
    cutoff = time.time() - max_age
    for path in sorted(runs.glob("*.jsonl")) if runs.is_dir() else []:
        try:
            if path.stat().st_mtime < cutoff:
                continue
            with open(path, encoding="utf-8") as fh:
                head = [json.loads(fh.readline() or "{}") for _ in range(2)]
        except (OSError, ValueError):
            continue
        start, event = head
        if event.get("event") != "alert" or not event.get("fingerprint"):
            continue
        key = f"{event['fingerprint']}@{event.get('startsAt', '')}"
        out[key + ("#resolved" if start.get("phase") == "verify" else "")] = path.stem
    return out


def _log(text: str) -> None:
    print(f"opsctl serve: {text}", file=sys.stderr, flush=True)
