"""`opsctl serve` as a real subprocess on a free port: authentication (bearer token, PagerDuty
HMAC signatures), bad payloads, a burst of 500 alerts through a bounded worker pool, a full queue,
a Slack outage and a backend that is down.  The runbook of the burst plans a file write in its
mitigation: the file must never appear (the receiver never mutates)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.helpers import PD_SECRET, TOKEN, Serve, SlackReceiver, load, serve_env, wait_for
from tests.fixtures.core import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}

BURST_RUNBOOK = """\
id: rb-901
title: Burst test
severity: P3
summary: A quick read-only diagnosis whose recommended option would write a file.
triggers:
  - {alert: BurstTest, params: {item: "{{ labels.item }}"}}
params:
  item: {type: string, required: true}
  pause: {type: number, default: 0.02}
  flag: {type: string, default: "FLAG"}
options:
  - name: write-flag
    title: Write the flag file
    recommended_when: "steps.look.result.slept >= 0"
diagnose:
  - id: look
    action: core.sleep
    with: {seconds: "{{ params.pause }}"}
    expect:
      - {that: "result.slept < 0", severity: warning, message: "item {{ params.item }} looked at"}
mitigate:
  - id: write
    option: write-flag
    action: core.write_file
    with: {path: "{{ params.flag }}", content: "{{ params.item }}"}
verify:
  - {id: check, action: core.echo, with: {value: ok}}
"""


@pytest.fixture
def burst_runbooks(tmp_path: Path) -> Path:
    d = tmp_path / "rb"
    d.mkdir()
    flag = tmp_path / "flag-written-by-a-mutation"
    (d / "rb-901-burst.yaml").write_text(BURST_RUNBOOK.replace("FLAG", str(flag)))
    return d


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver()
    yield receiver
    receiver.close()


def start(opsctl_env: dict[str, str], tmp_path: Path, slack: SlackReceiver | None, *args: str,
          **extra: str) -> Serve:
    return Serve(serve_env(opsctl_env, slack, **extra), tmp_path, *args)


@pytest.fixture
def serve(opsctl_env: dict[str, str], tmp_path: Path, slack: SlackReceiver,
          burst_runbooks: Path) -> Iterator[Serve]:
    # PostgreSQL "down": nothing listens on PGPORT
    server = start(opsctl_env, tmp_path, slack, "--max-body", "65536", "--concurrency", "3",
                   PGHOST="127.0.0.1", PGPORT=str(free_port()), PGUSER="ops", PGPASSWORD="pg-pw-never-shown",
                   OPSCTL_RUNBOOK_PATH=str(burst_runbooks))
    yield server
    server.stop()


def burst_alert(item: int, starts: str = "2026-11-29T03:00:00Z") -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": "BurstTest", "item": str(item)},
            "annotations": {}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph", "fingerprint": f"{item:016x}"}


def payload(alerts: list[dict[str, Any]], truncated: int = 0) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "opsctl", "groupKey": "{}:{}",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
            "alerts": alerts, "truncatedAlerts": truncated}


def sign(body: bytes, secret: str = PD_SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_bearer_token_is_required(serve: Serve) -> None:
    doc = payload([burst_alert(1)])
    assert serve.post("/alertmanager", doc)[0] == 401
    assert serve.post("/alertmanager", doc, {"Authorization": "Bearer wrong"})[0] == 401
    assert serve.post("/alertmanager", doc, {"Authorization": f"Basic {TOKEN}"})[0] == 401
    code, body = serve.post("/alertmanager", doc, AUTH)
    assert code == 202 and body["accepted"] == 1
    assert serve.metric("opsctl_webhook_requests_total", endpoint="alertmanager", code="401") == 3


def test_pagerduty_signatures(serve: Serve, slack: SlackReceiver) -> None:
    body = json.dumps(load("pagerduty-incident-triggered.json")).encode()
    assert serve.post("/pagerduty", None, raw=body)[0] == 401  # missing
    code, doc = serve.post("/pagerduty", None, {"X-PagerDuty-Signature": sign(body, "other")}, raw=body)
    assert code == 401 and "Signature" in doc["error"]
    tampered = body.replace(b"database=app", b"database=billing")
    assert serve.post("/pagerduty", None, {"X-PagerDuty-Signature": sign(body)}, raw=tampered)[0] == 401
    # several signatures while the secret is rotated: one matching is enough
    both = f"{sign(body, 'old-secret')},{sign(body)}"
    code, doc = serve.post("/pagerduty", None, {"X-PagerDuty-Signature": both}, raw=body)
    assert code == 202 and doc["accepted"] == 1, doc
    # the same incident again: no second run
    code, doc = serve.post("/pagerduty", None, {"X-PagerDuty-Signature": sign(body)}, raw=body)
    assert code == 202 and doc["duplicates"] == 1
    # PostgreSQL is down: the diagnosis ends as a backend error, the receiver lives on and says so
    wait_for(lambda: serve.metric("opsctl_runs_finished_total", runbook="rb-006",
                                  verdict="backend_error") == 1, 120, "rb-006 run with PostgreSQL down")
    assert serve.metric("opsctl_runs_started_total", runbook="rb-006") == 1
    post = wait_for(lambda: slack.texts(), 60, "the Slack post")[0]
    assert "DatabaseConnectionPoolCritical" in post and "backend_error" in post
    assert "pg-pw-never-shown" not in post and PD_SECRET not in post
    assert serve.health()["status"] == "ok"


def test_bad_payloads_get_400_with_a_reason(serve: Serve) -> None:
    code, doc = serve.post("/alertmanager", None, AUTH, raw=b"{not json")
    assert code == 400 and "not JSON" in doc["error"]
    full = json.dumps(load("alertmanager-kafka-lag.json")).encode()
    code, doc = serve.post("/alertmanager", None, AUTH, raw=full[: len(full) // 2])  # cut short
    assert code == 400 and "not JSON" in doc["error"]
    code, doc = serve.post("/alertmanager", {"version": "3", "alerts": []}, AUTH)
    assert code == 400 and "version" in doc["error"]
    code, doc = serve.post("/alertmanager", payload([{"status": "firing", "labels": {}}]), AUTH)
    assert code == 400 and "alertname" in doc["error"]
    code, doc = serve.post("/alertmanager", [1, 2], AUTH)
    assert code == 400 and "object" in doc["error"]
    code, doc = serve.post("/alertmanager", None, AUTH, raw=b"[" * 60_000)  # within --max-body
    assert code == 400 and "nested too deeply" in doc["error"]
    big = payload([burst_alert(i) for i in range(400)])  # > --max-body 65536
    code, doc = serve.post("/alertmanager", big, AUTH)
    assert code == 413 and "65536" in doc["error"]
    code, doc = serve.post("/pagerduty", None, {"X-PagerDuty-Signature": sign(full)}, raw=full)
    assert code == 400 and "alertmanager payload posted to /pagerduty" in doc["error"]
    # truncatedAlerts: accepted, and the loss is said
    code, doc = serve.post("/alertmanager", payload([burst_alert(7)], truncated=5), AUTH)
    assert code == 202 and "truncated" in doc["warnings"][0]
    assert serve.metric("opsctl_alerts_truncated_total") == 5
    assert serve.health()["status"] == "ok"


def test_burst_of_500_alerts(serve: Serve, slack: SlackReceiver, tmp_path: Path) -> None:
    alerts = [burst_alert(i) for i in range(500)]
    for i in range(0, 500, 100):
        code, doc = serve.post("/alertmanager", payload(alerts[i:i + 100]), AUTH)
        assert code == 202 and doc["accepted"] == 100, doc
    # Alertmanager's repeat_interval: the same episodes again, and one new episode of alert 0
    for i in (0, 300):
        code, doc = serve.post("/alertmanager", payload(alerts[i:i + 100]), AUTH)
        assert code == 202 and doc == {**doc, "accepted": 0, "duplicates": 100}
    code, doc = serve.post("/alertmanager", payload([burst_alert(0, "2026-11-29T04:00:00Z")]), AUTH)
    assert doc["accepted"] == 1
    wait_for(lambda: serve.health()["processed"] == 501, 240, "501 runs")
    health = serve.health()
    assert health["max_running"] <= 3 and health["running"] == 0 and health["queued"] == 0
    assert serve.metric("opsctl_runs_started_total", runbook="rb-901", phase="diagnose") == 501
    assert serve.metric("opsctl_runs_finished_total", runbook="rb-901", verdict="ok") == 501
    assert serve.metric("opsctl_alerts_duplicate_total") == 200
    assert serve.metric("opsctl_alerts_received_total") == 701
    texts = wait_for(lambda: len(slack.texts()) == 501 and slack.texts(), 120, "501 Slack posts")
    items = {re.search(r"`item=(\d+)`", json.loads(t)["blocks"][1]["text"]["text"]).group(1)  # type: ignore[union-attr]
             for t in texts}
    assert items == {str(i) for i in range(500)}  # none lost
    # every run planned the recommended write, none applied it
    assert "write-flag" in texts[0] and "opsctl apply " in texts[0]
    assert len(list((tmp_path / "state" / "plans").glob("*.json"))) == 501  # one plan file per run
    assert not (tmp_path / "flag-written-by-a-mutation").exists()
    runs = list((tmp_path / "state" / "runs").glob("*.jsonl"))
    assert len(runs) == 501
    statuses = {json.loads(line)["record"]["status"] for r in runs[:50]
                for line in r.read_text().splitlines() if '"step_end"' in line}
    assert "applied" not in statuses and "planned" in statuses


def test_full_queue_sheds_with_503_and_the_retry_runs(opsctl_env: dict[str, str], tmp_path: Path,
                                                      burst_runbooks: Path) -> None:
    server = start(opsctl_env, tmp_path, None, "--concurrency", "1", "--queue-size", "3",
                   OPSCTL_RUNBOOK_PATH=str(burst_runbooks))
    try:
        alerts = [burst_alert(i) for i in range(10)]
        for a in alerts:
            a["annotations"]["opsctl_params"] = "pause=0.3"
        code, doc = server.post("/alertmanager", payload(alerts), AUTH)
        assert code == 503 and doc["shed"] > 0 and doc["accepted"] + doc["shed"] == 10, doc
        accepted = doc["accepted"]
        done: set[int] = set()

        def resend() -> bool:  # what Alertmanager does after a 5xx
            code, doc = server.post("/alertmanager", payload(alerts), AUTH)
            done.add(code)
            return code == 202

        wait_for(resend, 120, "the queue to drain", interval=0.5)
        wait_for(lambda: server.health()["processed"] == 10, 120, "10 runs")
        assert server.metric("opsctl_runs_started_total") == 10  # none lost, none twice
        assert server.metric("opsctl_alerts_shed_total") >= 10 - accepted
        assert server.health()["max_running"] == 1
    finally:
        server.stop()


def test_slack_outage_is_retried_and_never_blocks_the_diagnosis(opsctl_env: dict[str, str],
                                                                tmp_path: Path, burst_runbooks: Path) -> None:
    slack = SlackReceiver(fail_first=3)
    server = start(opsctl_env, tmp_path, slack, OPSCTL_RUNBOOK_PATH=str(burst_runbooks))
    try:
        assert server.post("/alertmanager", payload([burst_alert(1)]), AUTH)[0] == 202
        # the run is over while Slack still fails (backoff 0.5 s, 1 s, 2 s)
        wait_for(lambda: server.metric("opsctl_runs_finished_total") == 1 and not slack.posts, 60,
                 "the run to finish before Slack recovers", interval=0.05)
        wait_for(lambda: slack.posts, 60, "the post after the outage")
        assert slack.failures == 3
        assert server.metric("opsctl_slack_posts_total", result="retried") == 3
        assert server.metric("opsctl_slack_posts_total", result="ok") == 1
        assert "sekrit-path" not in server.output()  # the webhook URL is a secret
    finally:
        server.stop()
        slack.close()


def test_unmapped_alert_starts_nothing(serve: Serve) -> None:
    doc = load("bad/alertmanager-unbound-alert.json")
    code, body = serve.post("/alertmanager", doc, AUTH)
    assert code == 202 and body["accepted"] == 0 and "DiskAlmostFull" in body["unmapped"][0]
    code, body = serve.post("/alertmanager", load("bad/alertmanager-invalid-params.json"), AUTH)
    assert body["accepted"] == 0 and "group" in body["unmapped"][0]
    assert serve.metric("opsctl_alerts_unmapped_total", reason="unmapped") == 1
    assert serve.metric("opsctl_alerts_unmapped_total", reason="invalid") == 1
    assert serve.metric("opsctl_runs_started_total") == 0


def test_serve_refuses_to_start_without_a_token(opsctl: Any) -> None:
    result = opsctl("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.code == 2 and "OPSCTL_SERVE_TOKEN" in result.output
    assert "Traceback" not in result.output
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = opsctl("serve", "--port", str(port), env={"OPSCTL_SERVE_TOKEN": TOKEN})
    assert result.code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_help_does_not_import_the_web_stack() -> None:
    import subprocess
    import sys

    code = ("import sys; from opsctl.cli import main; "
            "bad = [m for m in ('starlette', 'uvicorn', 'prometheus_client') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"




def test_without_a_token_only_loopback_is_served(opsctl_env: dict[str, str], tmp_path: Path,
                                                 burst_runbooks: Path) -> None:
    env = serve_env(opsctl_env, None, OPSCTL_RUNBOOK_PATH=str(burst_runbooks))
    del env["OPSCTL_SERVE_TOKEN"]
    # and an environment whose params name a parameter rb-901 does not have: said at start-up
    (tmp_path / "opsctl.yaml").write_text("default_environment: e\nenvironments:\n  e:\n"
                                          "    params: {rb-901: {pause: 0.01, nope: 1}}\n")
    server = Serve(env, tmp_path)
    try:
        code, doc = server.post("/alertmanager", payload([burst_alert(3)]))
        assert code == 202 and doc["accepted"] == 0
        assert "environments.e.params.rb-901" in doc["unmapped"][0] and "'nope'" in doc["unmapped"][0]
        out = server.output()
        assert "accepts unauthenticated posts" in out
        assert "rb-901 has no parameter 'nope'" in out.split("opsctl serve: listening on")[0]
    finally:
        server.stop()


def test_a_restarted_receiver_does_not_run_an_episode_again(opsctl_env: dict[str, str], tmp_path: Path,
                                                            burst_runbooks: Path) -> None:
    env = {"OPSCTL_RUNBOOK_PATH": str(burst_runbooks)}
    first = start(opsctl_env, tmp_path, None, **env)
    try:
        assert first.post("/alertmanager", payload([burst_alert(1)]), AUTH)[1]["accepted"] == 1
        wait_for(lambda: first.health()["processed"] == 1, 60, "the first run")
    finally:
        first.stop()
    # same state dir: the run log is there; the token from the config file this time
    (tmp_path / "opsctl.yaml").write_text("default_environment: ops\nenvironments:\n  ops:\n"
                                          "    serve: {token: from-the-config-file}\n")
    second = start(opsctl_env, tmp_path, None, OPSCTL_SERVE_TOKEN="", **env)
    try:
        assert second.post("/alertmanager", payload([burst_alert(2)]), AUTH)[0] == 401
        code, doc = second.post("/alertmanager", payload([burst_alert(1), burst_alert(2)]),
                                {"Authorization": "Bearer from-the-config-file"})
        assert code == 202 and doc["duplicates"] == 1 and doc["accepted"] == 1
        wait_for(lambda: second.health()["processed"] == 1, 60, "the new episode's run")
        assert len(list((tmp_path / "state" / "runs").glob("*.jsonl"))) == 2
    finally:
        second.stop()
