"""The service whose circuit breaker opens, played by a small local HTTP app (the
rehearsal kit's fault for rb-004-style runbooks: ``open_breaker()``) (Spring actuator shapes).

* ``/actuator/circuitbreakers``: Resilience4j's view, ``{"circuitBreakers": {NAME: {"state": ...}}}``;
* ``/actuator/health``: ``UP`` when the breaker is CLOSED, or when the fallback flag is on, or when the
  feature that calls the downstream is switched off (both flags read from Redis on every request, as
  the real service would read its flag store); ``DOWN`` otherwise;
* ``/metrics``: Prometheus text with ``circuit_breaker_state{service, name}`` (0 closed, 1 open,
  2 half-open), the seeds' alert metric.

The breaker follows the downstream, as Resilience4j does: while ``downstream_ok()`` is false it is
OPEN; once true, OPEN -> HALF_OPEN after ``wait_open`` s, then HALF_OPEN -> CLOSED after
``half_open_for`` s of successful trial calls.  Tests drive ``downstream_ok`` (a flag, or a probe of
the downstream deployment in the real kube-apiserver).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opsctl.testing.ports import free_port

STATE_CODE = {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2}
ON, OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


class BreakerApp:
    def __init__(self, *, service: str = "orders", breaker: str = "payments", redis_url: str | None = None,
                 fallback_flag: str = "", feature_flag: str = "", wait_open: float = 0.5,
                 half_open_for: float = 0.5) -> None:
        self.service, self.breaker = service, breaker
        self.redis_url, self.fallback_flag, self.feature_flag = redis_url, fallback_flag, feature_flag
        self.wait_open, self.half_open_for = wait_open, half_open_for
        self.downstream_ok: Callable[[], bool] = lambda: True
        self.state, self.since = "CLOSED", time.monotonic()
        self.transitions: list[str] = []
        self.breaker_reads = 0  # GET /actuator/circuitbreakers served (tests sync on the run's progress)
        self.failing_reads: set[int] = set()  # fault: these reads (1-based) answer HTTP 500
        self.response_delay = 0.0  # fault: a slow service, every actuator answer this late
        self.forbidden = False  # fault: the actuator refuses the operator (HTTP 403)
        self.flag_refresh = 0.0  # the service re-reads a flag at most this often (a flag cache)
        self._flag_cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._redis: Any = None

    # ---- the breaker ---------------------------------------------------------------------------
    def _set(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.monotonic()
            self.transitions.append(state)

    def tick(self) -> None:
        ok = self.downstream_ok()
        with self._lock:
            held = time.monotonic() - self.since
            if not ok:
                self._set("OPEN")
            elif self.state == "OPEN" and held >= self.wait_open:
                self._set("HALF_OPEN")
            elif self.state == "HALF_OPEN" and held >= self.half_open_for:
                self._set("CLOSED")

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a probe failing (cluster going away) must not kill the app
                continue

    # ---- flags ---------------------------------------------------------------------------------
    def flag(self, key: str) -> str | None:
        if not key or not self.redis_url:
            return None
        cached = self._flag_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.flag_refresh:
            return cached[1]
        value = self._read_flag(key)
        self._flag_cache[key] = (time.monotonic(), value)
        return value

    def _read_flag(self, key: str) -> str | None:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(str(self.redis_url), socket_timeout=2, decode_responses=True)
        value = self._redis.get(key)
        return None if value is None else str(value).strip().lower()

    def health(self) -> dict[str, Any]:
        fallback = self.flag(self.fallback_flag) in ON
        feature_off = self.flag(self.feature_flag) in OFF
        state = self.state
        cb = "UP" if state == "CLOSED" else f"CIRCUIT_{state}"
        up = state == "CLOSED" or fallback or feature_off
        return {"status": "UP" if up else "DOWN", "components": {
            "circuitBreakers": {"status": cb, "details": {self.breaker: {"state": state}}},
            "fallback": {"status": "UP", "details": {"active": fallback}},
            "features": {"status": "UP", "details": {"downstream_feature_enabled": not feature_off}}}}

    def breakers(self) -> dict[str, Any]:
        open_ = self.state != "CLOSED"
        return {"circuitBreakers": {self.breaker: {
            "state": self.state, "failureRate": "100.0%" if open_ else "0.0%",
            "bufferedCalls": 10, "failedCalls": 10 if open_ else 0,
            "notPermittedCalls": 25 if self.state == "OPEN" else 0}}}

    def metrics(self) -> str:
        return ("# TYPE circuit_breaker_state gauge\n"
                f'circuit_breaker_state{{service="{self.service}",name="{self.breaker}"}} '
                f"{STATE_CODE[self.state]}\n")

    # ---- HTTP ----------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path.startswith("/actuator/") and app.response_delay:
                    time.sleep(app.response_delay)
                if path.startswith("/actuator/") and app.forbidden:
                    self._send(403, '{"error": "Forbidden"}', "application/json")
                    return
                if path == "/actuator/health":
                    h = app.health()
                    self._send(200 if h["status"] == "UP" else 503, json.dumps(h), "application/json")
                elif path == "/actuator/circuitbreakers":
                    app.breaker_reads += 1
                    if app.breaker_reads in app.failing_reads:
                        self._send(500, "upstream connect error", "text/plain")
                        return
                    self._send(200, json.dumps(app.breakers()), "application/json")
                elif path == "/metrics":
                    self._send(200, app.metrics(), "text/plain; version=0.0.4")
                else:
                    self._send(404, "not found", "text/plain")

            def _send(self, status: int, body: str, ctype: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> BreakerApp:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def open_breaker(self) -> None:
        """Fault injection: the downstream starts failing (until downstream_ok says otherwise)."""
        with self._lock:
            self._set("OPEN")
