"""Rehearsal files: a runbook rehearsed against real local servers with injected faults.

``rb-042.rehearsal.yaml`` next to ``rb-042.yaml`` (see docs/rehearsals.md)::

    servers: [postgres]
    rehearsals:
      - name: leaked sessions are ended and the pool recovers
        faults:
          - postgres.leak_connections: {count: 12, application_name: checkout-api}
          - wait: {seconds: 1.5}
        params: {idle_in_transaction_seconds: 1}
        option: kill-long-queries          # applied with --yes; dry_run: true plans only
        expect:
          exit_code: 0
          steps: {verify_pool: ok}
          findings: [{step: sessions, severity: critical}]
          state:
            - postgres.sessions: {application_name: checkout-api, equals: 0}

Each rehearsal: inject the faults, run ``opsctl run RUNBOOK -o json`` in a subprocess whose
environment points at the kit's servers only (the caller's PG*, REDIS_URL, KAFKA_*, AWS_* and
KUBECONFIG are removed, so a rehearsal cannot reach a real system), check what must hold, clear
the faults.  A must-hold that is false is a failure located at its line in the rehearsal file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.errors import Location, RunbookError
from opsctl.testing.faults import FAULTS, PROBES, arguments
from opsctl.testing.servers import LocalServers, clear, isolated_env, server_env
from opsctl.testing.unavailable import Unavailable

KINDS = ("postgres", "redis", "kafka", "aws")
SUFFIXES = (".rehearsal.yaml", ".rehearsal.yml")
_FINDING = {"type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {"step": {"type": "string"}, "contains": {"type": "string"},
                           "severity": {"enum": ["ok", "warning", "critical"]}}}
_ONE_KEY = {"type": "object", "minProperties": 1, "maxProperties": 1}
SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["rehearsals"], "additionalProperties": False,
    "properties": {
        "runbook": {"type": "string"},
        "servers": {"type": "array", "items": {"enum": list(KINDS)}, "uniqueItems": True},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "rehearsals": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "expect"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "faults": {"type": "array", "items": _ONE_KEY},
                "params": {"type": "object",
                           "additionalProperties": {"type": ["string", "number", "boolean"]}},
                "option": {"type": "string"},
                "phase": {"enum": ["diagnose", "mitigate", "verify", "rollback"]},
                "dry_run": {"type": "boolean"},
                "expect": {"type": "object", "additionalProperties": False, "minProperties": 1,
                           "properties": {
                    "exit_code": {"type": "integer"},
                    "steps": {"type": "object", "additionalProperties": {"type": "string"}},
                    "findings": {"type": "array", "items": _FINDING},
                    "absent_findings": {"type": "array", "items": _FINDING},
                    "state": {"type": "array", "items": _ONE_KEY},
                }},
            }}},
    },
}


class RehearsalInvalid(Exception):
    def __init__(self, errors: list[RunbookError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class Spec:
    path: Path
    data: dict[str, Any]
    source: Any
    runbook: Path

    @property
    def rehearsals(self) -> list[dict[str, Any]]:
        return list(self.data["rehearsals"])

    @property
    def servers(self) -> list[str]:
        return list(self.data.get("servers") or [])

    def at(self, *path: str | int) -> str:
        loc = self.source.locate(path)
        return f"{self.path}:{loc.line}:{loc.column}"


@dataclass
class RehearsalResult:
    file: str
    name: str
    ok: bool
    skipped: str | None = None
    failures: list[str] = field(default_factory=list)
    duration: float = 0.0
    run_id: str | None = None


def find(paths: list[str]) -> list[Path]:
    """Rehearsal files among PATHs (directories searched recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*.rehearsal.y*ml") if f.name.endswith(SUFFIXES))
        else:
            out.append(p)
    return out


def _runbook_for(path: Path, ref: str | None) -> Path | None:
    if ref:
        candidate = (path.parent / ref)
        if candidate.is_file():
            return candidate
        from opsctl.catalog import resolve
        from opsctl.errors import UsageError

        try:
            return resolve(ref)
        except UsageError:
            return None
    stem = path.name
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    for name in (f"{stem}.yaml", f"{stem}.yml"):
        if (path.parent / name).is_file():
            return path.parent / name
    found = sorted(f for f in path.parent.glob(f"{stem}-*.y*ml") if not f.name.endswith(SUFFIXES))
    return found[0] if len(found) == 1 else None


def read_file(path: Path) -> Spec:
    """Parse and check a rehearsal file; RehearsalInvalid with located errors."""
    import jsonschema

    from opsctl import loader

    doc = loader.load_file(str(path))
    if doc.data is None or doc.errors:
        raise RehearsalInvalid(doc.errors or [RunbookError("empty rehearsal file",
                                                           Location(str(path), 1, 1))])
    errors = [doc.source.error(list(e.absolute_path), e.message)
              for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc.data)]
    if errors:
        raise RehearsalInvalid(errors)
    data = doc.data
    for i, r in enumerate(data["rehearsals"]):
        for j, fault in enumerate(r.get("faults") or []):
            name, args = next(iter(fault.items()))
            errors += _check_call(doc.source, ("rehearsals", i, "faults", j, name), name, args,
                                  {k: v[1] for k, v in FAULTS.items()}, "fault", data)
        for j, probe in enumerate(r["expect"].get("state") or []):
            name, args = next(iter(probe.items()))
            args = {k: v for k, v in (args or {}).items() if k not in ("equals", "min", "max")} \
                if isinstance(args, dict) else args
            where = ("rehearsals", i, "expect", "state", j, name)
            errors += _check_call(doc.source, where, name, args, {k: v[1] for k, v in PROBES.items()},
                                  "state check", data)
            if isinstance(probe[name], dict) and not {"equals", "min", "max"} & set(probe[name]):
                errors.append(doc.source.error(where, f"{name}: say what must hold (equals, min or max)"))
    runbook = _runbook_for(path, data.get("runbook"))
    if runbook is None:
        stem = path.name.split(".rehearsal.")[0]
        errors.append(doc.source.error(("runbook",), "no runbook for this rehearsal: name it with "
                                       f"'runbook:' or put {stem}.yaml beside it"))
    if errors:
        raise RehearsalInvalid(sorted(errors, key=lambda e: (e.location.line, e.location.column)))
    assert runbook is not None
    return Spec(path, data, doc.source, runbook)


def _check_call(source: Any, where: tuple[Any, ...], name: str, args: Any, table: dict[str, Any],
                what: str, data: dict[str, Any]) -> list[RunbookError]:
    from opsctl.schema import did_you_mean

    if name not in table:
        return [source.error(where, f"unknown {what} {name!r}{did_you_mean(name, list(table))}; "
                             f"known: {', '.join(sorted(table))}", key=True)]
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return [source.error(where, f"{name}: arguments must be a mapping")]
    known, required = arguments(table[name])
    out = [source.error((*where, k), f"{name}: unknown argument {k!r} (known: {', '.join(sorted(known))})",
                        key=True) for k in args if k not in known]
    out += [source.error(where, f"{name}: missing argument {k!r}") for k in sorted(required - set(args))]
    kind = name.split(".")[0]
    if kind in KINDS and kind not in (data.get("servers") or []):
        out.append(source.error(where, f"{name} needs the {kind} server: add it to 'servers:'"))
    return out


def _substitute(value: Any, unique: str) -> Any:
    if isinstance(value, str):
        return value.replace("${unique}", unique)
    if isinstance(value, list):
        return [_substitute(v, unique) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, unique) for k, v in value.items()}
    return value


def run_file(path: Path, servers: Any, *, only: list[int] | None = None, timeout: float | None = None,
             state_dir: str | None = None) -> list[RehearsalResult]:
    """Run every rehearsal of one file (RehearsalInvalid when the file is not one)."""
    spec = read_file(path)
    results = []
    for i, rehearsal in enumerate(spec.rehearsals):
        if only is not None and i not in only:
            continue
        results.append(_rehearse(spec, i, rehearsal, servers, timeout, state_dir))
    return results


def _rehearse(spec: Spec, i: int, r: dict[str, Any], servers: Any, timeout: float | None,
              state_dir: str | None) -> RehearsalResult:
    start = time.monotonic()
    result = RehearsalResult(str(spec.path), r["name"], ok=False)
    unique = uuid.uuid4().hex[:8]
    r = _substitute(r, unique)
    try:
        env_extra: dict[str, str] = {}
        for kind in spec.servers:
            env_extra.update(server_env(kind, servers.get(kind)))
    except Unavailable as e:
        result.skipped = str(e)
        return result
    state = state_dir or tempfile.mkdtemp(prefix="opsctl-rehearse-")
    for kind in spec.servers:  # from clean servers, whatever ran on them before (a test of the session)
        clear(kind, servers)
    lasting: list[Callable[[], None]] = []  # faults that go on during the run, stopped after it
    try:
        for j, fault in enumerate(r.get("faults") or []):
            name, args = next(iter(fault.items()))
            try:
                stop = FAULTS[name][1](servers, **(args or {}))
                if callable(stop):
                    lasting.append(stop)
            except Exception as e:  # noqa: BLE001 - a fault that cannot be injected is the rehearsal's failure
                result.failures.append(f"{spec.at('rehearsals', i, 'faults', j)}: {r['name']}: could not "
                                       f"inject {name}: {type(e).__name__}: {e}")
                return result
        doc, code, stderr = _run_opsctl(spec, r, isolated_env(env_extra, state),
                                        timeout or float(spec.data.get("timeout", 300)), state)
        result.run_id = (doc or {}).get("run_id")
        result.failures += _check(spec, i, r, doc, code, stderr, servers)
        result.ok = not result.failures
        return result
    finally:
        for stop in reversed(lasting):
            stop()
        for kind in spec.servers:
            clear(kind, servers)
        result.duration = time.monotonic() - start


def _run_opsctl(spec: Spec, r: dict[str, Any], env: dict[str, str], timeout: float,
                cwd: str) -> tuple[dict[str, Any] | None, int, str]:
    cmd = [sys.executable, "-m", "opsctl", "run", str(spec.runbook.resolve()), "-o", "json",
           "--dry-run" if r.get("dry_run") else "--yes"]
    for k, v in (r.get("params") or {}).items():
        cmd += ["-p", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    if r.get("option"):
        cmd += ["--option", r["option"]]
    if r.get("phase"):
        cmd += ["--phase", r["phase"]]
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, -1, f"opsctl run did not finish within {timeout:g} s"
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    return doc if isinstance(doc, dict) else None, proc.returncode, proc.stderr


def _matches(f: dict[str, Any], want: dict[str, Any]) -> bool:
    return (want.get("step") in (None, f.get("step")) and want.get("severity") in (None, f.get("severity"))
            and str(want.get("contains", "")).lower() in str(f.get("message", "")).lower())


def _check(spec: Spec, i: int, r: dict[str, Any], doc: dict[str, Any] | None, code: int, stderr: str,
           servers: Any) -> list[str]:
    out: list[str] = []
    name, expect = r["name"], r["expect"]
    why = _why(doc, stderr)

    def fail(where: tuple[str | int, ...], message: str) -> None:
        out.append(f"{spec.at('rehearsals', i, 'expect', *where)}: {name}: {message}")

    if "exit_code" in expect and code != expect["exit_code"]:
        fail(("exit_code",), f"expected exit code {expect['exit_code']}, got {code}{why}")
    steps = {s.get("id"): s for s in (doc or {}).get("steps", [])}
    for step_id, status in (expect.get("steps") or {}).items():
        got = str(steps.get(step_id, {}).get("status", "absent from the run"))
        if got != status and not got.startswith(status + " "):  # "applied" holds for "applied (verified)"
            fail(("steps", step_id), f"expected step {step_id} {status}, got {got}{why}")
    findings = (doc or {}).get("findings", [])
    for j, want in enumerate(expect.get("findings") or []):
        if not any(_matches(f, want) for f in findings):
            seen = "; ".join(f"{f.get('step')} {f.get('severity')}: {f.get('message')}" for f in findings[:5])
            fail(("findings", j), f"no finding matches {_brief(want)} (findings: {seen or 'none'}){why}")
    for j, want in enumerate(expect.get("absent_findings") or []):
        hit = next((f for f in findings if _matches(f, want)), None)
        if hit:
            fail(("absent_findings", j), f"a finding matches {_brief(want)}: {hit.get('step')} "
                 f"{hit.get('severity')}: {hit.get('message')}")
    for j, probe in enumerate(expect.get("state") or []):
        pname, args = next(iter(probe.items()))
        args = dict(args or {})
        bounds = {k: args.pop(k) for k in ("equals", "min", "max") if k in args}
        try:
            value = PROBES[pname][1](servers, **args)
        except Exception as e:  # noqa: BLE001 - reported as the check's failure
            fail(("state", j), f"{pname}: could not check: {type(e).__name__}: {e}")
            continue
        wrong = [f"{k} {v!r}" for k, v in bounds.items() if not _holds(k, v, value)]
        if wrong:
            fail(("state", j), f"{pname} {_brief(args)}: expected {', '.join(wrong)}, got {value!r}")
    return out


def _holds(kind: str, want: Any, value: Any) -> bool:
    try:
        if kind == "equals":
            return bool(value == want or str(value) == str(want))
        if kind == "min":
            return float(value) >= float(want)
        return float(value) <= float(want)
    except (TypeError, ValueError):
        return False


def _brief(d: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"


def _why(doc: dict[str, Any] | None, stderr: str) -> str:
    if doc and doc.get("message"):
        return f" ({doc['message']})"
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    return f" ({last[-1][:300]})" if last else ""


__all__ = ["LocalServers", "RehearsalInvalid", "RehearsalResult", "Spec", "find", "read_file",
           "run_file"]
