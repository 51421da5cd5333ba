"""Jinja2 in a sandbox: templates for `with` values, bare expressions for `when`/`expect`/`until`.

The sandbox blocks access to Python internals (``__class__``, ``__globals__``, ...); StrictUndefined
turns a typo such as ``steps.usage.result.pct_used`` into an error instead of an empty string.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from opsctl.actions.base import is_template

# The names a runbook template may use; `result` only where a step's own result exists.
ROOTS = frozenset({"params", "steps", "env", "run", "result"})
_WHOLE = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


class TemplateError(Exception):
    """A template failed to parse or to evaluate; the message is user-facing."""


def _duration(value: Any) -> str:
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                        keep_trailing_newline=False)
    env.filters["duration"] = _duration
    env.filters["pct"] = lambda v, digits=1: f"{float(v):.{digits}f}%"
    return env


def strip_braces(expr: str) -> str:
    """Accept ``"{{ x > 1 }}"`` where a bare expression is expected."""
    m = _WHOLE.match(expr)
    return m.group(1) if m and "{{" not in m.group(1) else expr


@lru_cache(maxsize=2048)
def _compiled_expression(expr: str) -> Any:
    return environment().compile_expression(strip_braces(expr), undefined_to_none=False)


@lru_cache(maxsize=2048)
def _compiled_template(text: str) -> Any:
    return environment().from_string(text)


def _explain(e: Exception) -> str:
    if isinstance(e, UndefinedError):
        return f"undefined value: {e.message}"
    if isinstance(e, SecurityError):
        return f"not allowed in the sandbox: {e}"
    return f"{type(e).__name__}: {e}"


def evaluate(expr: str, context: dict[str, Any]) -> Any:
    """Evaluate a bare Jinja expression to a native value."""
    try:
        value = _compiled_expression(expr)(**context)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return value
    except TemplateSyntaxError as e:
        raise TemplateError(f"invalid expression {expr!r}: {e.message}") from None
    except Exception as e:  # any evaluation error is the runbook's, reported with the expression
        raise TemplateError(f"cannot evaluate {expr!r}: {_explain(e)}") from None


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render a `with` value recursively; ``"{{ expr }}"`` alone keeps the native type."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not is_template(value):
        return value
    m = _WHOLE.match(value)
    if m and "{{" not in m.group(1) and "}}" not in m.group(1):
        return evaluate(m.group(1), context)
    try:
        return _compiled_template(value).render(**context)
    except TemplateSyntaxError as e:
        raise TemplateError(f"invalid template {value!r}: {e.message}") from None
    except Exception as e:
        raise TemplateError(f"cannot render {value!r}: {_explain(e)}") from None


# ---- static analysis (validation and the dependency graph) ------------------------------------

def parse(text: str, *, expression: bool) -> nodes.Template:
    """Parse a template or a bare expression; raises TemplateError with Jinja's message."""
    source = "{{ " + strip_braces(text) + " }}" if expression else text
    try:
        return environment().parse(source)
    except TemplateSyntaxError as e:
        kind = "expression" if expression else "template"
        raise TemplateError(f"invalid Jinja {kind}: {e.message}") from None


def _chain(node: nodes.Node) -> list[str] | None:
    """``steps.usage.result`` / ``steps['usage']`` -> ['steps', 'usage', 'result']."""
    if isinstance(node, nodes.Name):
        return [node.name]
    if isinstance(node, nodes.Getattr):
        base = _chain(node.node)
        return base + [node.attr] if base is not None else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
            and isinstance(node.arg.value, str):
        base = _chain(node.node)
        return base + [node.arg.value] if base is not None else None
    return None


def references(ast: nodes.Template) -> tuple[set[str], list[list[str]]]:
    """Undeclared root names, and every attribute chain that starts at a root name."""
    undeclared = meta.find_undeclared_variables(ast)
    chains: list[list[str]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if chain and chain[0] in ROOTS:
            chains.append(chain)
    # keep the longest chains only (steps.a.outputs.x implies steps.a)
    chains.sort(key=len, reverse=True)
    kept: list[list[str]] = []
    for c in chains:
        if not any(k[: len(c)] == c for k in kept):
            kept.append(c)
    return set(undeclared), kept
