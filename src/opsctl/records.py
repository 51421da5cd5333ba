"""What a run produces: plans and their changes, step records, findings, the outcome.  Plain data,
shared by the actions (which return plans), the executor, the renderers, the run log, reports and
plan files."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# statuses that leave a usable result behind (and are reused by --resume)
DONE = frozenset({"ok", "applied", "noop"})
# statuses after which a step's result cannot be used by later steps
NO_RESULT = frozenset({"skipped", "planned", "noop", "declined", "refused", "failed", "timed_out",
                       "interrupted", "not_run"})


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """Results go to templates, the JSON output and the run log: make them plain JSON values."""
    return json.loads(json.dumps(value, default=_default))


def _default(o: Any) -> Any:
    if isinstance(o, dt.datetime | dt.date):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    if hasattr(o, "as_dict"):
        return o.as_dict()
    return str(o)


@dataclass
class Change:
    """One concrete change a mutating action will make."""

    target: str  # what is changed: "deployment default/api", "backend pid 4242"
    operation: str  # what is done to it: "scale", "terminate", "set"
    before: Any = None
    after: Any = None
    detail: str = ""
    # what must still hold for this change to be applied from a plan file (the drift check):
    # the stable part of `before` (a session's state and start, not its age); None: `before` itself
    state: Any = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.state is None:
            del d["state"]
        return d

    @property
    def guard(self) -> Any:
        """The value the drift check compares between a plan file and the live re-plan."""
        return self.before if self.state is None else self.state


@dataclass
class Plan:
    """What ``apply`` will do, resolved against live read-only lookups."""

    summary: str
    changes: list[Change] = field(default_factory=list)
    # what apply() needs (resolved targets); JSON-serialisable because it goes into the run log
    data: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "changes": [c.as_dict() for c in self.changes],
                "data": self.data, "warnings": self.warnings}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        changes = [Change(**{k: v for k, v in c.items() if k in _CHANGE_FIELDS})
                   for c in d.get("changes", [])]
        return cls(summary=d.get("summary", ""), changes=changes,
                   data=d.get("data", {}), warnings=d.get("warnings", []))


_CHANGE_FIELDS = frozenset(Change.__dataclass_fields__)


@dataclass
class Finding:
    step: str
    phase: str
    severity: str  # ok | warning | critical
    message: str


@dataclass
class StepRecord:
    id: str
    phase: str
    action: str
    title: str
    option: str | None
    read_only: bool
    status: str = "not_run"
    reason: str = ""
    # backend | template | usage | action | timeout | internal | plan_refused (a dry-run's plan
    # that the action refuses: status stays 'planned')
    error_kind: str | None = None
    args: dict[str, Any] | None = None  # the rendered `with`, as the action received it
    result: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    confirmed: bool | None = None
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    duration: float = 0.0
    reused_from: str | None = None
    continue_on_error: bool = False

    def view(self) -> dict[str, Any]:
        """What later steps see as ``steps.<id>``."""
        return {"status": self.status, "result": self.result, "outputs": self.outputs,
                "findings": [asdict(f) for f in self.findings], "plan": self.plan}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepRecord:
        d = dict(d)
        d["findings"] = [Finding(**f) for f in d.get("findings", [])]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Outcome:
    run_id: str
    runbook: str
    exit_code: int
    status: str  # ok | failed | verify_failed | not_confirmed | interrupted | invalid | backend_error
    message: str
    dry_run: bool
    option: list[str] | None
    records: list[StepRecord]
    started_at: str
    ended_at: str
    duration: float
    # a dry-run's answer to "what next": the options the diagnosis recommends
    recommended: list[str] = field(default_factory=list)

    def findings(self) -> list[Finding]:
        return [f for r in self.records for f in r.findings]
