"""HTTP actions: GET an endpoint (health checks, Spring actuator) and Prometheus instant queries.

Both are read-only and use the standard library (``opsctl.backends.http``).  Timeouts come from the
argument, else the environment's ``http: {timeout}``, else 5 s, and never exceed the step's deadline.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import urllib.parse
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, is_template, type_schema
from opsctl.actions.needs import Local
from opsctl.backends import http
from opsctl.errors import ActionError, ArgumentError, BackendError, StepTimeout
from opsctl.units import seconds

TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "description": "seconds (default: http.timeout or 5)"}


def _timeout(action: Action) -> float:
    t = action.args.get("timeout") or action.ctx.backend_config("http").get("timeout") or 5.0
    return max(0.1, action.ctx.remaining(float(t)) or float(t))


def _url_errors(args: dict[str, Any], key: str = "url") -> list[tuple[str, str]]:
    url = args.get(key)
    if isinstance(url, str) and not is_template(url) and \
            urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return [(key, f"expected an http:// or https:// URL, got {url!r}")]
    return []


WAIT_SECONDS = {"type": "number", "minimum": 0, "default": 0,
                "description": "poll (every 2 s) up to this many seconds for the condition; not in dry-runs"}


def _poll(action: Action, once: Any, done: Any, wait: float, what: str) -> dict[str, Any]:
    """Call once() until done(result) or ``wait`` seconds have passed; the last result has waited_s.

    A dry-run never waits: nothing was changed that could make the condition come true."""
    result = once()
    if not wait or done(result) or action.ctx.dry_run:
        return {**result, "waited_s": 0.0}
    start = time.monotonic()
    error: ActionError | BackendError | None = None
    with action.ctx.progress(what, total=None) as bar:
        while (error is not None or not done(result)) and time.monotonic() - start < wait:
            action.ctx.sleep(min(2.0, max(0.0, wait - (time.monotonic() - start))))
            try:
                result, error = once(), None
                bar.update(last_answer="ok")
            except (ActionError, BackendError) as e:
                if isinstance(e, StepTimeout | ArgumentError):
                    raise
                # a service recovering answers 500s or drops connections for a while: keep
                # waiting out the window; only the last answer counts
                error = e
                bar.update(last_answer=f"error: {e}"[:100])
    if error is not None:
        raise error
    return {**result, "waited_s": round(time.monotonic() - start, 1)}


def _parse_json(resp: http.Response) -> Any:
    if "json" not in resp.content_type and not resp.body.lstrip().startswith((b"{", b"[")):
        return None
    try:
        return json.loads(resp.body)
    except ValueError:
        return None


@register
class Get(Action):
    """GET a URL: status, latency, parsed JSON (when the body is JSON) and a body excerpt.

    ```yaml
    - id: breaker
      action: http.get
      with: {url: "http://orders:8080/actuator/circuitbreakers", timeout: 3}
      expect:
        - that: "result.json.circuitBreakers.payments.state == 'CLOSED'"
    ```
    """

    name = "http.get"
    permissions = (Local("http", "network access to the URL (GET)"),)
    backend = "http"
    summary = "GET an endpoint: status, ok (2xx), latency_ms, json, body_excerpt; unreachable_ok for probes"
    schema = type_schema({"url": {"type": "string", "minLength": 1}, "timeout": TIMEOUT,
                          "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                          "unreachable_ok": {"type": "boolean", "default": False,
                                             "description": "no response -> reachable=false, not an error"},
                          "max_excerpt": {"type": "integer", "minimum": 0, "default": 500},
                          "wait_until_ok": WAIT_SECONDS}, required=["url"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        return _url_errors(args)

    def run(self) -> dict[str, Any]:
        return _poll(self, self._once, lambda r: bool(r["ok"]), float(self.args.get("wait_until_ok", 0)),
                     f"Waiting for {http.redact_url(self.args['url'])} to answer 2xx")

    def _once(self) -> dict[str, Any]:
        url = self.args["url"]
        self.ctx.check_cancelled()
        try:
            resp = http.get(url, _timeout(self), self.args.get("headers"))
        except http.Unreachable as e:
            if self.args.get("unreachable_ok"):
                return {"url": http.redact_url(url), "reachable": False, "status": None, "ok": False,
                        "latency_ms": None, "json": None, "body_excerpt": "", "error": str(e)}
            raise BackendError("http", f"{e}. Is the service up and the URL right?") from None
        text = resp.body.decode("utf-8", "replace")
        return {"url": http.redact_url(url), "reachable": True, "status": resp.status,
                "ok": 200 <= resp.status < 300, "latency_ms": resp.latency_ms,
                "content_type": resp.content_type, "json": _parse_json(resp),
                "body_excerpt": text[: int(self.args.get("max_excerpt", 500))], "error": None}

    @classmethod
    def summarize(cls, r: Any) -> str:
        if not r.get("reachable"):
            return f"{r['url']}: unreachable ({r.get('error')})"
        status = r["json"].get("status") if isinstance(r.get("json"), dict) else None
        extra = f", status {status}" if isinstance(status, str) else ""
        return f"{r['url']}: HTTP {r['status']} in {r['latency_ms']} ms{extra}"


def _number(v: str) -> float | None:
    x = float(v)
    return None if math.isnan(x) else x


@register
class PrometheusQuery(Action):
    """Prometheus instant query (`/api/v1/query`): one value per series, plus value/max/min/sum.

    ```yaml
    - id: breaker_metric
      action: prometheus.query
      with: {query: 'max(circuit_breaker_state{service="orders"})'}
      expect:
        - that: "result.value == 0"
          message: "circuit breaker state {{ result.value }} (0 closed, 1 open)"
    ```
    """

    name = "prometheus.query"
    permissions = (Local("prometheus", "read access to the Prometheus HTTP API (/api/v1/query)"),)
    backend = "prometheus"
    summary = "PromQL instant query against the environment's prometheus.url (or url); NaN -> null"
    schema = type_schema({"query": {"type": "string", "minLength": 1},
                          "url": {"type": "string", "description": "Prometheus base URL"},
                          "time": {"type": "string", "description": "evaluation time (RFC 3339 / unix)"},
                          "timeout": TIMEOUT}, required=["query"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        return _url_errors(args)

    def _base(self) -> str:
        base = self.args.get("url") or self.ctx.backend_config("prometheus").get("url") \
            or os.environ.get("PROMETHEUS_URL")
        if not base:
            raise BackendError("prometheus", "no Prometheus URL: set prometheus.url for the environment in "
                               "opsctl.yaml, PROMETHEUS_URL, or the step's url argument")
        return str(base).rstrip("/")

    def run(self) -> dict[str, Any]:
        params = {"query": self.args["query"]}
        if self.args.get("time"):
            params["time"] = self.args["time"]
        url = f"{self._base()}/api/v1/query?{urllib.parse.urlencode(params)}"
        self.ctx.check_cancelled()
        try:
            resp = http.get(url, _timeout(self))
        except http.Unreachable as e:
            raise BackendError("prometheus", f"{e}. Check prometheus.url.") from None
        body = _parse_json(resp)
        if not isinstance(body, dict) or "status" not in body:
            raise BackendError("prometheus", f"{http.redact_url(self._base())} answered HTTP {resp.status} "
                               "without a Prometheus API response: is this the Prometheus base URL?")
        if body["status"] != "success":
            raise ActionError(f"Prometheus rejected the query ({body.get('errorType')}): {body.get('error')}")
        return self._shape(body["data"])

    @staticmethod
    def _shape(data: dict[str, Any]) -> dict[str, Any]:
        kind, raw = data.get("resultType"), data.get("result") or []
        if kind in ("scalar", "string"):
            value = _number(raw[1]) if kind == "scalar" else raw[1]
            return {"result_type": kind, "count": 1, "series": [], "value": value,
                    "max": value, "min": value, "sum": value}
        if kind == "matrix":  # a range selector in an instant query: keep the last sample
            series = [{"metric": s["metric"], "value": _number(s["values"][-1][1])}
                      for s in raw if s["values"]]
        else:
            series = [{"metric": s["metric"], "value": _number(s["value"][1])} for s in raw]
        nums = [s["value"] for s in series if s["value"] is not None]
        return {"result_type": kind, "count": len(series), "series": series,
                "value": series[0]["value"] if series else None, "max": max(nums) if nums else None,
                "min": min(nums) if nums else None, "sum": sum(nums) if nums else None}

    @classmethod
    def summarize(cls, r: Any) -> str:
        return f"{r['count']} series, value={r['value']}, max={r['max']}"


RANK = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2, "FORCED_OPEN": 3}


@register
class CircuitBreakers(Action):
    """Resilience4j circuit breakers from a Spring actuator (`/actuator/circuitbreakers`), normalised.

    `state` is the named breaker's state, or the worst one (FORCED_OPEN > OPEN > HALF_OPEN > CLOSED).

    With ``wait_for``, polls until that state (at most ``wait_timeout`` s; not in a dry-run).

    ```yaml
    - id: breakers
      action: http.circuit_breakers
      with: {actuator_url: "http://orders:8080/actuator", name: payments, wait_for: CLOSED, wait_timeout: 600}
      expect:
        - that: "result.state == 'CLOSED'"
          message: "breaker {{ result.name }} is {{ result.state }}"
    ```
    """

    name = "http.circuit_breakers"
    permissions = (Local("http", "network access to the actuator URL (GET)"),)
    backend = "http"
    summary = "breaker states from /actuator/circuitbreakers: state, open / half_open lists, failure rates"
    schema = type_schema({"actuator_url": {"type": "string", "minLength": 1,
                                           "description": "actuator base URL, e.g. http://svc:8080/actuator"},
                          "name": {"type": "string", "description": "one breaker (default: all)"},
                          "wait_for": {"type": "string", "enum": ["CLOSED", "HALF_OPEN", "OPEN"],
                                       "description": "poll until `state` is this (see wait_timeout)"},
                          "wait_timeout": WAIT_SECONDS, "timeout": TIMEOUT}, required=["actuator_url"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        return _url_errors(args, "actuator_url")

    def run(self) -> dict[str, Any]:
        want = self.args.get("wait_for")
        wait = float(self.args.get("wait_timeout", 0)) if want else 0.0
        return _poll(self, self._once, lambda r: r["state"] == want, wait,
                     f"Waiting for breaker {self.args.get('name') or ''} {want}")

    def _once(self) -> dict[str, Any]:
        url = str(self.args["actuator_url"]).rstrip("/")
        if not url.endswith("/circuitbreakers"):
            url += "/circuitbreakers"
        self.ctx.check_cancelled()
        try:
            resp = http.get(url, _timeout(self))
        except http.Unreachable as e:
            raise BackendError("http", f"{e}. Is the service up and actuator_url right?") from None
        body = _parse_json(resp)
        if resp.status in (401, 403):  # the operator's credentials, not the breaker: misconfiguration
            raise BackendError("http", f"{http.redact_url(url)} answered HTTP {resp.status}: permission "
                                       "denied (the actuator needs credentials, or a role that may read "
                                       "circuitbreakers)")
        if resp.status != 200 or not isinstance(body, dict) or "circuitBreakers" not in body:
            raise ActionError(f"{http.redact_url(url)} answered HTTP {resp.status} without a "
                              "'circuitBreakers' document (is the Resilience4j actuator endpoint exposed?)")
        found = body["circuitBreakers"]
        if not isinstance(found, dict) or not all(isinstance(b, dict) for b in found.values()):
            # Resilience4j 1.x lists only the names: {"circuitBreakers": ["payments", ...]}
            raise ActionError(f"{http.redact_url(url)} lists circuit breakers without their state "
                              f"({type(found).__name__} {str(found)[:80]}); use the health endpoint or "
                              "a Prometheus query (prometheus_query) for the state")
        breakers = [{"name": n, "state": str(b.get("state", "UNKNOWN")), "failure_rate": b.get("failureRate"),
                     "not_permitted_calls": b.get("notPermittedCalls")}
                    for n, b in sorted(found.items())]
        want = self.args.get("name")
        if want:
            breakers = [b for b in breakers if b["name"] == want]
            if not breakers:
                raise ActionError(f"no circuit breaker named {want!r} at {http.redact_url(url)}")
        worst = max(breakers, key=lambda b: RANK.get(b["state"], 2), default=None)
        return {"name": worst["name"] if worst else None, "state": worst["state"] if worst else "CLOSED",
                "open": [b["name"] for b in breakers if b["state"] in ("OPEN", "FORCED_OPEN")],
                "half_open": [b["name"] for b in breakers if b["state"] == "HALF_OPEN"],
                "all_closed": all(b["state"] == "CLOSED" for b in breakers), "breakers": breakers}

    @classmethod
    def summarize(cls, r: Any) -> str:
        return f"{len(r['breakers'])} breaker(s), worst {r['name']}={r['state']}" if r["breakers"] \
            else "no circuit breakers"


def _tcp_targets(action: Action) -> list[str]:
    raw: Any = action.args.get("targets") or ""
    if not raw and action.args.get("kafka_brokers"):
        # the brokers the kafka actions would use: same section, same variable
        raw = action.ctx.backend_config("kafka").get("bootstrap_servers") \
            or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    items = raw if isinstance(raw, list) else str(raw).split(",")
    targets = [str(t).strip() for t in items if str(t).strip()]
    if not targets:
        raise ArgumentError("tcp.check: no targets (give targets, or kafka_brokers: true with the "
                            "environment's kafka.bootstrap_servers / KAFKA_BOOTSTRAP_SERVERS)")
    return targets


def _connect(target: str, timeout: float) -> dict[str, Any]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ActionError(f"tcp.check: {target!r} is not host:port")
    start = time.monotonic()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = f"timed out after {seconds(timeout)}" if isinstance(e, TimeoutError) \
            else (e.strerror or str(e))
        return {"target": target, "reachable": False, "latency_ms": None, "error": reason}
    return {"target": target, "reachable": True, "latency_ms": round((time.monotonic() - start) * 1000, 1),
            "error": None}


@register
class TcpCheck(Action):
    """TCP connect to host:port targets (what `telnet kafka 9092` would see); unreachable is a result.

    ```yaml
    - id: brokers
      action: tcp.check
      with: {kafka_brokers: true, timeout: 3}
      expect:
        - that: "result.unreachable_count == 0"
          message: "unreachable: {{ result.unreachable | join(', ') }}"
    ```
    """

    name = "tcp.check"
    permissions = (Local("http", "TCP connections to the targets"),)
    backend = "http"
    summary = "connect to each host:port (or the kafka brokers): reachable / latency / error per target"
    schema = type_schema({"targets": {"oneOf": [{"type": "string"},
                                                {"type": "array", "items": {"type": "string"}}],
                                      "description": "host:port, comma-separated or a list"},
                          "kafka_brokers": {"type": "boolean", "default": False,
                                            "description": "check the environment's Kafka bootstrap servers"},
                          "wait_until_reachable": WAIT_SECONDS, "timeout": TIMEOUT})

    def run(self) -> dict[str, Any]:
        targets = _tcp_targets(self)
        return _poll(self, lambda: self._once(targets), lambda r: r["unreachable_count"] == 0,
                     float(self.args.get("wait_until_reachable", 0)), f"Waiting for {', '.join(targets)}")

    def _once(self, targets: list[str]) -> dict[str, Any]:
        self.ctx.check_cancelled()
        checks = [_connect(t, _timeout(self)) for t in targets]
        down = [c["target"] for c in checks if not c["reachable"]]
        return {"count": len(checks), "reachable_count": len(checks) - len(down),
                "unreachable_count": len(down), "unreachable": down, "checks": checks}

    @classmethod
    def summarize(cls, r: Any) -> str:
        return f"{r['reachable_count']}/{r['count']} reachable" + \
            (f" (down: {', '.join(r['unreachable'])})" if r["unreachable"] else "")
