"""Plan files: a dry-run's chosen mitigation written down, reviewed, and applied later, once.

``opsctl plan`` writes one (JSON): the runbook (id, file, sha256), the environment (name and a
fingerprint of its redacted connection settings), the parameters (secrets redacted), the diagnosis
results the mitigation depends on, every mutating step's ``Plan`` with its ``Change``s and their
before-values, the opsctl version, who made it, when it expires, and a sha256 digest over all of it.

``opsctl apply`` refuses a plan that was altered (digest), expired, already applied (a claim file per
digest in the state directory names the run that applied it), made from another version of the
runbook or for another environment; the executor then re-plans every mutating step live and
``Replay.check`` refuses (exit 3) when the live plan's targets, their before-values or the plan's
data no longer match the file, naming what changed; otherwise ``apply()`` receives the live plan,
proven equal to the reviewed one (it holds the secrets that the file masks).
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl import __version__
from opsctl.errors import ActionError, NotConfirmed, PlanDrift, UsageError
from opsctl.records import Change, Plan, jsonable, now_iso

FORMAT = "opsctl-plan/1"
DEFAULT_TTL = 15 * 60.0
# the standard variables a backend falls back to when the environment has no section for it
_STANDARD_VARS = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "DATABASE_URL", "REDIS_URL",
                  "KAFKA_BOOTSTRAP_SERVERS", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                  "AWS_ENDPOINT_URL", "KUBECONFIG")


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str).encode()


def digest_of(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "digest"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def environment_fingerprint(environment: Any) -> str:
    """What the environment connects to, without its secrets: its sections (redacted) and, for the
    backends it leaves to the standard variables, those variables (redacted)."""
    from opsctl.audit import redact

    view = {"name": environment.name, "settings": environment.settings,
            "backends": environment.backends,
            "standard": {k: os.environ.get(k) for k in _STANDARD_VARS if os.environ.get(k)}}
    return hashlib.sha256(canonical(redact(jsonable(view)))).hexdigest()[:16]


# ---- writing -----------------------------------------------------------------------------------

def build(runbook: Any, runbook_arg: str, params: dict[str, Any], environment: Any, outcome: Any,
          secrets: tuple[str, ...], ttl: float = DEFAULT_TTL) -> dict[str, Any]:
    """The plan document of a dry-run that planned exactly one option."""
    from opsctl.audit import redact

    records = {r.id: r for r in outcome.records}
    mitigate = [s for s in runbook.phases.get("mitigate", ())
                if s.option is None or s.option in (outcome.option or [])]
    refusing = [records[s.id] for s in mitigate
                if records[s.id].status in ("failed", "timed_out", "interrupted")
                or (records[s.id].status == "planned" and records[s.id].plan is None)]
    if refusing:
        r = refusing[0]
        raise ActionError(f"no plan written: step {r.id!r} cannot be planned: {r.reason}")
    needed: set[str] = set()
    todo = [d for s in mitigate for d in s.deps]
    while todo:  # the diagnosis the mitigation depends on, transitively
        d = todo.pop()
        if d not in needed and d in records:
            needed.add(d)
            todo.extend(next((s.deps for s in runbook.steps() if s.id == d), ()))
    created = dt.datetime.now(dt.UTC)
    steps = []
    for s in mitigate:
        rec = records[s.id]
        steps.append({"id": s.id, "action": s.action, "option": s.option, "status": rec.status,
                      "reason": rec.reason, "args": rec.args, "plan": rec.plan})
    doc: dict[str, Any] = {
        "format": FORMAT,
        "opsctl_version": __version__,
        "created_at": _iso(created),
        "expires_at": _iso(created + dt.timedelta(seconds=ttl)),
        "created_by": {"user": getpass.getuser(), "host": socket.gethostname(), "run_id": outcome.run_id},
        "runbook": {"id": runbook.id, "title": runbook.title, "severity": runbook.severity,
                    "argument": runbook_arg, "file": runbook.path, "sha256": runbook.sha256},
        "environment": {"name": environment.name, "fingerprint": environment_fingerprint(environment),
                        "named": environment.source != "environment variables",
                        "protected": bool(getattr(environment, "protected", False))},
        "params": runbook.redacted(params),
        "withheld_params": sorted(k for k, p in runbook.params.items()
                                if p.secret and params.get(k) not in (None, "")),
        "option": (outcome.option or [None])[0],
        "diagnosis": {r.id: {"phase": r.phase, "action": r.action, "status": r.status,
                             "result": r.result, "outputs": r.outputs,
                             "findings": [f.__dict__ for f in r.findings]}
                      for r in outcome.records if r.id in needed},
        "steps": steps,
    }
    doc = redact(jsonable(doc), secrets)
    doc["digest"] = digest_of(doc)
    return doc


def write(doc: dict[str, Any], path: str) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write the plan file {path}: {e.strerror}") from None


# ---- reading and checking ----------------------------------------------------------------------

def load(path: str) -> dict[str, Any]:
    """A plan file, checked for shape and integrity (exit 2 when it is not one, or was altered)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read the plan file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a plan file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}:{e.colno}: not a plan file: {e.msg}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"{path}: not an opsctl plan file (format {FORMAT!r} expected)")
    missing = [k for k in ("digest", "runbook", "environment", "steps", "expires_at", "params")
               if k not in doc]
    if missing:
        raise UsageError(f"{path}: plan file without {', '.join(missing)}")
    if digest_of(doc) != doc["digest"]:
        raise UsageError(f"{path}: the plan file was modified after it was written (its digest "
                         f"{doc['digest']} does not match its content): make a new plan")
    return doc


def expired(doc: dict[str, Any], now: dt.datetime | None = None) -> bool:
    return (now or dt.datetime.now(dt.UTC)) >= _parse(doc["expires_at"])


def claims_dir() -> Path:
    """Where this host records applied plans: the state directory's plans/, or (a read-only state
    directory, --no-log) a per-user one in the temporary directory; exit 4 when neither can be
    written (a plan that cannot be claimed could be applied twice)."""
    from opsctl.audit import writable_state_subdir
    from opsctl.errors import ConfigError

    try:
        return writable_state_subdir("plans")
    except OSError as e:
        raise ConfigError(f"cannot record applied plans in {e.filename or 'the state directory'}: "
                          f"{e.strerror or e}; a plan applies at most once, so apply needs a writable "
                          "OPSCTL_STATE_DIR (or temporary directory): nothing was changed") from None


def applied_by(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The claim of the run that applied this plan, if one did."""
    from opsctl.audit import state_subdirs

    for d in state_subdirs("plans"):
        try:
            return dict(json.loads((d / f"{_digest_hex(doc)}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return None


def claim(doc: dict[str, Any], run_id: str) -> None:
    """Mark the plan applied by ``run_id``, atomically (O_EXCL): a second claim is refused."""
    d = claims_dir()
    by = applied_by(doc)
    if by:
        raise NotConfirmed(already_applied(doc, by))
    path = d / f"{_digest_hex(doc)}.json"
    record = {"digest": doc["digest"], "run_id": run_id, "user": getpass.getuser(),
              "host": socket.gethostname(), "at": now_iso()}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise NotConfirmed(already_applied(doc, applied_by(doc) or {})) from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record))


def already_applied(doc: dict[str, Any], by: dict[str, Any]) -> str:
    return (f"this plan ({doc['digest'][:19]}) was already applied by run {by.get('run_id', '?')} "
            f"({by.get('user', '?')}@{by.get('host', '?')} at {by.get('at', '?')}); a plan applies "
            "at most once: make a new plan")


def _digest_hex(doc: dict[str, Any]) -> str:
    return str(doc["digest"]).removeprefix("sha256:")


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"plan file: bad timestamp {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# ---- the drift check ---------------------------------------------------------------------------

def _key(c: Change) -> tuple[str, str]:
    return (c.target, c.operation)


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _masked(value: Any) -> bytes:
    from opsctl.audit import redact

    return canonical(redact(jsonable(value)))


def differences(planned: Plan, live: Plan, *, subset_ok: bool = False) -> list[str]:
    """What no longer matches between a reviewed plan and a live re-plan, one phrase each.
    ``subset_ok``: targets that are no longer there are fine (someone else already did it)."""
    from opsctl.audit import redact

    before = {_key(c): c for c in planned.changes}
    now = {_key(c): c for c in live.changes}
    out = []
    for key, c in before.items():
        if key not in now:
            if not subset_ok:
                out.append(f"{c.target} is no longer to {c.operation} (planned when it was "
                           f"{_show(c.guard)}; the live plan no longer selects it)")
            continue
        was, is_ = redact(jsonable(c.guard)), redact(jsonable(now[key].guard))
        if canonical(was) != canonical(is_):
            out.append(f"{c.target} changed: planned when {_show(was)}, now {_show(is_)}")
        elif canonical(redact(jsonable(c.after))) != canonical(redact(jsonable(now[key].after))):
            out.append(f"{c.target}: the change itself differs: planned {_show(c.after)}, now "
                       f"{_show(now[key].after)}")
    out += [f"{c.target} would now also be {c.operation}d/changed, and was not in the plan "
            f"({_show(c.guard)})" for key, c in now.items() if key not in before]
    return out


@dataclass
class Replay:
    """``opsctl apply plan.json``: the executor applies the file's plans, and only while they still
    match the live state."""

    doc: dict[str, Any]
    plans: dict[str, Plan] = field(default_factory=dict)
    claimed: bool = False

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Replay:
        plans = {s["id"]: Plan.from_dict(s["plan"]) for s in doc["steps"] if s.get("plan") is not None}
        return cls(doc, plans)

    @property
    def digest(self) -> str:
        return str(self.doc["digest"])

    def expects_changes(self, step_id: str) -> bool:
        return step_id in self.plans and not self.plans[step_id].empty

    def check(self, step_id: str, live: Plan) -> Plan:
        """The plan to apply when the live re-plan still matches the file's (every change and
        what apply() is handed, ``data``), else PlanDrift.  Once proven equal, the live plan is the
        one applied: the same changes, with the values that were masked in the file (secrets).
        Called under the apply lock: a concurrent apply of the same file that got the lock first
        and applied it is named (not reported as drift)."""
        by = None if self.claimed else applied_by(self.doc)
        if by:
            raise NotConfirmed(already_applied(self.doc, by))
        if not self.claimed and expired(self.doc):  # e.g. while this apply waited for the lock
            raise NotConfirmed(f"the plan expired at {self.doc['expires_at']} before it could be applied "
                               "(the apply lock was held until then): nothing was changed; make a new plan")
        planned = self.plans.get(step_id)
        if planned is None:
            if live.empty:
                return live
            raise PlanDrift(f"step {step_id!r} planned nothing in the plan file and would now change "
                            f"{len(live.changes)} thing(s) ({_show(live.changes[0].target)}): "
                            "refusing changes nobody reviewed; make a new plan")
        diffs = differences(planned, live)
        if not diffs and _masked(planned.data) != _masked(live.data):
            diffs = [f"step {step_id!r}: what its apply would act on changed (planned "
                     f"{_show(planned.data)}, now {_show(live.data)})"]
        if diffs:
            raise PlanDrift(f"the plan is stale: {'; '.join(diffs[:5])}"
                            + (f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else "")
                            + "; nothing was changed: make a new plan")
        return live

    def claim(self, run_id: str) -> None:
        """Called once, just before the first change is applied."""
        if not self.claimed:
            claim(self.doc, run_id)
            self.claimed = True


# ---- rendering for reviewers -------------------------------------------------------------------

def render(doc: dict[str, Any], fmt: str = "text") -> str:
    md = fmt == "markdown"
    rb, env, by = doc["runbook"], doc["environment"], doc.get("created_by", {})
    state = "EXPIRED" if expired(doc) else "valid"
    claim_ = applied_by(doc)
    if claim_:
        state = f"already applied by run {claim_.get('run_id')}"
    h = "# " if md else ""
    lines = [f"{h}Plan for {rb['id']} {rb.get('title', '')}".rstrip(), ""]
    facts = [("runbook", f"{rb['id']} ({rb.get('file')}, sha256 {str(rb.get('sha256'))[:12]})"),
             ("environment", f"{env['name']} (fingerprint {env.get('fingerprint')})"),
             ("option", str(doc.get("option") or "none")),
             ("parameters", ", ".join(f"{k}={v}" for k, v in doc["params"].items()
                                      if v not in (None, "")) or "none"),
             ("made by", f"{by.get('user')}@{by.get('host')} at {doc.get('created_at')} "
                         f"(dry-run {by.get('run_id')}), opsctl {doc.get('opsctl_version')}"),
             ("expires", f"{doc['expires_at']} ({state})"),
             ("digest", doc["digest"])]
    if doc.get("withheld_params"):
        facts.append(("secrets to supply at apply", ", ".join(doc["withheld_params"])))
    lines += [f"- **{k}**: {_md(v)}" if md else f"{k:>12}: {v}" for k, v in facts]
    if doc.get("diagnosis"):
        lines += ["", f"{'## ' if md else ''}Diagnosis the plan depends on", ""]
        for sid, d in doc["diagnosis"].items():
            bad = [f["message"] for f in d.get("findings", []) if f["severity"] != "ok"]
            text = f"{sid} ({d['action']}): {d['status']}" + (f"; {'; '.join(bad)}" if bad else "")
            lines.append(f"- {_md(text)}" if md else f"  - {text}")
    lines += ["", f"{'## ' if md else ''}Changes", ""]
    total = 0
    for s in doc["steps"]:
        plan = s.get("plan") or {}
        changes = plan.get("changes") or []
        total += len(changes)
        head = f"step {s['id']} ({s['action']}): {s['status']}"
        if plan.get("summary"):
            head += f": {plan['summary']}"
        elif s.get("reason"):
            head += f": {s['reason']}"
        lines.append(f"{'### ' if md else ''}{_md(head) if md else head}")
        if changes and md:
            lines += ["", "| target | change | before | after |", "|---|---|---|---|"]
            lines += [f"| {_md(c['target'])} | {_md(c['operation'])}"
                      f"{_md(' (' + c['detail'] + ')') if c.get('detail') else ''} | "
                      f"{_md(_show(c.get('before')))} | {_md(_show(c.get('after')))} |" for c in changes]
            lines.append("")
        for c in changes if not md else []:
            lines.append(f"    {c['operation']} {c['target']}: {_show(c.get('before'))} -> "
                         f"{_show(c.get('after'))}" + (f"  [{c['detail']}]" if c.get("detail") else ""))
        for w in plan.get("warnings") or []:
            lines.append(f"{'- ' if md else '    '}warning: {_md(w) if md else w}")
    lines += ["", f"{total} change(s). Apply with: opsctl apply PLAN_FILE"
              + (" -p " + " -p ".join(f"{k}=@FILE" for k in doc.get("withheld_params") or [])
                 if doc.get("withheld_params") else "")]
    return "\n".join(lines) + "\n"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
