"""Run notifications: a P0/P1 runbook announces its start, the chosen mitigation and its verdict
to the environment's Slack channel (``notify`` in opsctl.yaml; silent when no webhook is set).

One mechanism for every runbook: the executor calls ``send`` at those three moments; the texts come
from ``opsctl.messages`` (templates a team can override).  Posts go out in order from a thread of
their own, so a slow or dead Slack never holds up a diagnosis; ``close`` waits a bounded time for
them and returns what failed as warnings.  A failing Slack never changes a run's verdict.

Not notified: dry-runs (nothing is being done about the incident; ``notify.dry_run: true`` to
change that), runbooks below the environment's ``notify.severities`` (default P0, P1), runs with
``--no-notify``, and runbooks that post their own messages (``notify.slack`` steps, e.g. rb-001).
"""

from __future__ import annotations

import getpass
import queue
import threading
import time
from typing import Any

from opsctl import messages, templating
from opsctl.backends import slack
from opsctl.errors import BackendError

DEFAULT_SEVERITIES = ("P0", "P1")
DEFAULT_TIMEOUT = 5.0  # seconds per post


class Notifier:
    def __init__(self, runbook: Any, environment: Any, settings: Any, audit: Any) -> None:
        self.rb, self.audit = runbook, audit
        self.config: dict[str, Any] = dict(environment.backend("notify")) if environment else {}
        self.env_name = getattr(environment, "name", "default")
        self.warnings: list[str] = []
        self.timeout = float(self.config.get("timeout") or DEFAULT_TIMEOUT)
        self.url: str | None = None
        self.why_not = self._why_not(settings)
        if self.why_not is None:
            try:
                self.url = slack.webhook_url(self.config)
            except BackendError as e:
                self.warnings.append(f"Slack notifications off: {e}")
            if not self.url:
                self.why_not = "no Slack webhook configured"
        self.pending: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.user = _user()

    @property
    def enabled(self) -> bool:
        return self.url is not None and self.why_not is None

    def _why_not(self, settings: Any) -> str | None:
        if not getattr(settings, "notify", True):
            return "--no-notify"
        if settings.dry_run and not self.config.get("dry_run"):
            return "dry-run"
        severities = self.config.get("severities") or DEFAULT_SEVERITIES
        if self.rb.severity not in severities:
            return f"severity {self.rb.severity} is not notified ({', '.join(severities)})"
        if any(s.action == "notify.slack" for s in self.rb.steps()):
            return "the runbook posts its own messages"
        return None

    # ---- events --------------------------------------------------------------------------------
    def context(self, **extra: Any) -> dict[str, Any]:
        return {"runbook": {"id": self.rb.id, "title": self.rb.title, "severity": self.rb.severity},
                "env": {"name": self.env_name},
                "run": {"id": self.audit.run_id, "user": self.user},
                "channel": self.config.get("channel") or "", **extra}

    def send(self, kind: str, **extra: Any) -> None:
        """Render the `kind` message and queue it (never raises, never blocks on Slack)."""
        if not self.enabled:
            return
        try:
            text, warning = messages.render(kind, self.config, self.context(**extra))
        except templating.TemplateError as e:  # the built-in template itself: a bug, say it
            self.warnings.append(f"Slack {kind} message not sent: {e}")
            return
        if warning:
            self.warnings.append(warning)
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
                self.thread.start()
        self.pending.put((kind, text))

    def option(self, runbook: Any, selected: set[str] | None) -> None:
        chosen = [o for o in runbook.options if o.name in (selected or ())]
        if len(chosen) == 1:
            self.send("option", option={"name": chosen[0].name, "title": chosen[0].title})

    def verdict(self, outcome: Any) -> None:
        if not self.enabled:
            return
        findings = outcome.findings()
        self.send("verdict", outcome={
            "status": outcome.status, "message": outcome.message, "exit_code": outcome.exit_code,
            "duration": outcome.duration, "option": outcome.option,
            "applied": any(r.status == "applied" for r in outcome.records),
            "critical": sum(f.severity == "critical" for f in findings),
            "warning": sum(f.severity == "warning" for f in findings)})

    def _loop(self) -> None:
        assert self.url
        while True:
            item = self.pending.get()
            try:
                if item is None:
                    return
                kind, text = item
                body = {k: v for k, v in (("text", text), ("channel", self.config.get("channel")),
                                          ("username", self.config.get("username"))) if v}
                try:
                    slack.post(self.url, body, timeout=self.timeout)
                except BackendError as e:  # names the host only, never the URL
                    self.warnings.append(f"Slack {kind} message not sent: {e} (the run goes on)")
                    self._log(message=kind, text=text, ok=False, error=str(e))
                else:
                    self._log(message=kind, text=text, ok=True, channel=self.config.get("channel"))
            finally:
                self.pending.task_done()

    def _log(self, **event: Any) -> None:
        try:
            self.audit.event("notify", **event)
        except Exception as e:  # noqa: BLE001 - the run log's problem, reported, not this thread's end
            self.warnings.append(f"Slack {event['message']} message not recorded in the run log: {e}")

    def close(self) -> list[str]:
        """Wait (bounded: one post timeout per queued message, plus a second) for the queued
        posts; the warnings of the run's notifications."""
        if self.thread is not None:
            self.pending.put(None)
            deadline = time.monotonic() + self.timeout * max(1, self.pending.qsize()) + 1.0
            self.thread.join(max(0.0, deadline - time.monotonic()))
            if self.thread.is_alive():
                left = self.pending.qsize()
                self.warnings.append(f"Slack did not answer within {self.timeout:g}s: "
                                     f"{max(left - 1, 0) + 1} message(s) may not have been posted "
                                     "(the run goes on)")
        return list(self.warnings)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
