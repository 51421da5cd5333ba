"""The runbook JSON Schema, generated from the action registry, and located schema errors.

``runbook_schema(editor=True)`` is what ``opsctl schema`` exports for yaml-language-server: it adds,
per action, the argument schema of ``with`` (template strings allowed anywhere).  Validation uses the
same base schema, then checks each step's ``with`` against its action's own schema, so that an error
reads ``mitigate[1].with.replicas: expected integer, got string "three"``.

Speed: a compiled validator (jsonschema-rs) first answers "valid?" for the document and for each
step's ``with`` (against that action's schema only, template strings accepted wherever a value
goes); only a part it rejects goes through the (slower) Python jsonschema, which names every error.
The fast check is never more lenient than the located one, so it cannot hide an error.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from opsctl.actions.base import Action, is_template
from opsctl.errors import MAX_FILE_ERRORS, RunbookError
from opsctl.loader import Document, PathT, SourceMap, short_repr

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

PHASES = ("diagnose", "mitigate", "verify", "rollback")
_DURATION_RE = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$|^\s*\d+(\.\d+)?\s*$"
DURATION = {"oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION_RE}]}
EXPRESSION = {"type": "string", "minLength": 1}
IDENT = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"}

PARAM = {
    "type": "object",
    "properties": {
        "type": {"enum": ["string", "integer", "number", "boolean", "duration", "choice"]},
        "default": {},
        "description": {"type": "string"},
        "required": {"type": "boolean"},
        "secret": {"type": "boolean"},
        "choices": {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1},
        "min": {"type": ["number", "string"]},
        "max": {"type": ["number", "string"]},
    },
    "required": ["type"],
    "additionalProperties": False,
}

EXPECTATION = {
    "type": "object",
    "properties": {
        "that": EXPRESSION,
        "severity": {"enum": ["warning", "critical"]},
        "message": {"type": "string"},
        "ok_message": {"type": "string"},
    },
    "required": ["that"],
    "additionalProperties": False,
}

STEP = {
    "type": "object",
    "properties": {
        "id": IDENT,
        "title": {"type": "string"},
        "description": {"type": "string"},
        "action": {"type": "string"},
        "with": {"type": "object"},
        "when": EXPRESSION,
        "expect": {"type": "array", "items": EXPECTATION},
        "outputs": {"type": "object", "propertyNames": IDENT, "additionalProperties": EXPRESSION},
        "timeout": DURATION,
        "retries": {"type": "integer", "minimum": 0, "maximum": 10000},
        "interval": DURATION,
        "until": EXPRESSION,
        "within": {"anyOf": [DURATION, {"type": "string", "pattern": "\\{\\{"}]},
        "option": NAME,
        "continue_on_error": {"type": "boolean"},
    },
    "required": ["id", "action"],
    "additionalProperties": False,
}

OPTION = {
    "type": "object",
    "properties": {
        "name": NAME,
        "title": {"type": "string"},
        "description": {"type": "string"},
        "recommended_when": EXPRESSION,
        "explicit": {"type": "boolean"},
        "requires": {"type": "array", "items": IDENT},
    },
    "required": ["name", "title"],
    "additionalProperties": False,
}

# A trigger: an alert name, or a binding of an alert's labels/annotations to parameters (see alerts.py)
TRIGGER = {"oneOf": [
    {"type": "string", "minLength": 1},
    {"type": "object",
     "properties": {"alert": {"type": "string", "minLength": 1},
                    "params": {"type": "object", "propertyNames": IDENT,
                               "additionalProperties": {"type": ["string", "number", "boolean"]}},
                    "when": EXPRESSION,
                    # the server the alert is about (host:port), over the environment's address
                    "connect": {"type": "object", "properties": {"redis": {"type": "string"}},
                                "additionalProperties": False}},
     "required": ["alert"], "additionalProperties": False},
]}

ESCALATION = {
    "type": "object",
    "properties": {"after": DURATION, "to": {"type": "string"}, "contact": {"type": "string"},
                   "notes": {"type": "string"}},
    "required": ["to"],
    "additionalProperties": False,
}


def base_schema() -> dict[str, Any]:
    steps = {"type": "array", "items": {"$ref": "#/$defs/step"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://opsctl.dev/schema/runbook.json",
        "title": "opsctl runbook",
        "type": "object",
        "properties": {
            # any slug a team uses (pg-pool-exhausted); rb-NNN is the shipped catalogue's convention
            "id": {"type": "string", "pattern": "^[a-z0-9]+([_-][a-z0-9]+)*$", "maxLength": 64},
            "title": {"type": "string", "minLength": 1},
            "severity": {"enum": ["P0", "P1", "P2", "P3", "P4"]},
            "summary": {"type": "string", "minLength": 1},
            "triggers": {"type": "array", "items": TRIGGER},
            "params": {"type": "object", "propertyNames": IDENT,
                       "additionalProperties": {"$ref": "#/$defs/param"}},
            "options": {"type": "array", "items": {"$ref": "#/$defs/option"}},
            **{phase: steps for phase in PHASES},
            "escalation": {"type": "array", "items": ESCALATION},
            "references": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["id", "title", "severity", "summary", "diagnose"],
        "additionalProperties": False,
        "$defs": {"step": STEP, "param": PARAM, "option": OPTION},
    }


def _templatable(schema: dict[str, Any]) -> dict[str, Any]:
    """Let every value of an argument schema also be a Jinja template string (for editors)."""
    out = copy.deepcopy(schema)
    props = out.get("properties", {})
    for key, sub in props.items():
        props[key] = {"anyOf": [sub, {"type": "string", "pattern": r"\{\{|\{%"}]}
    return out


def runbook_schema(registry: dict[str, type[Action]], *, editor: bool = False) -> dict[str, Any]:
    schema = base_schema()
    if editor:
        step: dict[str, Any] = copy.deepcopy(STEP)
        step["properties"]["action"] = {"enum": sorted(registry)}
        step["allOf"] = [
            {"if": {"properties": {"action": {"const": name}}, "required": ["action"]},
             "then": {"properties": {"with": _templatable(cls.schema)}}}
            for name, cls in sorted(registry.items())
        ]
        schema["$defs"]["step"] = step
    return schema


# ---- located errors ----------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    for name, typ in (("boolean", bool), ("integer", int), ("number", float), ("string", str),
                      ("array", list), ("object", dict)):
        if isinstance(value, typ):
            return name
    return "null"


_MAX_SUGGEST = 500  # candidates a misspelt name is compared with (difflib: ~10 µs each)


def did_you_mean(word: str, candidates: Any) -> str:
    """A close match among ``candidates``; none among more than _MAX_SUGGEST of them: a runbook
    with thousands of parameters and as many typos must not take minutes to check."""
    if len(candidates) > _MAX_SUGGEST:
        return ""
    return _closest(str(word), tuple(str(c) for c in candidates))


@lru_cache(maxsize=4096)
def _closest(word: str, names: tuple[str, ...]) -> str:  # a typo is often repeated
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _describe(err: ValidationError) -> list[tuple[PathT, str, bool]]:
    """(extra path, message, point-at-key) for one jsonschema error."""
    v, inst, sch = err.validator, err.instance, err.schema
    if v == "additionalProperties" and isinstance(inst, dict):
        known = list(sch.get("properties", {}))
        extra = [k for k in inst if k not in known]
        return [((k,), f"unknown key {short_repr(k)}{did_you_mean(k, known)}", True) for k in extra]
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [((), f"missing required key {missing!r}", False)]
    if v == "type":
        want = sch["type"] if isinstance(sch["type"], str) else " or ".join(sch["type"])
        return [((), f"expected {want}, got {_json_type(inst)} {short_repr(inst)}", False)]
    if v == "enum":
        choices = ", ".join(map(str, sch["enum"]))
        return [((), f"expected one of {choices}, got {short_repr(inst)}"
                     f"{did_you_mean(inst, sch['enum'])}", False)]
    if v == "pattern":
        return [((), f"{short_repr(inst)} does not match the pattern {sch['pattern']}", False)]
    if v == "oneOf" and sch == DURATION:
        return [((), "expected a duration (30s, 5m, 1h30m) or a number of seconds, got "
                 f"{short_repr(inst)}", False)]
    if v in ("oneOf", "anyOf") and err.context:
        # the branch of the instance's own type says more than "is not of type 'string'"
        best = min(err.context, key=lambda e: (e.validator == "type", len(e.path)))
        return [(tuple(best.path), best.message, False)]
    if v == "propertyNames":
        return [((), f"invalid name {short_repr(inst)}: use lowercase letters, digits and _", True)]
    return [((), err.message, False)]


def located_errors(validator: Draft202012Validator, instance: Any, source: SourceMap,
                   prefix: PathT = (), *, skip_templates: bool = False,
                   limit: int = MAX_FILE_ERRORS) -> list[RunbookError]:
    """At most about ``limit`` errors (a file of 15,000 broken steps is not described in full)."""
    errors: list[RunbookError] = []
    found = itertools.islice(validator.iter_errors(instance), max(limit + 1, 0))
    for err in sorted(found, key=lambda e: list(map(str, e.path))):
        if skip_templates and is_template(err.instance):
            continue  # checked again after rendering, at run time
        for extra, message, at_key in _describe(err):
            path = (*prefix, *err.absolute_path, *extra)
            errors.append(source.error(path, message, key=at_key))
    return errors


def validate_structure(doc: Document, registry: dict[str, type[Action]]) -> list[RunbookError]:
    """Schema errors of the whole document, then of each step's `with` against its action."""
    if _fast_valid(_fast_base(), doc.data):
        errors: list[RunbookError] = []
    else:
        errors = located_errors(_base_validator(), doc.data, doc.source)
    if not isinstance(doc.data, dict):
        return errors
    for phase in PHASES:
        steps = doc.data.get(phase)
        if not isinstance(steps, list):
            continue
        for i, step in enumerate(steps):
            if len(errors) > MAX_FILE_ERRORS:
                return errors  # catalog says the check stopped
            if not isinstance(step, dict) or not isinstance(step.get("action"), str):
                continue
            errors.extend(validate_step_args(doc, (phase, i), step, registry))
    return errors


def validate_step_args(doc: Document, path: PathT, step: dict[str, Any],
                       registry: dict[str, type[Action]]) -> list[RunbookError]:
    name = step["action"]
    cls = registry.get(name)
    if cls is None:
        return [doc.source.error((*path, "action"),
                                 f"unknown action {short_repr(name)}{did_you_mean(name, registry)}")]
    args = step.get("with", {})
    if not isinstance(args, dict):
        return []  # reported by the base schema
    if _fast_valid(_fast_args(cls), args):
        errors: list[RunbookError] = []
    else:
        errors = located_errors(_args_validator(cls), args, doc.source, (*path, "with"),
                                skip_templates=True)
    try:
        problems = cls.validate_args(args)
    except Exception as e:  # arguments of the wrong type trip the action's own checks
        if errors:
            return errors  # the schema errors say what is wrong
        problems = [("", f"cannot check the arguments of {name}: {type(e).__name__}: {e}")]
    for arg, message in problems:
        errors.append(doc.source.error((*path, "with", arg) if arg else (*path, "with"), message))
    if "within" in step and not cls.read_only:
        errors.append(doc.source.error((*path, "within"), f"{name} is mutating: only a read-only step "
                                       "waits for convergence (a verify step after the change)"))
    return errors


# ---- validators, built once per process ---------------------------------------------------------

_TEMPLATE = {"type": "string", "pattern": r"\{\{|\{%"}


def accept_templates(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema where every value position (property, item) may also hold a template string:
    errors on template strings are skipped by the located check, so the fast one accepts them."""
    out = dict(schema)
    for key in ("properties", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _or_template(v) for k, v in out[key].items()}
    for key in ("additionalProperties", "items"):
        if isinstance(out.get(key), dict):
            out[key] = _or_template(out[key])
    for key in ("oneOf", "anyOf", "allOf"):
        if isinstance(out.get(key), list):
            out[key] = [accept_templates(sub) if isinstance(sub, dict) else sub for sub in out[key]]
    return out


def _or_template(sub: Any) -> Any:
    return {"anyOf": [accept_templates(sub), _TEMPLATE]} if isinstance(sub, dict) else sub


def _compile_fast(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - the located check alone is correct, only slower
        return None
    try:
        return jsonschema_rs.validator_for(schema)
    except Exception:  # pragma: no cover - a schema it cannot compile: use the located check
        return None


def _fast_valid(validator: Any, instance: Any) -> bool:
    if validator is None:
        return False
    try:
        return bool(validator.is_valid(instance))
    except Exception:  # a value it cannot convert (a YAML timestamp, ...): ask the located check
        return False


@lru_cache(maxsize=1)
def _fast_base() -> Any:
    return _compile_fast(base_schema())


_FAST_ARGS: dict[str, tuple[type[Action], Any]] = {}
_FAST_RENDERED: dict[str, tuple[type[Action], Any]] = {}
_ARGS: dict[str, tuple[type[Action], Draft202012Validator]] = {}


def argument_errors(cls: type[Action], args: dict[str, Any]) -> list[ValidationError]:
    """The errors of a step's rendered arguments against its action's schema, in path order: the
    compiled check answers "valid?" (a run pays neither the import nor the build of the Python
    validator); only arguments it rejects go through jsonschema, which names the errors."""
    got = _FAST_RENDERED.get(cls.name)
    if got is None or got[0] is not cls:
        got = _FAST_RENDERED[cls.name] = (cls, _compile_fast(cls.schema))
    if _fast_valid(got[1], args):
        return []
    return sorted(_args_validator(cls).iter_errors(args), key=lambda err: list(err.path))


def _fast_args(cls: type[Action]) -> Any:
    got = _FAST_ARGS.get(cls.name)
    if got is None or got[0] is not cls:
        got = _FAST_ARGS[cls.name] = (cls, _compile_fast(accept_templates(cls.schema)))
    return got[1]


@lru_cache(maxsize=1)
def _base_validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(base_schema())


def _args_validator(cls: type[Action]) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    got = _ARGS.get(cls.name)
    if got is None or got[0] is not cls:
        got = _ARGS[cls.name] = (cls, Draft202012Validator(cls.schema))
    return got[1]
