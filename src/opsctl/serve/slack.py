"""Slack posts from a thread of their own: an outage is retried with backoff and never holds up a
diagnosis (runs only enqueue their message).  Messages go out in order; the one at the head is
retried (0.5 s doubling to 30 s) until Slack takes it or it is ``max_age`` old (15 min: a
notification that late is dropped, and said so on stderr); the others wait behind it."""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any

from opsctl.backends import slack as notify
from opsctl.errors import BackendError
from opsctl.serve.metrics import Metrics


class SlackSender:
    def __init__(self, url: str | None, metrics: Metrics, *, max_age: float = 900.0,
                 first_delay: float = 0.5, max_delay: float = 30.0, max_pending: int = 10000) -> None:
        self.url, self.metrics = url, metrics
        self.max_age, self.first_delay, self.max_delay = max_age, first_delay, max_delay
        self.pending: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue(max_pending)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="slack-sender", daemon=True)
        if url:
            self.thread.start()

    def send(self, body: dict[str, Any]) -> None:
        if not self.url:
            self.metrics.slack.labels("skipped").inc()
            return
        try:
            self.pending.put_nowait((time.monotonic(), body))
        except queue.Full:
            self.metrics.slack.labels("dropped").inc()
            print("opsctl serve: Slack backlog full, message dropped", file=sys.stderr)

    def _loop(self) -> None:
        assert self.url
        while not self.stop.is_set():
            try:
                queued, body = self.pending.get(timeout=0.5)
            except queue.Empty:
                continue
            delay, attempt = self.first_delay, 0
            while True:
                attempt += 1
                try:
                    notify.post(self.url, body, timeout=10.0)
                    self.metrics.slack.labels("ok").inc()
                    break
                except BackendError as e:  # the message names the host only, never the URL
                    if time.monotonic() + delay - queued > self.max_age:
                        self.metrics.slack.labels("dropped").inc()
                        print(f"opsctl serve: Slack post dropped after {attempt} attempts "
                              f"({time.monotonic() - queued:.0f} s): {e}", file=sys.stderr)
                        break
                    if attempt == 1:
                        print(f"opsctl serve: Slack post failed, retrying: {e}", file=sys.stderr)
                    self.metrics.slack.labels("retried").inc()
                    if self.stop.wait(delay):
                        return
                    delay = min(delay * 2, self.max_delay)

    def close(self, timeout: float = 5.0) -> None:
        """Give queued posts a moment to go out, then stop."""
        deadline = time.monotonic() + timeout
        while self.url and not self.pending.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
