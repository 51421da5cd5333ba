"""A Slack-compatible receiver, an `opsctl serve` subprocess and small HTTP helpers for the alert tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fixtures.core import REPO, free_port

FIXTURES = REPO / "tests" / "fixtures" / "alerts"
TOKEN = "serve-t0ken-for-tests"
PD_SECRET = "pd-signing-s3cret"


class SlackReceiver:
    """Captures incoming-webhook posts; answers 500 to the first `fail_first` of them (an outage)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.failures = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    if outer.failures < outer.fail_first:
                        outer.failures += 1
                        code = 500
                    else:
                        outer.posts.append(json.loads(body))
                        code = 200
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"outage")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/sekrit-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        with self.lock:
            return [json.dumps(p) for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Serve:
    """`python -m opsctl serve` on a free port, with its own state dir; stderr goes to a file."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cwd / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opsctl", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *args], cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._up, 60, f"opsctl serve on {self.url}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"opsctl serve did not start:\n{self.log_path.read_text()}") from None

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"opsctl serve exited {self.proc.returncode}:\n{self.log_path.read_text()}")
        try:
            return http("GET", f"{self.url}/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def post(self, path: str, doc: Any, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
        body = raw if raw is not None else json.dumps(doc).encode()
        code, data = http("POST", f"{self.url}{path}", body,
                          {"Content-Type": "application/json", **(headers or {})})
        try:
            return code, json.loads(data) if data else {}
        except ValueError:
            return code, {"raw": data.decode(errors="replace")}

    def health(self) -> dict[str, Any]:
        return json.loads(http("GET", f"{self.url}/healthz")[1])

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        text = http("GET", f"{self.url}/metrics")[1].decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(4))
        return total

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def serve_env(base: dict[str, str], slack: SlackReceiver | None, **extra: str) -> dict[str, str]:
    env = {**base, "OPSCTL_SERVE_TOKEN": TOKEN, "OPSCTL_PAGERDUTY_SECRET": PD_SECRET,
           "OPSCTL_RUNBOOK_PATH": os.pathsep.join([str(REPO / "runbooks")]), **extra}
    if slack is not None:
        env["OPSCTL_SLACK_WEBHOOK_URL"] = slack.url
    return env


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())
