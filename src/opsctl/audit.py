"""The append-only run log (JSON lines, one file per run) and the post-mortem timeline.

Location: ``$OPSCTL_STATE_DIR`` or ``$XDG_STATE_HOME/opsctl`` (``~/.local/state/opsctl``).
Each line is one event: run_start, step_start, confirm, option, apply_start (a mutation is being
sent: logged before apply() runs), apply_progress (what it reported so far), step_end, interrupted,
run_end.
Secrets (params declared ``secret``, keys that look like credentials) are redacted before writing.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from opsctl.errors import ConfigError, UsageError, mask, register_secret, tiny_secrets
from opsctl.records import DONE, Outcome, StepRecord, now_iso

# a credential-looking key: `password`, `PGPASSWORD`, `SecretAccessKey`, `api_key`, `dsn`, or `pass`
# as a word of its own (`pass`, `db-pass`, `dbPass`), not inside another (`bypassing`, `passed`)
_SECRET_KEY = re.compile(r"passw(or)?d|passphrase|secret|token|credential|api[_-]?key|private[_-]?key|dsn"
                         r"|(?<![a-z])pass(?![a-z])|(?-i:(?<=[a-z0-9])Pass(?![a-z]))", re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")


def state_dir() -> Path:
    if os.environ.get("OPSCTL_STATE_DIR"):
        return Path(os.environ["OPSCTL_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opsctl"


def state_subdirs(name: str) -> list[Path]:
    """Where the state directory's ``name``/ is: itself, then (a read-only state directory, run
    with --no-log) a per-user one in the temporary directory, so that apply locks and plan claims
    still hold on this host."""
    return [state_dir() / name, Path(tempfile.gettempdir()) / f"opsctl-{os.getuid()}-{name}"]


def writable_state_subdir(name: str) -> Path:
    """The first of :func:`state_subdirs` that can be written (created if needed); OSError when none."""
    error: OSError | None = None
    for d in state_subdirs(name):
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.access(d, os.W_OK):
                return d
        except OSError as e:
            error = e
    raise error or PermissionError(f"{name}: not writable")


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """Blank out credential-looking keys, passwords inside URLs and the values of secret params."""
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "")
                    else redact(v, secrets)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        if value in tiny_secrets():  # a value that is exactly a 1-3 character secret
            return "***"
        return _URL_PASSWORD.sub(r"\1***@", mask(value, secrets))
    return value


def new_run_id(runbook_id: str) -> str:
    """Time to the millisecond and 32 random bits; RunLog also creates its file exclusively, so two
    runs never share an id (two in the same second used to collide about once in 65,536)."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    return f"{stamp}-{runbook_id}-{secrets.token_hex(4)}"


class RunLog:
    def __init__(self, run_id: str, resumed_from: str | None = None) -> None:
        self.run_id = run_id
        self.resumed_from = resumed_from
        self.dir = state_dir() / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{run_id}.jsonl"
        runbook = run_id.split("-", 1)[1].rsplit("-", 1)[0] if run_id.count("-") >= 2 else "run"
        while True:  # claim the id: O_EXCL, a fresh suffix if another run took it
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                self.run_id = new_run_id(runbook)
                self.path = self.dir / f"{self.run_id}.jsonl"
        self._lock = threading.Lock()
        self.secrets: tuple[str, ...] = ()  # values of secret params, scrubbed from every event
        self.warning = ""

    def event(self, kind: str, **data: Any) -> None:
        data = redact(data, self.secrets)
        line = json.dumps({"ts": now_iso(), "event": kind, "run_id": self.run_id, **data}, default=str)
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
            _to_stdout(line)

    def start(self, runbook: Any, params: dict[str, Any], environment: str, settings: Any,
              argv: list[str], plan_digest: str | None = None) -> None:
        self.secrets = secret_values(runbook, params)
        extra = {"plan_digest": plan_digest} if plan_digest else {}
        self.event("run_start", user=getpass.getuser(), host=socket.gethostname(),
                   runbook=runbook.id, title=runbook.title, severity=runbook.severity,
                   file=runbook.path, sha256=runbook.sha256, params=runbook.redacted(params),
                   environment=environment, dry_run=settings.dry_run, yes=settings.yes,
                   option=settings.option, phase=settings.phase, resumed_from=self.resumed_from,
                   argv=[mask(a, self.secrets) for a in argv], **extra)

    def end(self, outcome: Outcome) -> None:
        self.event("run_end", status=outcome.status, exit_code=outcome.exit_code,
                   message=outcome.message, duration=outcome.duration, option=outcome.option)

    def crash(self, text: str) -> str:
        return write_crash(f"--- {now_iso()} run {self.run_id}\n{text}\n")


class NullLog(RunLog):
    """--no-log: the same interface, nothing written (a read-only state directory)."""

    def __init__(self, run_id: str, resumed_from: str | None = None, warning: str = "") -> None:
        self.run_id, self.resumed_from, self.warning = run_id, resumed_from, warning
        self.secrets = ()
        self.path = Path(os.devnull)

    def event(self, kind: str, **data: Any) -> None:
        if log_to_stdout():  # no file, but a pod's log collector still gets the events
            data = redact(data, self.secrets)
            _to_stdout(json.dumps({"ts": now_iso(), "event": kind, "run_id": self.run_id, **data},
                                  default=str))


def secret_values(runbook: Any, params: dict[str, Any]) -> tuple[str, ...]:
    values = tuple(str(params[k]) for k, p in runbook.params.items()
                   if p.secret and params.get(k) not in (None, ""))
    register_secret(*values)
    return values


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def log_to_stdout() -> bool:
    """``OPSCTL_RUN_LOG=stdout`` (set in exported Jobs and workflows): every run-log event is also
    written to stdout as one JSON line, and the renderer writes to stderr."""
    return os.environ.get("OPSCTL_RUN_LOG", "").strip().lower() == "stdout"


def _to_stdout(line: str) -> None:
    if not log_to_stdout():
        return
    import sys

    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):  # a closed stdout: the file still has the event
        pass


def open_log(runbook_id: str, no_log: bool = False, resumed_from: str | None = None) -> RunLog:
    """The run's log; a state directory that cannot be written is exit 4 with the reason, unless
    --no-log accepts running without one.  ``OPSCTL_RUN_ID`` (an exported Job's label) names the
    run when no run of that id exists yet."""
    given = os.environ.get("OPSCTL_RUN_ID", "").strip()
    run_id = given if _RUN_ID.fullmatch(given) else new_run_id(runbook_id)
    try:
        return RunLog(run_id, resumed_from=resumed_from)
    except OSError as e:
        where = state_dir() / "runs"
        if not no_log:
            raise ConfigError(f"cannot write the run log in {where}: {e.strerror or e}; fix "
                              "OPSCTL_STATE_DIR (or its permissions), or pass --no-log to run "
                              "without a run log") from None
        return NullLog(run_id, resumed_from, warning=f"warning: no run log (--no-log; {where}: "
                                                     f"{e.strerror or e})")


def write_crash(text: str) -> str:
    """Append a (masked) traceback to crash.log; where it went, or why it could not be saved."""
    path = state_dir() / "crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(redact(text))
        return str(path)
    except OSError as e:
        return f"not saved: {path}: {e.strerror or e}"


def recent_applies(runbook_id: str, environment: str, window: float, exclude: str = "") -> list[str]:
    """Run ids of runs of this runbook in this environment that applied a change in the last
    ``window`` seconds (oldest first), the run ``exclude`` left out.  A run that sent a change whose
    step has not ended (applying right now, or killed while applying) counts: it is applying one."""
    runs = state_dir() / "runs"
    if not runs.is_dir():
        return []
    since = time.time() - window
    out = []
    for f in sorted(runs.glob(f"*-{runbook_id}-*.jsonl"), key=lambda p: p.stat().st_mtime):
        try:
            if f.stat().st_mtime < since:
                continue
            events = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line]
        except (OSError, ValueError):
            continue
        start = events[0] if events else {}
        if start.get("environment") != environment or start.get("dry_run") or start.get("run_id") == exclude:
            continue
        ended = {e["record"].get("id"): e["record"].get("status") for e in events
                 if e.get("event") == "step_end"}
        sending = {e.get("step") for e in events if e.get("event") == "apply_start"}
        if "applied" in ended.values() or any(step not in ended for step in sending):
            out.append(str(start.get("run_id")))
    return out


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


def unfinished_plans(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The data of each step's confirmed plan whose apply began and did not finish (interrupted,
    timed out, failed, or the process killed): what ``--resume`` hands that step again
    (``ActionContext.resumed_plan``), so that it finishes the change that was confirmed rather
    than planning a new one (a redrive's max_messages counts once, not once per attempt)."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["event"] == "apply_start" and isinstance(e.get("plan_data"), dict):
            out[e["step"]] = e["plan_data"]
        elif e["event"] == "step_end" and e["record"].get("status") in DONE:
            out.pop(e["record"].get("id"), None)
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
