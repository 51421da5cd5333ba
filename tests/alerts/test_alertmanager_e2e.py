"""The whole chain with real components: a real Prometheus Alertmanager (Debian's package, unpacked
by scripts/alertmanager-install.sh) groups and re-sends a real alert about a real fault — the
connection pool of a private PostgreSQL exhausted by a leaking "checkout-api" — to `opsctl serve`,
which diagnoses it once per alert episode, posts the findings and the ready plan to a local
Slack-compatible receiver, mutates nothing, and runs verify when the alert resolves."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.postgres import PASSWORDS, PgServer
from tests.alerts.helpers import TOKEN, Serve, SlackReceiver, http, serve_env, wait_for
from tests.fixtures.core import REPO, Result, free_port
from tests.runbooks.test_rb006 import sessions

pytestmark = pytest.mark.postgres


def _alertmanager_binary() -> str | None:
    try:
        out = subprocess.run(["bash", str(REPO / "scripts" / "alertmanager-install.sh")],
                             capture_output=True, text=True, timeout=300, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    return path if path and Path(path).is_file() else None


class Alertmanager:
    def __init__(self, binary: str, workdir: Path, webhook: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "alertmanager.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "route": {"receiver": "opsctl", "group_by": ["alertname"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "2s"},
            "receivers": [{"name": "opsctl", "webhook_configs": [{
                "url": webhook, "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}]}],
        }))
        self.log_path = workdir / "alertmanager.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             "--log.level=info"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 60, "Alertmanager ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited:\n{self.log_path.read_text()}")
        try:
            return http("GET", f"{self.url}/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def post(self, alerts: list[dict[str, Any]]) -> None:
        code, body = http("POST", f"{self.url}/api/v2/alerts", json.dumps(alerts).encode(),
                          {"Content-Type": "application/json"})
        assert code == 200, body

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def alertmanager_binary() -> str:
    binary = _alertmanager_binary()
    if binary is None:
        pytest.skip("prometheus-alertmanager could not be unpacked (scripts/alertmanager-install.sh)")
    return binary


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver()
    yield receiver
    receiver.close()


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Prometheus:
    """What a Prometheus server does for a firing rule: re-send the alert every second."""

    def __init__(self, am: Alertmanager, alert: dict[str, Any]) -> None:
        self.am, self.alert, self.stop = am, alert, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.am.post([self.alert])
            self.stop.wait(1.0)

    def resolve(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.am.post([{**self.alert, "endsAt": iso(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))}])


def test_real_alertmanager_pool_exhaustion(alertmanager_binary: str, pg: PgServer, pg_env: dict[str, str],
                                           opsctl_env: dict[str, str], opsctl: Any, slack: SlackReceiver,
                                           tmp_path: Path) -> None:
    pg.open_sessions(16, "checkout-api", in_transaction=True)
    pg.open_sessions(2, "worker")
    time.sleep(1.1)
    incident = sessions(pg)
    assert pg.count() == 18
    serve = Serve(serve_env({**opsctl_env, **pg_env}, slack), tmp_path, "--concurrency", "2")
    am = Alertmanager(alertmanager_binary, tmp_path / "am", f"{serve.url}/alertmanager")
    starts = dt.datetime.now(dt.UTC).replace(microsecond=0)
    alert = {"labels": {"alertname": "DatabaseConnectionPoolCritical", "database": "app",
                        "severity": "critical"},
             "annotations": {"summary": "pool over 95 %", "runbook_url": "https://runbooks.example/rb-006",
                             "opsctl_params": "idle_in_transaction_seconds=1"},
             "startsAt": iso(starts), "generatorURL": "http://prometheus.example:9090/graph?g0.expr=pool"}
    prometheus = Prometheus(am, alert)
    try:
        t0 = time.monotonic()
        post = json.loads(wait_for(lambda: slack.texts(), 120, "the diagnosis posted to Slack")[0])
        seconds = time.monotonic() - t0
        text = json.dumps(post)
        assert "DatabaseConnectionPoolCritical firing: rb-006" in text
        assert "16 sessions idle in transaction" in text and "critical" in text
        assert "`database=app`" in text
        assert "kill-long-queries" in text and "terminate" in text
        plan_file = re.search(r"opsctl apply (\S+?\.json)", text).group(1)  # type: ignore[union-attr]
        assert Path(plan_file).parent == tmp_path / "state" / "plans"
        for secret in (*PASSWORDS.values(), TOKEN, "sekrit-path"):
            assert secret not in text
        # Alertmanager re-sends the group (repeat_interval 2s): the episode runs once
        wait_for(lambda: serve.metric("opsctl_alerts_received_total", status="firing") >= 3, 60,
                 "Alertmanager's repeated notifications")
        assert serve.metric("opsctl_runs_started_total", runbook="rb-006", phase="diagnose") == 1
        assert serve.metric("opsctl_alerts_duplicate_total") >= 2
        assert len(slack.texts()) == 1
        # nothing was mutated: every session of the incident is still there, from pg_stat_activity
        assert sessions(pg) == incident
        runs = sorted((tmp_path / "state" / "runs").glob("*.jsonl"))
        assert len(runs) == 1
        events = [json.loads(line) for line in runs[0].read_text().splitlines()]
        steps = {e["record"]["id"]: e["record"]["status"] for e in events if e["event"] == "step_end"}
        assert steps["kill_sessions"] == "planned" and "applied" not in steps.values()
        alert_event = next(e for e in events if e["event"] == "alert")
        assert alert_event["ts"] == iso(starts) and alert_event["generatorURL"].startswith("http://prom")
        assert alert_event["runbook_url"] == "https://runbooks.example/rb-006"
        # the report's timeline starts at the alert
        report: Result = opsctl("report", runs[0].stem, env=pg_env)
        assert report.code == 0, report.output
        rows = [line for line in report.stdout.splitlines() if line.startswith("| ") and ":" in line[:12]]
        assert "alert **DatabaseConnectionPoolCritical** firing" in rows[0], rows[:3]
        # the engineer reviews and applies the ready plan; the incident ends
        shown = opsctl("show-plan", plan_file, env=pg_env)
        assert shown.code == 0 and "kill-long-queries" in shown.stdout, shown.output
        applied = opsctl("apply", plan_file, "--yes", env=pg_env)
        assert applied.code == 0, applied.output
        assert pg.count("application_name = 'checkout-api'") == 0
        assert pg.count("application_name = 'worker'") == 2  # not offending: untouched
        # Alertmanager sends the resolved notification: verify runs, once
        pg.clear_faults()
        prometheus.resolve()
        wait_for(lambda: serve.metric("opsctl_runs_finished_total", phase="verify") == 1, 120,
                 "the verify run of the resolved alert")
        assert serve.metric("opsctl_runs_finished_total", runbook="rb-006", phase="verify", verdict="ok") == 1
        resolved = json.loads(wait_for(lambda: len(slack.texts()) == 2 and slack.texts(), 60,
                                       "the verify post")[1])
        assert "resolved" in resolved["text"] and "verify ok" in resolved["text"]
        verify_run = next(r for r in (tmp_path / "state" / "runs").glob("*.jsonl")
                          if r != runs[0] and '"event": "alert"' in r.read_text())
        start = json.loads(verify_run.read_text().splitlines()[0])
        assert start["phase"] == "verify" and start["resumed_from"] == runs[0].stem
        print(f"\nalert posted -> Slack diagnosis in {seconds:.1f}s")
    finally:
        prometheus.stop.set()
        am.stop()
        serve.stop()
        shutil.rmtree(tmp_path / "am", ignore_errors=True)
