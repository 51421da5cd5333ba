"""Meta-lint of the action registry (after Cloud Custodian's PolicyMetaLint): every registered
action, from every backend, has a proper name, a closed and valid argument schema, a summary, a
docstring example that validates, and implements the half of the contract that matches its kind."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from opsctl import actions, schema
from opsctl.actions.base import Action
from opsctl.loader import Document, SourceMap

REGISTRY = actions.load_all()
NAMES = sorted(REGISTRY)
# backend.verb, or backend.service.verb for the big clouds (aws.ecs.scale)
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(\.[a-z][a-z0-9_]*){1,2}$")
EXAMPLE_RE = re.compile(r"```yaml\n(.*?)```", re.S)


def test_the_registry_has_the_built_in_actions() -> None:
    assert {"core.echo", "core.sleep", "core.assert", "core.write_file", "http.get"} <= set(REGISTRY)


@pytest.mark.parametrize("name", NAMES)
def test_name_is_backend_dot_verb(name: str) -> None:
    cls = REGISTRY[name]
    assert cls.name == name
    assert NAME_RE.match(name), f"{name}: expected backend.verb or backend.service.verb"


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_a_closed_valid_object(name: str) -> None:
    s = REGISTRY[name].schema
    Draft202012Validator.check_schema(s)
    assert s.get("type") == "object", f"{name}: the schema must be an object"
    assert s.get("additionalProperties") is False, f"{name}: additionalProperties must be false"
    props = s.get("properties", {})
    assert set(s.get("required", [])) <= set(props), f"{name}: required names unknown properties"
    for key in props:
        assert re.match(r"^[a-z][a-z0-9_]*$", key), f"{name}: argument {key!r} is not snake_case"


@pytest.mark.parametrize("name", NAMES)
def test_summary(name: str) -> None:
    assert REGISTRY[name].summary.strip(), f"{name}: empty summary"


def _examples(cls: type[Action]) -> list[Any]:
    return [yaml.safe_load(block) for block in EXAMPLE_RE.findall(cls.__doc__ or "")]


def _wrap(cls: type[Action], steps: list[dict[str, Any]]) -> dict[str, Any]:
    phase = "diagnose" if cls.read_only else "mitigate"
    doc: dict[str, Any] = {"id": "rb-900", "title": "example", "severity": "P4", "summary": "example",
                           "diagnose": [], phase: steps}
    if not cls.read_only:
        doc["verify"] = [{"id": "zz_check", "action": "core.echo", "with": {"value": 1}}]
    for step in steps:
        if "option" in step:
            doc.setdefault("options", []).append({"name": step["option"], "title": step["option"]})
    return doc


@pytest.mark.parametrize("name", NAMES)
def test_docstring_example_validates(name: str) -> None:
    cls = REGISTRY[name]
    examples = _examples(cls)
    assert examples, f"{name}: the docstring needs a ```yaml example of a step"
    for example in examples:
        steps = example if isinstance(example, list) else [example]
        assert all(isinstance(s, dict) for s in steps), f"{name}: the example must be step(s)"
        assert any(s.get("action") == name for s in steps), f"{name}: the example does not use {name}"
        doc = Document(_wrap(cls, steps), SourceMap(f"{name} docstring"), [])
        errors = schema.validate_structure(doc, REGISTRY)
        assert [str(e) for e in errors] == [], f"{name}: the docstring example does not validate"
        for s in steps:  # template-free values must also satisfy the action's own checks
            if s.get("action") == name:
                assert cls.validate_args(s.get("with") or {}) == [], name


def _overrides(cls: type[Action], method: str) -> bool:
    return getattr(cls, method) is not getattr(Action, method)


@pytest.mark.parametrize("name", NAMES)
def test_contract_matches_the_kind(name: str) -> None:
    cls = REGISTRY[name]
    if cls.read_only:
        assert _overrides(cls, "run"), f"{name}: a read-only action implements run()"
        assert not _overrides(cls, "apply"), f"{name}: a read-only action must not have apply()"
    else:
        assert _overrides(cls, "plan") and _overrides(cls, "apply"), \
            f"{name}: a mutating action implements plan() and apply()"
        assert not _overrides(cls, "run"), f"{name}: a mutating action must not have run()"


def test_registering_a_second_class_under_a_taken_name_fails() -> None:
    class Impostor(Action):
        name = "core.echo"

    with pytest.raises(TypeError, match="registered twice"):
        actions.register(Impostor)
    assert actions.get("core.echo") is REGISTRY["core.echo"]
