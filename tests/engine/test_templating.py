"""Sandboxed Jinja: no Python internals, strict undefined, native types for whole expressions."""

from __future__ import annotations

from typing import Any

import pytest

from opsctl import templating
from opsctl.templating import TemplateError, evaluate, render

CTX: dict[str, Any] = {
    "params": {"n": 3, "name": "db", "tags": ["a", "b"], "window": 300.0},
    "steps": {"usage": {"status": "ok", "result": {"usage_pct": 91.5, "rows": [{"pid": 7}]},
                        "outputs": {"pct": 91.5}, "findings": [], "plan": None}},
    "env": {"name": "local"},
    "run": {"id": "r1", "dry_run": True, "option": None},
}


@pytest.mark.parametrize("expr", [
    "''.__class__",
    "''.__class__.__mro__",
    "''.__class__.mro()",
    "().__class__.__base__.__subclasses__()",
    "params.__class__",
    "params.__init__.__globals__",
    "lipsum.__globals__",
    "cycler.__init__.__globals__",
    "joiner.__init__.__globals__['os']",
    "namespace.__init__.__globals__",
    "range.__self__",
    "params.items.__self__",
    "steps.usage.result.usage_pct.__class__",
    "(params.name.upper).__globals__",
    "'{0.__class__}'.format(params)",
    "'{x.__class__}'.format_map({'x': params})",
])
def test_no_access_to_python_internals(expr: str) -> None:
    with pytest.raises(TemplateError) as e:
        evaluate(expr, CTX)
    assert str(e.value).startswith(f"cannot evaluate {expr!r}: ")
    with pytest.raises(TemplateError):
        render("{{ " + expr + " }}", CTX)
    with pytest.raises(TemplateError):
        render("x {{ " + expr + " }}", CTX)


@pytest.mark.parametrize("expr", [
    "params.update({'n': 4})",
    "params.tags.append('c')",
    "params.tags.pop()",
])
def test_context_is_immutable(expr: str) -> None:
    with pytest.raises(TemplateError, match="not allowed in the sandbox"):
        evaluate(expr, CTX)
    assert CTX["params"] == {"n": 3, "name": "db", "tags": ["a", "b"], "window": 300.0}


def test_attribute_and_item_access_reach_only_data() -> None:
    assert evaluate("steps.usage.result.rows[0].pid", CTX) == 7
    assert evaluate("steps['usage'].outputs['pct'] > 90", CTX) is True


@pytest.mark.parametrize(("expr", "message"), [
    ("params.nope", "cannot evaluate 'params.nope': undefined value: 'dict object' has no attribute 'nope'"),
    ("steps.usage.result.pct_used > 1",
     "cannot evaluate 'steps.usage.result.pct_used > 1': undefined value: 'dict object' has no "
     "attribute 'pct_used'"),
    ("missing", "cannot evaluate 'missing': undefined value: 'missing' is undefined"),
])
def test_strict_undefined(expr: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        evaluate(expr, CTX)
    assert str(e.value) == message


def test_strict_undefined_in_templates() -> None:
    with pytest.raises(TemplateError, match="undefined value: 'dict object' has no attribute 'nope'"):
        render("{{ params.nope }}", CTX)
    with pytest.raises(TemplateError, match="undefined value"):
        render("db={{ params.nope }}", CTX)
    with pytest.raises(TemplateError, match="undefined value"):
        render("{% if params.nope %}x{% endif %}", CTX)


@pytest.mark.parametrize(("template", "value"), [
    ("{{ params.n }}", 3),
    ("  {{ params.n }}  ", 3),
    ("{{ params.tags }}", ["a", "b"]),
    ("{{ steps.usage.result }}", {"usage_pct": 91.5, "rows": [{"pid": 7}]}),
    ("{{ params.n * 2 }}", 6),
    ("{{ steps.usage.outputs.pct > 90 }}", True),
    ("{{ run.option }}", None),
    ("{{ params.window }}", 300.0),
    ("n={{ params.n }}", "n=3"),
    ("{{ params.n }}{{ params.name }}", "3db"),
    ("{{ params.n }} {{ params.name }}", "3 db"),
    ("{% if run.dry_run %}dry{% endif %}", "dry"),
    ("plain text", "plain text"),
    (42, 42),
])
def test_native_types_for_whole_expressions(template: Any, value: Any) -> None:
    got = render(template, CTX)
    assert got == value and type(got) is type(value)


def test_render_recurses_into_mappings_and_lists() -> None:
    got = render({"a": ["{{ params.n }}", "x{{ params.n }}"], "b": {"c": "{{ params.tags }}"}}, CTX)
    assert got == {"a": [3, "x3"], "b": {"c": ["a", "b"]}}


def test_bare_expressions_accept_braces() -> None:
    assert evaluate("{{ params.n > 2 }}", CTX) is True
    assert evaluate("params.n > 2", CTX) is True


def test_filters() -> None:
    assert render("{{ params.window | duration }}", CTX) == "5m00s"
    assert render("{{ 42 | duration }}", CTX) == "42s"
    assert render("{{ 7260 | duration }}", CTX) == "2h01m"
    assert render("{{ steps.usage.result.usage_pct | pct }}", CTX) == "91.5%"


def test_syntax_errors() -> None:
    with pytest.raises(TemplateError, match="invalid"):
        evaluate("params.n >", CTX)
    with pytest.raises(TemplateError, match="invalid Jinja expression"):
        templating.parse("params.n >", expression=True)
    with pytest.raises(TemplateError, match="invalid Jinja template"):
        templating.parse("{{ params.n", expression=False)


def test_references_for_validation_and_dependencies() -> None:
    ast = templating.parse("steps.usage.outputs.pct > params.n and env.name == 'x'", expression=True)
    roots, chains = templating.references(ast)
    assert roots == {"steps", "params", "env"}
    assert sorted(chains) == [["env", "name"], ["params", "n"], ["steps", "usage", "outputs", "pct"]]
    ast = templating.parse("{{ steps['usage'].result }} {{ foo.bar }}", expression=False)
    roots, chains = templating.references(ast)
    assert roots == {"steps", "foo"}
    assert chains == [["steps", "usage", "result"]]


def test_a_data_key_wins_over_a_dict_method_of_the_same_name() -> None:
    """`result.keys` in rb-010's finding printed "<built-in method keys of dict object ...>":
    Jinja tries the attribute (dict.keys) before the item.  In runbook data the key wins;
    methods stay callable where no key shadows them, and the sandbox still guards the rest."""
    data = {"result": {"keys": 7, "items": [1], "count": 2, "aliases": {"a": 1}}}
    assert templating.render("{{ result.keys }} of {{ result.items }}", data) == "7 of [1]"
    assert templating.evaluate("result.keys > 5 and result.count == 2", data) is True
    assert templating.evaluate("result.aliases.keys() | list", data) == ["a"]
    with pytest.raises(templating.TemplateError, match="unsafe"):
        templating.evaluate("result.aliases.__class__", data)
