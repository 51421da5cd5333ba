"""The whole chain with real components: a real Prometheus Alertmanager (Debian's package, unpacked
by scripts/alertmanager-install.sh) groups and re-sends real alerts about a real fault — the
connection pool of a private PostgreSQL exhausted by a leaking "checkout-api" in database `app` —
to `opsctl serve`.  One group holds the alerts of two databases (`app`, `other`: commonLabels has no
database); each is diagnosed once per alert episode with its own labels and the environment's
params (opsctl.yaml), the findings and the ready plan go to a local Slack-compatible receiver, no
mutating statement reaches the server (pg_stat_statements), verify runs when the alerts resolve,
and a group cut by `max_alerts` is reported as truncated."""

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
        timing = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "2s"}
        hook = {"url": webhook, "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}
        config.write_text(json.dumps({  # JSON is YAML
            "route": {"receiver": "opsctl", "group_by": ["alertname"], **timing, "routes": [
                {"matchers": ['alertname="DiskAlmostFull"'], "receiver": "opsctl-max-1", **timing}]},
            "receivers": [{"name": "opsctl", "webhook_configs": [hook]},
                          {"name": "opsctl-max-1", "webhook_configs": [{**hook, "max_alerts": 1}]}],
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
    """What a Prometheus server does for firing rules: re-send the alerts every second."""

    def __init__(self, am: Alertmanager, alerts: list[dict[str, Any]]) -> None:
        self.am, self.alerts, self.stop = am, alerts, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.am.post(self.alerts)
            self.stop.wait(1.0)

    def resolve(self) -> None:
        self.stop.set()
        self.thread.join(10)
        ended = iso(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        self.am.post([{**a, "endsAt": ended} for a in self.alerts])


CONFIG = """\
default_environment: shop
environments:
  shop:
    params:
      rb-006: {idle_in_transaction_seconds: 1}   # the alert rule does not say: the team's value
"""

MUTATING = re.compile(r"pg_terminate_backend|pg_cancel_backend|^\s*(insert|update|delete|alter|drop|"
                      r"create|truncate|grant|revoke|vacuum|reindex|cluster|lock)\b", re.I | re.M)


def statements(pg: PgServer) -> list[str]:
    """Every statement the server ran for anyone but the test's own roles (postgres, app)."""
    return [r[0] for r in pg.sql(
        "SELECT query FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
        "WHERE r.rolname NOT IN ('postgres', 'app')")]


def test_real_alertmanager_pool_exhaustion(alertmanager_binary: str, pg: PgServer, pg_env: dict[str, str],
                                           opsctl_env: dict[str, str], opsctl: Any, slack: SlackReceiver,
                                           tmp_path: Path) -> None:
    if not pg.stat_statements:
        pytest.skip("pg_stat_statements is not installed here")
    # 16 of 20 slots (1 reserved): room for the two diagnoses running at once
    pg.open_sessions(14, "checkout-api", in_transaction=True)
    pg.open_sessions(2, "worker")
    time.sleep(1.1)
    incident = sessions(pg)
    assert pg.count() == 16
    (tmp_path / "opsctl.yaml").write_text(CONFIG)
    serve = Serve(serve_env({**opsctl_env, **pg_env, "OPSCTL_CONFIG": str(tmp_path / "opsctl.yaml")},
                            slack), tmp_path, "--concurrency", "2")
    am = Alertmanager(alertmanager_binary, tmp_path / "am", f"{serve.url}/alertmanager")
    pg.sql("SELECT pg_stat_statements_reset()")
    starts = dt.datetime.now(dt.UTC).replace(microsecond=0)
    alerts = [{"labels": {"alertname": "DatabaseConnectionPoolCritical", "database": database,
                          "severity": "critical"},
               "annotations": {"summary": "pool over 95 %", "runbook_url": "https://runbooks.example/rb-006"},
               "startsAt": iso(starts), "generatorURL": "http://prometheus.example:9090/graph?g0.expr=pool"}
              for database in ("app", "other")]
    # two alerts of an unbound rule through the receiver with max_alerts: 1 (truncatedAlerts: 1)
    disks = [{"labels": {"alertname": "DiskAlmostFull", "device": d}, "startsAt": iso(starts)}
             for d in ("sda", "sdb")]
    prometheus = Prometheus(am, alerts + disks)
    try:
        t0 = time.monotonic()
        posts = wait_for(lambda: len(slack.texts()) >= 2 and slack.texts(), 120, "two diagnoses posted")
        seconds = time.monotonic() - t0
        by_db = {re.search(r"`database=(\w+)`", t).group(1): t for t in posts}  # type: ignore[union-attr]
        assert set(by_db) == {"app", "other"}  # each alert's own label, not the group's
        text = by_db["app"]
        assert "DatabaseConnectionPoolCritical firing: rb-006" in text
        # idle_in_transaction_seconds=1 from the environment's params (the default is 60)
        assert "14 sessions idle in transaction" in text and "critical" in text, text
        assert "(from shop: `idle_in_transaction_seconds=1`)" in text
        assert "kill-long-queries" in text and "terminate" in text
        assert "idle in transaction" not in by_db["other"] and "opsctl apply" not in by_db["other"]
        plan_file = re.search(r"opsctl apply (\S+?\.json)", text).group(1)  # type: ignore[union-attr]
        assert Path(plan_file).parent == tmp_path / "state" / "plans"
        for secret in (*PASSWORDS.values(), TOKEN, "sekrit-path"):
            assert secret not in json.dumps(posts)
        # Alertmanager re-sends the group (repeat_interval 2s): each episode runs once
        wait_for(lambda: serve.metric("opsctl_alerts_received_total", status="firing") >= 8, 60,
                 "Alertmanager's repeated notifications")
        assert serve.metric("opsctl_runs_started_total", runbook="rb-006", phase="diagnose") == 2
        assert serve.metric("opsctl_alerts_duplicate_total") >= 2
        assert len(slack.texts()) == 2
        wait_for(lambda: serve.metric("opsctl_alerts_truncated_total") >= 1, 60, "truncatedAlerts")
        assert "truncated by Alertmanager" in serve.output()
        # nothing was mutated: every session is still there, and no mutating statement was sent
        assert sessions(pg) == incident
        ran = statements(pg)
        assert any("pg_stat_activity" in q for q in ran)  # the diagnosis did look
        assert not [q for q in ran if MUTATING.search(q)], ran
        runs = sorted((tmp_path / "state" / "runs").glob("*.jsonl"))
        assert len(runs) == 2
        run = next(r for r in runs if '"database": "app"' in r.read_text())
        events = [json.loads(line) for line in run.read_text().splitlines()]
        steps = {e["record"]["id"]: e["record"]["status"] for e in events if e["event"] == "step_end"}
        assert steps["kill_sessions"] == "planned" and "applied" not in steps.values()
        alert_event = next(e for e in events if e["event"] == "alert")
        assert alert_event["ts"] == iso(starts) and alert_event["generatorURL"].startswith("http://prom")
        assert alert_event["runbook_url"] == "https://runbooks.example/rb-006"
        # the report's timeline starts at the alert
        report: Result = opsctl("report", run.stem, env=pg_env)
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
        # Alertmanager sends the resolved notifications: verify runs, once per alert
        pg.clear_faults()
        prometheus.resolve()
        wait_for(lambda: serve.metric("opsctl_runs_finished_total", phase="verify") == 2, 120,
                 "the verify runs of the resolved alerts")
        assert serve.metric("opsctl_runs_finished_total", runbook="rb-006", phase="verify", verdict="ok") == 2
        resolved = wait_for(lambda: len(slack.texts()) == 4 and slack.texts(), 60, "the verify posts")[2:]
        assert all("resolved" in t and "verify ok" in t for t in resolved), resolved
        verify_run = next(r for r in (tmp_path / "state" / "runs").glob("*.jsonl")
                          if r not in runs and '"event": "alert"' in r.read_text()
                          and '"database": "app"' in r.read_text())
        start = json.loads(verify_run.read_text().splitlines()[0])
        assert start["phase"] == "verify" and start["resumed_from"] == run.stem
        print(f"\nalert posted -> Slack diagnosis in {seconds:.1f}s")
    finally:
        prometheus.stop.set()
        am.stop()
        serve.stop()
        shutil.rmtree(tmp_path / "am", ignore_errors=True)
