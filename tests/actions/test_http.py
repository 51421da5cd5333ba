"""http.get and prometheus.query against real local servers (the breaker app, a real Prometheus)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from opsctl.actions.base import ActionContext
from opsctl.actions.http import CircuitBreakers, Get, PrometheusQuery, TcpCheck
from opsctl.backends.http import redact_url
from opsctl.config import Environment
from opsctl.errors import ActionError, BackendError
from tests.fixtures.breaker_app import BreakerApp, Prometheus
from tests.fixtures.core import SilentServer, free_port
from tests.timing import budget


def ctx(**backends: dict[str, object]) -> ActionContext:
    return ActionContext(environment=Environment(name="t", backends=dict(backends)))


@pytest.fixture
def silent_url(silent_server: SilentServer) -> str:
    """An HTTP URL whose server accepts and never answers: the timeout path."""
    return f"http://127.0.0.1:{silent_server.port}/actuator/health"


@pytest.fixture
def non_http_server() -> Iterator[str]:
    """Answers every connection with a Redis-style line, as a wrong port would: not HTTP at all."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = srv.accept()[0]
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"-ERR unknown command 'GET'\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://user:s3cret@127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    srv.close()

def test_get_parses_actuator_json(breaker_app: BreakerApp) -> None:
    r = Get({"url": breaker_app.url + "/actuator/circuitbreakers"}, ctx()).run()
    assert r["status"] == 200 and r["ok"] and r["reachable"]
    assert r["json"]["circuitBreakers"]["payments"]["state"] == "CLOSED"
    assert r["latency_ms"] >= 0 and "circuitBreakers" in r["body_excerpt"]
    assert "HTTP 200" in Get.summarize(r)


def test_get_reports_an_error_status_as_a_result(breaker_app: BreakerApp) -> None:
    breaker_app.downstream_ok = lambda: False
    breaker_app.open_breaker()
    r = Get({"url": breaker_app.url + "/actuator/health"}, ctx()).run()
    assert r["status"] == 503 and not r["ok"]
    assert r["json"]["status"] == "DOWN"
    assert r["json"]["components"]["circuitBreakers"]["status"] == "CIRCUIT_OPEN"
    assert "status DOWN" in Get.summarize(r)
    text = Get({"url": breaker_app.url + "/nothing", "max_excerpt": 3}, ctx()).run()
    assert text["status"] == 404 and text["json"] is None and text["body_excerpt"] == "not"


def test_unreachable_is_a_backend_error_unless_allowed() -> None:
    url = f"http://user:s3cret@127.0.0.1:{free_port()}/actuator/health"
    with pytest.raises(BackendError, match="refused") as e:
        Get({"url": url}, ctx()).run()
    assert "s3cret" not in str(e.value) and "user" not in str(e.value)
    r = Get({"url": url, "unreachable_ok": True}, ctx()).run()
    assert r["reachable"] is False and r["status"] is None and "s3cret" not in r["url"]
    assert "unreachable" in Get.summarize(r)


def test_timeout_from_argument_and_environment(silent_url: str) -> None:
    start = time.monotonic()
    with pytest.raises(BackendError, match="timed out after 0.5 s"):
        Get({"url": silent_url, "timeout": 0.5}, ctx()).run()
    assert time.monotonic() - start < budget(3)
    start = time.monotonic()
    with pytest.raises(BackendError, match="timed out after 0.3 s"):
        Get({"url": silent_url}, ctx(http={"timeout": 0.3})).run()
    assert time.monotonic() - start < budget(3)
    # the step deadline wins over a longer timeout
    start = time.monotonic()
    deadline_ctx = ActionContext(deadline=time.monotonic() + 0.4)
    with pytest.raises(BackendError, match="timed out"):
        Get({"url": silent_url, "timeout": 30}, deadline_ctx).run()
    assert time.monotonic() - start < budget(3)


def test_validate_args_and_redaction() -> None:
    assert Get.validate_args({"url": "ftp://x/y"}) == [("url", "expected an http:// or https:// URL, got 'ftp://x/y'")]
    assert Get.validate_args({"url": "{{ params.actuator_url }}/health"}) == []
    assert PrometheusQuery.validate_args({"query": "up", "url": "prom:9090"})
    assert redact_url("https://a:b@h:1/p?q") == "https://***@h:1/p?q"
    assert redact_url("http://h/p") == "http://h/p"


def test_prometheus_instant_query_follows_the_breaker(breaker_app: BreakerApp,
                                                      prometheus: Prometheus) -> None:
    prometheus.scrape(breaker_app.url)
    q = {"query": 'max(circuit_breaker_state{service="orders"})'}
    r = PrometheusQuery(q, ctx(prometheus={"url": prometheus.url})).run()
    assert r["result_type"] == "vector" and r["value"] == 0.0 and r["count"] == 1
    breaker_app.downstream_ok = lambda: False
    breaker_app.open_breaker()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = PrometheusQuery({**q, "url": prometheus.url}, ctx()).run()
        if r["value"] == 1.0:
            break
        time.sleep(0.3)
    assert r["value"] == 1.0 and r["max"] == 1.0
    series = PrometheusQuery({"query": "circuit_breaker_state", "url": prometheus.url}, ctx()).run()
    assert series["series"][0]["metric"]["name"] == "payments"
    scalar = PrometheusQuery({"query": "scalar(vector(2))", "url": prometheus.url}, ctx()).run()
    assert scalar["result_type"] == "scalar" and scalar["value"] == 2.0


def test_prometheus_errors(prometheus: Prometheus, breaker_app: BreakerApp,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ActionError, match="bad_data"):
        PrometheusQuery({"query": "sum(", "url": prometheus.url}, ctx()).run()
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    with pytest.raises(BackendError, match="no Prometheus URL"):
        PrometheusQuery({"query": "up"}, ctx()).run()
    monkeypatch.setenv("PROMETHEUS_URL", prometheus.url)
    assert PrometheusQuery({"query": "vector(1)"}, ctx()).run()["value"] == 1.0
    with pytest.raises(BackendError, match="refused"):
        PrometheusQuery({"query": "up", "url": f"http://127.0.0.1:{free_port()}"}, ctx()).run()
    with pytest.raises(BackendError, match="without a Prometheus API response"):
        PrometheusQuery({"query": "up", "url": breaker_app.url}, ctx()).run()


def test_circuit_breakers_follow_open_half_open_closed(breaker_app: BreakerApp) -> None:
    def read(**extra: str) -> dict[str, object]:
        return CircuitBreakers({"actuator_url": breaker_app.url + "/actuator", **extra}, ctx()).run()

    assert read() == {"name": "payments", "state": "CLOSED", "open": [], "half_open": [], "all_closed": True,
                      "breakers": [{"name": "payments", "state": "CLOSED", "failure_rate": "0.0%",
                                    "not_permitted_calls": 0}], "waited_s": 0.0}
    healthy = {"ok": False}
    breaker_app.downstream_ok = lambda: healthy["ok"]
    breaker_app.open_breaker()
    r = read(name="payments")
    assert r["state"] == "OPEN" and r["open"] == ["payments"] and not r["all_closed"]
    healthy["ok"] = True  # the downstream recovers: OPEN -> HALF_OPEN -> CLOSED
    deadline = time.monotonic() + 5
    while read()["state"] != "CLOSED" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert breaker_app.transitions[-3:] == ["OPEN", "HALF_OPEN", "CLOSED"]
    with pytest.raises(ActionError, match="no circuit breaker named 'inventory'"):
        read(name="inventory")
    with pytest.raises(ActionError, match="circuitBreakers"):
        CircuitBreakers({"actuator_url": breaker_app.url + "/nothing"}, ctx()).run()


def test_waiting_for_closed_rides_out_transient_errors(breaker_app: BreakerApp) -> None:
    # a service coming back answers 500s for a while: the wait goes on until the window ends
    healthy = {"ok": False}
    breaker_app.downstream_ok = lambda: healthy["ok"]
    breaker_app.open_breaker()
    n = breaker_app.breaker_reads
    breaker_app.failing_reads = {n + 2, n + 3}  # the first poll reads OPEN, the next two fail
    threading.Timer(2.5, lambda: healthy.update(ok=True)).start()
    r = CircuitBreakers({"actuator_url": breaker_app.url + "/actuator", "name": "payments",
                         "wait_for": "CLOSED", "wait_timeout": 60}, ctx()).run()
    assert r["state"] == "CLOSED" and r["waited_s"] > 0
    assert breaker_app.breaker_reads >= n + 4  # it read through the two 500s
    # errors to the end of the window: the last one is what the step reports
    breaker_app.open_breaker()
    healthy["ok"] = False
    m = breaker_app.breaker_reads
    breaker_app.failing_reads = set(range(m + 2, m + 100))
    with pytest.raises(ActionError, match="HTTP 500"):
        CircuitBreakers({"actuator_url": breaker_app.url + "/actuator", "name": "payments",
                         "wait_for": "CLOSED", "wait_timeout": 3}, ctx()).run()


def test_tcp_check_targets_and_kafka_brokers(breaker_app: BreakerApp,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    up, down = breaker_app.url.split("//")[1], f"127.0.0.1:{free_port()}"
    r = TcpCheck({"targets": f"{up}, {down}"}, ctx()).run()
    assert r["reachable_count"] == 1 and r["unreachable"] == [down]
    assert r["checks"][1]["error"] == "Connection refused" and r["checks"][0]["latency_ms"] is not None
    env_ctx = ctx(kafka={"bootstrap_servers": up})
    assert TcpCheck({"kafka_brokers": True}, env_ctx).run()["unreachable_count"] == 0
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", down)
    assert TcpCheck({"kafka_brokers": True}, ctx()).run()["unreachable"] == [down]
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    with pytest.raises(ActionError, match="no targets"):
        TcpCheck({"kafka_brokers": True}, ctx()).run()
    with pytest.raises(ActionError, match="not host:port"):
        TcpCheck({"targets": ["nohost"]}, ctx()).run()
    # waiting: a dry-run never waits; a real run polls until the deadline
    dry = ActionContext(dry_run=True)
    assert TcpCheck({"targets": [down], "wait_until_reachable": 30}, dry).run()["waited_s"] == 0.0
    start = time.monotonic()
    waited = TcpCheck({"targets": [down], "wait_until_reachable": 1}, ctx()).run()
    assert waited["unreachable_count"] == 1 and 0.9 <= waited["waited_s"] < budget(4)
    assert time.monotonic() - start < budget(5)


@pytest.fixture
def odd_actuator() -> Iterator[str]:
    """A real HTTP server whose /<kind>/actuator/circuitbreakers answers unusual documents."""
    import http.server
    import json

    docs = {"names": {"circuitBreakers": ["payments", "inventory"]},  # Resilience4j 1.x
            "flat": {"circuitBreakers": {"payments": "OPEN"}}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's API
            body = json.dumps(docs[self.path.split("/")[1]]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("kind", ["names", "flat"])
def test_circuit_breakers_without_states_is_a_clear_action_error(odd_actuator: str, kind: str) -> None:
    with pytest.raises(ActionError, match="lists circuit breakers without their state"):
        CircuitBreakers({"actuator_url": f"{odd_actuator}/{kind}/actuator"}, ctx()).run()


def test_a_server_that_does_not_speak_http_is_unreachable_not_a_crash(non_http_server: str) -> None:
    """A wrong port (Redis, Kafka...) answers something that is not HTTP: http.client raised
    BadStatusLine, which is no OSError, and every HTTP action ended in 'internal error'."""
    with pytest.raises(BackendError, match="did not answer HTTP") as e:
        Get({"url": non_http_server + "/actuator/health"}, ctx()).run()
    assert "s3cret" not in str(e.value)
    r = Get({"url": non_http_server + "/actuator/health", "unreachable_ok": True}, ctx()).run()
    assert r["reachable"] is False and "did not answer HTTP" in r["error"]
    with pytest.raises(BackendError, match="did not answer HTTP"):
        CircuitBreakers({"actuator_url": non_http_server + "/actuator"}, ctx()).run()
    with pytest.raises(BackendError, match="did not answer HTTP"):
        PrometheusQuery({"query": "up", "url": non_http_server}, ctx()).run()


def test_circuit_breakers_forbidden_is_a_permission_error(breaker_app: BreakerApp) -> None:
    """HTTP 403 from the actuator is the operator's credentials (exit 4), not the breaker's state."""
    breaker_app.forbidden = True
    with pytest.raises(BackendError, match="answered HTTP 403: permission denied"):
        CircuitBreakers({"actuator_url": breaker_app.url + "/actuator"}, ctx()).run()
