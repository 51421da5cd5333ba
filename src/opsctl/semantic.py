"""Checks the schema cannot express: ids, references, options, phases, Jinja.

Runs on every document that loaded, together with the schema checks (their errors are reported in
one pass): where the structure is wrong, the part concerned is skipped (the schema error says why)
and the rest is still checked.  Returns located errors and, as a by-product, each step's
dependencies (the earlier steps its templates read), which the executor uses to run independent
read-only steps concurrently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from opsctl import templating
from opsctl.errors import MAX_FILE_ERRORS, RunbookError, UsageError
from opsctl.loader import Document, PathT
from opsctl.model import PARAM_TYPES, Param
from opsctl.schema import PHASES, did_you_mean

STEP_FIELDS = ("result", "outputs", "status", "findings", "plan")
PHASE_RANK = {p: i for i, p in enumerate(PHASES)}


@dataclass
class _StepInfo:
    id: str
    phase: str
    index: int
    option: str | None
    outputs: set[str]
    path: PathT


class _Enough(Exception):
    """MAX_FILE_ERRORS reached: the rest of the document is not checked."""


@dataclass
class Checker:
    doc: Document
    errors: list[RunbookError] = field(default_factory=list)
    steps: dict[str, _StepInfo] = field(default_factory=dict)
    deps: dict[str, set[str]] = field(default_factory=dict)
    _said: set[tuple[PathT, str, bool]] = field(default_factory=set)

    @cached_property
    def _params(self) -> dict[str, Any]:
        return _dict(self.doc.data.get("params"))

    def error(self, path: PathT, message: str, *, key: bool = False) -> None:
        if (path, message, key) in self._said:  # one template naming `params.x` 1,000 times
            return
        if len(self.errors) > MAX_FILE_ERRORS:
            raise _Enough  # catalog says the check stopped
        self._said.add((path, message, key))
        self.errors.append(self.doc.source.error(path, message, key=key))

    # ---- whole document ------------------------------------------------------------------------
    def run(self) -> None:
        d: dict[str, Any] = self.doc.data
        self.check_file_name(d)
        self.check_params(_dict(d.get("params")))
        options = self.check_options(_list(d.get("options")))
        self.collect_steps(d)
        if d.get("mitigate") and not d.get("verify"):
            self.error(("mitigate",), "a runbook with a mitigate phase needs a verify phase "
                       "(how do we know the mitigation worked?)", key=True)
        for info in self.steps.values():
            self.check_step(d[info.phase][info.index], info, options)
        for i, opt in enumerate(_list(d.get("options"))):
            if isinstance(opt, dict) and _text(opt.get("recommended_when")):
                self.check_expression(opt["recommended_when"], ("options", i, "recommended_when"),
                                      None, allow_result=False, rank=PHASE_RANK["mitigate"])

    def check_file_name(self, d: dict[str, Any]) -> None:
        base = os.path.basename(self.doc.source.file)
        rid = d.get("id")
        if base.startswith("rb-") and isinstance(rid, str) and not (
                base.startswith(rid + "-") or base in (rid + ".yaml", rid + ".yml")):
            self.error(("id",), f"id {rid!r} does not match the file name {base!r} "
                       f"(expected {rid}-<slug>.yaml)")

    def check_params(self, params: dict[str, Any]) -> None:
        for name, spec in params.items():
            if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
                continue  # the schema says what is wrong
            key = _spec_key(name, spec)
            problems = _PARAM_PROBLEMS.get(key) if key is not None else None
            if problems is None:
                problems = _param_problems(name, spec)
                if key is not None and len(_PARAM_PROBLEMS) < 10_000:
                    _PARAM_PROBLEMS[key] = problems
            for where, message in problems:
                self.error(("params", name, *where), message)

    def check_options(self, options: list[dict[str, Any]]) -> set[str]:
        names: set[str] = set()
        params = self._params
        for i, opt in enumerate(options):
            if not isinstance(opt, dict) or not isinstance(opt.get("name"), str):
                continue
            if opt["name"] in names:
                self.error(("options", i, "name"), f"duplicate option {opt['name']!r}")
            names.add(opt["name"])
            for j, p in enumerate(_list(opt.get("requires"))):
                if isinstance(p, str) and p not in params:
                    self.error(("options", i, "requires", j),
                               f"unknown parameter {p!r}{did_you_mean(p, params)}")
        return names

    def collect_steps(self, d: dict[str, Any]) -> None:
        for phase in PHASES:
            for i, s in enumerate(_list(d.get(phase))):
                path: PathT = (phase, i)
                if not isinstance(s, dict) or not isinstance(s.get("id"), str):
                    continue  # the schema says what is wrong
                if s["id"] in self.steps:
                    first = self.steps[s["id"]]
                    self.error((*path, "id"), f"duplicate step id {s['id']!r} "
                               f"(first used at {first.phase}[{first.index}])")
                    continue
                option = s.get("option") if isinstance(s.get("option"), str) else None
                self.steps[s["id"]] = _StepInfo(s["id"], phase, i, option,
                                                set(_dict(s.get("outputs"))), path)
                self.deps[s["id"]] = set()

    # ---- one step ------------------------------------------------------------------------------
    def check_step(self, s: dict[str, Any], info: _StepInfo, options: set[str]) -> None:
        path = info.path
        if isinstance(s.get("option"), str):
            if info.phase != "mitigate":
                self.error((*path, "option"), "only mitigate steps can belong to an option")
            elif s["option"] not in options:
                self.error((*path, "option"), f"option {s['option']!r} is not defined in 'options'"
                           f"{did_you_mean(s['option'], options)}")
        if "until" in s and "retries" not in s and "within" not in s:
            self.error((*path, "until"), "'until' needs 'retries' (how many times to poll) or "
                       "'within' (a convergence window)")
        if "within" in s and "retries" in s:
            self.error((*path, "within"), "'within' (a convergence window) and 'retries' exclude each "
                       "other: the window decides how many attempts fit")
        if isinstance(s.get("within"), str) and "{{" in s["within"]:
            self.check_template(s["within"], (*path, "within"), info, allow_result=False)
        for key, value in _templates(s.get("with"), (*path, "with")):
            self.check_template(value, key, info, allow_result=False)
        if _text(s.get("when")):
            self.check_expression(s["when"], (*path, "when"), info, allow_result=False)
        if _text(s.get("until")):
            self.check_expression(s["until"], (*path, "until"), info, allow_result=True)
        for j, e in enumerate(_list(s.get("expect"))):
            if not isinstance(e, dict):
                continue
            if _text(e.get("that")):
                self.check_expression(e["that"], (*path, "expect", j, "that"), info,
                                      allow_result=True)
            for field_name in ("message", "ok_message"):
                if isinstance(e.get(field_name), str):
                    self.check_template(e[field_name], (*path, "expect", j, field_name), info,
                                        allow_result=True)
        for name, expr in _dict(s.get("outputs")).items():
            if _text(expr):
                self.check_expression(expr, (*path, "outputs", name), info, allow_result=True)

    def check_expression(self, expr: str, path: PathT, info: _StepInfo | None, *,
                         allow_result: bool, rank: int | None = None) -> None:
        self._check_jinja(expr, path, info, allow_result, expression=True, rank=rank)

    def check_template(self, text: str, path: PathT, info: _StepInfo, *, allow_result: bool) -> None:
        if templating.is_template(text):
            self._check_jinja(text, path, info, allow_result, expression=False)

    def _check_jinja(self, text: str, path: PathT, info: _StepInfo | None, allow_result: bool, *,
                     expression: bool, rank: int | None = None) -> None:
        try:
            analysis = templating.analyse(text, expression=expression)
        except templating.TemplateError as e:
            self.error(path, str(e))
            return
        for problem in analysis.problems:
            self.error(path, problem)
        roots, chains = analysis.roots, analysis.chains
        if not roots <= templating.ROOTS:
            for root in sorted(roots - templating.ROOTS):
                self.error(path, f"unknown name {root!r}{did_you_mean(root, templating.ROOTS)}; "
                           "templates can use params, steps, env, run and result")
        if "result" in roots and not allow_result:
            self.error(path, "'result' is only available in expect, outputs and until "
                       "(use steps.<id>.result for an earlier step)")
        for chain in chains:
            if chain[0] == "params" and len(chain) > 1:
                self.check_param_ref(chain[1], path)
            elif chain[0] == "steps" and len(chain) > 1:
                self.check_step_ref(chain, path, info, rank)

    def check_param_ref(self, name: str, path: PathT) -> None:
        params = self._params
        if name not in params:
            self.error(path, f"unknown parameter {name!r}{did_you_mean(name, params)}")

    def check_step_ref(self, chain: tuple[str, ...], path: PathT, info: _StepInfo | None,
                       rank: int | None) -> None:
        target = self.steps.get(chain[1])
        if target is None:
            self.error(path, f"unknown step {chain[1]!r}{did_you_mean(chain[1], self.steps)}")
            return
        if info is not None:
            if target.id == info.id:
                self.error(path, f"step {info.id!r} refers to itself: use 'result'")
                return
            if (PHASE_RANK[target.phase], target.index) > (PHASE_RANK[info.phase], info.index):
                self.error(path, f"step {target.id!r} runs later ({target.phase}[{target.index}]); "
                           "a step can only use the results of earlier steps")
                return
            if target.option and info.option and target.option != info.option:
                self.error(path, f"step {target.id!r} belongs to option {target.option!r}, "
                           f"which never runs together with option {info.option!r}")
            self.deps[info.id].add(target.id)
        elif rank is not None and PHASE_RANK[target.phase] >= rank:
            self.error(path, f"step {target.id!r} is not a diagnose step: recommendations can only "
                       "use the diagnosis")
        if len(chain) > 2 and chain[2] not in STEP_FIELDS:
            self.error(path, f"steps.{target.id}.{chain[2]}: unknown field; use one of "
                       f"{', '.join(STEP_FIELDS)}{did_you_mean(chain[2], STEP_FIELDS)}")
        elif len(chain) > 3 and chain[2] == "outputs" and chain[3] not in target.outputs:
            self.error(path, f"step {target.id!r} has no output {chain[3]!r}"
                       f"{did_you_mean(chain[3], target.outputs)}")


_SCALARS = (str, int, float, bool, type(None))
# a parameter's problems by what decides them (runbooks repeat `namespace: {type: string, ...}`)
_PARAM_PROBLEMS: dict[tuple[Any, ...], tuple[tuple[PathT, str], ...]] = {}


def _spec_key(name: str, spec: dict[str, Any]) -> tuple[Any, ...] | None:
    """What decides a parameter's problems, each value with its type (``True == 1``, ``1 == 1.0``);
    None when a value is not a plain scalar (not cached)."""
    choices = spec.get("choices")
    values = [spec.get("type"), spec.get("min"), spec.get("max"), spec.get("default")]
    if isinstance(choices, list):
        values += choices
    elif choices is not None:
        return None
    if not all(type(v) in _SCALARS for v in values):
        return None
    return (name, isinstance(choices, list), *((type(v), v) for v in values))


def _param_problems(name: str, spec: dict[str, Any]) -> tuple[tuple[PathT, str], ...]:
    """(path below params.<name>, message) of each problem of one parameter's declaration."""
    if spec.get("type") == "choice" and not spec.get("choices"):
        return (((), "a choice parameter needs 'choices'"),)
    choices = spec.get("choices")
    try:
        p = Param(name=name, type=spec["type"],
                  choices=tuple(choices) if isinstance(choices, list) else (),
                  min=spec.get("min"), max=spec.get("max"))
    except ValueError as e:
        return (((), str(e)),)
    if spec.get("default") is None:
        return ()
    try:
        p.coerce(spec["default"])
    except UsageError as e:
        return ((("default",), f"bad default: {e.message.split(': ', 1)[-1]}"),)
    return ()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _templates(value: Any, path: PathT) -> list[tuple[PathT, str]]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _templates(v, (*path, k))]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _templates(v, (*path, i))]
    return [(path, value)] if templating.is_template(value) else []


def check(doc: Document) -> tuple[list[RunbookError], dict[str, frozenset[str]]]:
    """Every semantic error of a document that loaded (its structure may be wrong: see above)."""
    from opsctl.alerts.bindings import check_document  # the triggers' alert bindings

    checker = Checker(doc)
    if isinstance(doc.data, dict):
        try:
            checker.run()
        except _Enough:
            return checker.errors, {}
        checker.errors += check_document(doc)
    return checker.errors, {k: frozenset(v) for k, v in checker.deps.items()}
