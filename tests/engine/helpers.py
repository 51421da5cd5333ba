"""Shared helpers of the engine tests: fixture paths, run logs, a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.timing import budget

DATA = Path(__file__).parent / "data"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUN = DATA / "run"


def rb(name: str) -> str:
    """Path of an executable fixture runbook, by its id (rb-401) or file name."""
    matches = sorted(RUN.glob(f"{name}*.yaml"))
    assert len(matches) == 1, f"no single fixture for {name}: {matches}"
    return str(matches[0])


def run_logs(env: dict[str, str]) -> list[Path]:
    runs = Path(env["OPSCTL_STATE_DIR"]) / "runs"
    return sorted(runs.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def step_started(env: dict[str, str], step_id: str) -> bool:
    """A run log says that step has started (read while the run writes it: a partial line is skipped)."""
    for log in run_logs(env):
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "step_start" and event.get("step") == step_id:
                return True
    return False


def steps_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


def _controlling_terminal() -> None:
    """In the child: a new session whose controlling terminal is the pty (stdin), so that ^C
    written to the master is delivered as SIGINT, as on a real terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class PtyResult:
    code: int
    output: str  # what the terminal showed
    answered: bool
    stdout: str = ""  # with stdout_pipe: what went to stdout (not the terminal)


def run_pty(args: list[str], env: dict[str, str], cwd: Path, answers: list[tuple[str, str]],
            timeout: float = 30, stdout_pipe: bool = False) -> PtyResult:
    """Run `python -m opsctl ARGS` with stdin/stdout/stderr on a pty slave; when the output so far
    contains a prompt marker, write its answer to the master (in order)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", *args], stdin=slave,
                            stdout=subprocess.PIPE if stdout_pipe else slave, stderr=slave,
                            env=env, cwd=cwd, preexec_fn=_controlling_terminal)
    os.close(slave)
    buf, pending, answered, seen = b"", list(answers), 0, 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                buf += chunk
            at = buf.find(pending[0][0].encode(), seen) if pending else -1
            if at >= 0:
                seen = at + 1  # the next answer waits for a new prompt
                os.write(master, pending.pop(0)[1].encode())
                answered += 1
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=max(budget(5.0), deadline - time.monotonic()))
        out = proc.stdout.read().decode() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        if proc.stdout:
            proc.stdout.close()
    screen = _ANSI.sub("", buf.decode("utf-8", "replace").replace("\r", ""))
    return PtyResult(code, screen, answered == len(answers), out)
