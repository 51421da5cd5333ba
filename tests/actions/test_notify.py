"""notify.slack against a real local HTTP server playing the Slack webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

RUNBOOK = """\
id: rb-901
title: Notify
severity: P1
summary: post the incident message
params:
  status: {type: string, default: Mitigating}
diagnose:
  - id: probe
    action: core.echo
    with: {value: 1}
mitigate:
  - id: announce
    action: notify.slack
    with:
      channel: "#prod-alerts"
      text: "[INCIDENT P1] pool exhausted. Status: {{ params.status }}."
verify:
  - id: done
    action: core.echo
    with: {value: 1}
"""


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret-token", received
    server.shutdown()


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    path = tmp_path / "rb-901-notify.yaml"
    path.write_text(RUNBOOK)
    return path


def test_dry_run_shows_message_and_posts_nothing(opsctl, runbook, webhook):
    url, received = webhook
    r = opsctl("run", str(runbook), "--dry-run", env={"OPSCTL_SLACK_WEBHOOK_URL": url})
    assert r.code == 0, r.output
    assert "[INCIDENT P1] pool exhausted. Status: Mitigating." in r.stdout
    assert received == []
    assert "secret-token" not in r.output


def test_yes_posts_the_rendered_message(opsctl, runbook, webhook):
    url, received = webhook
    r = opsctl("run", str(runbook), "--yes", "-p", "status=Resolved",
               env={"OPSCTL_SLACK_WEBHOOK_URL": url})
    assert r.code == 0, r.output
    assert received == [{"channel": "#prod-alerts",
                         "text": "[INCIDENT P1] pool exhausted. Status: Resolved."}]
    assert "secret-token" not in r.output


def test_without_webhook_the_step_is_a_noop_with_the_text(opsctl, runbook):
    r = opsctl("run", str(runbook), "--yes")
    assert r.code == 0, r.output
    assert "post this by hand" in r.stdout


def test_unreachable_webhook_exits_4(opsctl, runbook):
    from tests.fixtures.core import free_port

    r = opsctl("run", str(runbook), "--yes",
               env={"OPSCTL_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook"})
    assert r.code == 4, r.output
    assert "cannot reach the Slack webhook" in r.output
    assert "Traceback" not in r.output
