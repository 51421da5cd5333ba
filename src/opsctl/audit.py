"""The append-only run log (JSON lines, one file per run) and the post-mortem timeline.

Location: ``$OPSCTL_STATE_DIR`` or ``$XDG_STATE_HOME/opsctl`` (``~/.local/state/opsctl``).
Each line is one event: run_start, step_start, confirm, option, step_end, interrupted, run_end.
Secrets (params declared ``secret``, keys that look like credentials) are redacted before writing.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from opsctl.errors import UsageError
from opsctl.records import Outcome, StepRecord, now_iso

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|credential|api[_-]?key|private[_-]?key|dsn",
                         re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


def state_dir() -> Path:
    if os.environ.get("OPSCTL_STATE_DIR"):
        return Path(os.environ["OPSCTL_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opsctl"


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """Blank out credential-looking keys, passwords inside URLs and the values of secret params."""
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "")
                    else redact(v, secrets)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, "***")
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def new_run_id(runbook_id: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{runbook_id}-{secrets.token_hex(2)}"


class RunLog:
    def __init__(self, run_id: str, resumed_from: str | None = None) -> None:
        self.run_id = run_id
        self.resumed_from = resumed_from
        self.dir = state_dir() / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{run_id}.jsonl"
        self._lock = threading.Lock()
        self.secrets: tuple[str, ...] = ()  # values of secret params, scrubbed from every event

    def event(self, kind: str, **data: Any) -> None:
        data = redact(data, self.secrets)
        line = json.dumps({"ts": now_iso(), "event": kind, "run_id": self.run_id, **data}, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def start(self, runbook: Any, params: dict[str, Any], environment: str, settings: Any,
              argv: list[str]) -> None:
        self.secrets = tuple(str(params[k]) for k, p in runbook.params.items()
                             if p.secret and params.get(k) not in (None, ""))
        self.event("run_start", user=getpass.getuser(), host=socket.gethostname(),
                   runbook=runbook.id, title=runbook.title, severity=runbook.severity,
                   file=runbook.path, sha256=runbook.sha256, params=runbook.redacted(params),
                   environment=environment, dry_run=settings.dry_run, yes=settings.yes,
                   option=settings.option, phase=settings.phase, resumed_from=self.resumed_from,
                   argv=argv)

    def end(self, outcome: Outcome) -> None:
        self.event("run_end", status=outcome.status, exit_code=outcome.exit_code,
                   message=outcome.message, duration=outcome.duration, option=outcome.option)

    def crash(self, text: str) -> str:
        path = state_dir() / "crash.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"--- {now_iso()} run {self.run_id}\n{text}\n")
        return str(path)


# ---- reading runs back -------------------------------------------------------------------------

def read_run(run_id: str) -> list[dict[str, Any]]:
    runs = state_dir() / "runs"
    path = runs / f"{run_id}.jsonl"
    if not path.is_file():
        matches = sorted(runs.glob(f"*{run_id}*.jsonl")) if runs.is_dir() else []
        if len(matches) != 1:
            hint = "ambiguous" if matches else "not found"
            raise UsageError(f"run {run_id!r} {hint} in {runs} (`opsctl runs` lists them)")
        path = matches[0]
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: the rest of the log is still useful
    if not events or events[0].get("event") != "run_start":
        raise UsageError(f"{path}: not an opsctl run log")
    return events


def final_records(events: list[dict[str, Any]]) -> dict[str, StepRecord]:
    out: dict[str, StepRecord] = {}
    for e in events:
        if e["event"] == "step_end":
            rec = StepRecord.from_dict(e["record"])
            out[rec.id] = rec
    return out


def summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    start = events[0]
    end = next((e for e in reversed(events) if e["event"] == "run_end"), None)
    interrupted = any(e["event"] == "interrupted" for e in events)
    status = end["status"] if end else ("interrupted" if interrupted else "incomplete")
    return {"run_id": start["run_id"], "runbook": start["runbook"], "started": start["ts"],
            "user": start.get("user"), "dry_run": start.get("dry_run"), "status": status,
            "exit_code": end["exit_code"] if end else None,
            "environment": start.get("environment")}


def list_runs(limit: int = 20) -> list[dict[str, Any]]:
    runs = state_dir() / "runs"
    files = sorted(runs.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if runs.is_dir() else []
    out = []
    for f in files[:limit]:
        try:
            out.append(summary(read_run(f.stem)))
        except UsageError:
            continue
    return out
