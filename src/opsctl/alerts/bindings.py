"""Which runbook an alert starts, with which parameters.

A runbook's ``triggers`` name the alerts that lead to it; each may bind the alert's labels and
annotations to parameters and accept only some of those alerts::

    triggers:
      - alert: DatabaseConnectionPoolCritical
        params: {database: "{{ labels.database }}", namespace: "{{ labels.namespace }}"}
        when: "labels.severity == 'critical'"
      - DatabaseConnectionWaitTimeHigh          # a plain name: no parameters from the alert

An alert may also name its runbook itself (``annotations.opsctl_runbook: rb-006``); the runbook's own
binding for that alert, if any, then supplies the parameters, else each label named like a
parameter does.  ``annotations.opsctl_params: "idle_in_transaction_seconds=30 critical_pct=90"``
sets parameters on the alert rule itself, over the binding's (never a secret parameter).
What the alert gives stands over the environment's values (opsctl.yaml ``params``, then
``OPSCTL_PARAM_<NAME>`` variables, as ``opsctl run`` reads them under ``-p``), which stand over the
runbook's defaults.
Templates run in the same Jinja sandbox as runbook steps, with ``labels``,
``annotations`` and ``alert`` (name, status, startsAt, fingerprint, generatorURL).  A label the
alert does not carry reads as empty: the parameter keeps the environment's value or its default,
and the mapping says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jinja2 import nodes

from opsctl import templating
from opsctl.alerts.payloads import Alert
from opsctl.errors import Location, OpsctlError, RunbookError, UsageError
from opsctl.loader import Document, PathT, SourceMap

if TYPE_CHECKING:
    from opsctl.config import Environment
    from opsctl.model import Runbook

ROOTS = frozenset({"labels", "annotations", "alert"})
ANNOTATION = "opsctl_runbook"
PARAMS_ANNOTATION = "opsctl_params"  # "key=value key2=value2" set on the alert rule itself


class _Values(dict[str, str]):
    """Labels/annotations for templates: a missing one reads as "" and is remembered."""

    def __init__(self, values: dict[str, str], missing: set[str]) -> None:
        super().__init__(values)
        self.missing = missing

    def __missing__(self, key: str) -> str:
        self.missing.add(key)
        return ""


def context(alert: Alert, missing: set[str] | None = None) -> dict[str, Any]:
    missing = set() if missing is None else missing
    return {"labels": _Values(alert.labels, missing), "annotations": _Values(alert.annotations, set()),
            "alert": {"name": alert.name, "status": alert.status, "startsAt": alert.starts_at,
                      "fingerprint": alert.fingerprint, "generatorURL": alert.generator_url}}


# ---- static checks (opsctl validate) ------------------------------------------------------------

def _label_refs(ast: nodes.Template) -> tuple[set[str], set[str]]:
    """Root names used, and the label names read (``labels.x`` / ``labels['x']`` / ``.get('x')``)."""
    roots = templating.references(ast)[0]  # static: no compilation (an unknown test is no crash)
    used: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Call)):
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) \
                and node.node.attr == "get" and isinstance(node.node.node, nodes.Name) \
                and node.node.node.name == "labels" and node.args \
                and isinstance(node.args[0], nodes.Const):
            used.add(str(node.args[0].value))
        elif isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name) \
                and node.node.name == "labels":
            if isinstance(node, nodes.Getattr) and node.attr != "get":
                used.add(node.attr)
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                used.add(str(node.arg.value))
    return roots, used


def labels_used(binding: dict[str, Any]) -> set[str]:
    used: set[str] = set()
    values = [*binding.get("params", {}).values(), *(binding.get("connect") or {}).values()]
    texts = [(v, False) for v in values if isinstance(v, str)]
    for text, expression in texts + ([(binding["when"], True)] if binding.get("when") else []):
        try:
            used |= _label_refs(templating.parse(text, expression=expression))[1]
        except templating.TemplateError:
            continue
    return used


def check_document(doc: Document) -> list[RunbookError]:
    """Located errors of the ``triggers`` of one runbook (its structure passed the schema)."""
    from opsctl.model import Param
    from opsctl.schema import did_you_mean

    d = doc.data
    triggers = d.get("triggers") if isinstance(d, dict) else None
    if not isinstance(triggers, list):
        return []  # absent, or a shape the schema reports
    params = d.get("params") if isinstance(d.get("params"), dict) else {}
    errors: list[RunbookError] = []

    def check_jinja(text: str, path: PathT, expression: bool) -> None:
        try:  # the same static analysis as step templates: size, nesting, unknown filters/tests
            analysis = templating.analyse(text, expression=expression)
        except templating.TemplateError as e:
            errors.append(doc.source.error(path, str(e)))
            return
        for problem in analysis.problems:
            errors.append(doc.source.error(path, problem))
        roots = set(analysis.roots)
        for root in sorted(roots - ROOTS):
            errors.append(doc.source.error(path, f"unknown name {root!r}{did_you_mean(root, ROOTS)}; "
                                           "trigger templates can use labels, annotations and alert"))

    seen: dict[str, list[tuple[int, str | None]]] = {}
    for i, t in enumerate(triggers):
        if isinstance(t, str):
            t = {"alert": t}
        if not isinstance(t, dict) or not isinstance(t.get("alert"), str):
            continue
        for name, value in _mapping(t.get("params")).items():
            path: PathT = ("triggers", i, "params", name)
            if name not in params:
                errors.append(doc.source.error(path, f"unknown parameter {name!r}"
                                               f"{did_you_mean(name, params)}", key=True))
            elif isinstance(value, str) and templating.is_template(value):
                check_jinja(value, path, expression=False)
            elif isinstance(params[name], dict) and params[name].get("type"):
                spec = params[name]
                try:
                    Param(name, spec["type"], choices=tuple(spec.get("choices", ()))).coerce(value)
                except UsageError as e:
                    errors.append(doc.source.error(path, e.message))
        for name, value in _mapping(t.get("connect")).items():
            if isinstance(value, str) and templating.is_template(value):
                check_jinja(value, ("triggers", i, "connect", name), expression=False)
        if isinstance(t.get("when"), str):
            check_jinja(t["when"], ("triggers", i, "when"), expression=True)
        when_i = t.get("when") if isinstance(t.get("when"), str) else None
        for j, when in seen.get(t["alert"], []):
            if when is None or when_i is None or when == when_i:
                errors.append(doc.source.error(("triggers", i), f"alert {t['alert']!r} is already "
                                               f"bound by triggers[{j}] without a 'when' that "
                                               "separates the two"))
        seen.setdefault(t["alert"], []).append((i, when_i))
    return errors


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class _Claims:
    """What claim_errors needs of a runbook, read from its YAML alone (no full validation)."""

    id: str
    path: str
    source: SourceMap
    bindings: tuple[dict[str, Any], ...]


def claim_errors_in_files(files: list[str]) -> list[RunbookError]:
    """claim_errors() of valid runbook files, from their triggers only (cheap: YAML parsing)."""
    from opsctl import loader

    items: list[Any] = []
    for f in files:
        doc = loader.load_file(f)
        d = doc.data
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) \
                or not isinstance(d.get("triggers"), list):
            continue
        bindings = tuple({"alert": t, "when": None, "index": i} if isinstance(t, str)
                         else {"alert": t["alert"], "when": t.get("when"), "index": i}
                         for i, t in enumerate(d["triggers"])
                         if isinstance(t, str) or (isinstance(t, dict) and isinstance(t.get("alert"), str)))
        items.append(_Claims(d["id"], f, doc.source, bindings))
    return claim_errors(items)


def claim_errors(runbooks: list[Any]) -> list[RunbookError]:
    """Two runbooks claiming the same alert without ``when`` conditions that tell them apart."""
    errors: list[RunbookError] = []
    first: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for rb in sorted(runbooks, key=lambda r: r.id):
        for b in rb.bindings:
            for other, ob in first.get(b["alert"], []):
                if other.id == rb.id:
                    continue
                if b["when"] is None or ob["when"] is None or b["when"] == ob["when"]:
                    where = _where(other, ob)
                    errors.append(RunbookError(
                        f"alert {b['alert']!r} is also claimed by {other.id} ({where}); give both "
                        "triggers a 'when' that separates them (e.g. on labels.severity)",
                        _location(rb, b)))
            first.setdefault(b["alert"], []).append((rb, b))
    return errors


def _location(rb: Any, b: dict[str, Any]) -> Location:
    if rb.source is None:
        return Location(rb.path)
    return rb.source.locate(("triggers", b["index"]))


def _where(rb: Any, b: dict[str, Any]) -> str:
    loc = _location(rb, b)
    return str(Location(loc.file, loc.line, loc.column))  # the name shown on one line, as errors show it


# ---- mapping ----------------------------------------------------------------------------------

@dataclass
class Match:
    runbook: str
    via: str  # "trigger rb-006-...yaml:13:5" | "annotation opsctl_runbook"
    given: dict[str, str]  # what the binding produced (strings, as -p KEY=VALUE)
    params: dict[str, Any] | None = None  # typed, with defaults; None when invalid
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    connect: dict[str, str] = field(default_factory=dict)  # backend -> host:port from the alert
    environment: dict[str, str] = field(default_factory=dict)  # values the environment supplied

    def as_dict(self) -> dict[str, Any]:
        return {"runbook": self.runbook, "via": self.via, "params": self.given, "error": self.error,
                "warnings": self.warnings, **({"connect": self.connect} if self.connect else {}),
                **({"environment_params": self.environment} if self.environment else {})}


@dataclass
class Mapping:
    alert: Alert
    matches: list[Match]
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.matches:
            return "unmapped"
        if len(self.matches) > 1:
            return "ambiguous"
        return "invalid" if self.matches[0].error else "mapped"

    @property
    def problem(self) -> str:
        if self.status == "unmapped":
            return f"{self.alert.describe()}: no runbook binds alert {self.alert.name!r}"
        if self.status == "ambiguous":
            ids = ", ".join(f"{m.runbook} ({m.via})" for m in self.matches)
            return f"{self.alert.describe()}: maps to {len(self.matches)} runbooks: {ids}"
        if self.status == "invalid":
            m = self.matches[0]
            return f"{self.alert.describe()} -> {m.runbook}: {m.error.removeprefix(m.runbook + ': ')}"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {"alert": self.alert.as_dict(), "status": self.status, "problem": self.problem,
                "matches": [m.as_dict() for m in self.matches], "warnings": self.warnings}


def match_annotation_params(text: str) -> dict[str, str]:
    """``"a=1 b='x y', c=2"`` -> {a: 1, b: x y, c: 2}."""
    import shlex

    try:
        words = shlex.split(text.replace(",", " "))
    except ValueError:
        words = text.replace(",", " ").split()
    return {k.strip(): v for k, sep, v in (w.partition("=") for w in words) if sep and k.strip()}


class Catalogue:
    """The runbooks alerts can start, indexed by alert name; with an environment, its parameter
    values (opsctl.yaml ``params``) fill in what the alert does not give, as for ``opsctl run``."""

    def __init__(self, runbooks: list[Runbook], environment: Environment | None = None) -> None:
        self.environment = environment
        self.runbooks = {rb.id: rb for rb in runbooks}
        self.by_alert: dict[str, list[tuple[Runbook, dict[str, Any]]]] = {}
        for rb in runbooks:
            for b in rb.bindings:
                self.by_alert.setdefault(b["alert"], []).append((rb, b))

    @property
    def alert_names(self) -> set[str]:
        return set(self.by_alert)

    def map(self, alert: Alert) -> Mapping:
        named = alert.annotations.get(ANNOTATION, "").strip()
        if named:
            rb = self.runbooks.get(named.lower()) or self._by_file_name(named)
            if rb is None:
                from opsctl.schema import did_you_mean

                return Mapping(alert, [Match(named, f"annotation {ANNOTATION}", {},
                                             error=f"no runbook {named!r}"
                                             f"{did_you_mean(named, self.runbooks)}")])
            own = [b for r, b in self.by_alert.get(alert.name, []) if r.id == rb.id]
            if own:
                return Mapping(alert, [self._bind(rb, own[0], alert, f"annotation {ANNOTATION}")])
            given = {p: alert.labels[p] for p in rb.params if alert.labels.get(p)}
            return Mapping(alert, [self._resolve(rb, Match(rb.id, f"annotation {ANNOTATION}", given),
                                                  alert)])
        matches, warnings = [], []
        for rb, b in self.by_alert.get(alert.name, []):
            if b["when"]:
                try:
                    if not templating.evaluate(b["when"], context(alert)):
                        continue
                except templating.TemplateError as e:
                    warnings.append(f"{rb.id} ({_where(rb, b)}): {e}")
                    continue
            matches.append(self._bind(rb, b, alert, f"trigger {_where(rb, b)}"))
        return Mapping(alert, matches, warnings)

    def _by_file_name(self, named: str) -> Runbook | None:
        """``opsctl_runbook: rb-006-database-pool-exhausted(.yaml)``: the runbook of that file."""
        from pathlib import PurePath

        stem = PurePath(named).name.lower().removesuffix(".yaml").removesuffix(".yml")
        return next((rb for rb in self.runbooks.values()
                     if rb.path and PurePath(rb.path).name.lower().split(".")[0] == stem), None)

    def _bind(self, rb: Runbook, b: dict[str, Any], alert: Alert, via: str) -> Match:
        match = Match(rb.id, via, {})
        for kind, name, value in [("params", k, v) for k, v in b["params"].items()] + \
                [("connect", k, v) for k, v in (b.get("connect") or {}).items()]:
            missing: set[str] = set()
            try:
                rendered = templating.render(value, context(alert, missing))
            except templating.TemplateError as e:
                match.error = f"{'parameter' if kind == 'params' else 'connect'} {name!r}: {e}"
                return match
            if rendered is None or rendered == "":
                if missing:
                    match.warnings.append(f"{name}: the alert has no label "
                                          f"{' or '.join(sorted(missing))}" +
                                          (" (the environment's value or the default is used)"
                                           if kind == "params"
                                           else " (the environment's address is used)"))
                continue
            text = str(rendered).lower() if isinstance(rendered, bool) else str(rendered)
            if kind == "params":
                match.given[name] = text
            else:
                match.connect[name] = text
        return self._resolve(rb, match, alert)

    def _resolve(self, rb: Runbook, match: Match, alert: Alert) -> Match:
        extra = match_annotation_params(alert.annotations.get(PARAMS_ANNOTATION, ""))
        for key, value in extra.items():
            if key in rb.params and rb.params[key].secret:
                match.warnings.append(f"{PARAMS_ANNOTATION}: {key} is a secret parameter: ignored")
            else:
                match.given[key] = value
        try:
            base = self._environment_params(rb)
            match.environment = {k: "***" if rb.params[k].secret else str(v)
                                 for k, v in base.items() if k not in match.given}
            match.params = rb.resolve_params({**base, **match.given})
        except OpsctlError as e:
            match.error = e.message
        return match

    def _environment_params(self, rb: Runbook) -> dict[str, Any]:
        """What ``opsctl run`` puts under ``-p``: the environment's ``params`` for this runbook, then
        ``OPSCTL_PARAM_<NAME>`` variables (those naming one of its parameters)."""
        import os

        from opsctl.errors import register_secret

        own = dict(self.environment.params_for(rb)) if self.environment is not None else {}
        for key, value in os.environ.items():
            name = key[len("OPSCTL_PARAM_"):].lower()
            if key.startswith("OPSCTL_PARAM_") and name in rb.params:
                own[name] = value
        register_secret(*(str(v) for k, v in own.items() if rb.params[k].secret and v not in (None, "")))
        return own
