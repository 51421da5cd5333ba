"""Frozen runbook model, built from a document that passed validation."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from opsctl.errors import UsageError
from opsctl.loader import Document, SourceMap

PHASE_ORDER = ("diagnose", "mitigate", "verify")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``90`` / ``"90s"`` / ``"5m"`` / ``"1h30m"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"not a duration: {value!r}")
        return float(value)
    text = str(value).strip()
    if len(text) > 100:
        raise ValueError(f"not a duration: a text of {len(text)} characters")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text).strip():
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h30m)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


PARAM_TYPES = ("string", "integer", "number", "boolean", "duration", "choice")
_RANGED = ("integer", "number", "duration")
_MAX_DIGITS = 30  # an integer parameter longer than this is a typo, not a count


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    description: str = ""
    required: bool = False
    secret: bool = False
    choices: tuple[Any, ...] = ()
    min: Any = None  # integer/number/duration: inclusive bounds, checked before anything runs
    max: Any = None

    def __post_init__(self) -> None:
        if self.min is None and self.max is None:
            return
        if self.type not in _RANGED:
            raise ValueError(f"'min'/'max' apply to integer, number and duration parameters, "
                             f"not {self.type}")
        try:
            low, high = (None if b is None else _bound(self, b) for b in (self.min, self.max))
        except (ValueError, TypeError) as e:
            raise ValueError(f"bad bound: {e}") from None
        if low is not None and high is not None and low > high:
            raise ValueError(f"'min' ({self.min}) is greater than 'max' ({self.max})")

    def coerce(self, raw: Any) -> Any:
        """Convert a command-line string (or a YAML default) to the declared type, in range."""
        try:
            value = _COERCE[self.type](self, raw)
            if self.min is not None and value < _bound(self, self.min):
                raise ValueError(f"{raw!r} is below the minimum {self.min}")
            if self.max is not None and value > _bound(self, self.max):
                raise ValueError(f"{raw!r} is above the maximum {self.max}")
            return value
        except (ValueError, TypeError, OverflowError) as e:
            raise UsageError(f"parameter {self.name!r}: {e}") from None


def _bound(p: Param, bound: Any) -> float:
    value = parse_duration(bound) if p.type == "duration" else _number(p, bound)
    if not math.isfinite(value):
        raise ValueError(f"not a finite bound: {bound!r}")
    return value


def _bool(p: Param, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "y", "1", "on"):
        return True
    if text in ("false", "no", "n", "0", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _int(p: Param, raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"expected an integer, got {raw!r}")
    if isinstance(raw, str) and len(raw.strip()) > _MAX_DIGITS:
        raise ValueError(f"expected an integer of at most {_MAX_DIGITS} digits, got {len(raw)} "
                         "characters")
    try:
        return int(str(raw).strip()) if not isinstance(raw, int | float) else int(raw)
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _number(p: Param, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"expected a number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {raw!r}")
    return value


def _choice(p: Param, raw: Any) -> Any:
    for choice in p.choices:
        if str(choice) == str(raw):
            return choice
    raise ValueError(f"expected one of {', '.join(map(str, p.choices))}, got {raw!r}")


_COERCE = {
    "string": lambda p, raw: str(raw),
    "integer": _int,
    "number": _number,
    "boolean": _bool,
    "duration": lambda p, raw: parse_duration(raw),
    "choice": _choice,
}


@dataclass(frozen=True)
class Expectation:
    that: str
    severity: str = "critical"
    message: str = ""  # shown when the check fails
    ok_message: str = ""  # shown when it passes


@dataclass(frozen=True)
class Step:
    id: str
    phase: str
    index: int
    action: str
    title: str = ""
    description: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    when: str | None = None
    expect: tuple[Expectation, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    retries: int = 0
    interval: float = 5.0
    until: str | None = None
    # convergence window: the step re-runs its (read-only) action every `interval` until `until`
    # holds (or, without `until`, every critical expectation passes), for at most this many
    # seconds in all; the window bounds every attempt and every pause (see stepexec._converge)
    within: float | str | None = None  # seconds, or a template ("{{ params.verify_window }}")
    option: str | None = None
    continue_on_error: bool = False
    deps: frozenset[str] = frozenset()  # ids of steps whose values this step's templates use

    @property
    def label(self) -> str:
        return self.title or self.id


@dataclass(frozen=True)
class Option:
    name: str
    title: str
    description: str = ""
    recommended_when: str | None = None
    explicit: bool = False
    requires: tuple[str, ...] = ()  # params that must be set (non-empty) to choose this option


@dataclass(frozen=True)
class Runbook:
    id: str
    title: str
    severity: str
    summary: str
    path: str
    sha256: str
    triggers: tuple[str, ...] = ()  # alert names
    bindings: tuple[dict[str, Any], ...] = ()  # every trigger as {alert, params, when, index}
    params: dict[str, Param] = field(default_factory=dict)
    options: tuple[Option, ...] = ()
    phases: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    escalation: tuple[dict[str, Any], ...] = ()
    references: tuple[str, ...] = ()
    source: SourceMap | None = None

    def steps(self) -> list[Step]:
        return [s for phase in self.phases.values() for s in phase]

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def resolve_params(self, given: dict[str, str]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            from opsctl.schema import did_you_mean

            hint = did_you_mean(unknown[0], self.params)
            known = ", ".join(self.params) or "none"
            raise UsageError(f"{self.id}: unknown parameter {unknown[0]!r}{hint}; parameters: {known}")
        values: dict[str, Any] = {}
        for name, p in self.params.items():
            if name in given:
                values[name] = p.coerce(given[name])
            elif p.default is not None:
                values[name] = p.coerce(p.default)
            elif p.required:
                raise UsageError(f"{self.id}: missing required parameter {name!r}"
                                 f"{' (' + p.description + ')' if p.description else ''}; "
                                 f"pass it with -p {name}=VALUE")
            else:
                values[name] = None
        return values

    def check_requires(self, option: str, values: dict[str, Any]) -> None:
        """An option that needs parameters is refused (exit 2) before it changes anything."""
        opt = self.option(option)
        missing = [p for p in (opt.requires if opt else ()) if values.get(p) in (None, "", 0)]
        if missing:
            flags = " ".join(f"-p {p}=..." for p in missing)
            raise UsageError(f"{self.id}: option {option!r} needs {', '.join(missing)} ({flags})")

    def redacted(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: ("***" if k in self.params and self.params[k].secret and v is not None else v)
                for k, v in values.items()}


def build(doc: Document, deps: dict[str, frozenset[str]], text: bytes) -> Runbook:
    d = doc.data
    params = {name: Param(name=name, type=p["type"], default=p.get("default"),
                          description=p.get("description", ""), required=p.get("required", False),
                          secret=p.get("secret", False), choices=tuple(p.get("choices", ())),
                          min=p.get("min"), max=p.get("max"))
              for name, p in (d.get("params") or {}).items()}
    phases: dict[str, tuple[Step, ...]] = {}
    for phase in (*PHASE_ORDER, "rollback"):
        phases[phase] = tuple(_step(phase, i, s, deps.get(s["id"], frozenset()))
                              for i, s in enumerate(d.get(phase) or []))
    return Runbook(
        id=d["id"], title=d["title"], severity=d["severity"], summary=d["summary"].strip(),
        path=doc.source.file, sha256=hashlib.sha256(text).hexdigest(),
        triggers=tuple(t if isinstance(t, str) else t["alert"] for t in d.get("triggers") or ()),
        bindings=tuple({"alert": t, "params": {}, "when": None, "connect": {}, "index": i}
                       if isinstance(t, str) else {"params": {}, "when": None, "connect": {}, **t, "index": i}
                       for i, t in enumerate(d.get("triggers") or ())),
        params=params,
        options=tuple(Option(name=o["name"], title=o["title"], description=o.get("description", ""),
                             recommended_when=o.get("recommended_when"),
                             explicit=o.get("explicit", False),
                             requires=tuple(o.get("requires", ()))) for o in d.get("options") or ()),
        phases=phases, escalation=tuple(d.get("escalation") or ()),
        references=tuple(d.get("references") or ()), source=doc.source)


def _within(s: dict[str, Any]) -> float | str | None:
    if "within" not in s:
        return None
    value = s["within"]
    if isinstance(value, str) and "{{" in value:
        return value  # rendered when the step runs
    return parse_duration(value)


def _interval(s: dict[str, Any]) -> float:
    if "interval" in s:
        return parse_duration(s["interval"])
    within = _within(s)
    if within is not None:  # a convergence window polls often enough to notice it converged
        return min(2.0, max(0.2, within / 5)) if isinstance(within, float) else 2.0
    return 5.0


def _step(phase: str, index: int, s: dict[str, Any], deps: frozenset[str]) -> Step:
    return Step(
        id=s["id"], phase=phase, index=index, action=s["action"], title=s.get("title", ""),
        description=s.get("description", ""), args=s.get("with") or {}, when=s.get("when"),
        expect=tuple(Expectation(e["that"], e.get("severity", "critical"), e.get("message", ""),
                                 e.get("ok_message", "")) for e in s.get("expect") or ()),
        outputs=dict(s.get("outputs") or {}),
        timeout=parse_duration(s["timeout"]) if "timeout" in s else None,
        retries=s.get("retries", 0),
        interval=_interval(s),
        within=_within(s),
        until=s.get("until"), option=s.get("option"),
        continue_on_error=s.get("continue_on_error", False), deps=deps)
