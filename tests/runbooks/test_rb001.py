"""rb-001 (incident triage and communication) rehearsed through the real CLI: the sweep against a
private PostgreSQL and Redis, local HTTP health endpoints, moto (SQS, CloudWatch) and a Kafka
broker; the messages posted to a local Slack-compatible receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.postgres import PgServer
from opsctl.testing.redis import RedisServer
from tests.alerts.helpers import SlackReceiver
from tests.fixtures.aws import Moto, fill, make_queue_with_dlq
from tests.fixtures.core import Result, SilentServer, free_port
from tests.fixtures.kafka import Broker, unique
from tests.fixtures.postgres import check_matrix
from tests.timing import budget

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
NOT_HERE = {"KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "",
            "AWS_PROFILE": "", "AWS_ACCESS_KEY_ID": "", "AWS_ENDPOINT_URL": "", "KAFKA_BOOTSTRAP_SERVERS": ""}


class Health:
    """Health endpoints: /up (200 UP), /down (503 DOWN), /slow (UP after 0.6 s)."""

    def __init__(self) -> None:
        self.paths: list[str] = []  # every path asked for
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                paths.append(self.path)
                if self.path == "/slow":
                    time.sleep(0.6)
                code, status = (503, "DOWN") if self.path == "/down" else (200, "UP")
                body = json.dumps({"status": status}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def health() -> Iterator[Health]:
    h = Health()
    yield h
    h.server.shutdown()
    h.server.server_close()


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def env(tmp_path: Path, pg: PgServer, rds: RedisServer, health: Health,
        slack: SlackReceiver) -> dict[str, str]:
    """Environment `prod` of a team: its services, on-call handle, escalation contacts, Slack;
    PostgreSQL and Redis from the standard variables; no AWS, Kafka or Kubernetes."""
    config = {"environments": {"prod": {
        "settings": {"services": {"checkout": f"{health.url}/up"}, "oncall": "@payments-oncall",
                     "escalation": {"platform_lead": "lead@example.org"}},
        "notify": {"slack_webhook_url": slack.url, "channel": "#incidents"}}}}
    (tmp_path / "opsctl.yaml").write_text(json.dumps(config))
    return {**pg.env("ops"), "PGCONNECT_TIMEOUT": "10", "REDIS_URL": rds.url, **NOT_HERE}


def triage(opsctl: Callable[..., Result], env: dict[str, str], *args: str) -> tuple[Result, dict[str, Any]]:
    result = opsctl("run", "rb-001", "--env", "prod", "-o", "json", *args, env=env)
    assert result.stdout.lstrip().startswith("{"), result.output
    return result, json.loads(result.stdout)


def step(doc: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in doc["steps"] if s["id"] == step_id)


def sweep(doc: dict[str, Any], step_id: str = "sweep") -> dict[str, Any]:
    return dict(step(doc, step_id)["result"])


@pytest.fixture
def exhausted(pg: PgServer) -> list[Any]:
    """12 of 20 connections held by the application: critical with -p pool_critical_pct=60."""
    return pg.open_sessions(12, "checkout-api", in_transaction=True)


P0_POOL = ("-p", "pool_critical_pct=60", "-p", "pool_warning_pct=50")


def test_dry_run_proposes_p0_recommends_rb006_and_changes_nothing(
        opsctl: Callable[..., Result], env: dict[str, str], pg: PgServer, slack: SlackReceiver,
        exhausted: list[Any]) -> None:
    before = pg.count("application_name = 'checkout-api'")
    result, doc = triage(opsctl, env, *P0_POOL, "--dry-run")
    assert result.code == 0, result.output
    s = sweep(doc)
    assert s["severity"] == "P0" and s["p0"][0].startswith("pool at 6"), s
    assert s["skipped"].keys() == {"kafka", "aws", "kubernetes"}, s["skipped"]  # not configured here
    probes = {p["kind"]: p for p in s["probes"]}
    assert probes["http"]["status"] == "ok" and probes["redis"]["status"] == "ok", probes
    assert s["recommendations"][0]["runbook"] == "rb-006"
    first = s["recommended"][0]
    assert first.startswith("pool at 6") and ": run rb-006 (opsctl run rb-006" in first, first
    assert s["response"]["announce_within"] == "3m" and s["war_room"].startswith("#incident-p0-")
    contacts = {e["role"]: e["contact"] for e in s["escalation"]}
    assert contacts == {"platform_lead": "lead@example.org", "engineering_manager": "", "security": ""}
    plan = step(doc, "announce")["plan"]["changes"][0]
    assert plan["target"] == "slack #incidents" and plan["after"].startswith(
        "[INCIDENT P0] PostgreSQL pool at 6"), plan
    assert "Team: @payments-oncall." in plan["after"]
    assert slack.posts == [] and pg.count("application_name = 'checkout-api'") == before


def test_no_tty_refuses_yes_announces_then_updates_and_report_shows_the_messages(
        opsctl: Callable[..., Result], env: dict[str, str], slack: SlackReceiver,
        exhausted: list[Any]) -> None:
    result, doc = triage(opsctl, env, *P0_POOL)
    assert result.code == 3 and slack.posts == [], result.output  # no terminal, no --yes
    result, doc = triage(opsctl, env, *P0_POOL, "--yes", "-p", "impact=checkout fails for all users")
    assert result.code == 0, result.output
    assert len(slack.posts) == 1 and slack.posts[0]["channel"] == "#incidents"
    text = slack.posts[0]["text"]
    assert text.startswith("[INCIDENT P0] PostgreSQL pool at 6") and "Status: Investigating. Impact: " \
        "checkout fails for all users. Team: @payments-oncall." in text and "Next update within 15m." in text
    current = [f for f in doc["findings"] if f["step"] == "current"]
    assert current and current[0]["message"].startswith("still P0"), doc["findings"]
    report = opsctl("report", doc["run_id"], env=env)
    assert f"message posted: “{text}”" in report.stdout, report.stdout
    result, doc = triage(opsctl, env, "--yes", "--option", "update", "-p", "title=Checkout down",
                         "-p", "done=terminated the leaked sessions", "-p", "next_steps=watch the pool")
    assert result.code == 0, result.output
    assert slack.posts[1]["text"].endswith("Checkout down. Status: Mitigating. Last update: terminated "
                                           "the leaked sessions. Next steps: watch the pool.")
    result = opsctl("run", "rb-001", "--env", "prod", "--yes", "--option", "update", env=env)
    assert result.code == 2 and "title" in result.stderr and len(slack.posts) == 2, result.output


def test_at_a_terminal_the_message_is_the_plan_and_enter_means_no(
        opsctl_tty: Callable[..., Result], env: dict[str, str], slack: SlackReceiver,
        exhausted: list[Any]) -> None:
    args = ("run", "rb-001", "--env", "prod", *P0_POOL, "--option", "announce")
    result = opsctl_tty(*args, answer="\n", env=env)
    assert result.code == 3 and slack.posts == [], result.output  # the default answer is No
    assert "[INCIDENT P0] PostgreSQL pool at 6" in " ".join(result.stdout.split()), result.stdout
    result = opsctl_tty(*args, answer="y\n", env=env)
    assert result.code == 0 and len(slack.posts) == 1, result.output


def test_resolve_waits_for_the_pool_to_drain_then_posts_the_resolution(
        opsctl: Callable[..., Result], env: dict[str, str], tmp_path: Path, slack: SlackReceiver,
        exhausted: list[Any]) -> None:
    def release() -> None:  # 1.5 s after the recheck started looking (the run log says when)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                '"step": "recheck"' in f.read_text() for f in (tmp_path / "state").rglob("*.jsonl")):
            time.sleep(0.1)
        time.sleep(1.5)
        for conn in exhausted:
            conn.close()

    threading.Thread(target=release, daemon=True).start()
    result, doc = triage(opsctl, env, *P0_POOL, "--yes", "--option", "resolve", "-p", "title=Checkout down",
                         "-p", "severity=P0", "-p", "duration=45m", "-p", "root_cause=a connection leak",
                         "-p", "verify_window=60s")
    assert result.code == 0, result.output
    assert step(doc, "recheck")["attempts"] > 1  # it waited for the drain
    assert [p["text"] for p in slack.posts] == [
        "[INCIDENT P0] Checkout down. Status: RESOLVED. Duration: 45m00s. Initial root cause: a "
        "connection leak. Next steps: start the post-mortem."]
    assert step(doc, "resolved")["status"] == "ok"


def test_resolve_while_still_p0_posts_nothing_and_fails_after_the_window(
        opsctl: Callable[..., Result], env: dict[str, str], slack: SlackReceiver,
        exhausted: list[Any]) -> None:
    t0 = time.monotonic()
    result, doc = triage(opsctl, env, *P0_POOL, "--yes", "--option", "resolve", "-p", "title=Checkout down",
                         "-p", "severity=P0", "-p", "verify_window=3s")
    assert result.code == 1 and slack.posts == [], result.output
    assert "not resolved: P0 signals remain: pool at 6" in doc["message"], doc["message"]
    assert step(doc, "resolution")["status"] != "applied"
    assert time.monotonic() - t0 < budget(40)


def test_dead_hung_and_slow_backends_are_signals_within_one_deadline(
        opsctl: Callable[..., Result], env: dict[str, str], health: Health,
        silent_server: SilentServer) -> None:
    services = (f"checkout={health.url}/up,search={health.url}/slow,payments={health.url}/down,"
                f"ledger=http://127.0.0.1:{silent_server.port}/health")
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    hung_pg = {"PGHOST": "127.0.0.1", "PGPORT": str(silent_server.port)}
    t0 = time.monotonic()
    result, doc = triage(opsctl, {**env, "REDIS_URL": dead_redis, **hung_pg}, "--dry-run",
                         "-p", f"services={services}", "-p", "probe_timeout=3", "-p", "slow_ms=400")
    elapsed = time.monotonic() - t0
    assert result.code == 0, result.output  # the triage itself succeeded: the outage is its finding
    s = sweep(doc)
    assert s["severity"] == "P0"
    text = " | ".join(s["p0"] + s["p1"])
    assert "service payments reports itself unhealthy (HTTP 503, status DOWN)" in text
    assert "service ledger does not answer" in text  # TCP accepted, no HTTP: not reachable
    assert "PostgreSQL cannot be reached" in text and "Redis cannot be reached" in text
    assert any(m.startswith("service search is slow") for m in s["p1"]), s["p1"]
    assert not any("checkout" in m for m in s["p0"] + s["p1"])
    assert {r["runbook"] for r in s["recommendations"]} == {"rb-005", "rb-010"}
    assert elapsed < budget(30), elapsed  # one probe deadline (3 s), not one per backend


def test_denied_backend_is_a_blind_spot_and_ordinary_role_still_measures_the_pool(
        opsctl: Callable[..., Result], env: dict[str, str], pg: PgServer, rds: RedisServer,
        exhausted: list[Any]) -> None:
    wrong = rds.url.replace(rds.password, "not-the-password")
    result, doc = triage(opsctl, {**env, **pg.env("nostats"), "REDIS_URL": wrong}, *P0_POOL, "--dry-run")
    assert result.code == 0, result.output
    s = sweep(doc)
    assert s["severity"] == "P0" and s["p0"][0].startswith("pool at 6"), s  # hidden sessions counted
    assert len(s["blind_spots"]) == 1 and s["blind_spots"][0].startswith("redis"), s["blind_spots"]
    assert "not-the-password" not in result.output
    assert any(f["message"].startswith("not checked (fix access") for f in doc["findings"])


def test_scope_probes_only_what_is_listed(opsctl: Callable[..., Result], env: dict[str, str],
                                         health: Health) -> None:
    result, doc = triage(opsctl, {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, "--dry-run",
                         "-p", f"services=search={health.url}/up", "-p", "skip=redis,postgres")
    assert result.code == 0, result.output
    s = sweep(doc)
    assert [(p["kind"], p["target"]) for p in s["probes"]] == [("http", "search")]  # not the env's checkout
    assert s["severity"] == "none" and {"redis", "postgres"} <= s["skipped"].keys()
    assert s["recommendations"] == [] and s["signals"] == []


def test_a_misspelt_skip_is_refused_before_any_probe(opsctl: Callable[..., Result], env: dict[str, str],
                                                     health: Health) -> None:
    """`-p skip=postgress` used to be ignored: the backend the operator meant to leave alone was
    probed. Now the sweep stops before its first probe, naming the backend it took it for."""
    result, doc = triage(opsctl, env, "--dry-run", "-p", f"services=search={health.url}/skip-typo",
                         "-p", "skip=redis,postgress")
    assert result.code == 1, result.output
    text = " ".join(result.output.split())
    assert "skip: unknown backend 'postgress' (did you mean 'postgres'?); one of http, postgres" in text
    assert "/skip-typo" not in health.paths  # nothing was probed


def test_slack_refusing_the_post_is_exit_4_naming_the_host_only(
        opsctl: Callable[..., Result], env: dict[str, str], tmp_path: Path, exhausted: list[Any]) -> None:
    refusing = SlackReceiver(fail_first=5)
    try:
        config = json.loads((tmp_path / "opsctl.yaml").read_text())
        config["environments"]["prod"]["notify"]["slack_webhook_url"] = refusing.url
        (tmp_path / "opsctl.yaml").write_text(json.dumps(config))
        result, doc = triage(opsctl, env, *P0_POOL, "--yes")
    finally:
        refusing.close()
    assert result.code == 4 and "answered HTTP 500" in doc["message"], result.output
    assert "sekrit-path" not in result.output


def test_interrupted_sweep_exits_130_and_resume_announces_once(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], env: dict[str, str], tmp_path: Path,
        slack: SlackReceiver, silent_server: SilentServer) -> None:
    import signal
    import subprocess
    import sys

    hung = {**env, "PGHOST": "127.0.0.1", "PGPORT": str(silent_server.port)}
    args = ["run", "rb-001", "--env", "prod", "-o", "json", "-p", "probe_timeout=60", "--yes"]
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", *args], cwd=tmp_path,
                            env={**opsctl_env, **hung}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + budget(30)
        while not silent_server.accepted and time.monotonic() < deadline:  # the sweep is waiting
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=budget(30))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    first = json.loads(stdout)
    assert slack.posts == []
    result, doc = triage(opsctl, env, "--yes", "--resume", first["run_id"], "-p", "probe_timeout=3",
                         "--option", "announce", "-p", "severity=P1", "-p", "title=Checkout slow")
    assert result.code == 0, result.output  # PostgreSQL answers again: swept anew, announced once
    assert [p["text"][:36] for p in slack.posts] == ["[INCIDENT P1] Checkout slow. Status:"]


@pytest.mark.aws
@pytest.mark.kafka
def test_sweep_reads_queues_dlqs_alarms_and_consumer_lag(
        opsctl: Callable[..., Result], moto: Moto, noida_broker: Broker, tmp_path: Path) -> None:
    queue, dlq = make_queue_with_dlq(moto, "orders")
    fill(moto, queue, 12)
    fill(moto, dlq, 3)
    cw = moto.client("cloudwatch")
    cw.put_metric_alarm(AlarmName="shop-api-5xx", MetricName="5XXError", Namespace="AWS/ApiGateway",
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName="shop-api-5xx", StateValue="ALARM", StateReason="5xx above 1")
    cw.put_metric_alarm(AlarmName="other-team-alarm", MetricName="X", Namespace="N",
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName="other-team-alarm", StateValue="ALARM", StateReason="not ours")
    topic, group = unique("orders"), unique("billing")
    noida_broker.create_topic(topic, 2)
    noida_broker.produce(topic, 10)
    assert noida_broker.consume_with_group(topic, group, 2) == 2
    noida_broker.produce(topic, 20)  # 28 behind
    env = {**moto.env, **noida_broker.env, "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": "",
           "DATABASE_URL": "", "REDIS_URL": ""}
    result = opsctl("run", "rb-001", "--dry-run", "-o", "json", "-p", "queues=orders",
                    "-p", "queue_backlog=10",
                    "-p", f"kafka_groups={group}", "-p", "kafka_lag=20", "-p", "alarm_prefix=shop-",
                    env=env, cwd=tmp_path)
    assert result.code == 0, result.output
    s = sweep(json.loads(result.stdout))
    assert s["skipped"].keys() == {"http", "postgres", "redis", "kubernetes"}, s["skipped"]
    assert s["severity"] == "P1"
    assert sorted(s["p1"]) == sorted([
        "queue orders: 12 messages waiting (backlog at 10)",
        f"consumer group {group}: lag 28 (threshold 20); no consumer in the group",
        "alarm shop-api-5xx in ALARM: 5xx above 1"]), s["p1"]
    assert s["p2"] == ["3 messages in the DLQ orders-dlq of orders"]
    assert {r["runbook"] for r in s["recommendations"]} == {"rb-012", "rb-008", "rb-007"}


FAULT_MATRIX: dict[str, tuple[str | None, str]] = {
    "dead": ("test_dead_hung_and_slow_backends_are_signals_within_one_deadline",
             "Redis on a closed port: a P1 signal 'Redis cannot be reached' recommending rb-010; "
             "exit 0 (the triage worked)"),
    "hung": ("test_dead_hung_and_slow_backends_are_signals_within_one_deadline",
             "PostgreSQL and a health endpoint that accept TCP and never answer: P0 signals after one "
             "probe deadline, the other probes not held up"),
    "slow": ("test_dead_hung_and_slow_backends_are_signals_within_one_deadline",
             "a health endpoint answering in 0.6 s with slow_ms 400: a P1 'slow' signal, not a P0"),
    "permission_optional": ("test_denied_backend_is_a_blind_spot_and_ordinary_role_still_measures_the_pool",
                            "Redis refusing the password: a blind spot (warning), the triage goes on"),
    "permission_required": ("test_slack_refusing_the_post_is_exit_4_naming_the_host_only",
                            "the Slack webhook refusing the announcement: exit 4 naming the host, "
                            "never the webhook path"),
    "ordinary_role": ("test_denied_backend_is_a_blind_spot_and_ordinary_role_still_measures_the_pool",
                      "opsctl as a role without pg_monitor: other roles' sessions still count, P0"),
    "scope": ("test_scope_probes_only_what_is_listed",
              "-p services / -p skip: only the listed endpoint probed, skipped backends untouched"),
    "converges_slowly": ("test_resolve_waits_for_the_pool_to_drain_then_posts_the_resolution",
                         "the pool drains 2 s into the resolve: recheck waits, then posts once"),
    "does_not_work": ("test_resolve_while_still_p0_posts_nothing_and_fails_after_the_window",
                      "still P0 at the end of the window: exit 1, no resolution posted"),
    "interrupt_resume": ("test_interrupted_sweep_exits_130_and_resume_announces_once",
                         "Ctrl-C while a hung PostgreSQL holds the sweep: exit 130, nothing posted; "
                         "--resume sweeps again and announces once"),
}


def test_fault_matrix_every_cell_is_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())
