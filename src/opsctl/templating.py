"""Jinja2 in a sandbox: templates for `with` values, bare expressions for `when`/`expect`/`until`.

The sandbox blocks access to Python internals (``__class__``, ``__globals__``, ...); StrictUndefined
turns a typo such as ``steps.usage.result.pct_used`` into an error instead of an empty string.
"""

from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
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


_MAX_SIZE = 1_000_000  # items or characters a template operator may produce
_MAX_POWER_BITS = 10_000


def _guarded_binop(operator: str, left: Any, right: Any) -> Any:
    """``*``, ``**`` and ``%`` with a bound on what they produce (``'a' * 10**9`` is refused, not
    allocated)."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > _MAX_SIZE:
                raise SecurityError(f"'*' would produce more than {_MAX_SIZE} items")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 \
            and abs(left) > 1 and right * abs(left).bit_length() > _MAX_POWER_BITS:
        raise SecurityError(f"'**' would produce a number of more than {_MAX_POWER_BITS} bits")
    elif operator == "%" and isinstance(left, str):
        _no_huge_widths("'%'", left)
    return _BINOPS[operator](left, right)


_BINOPS = {"*": operator.mul, "**": operator.pow, "%": operator.mod}


class _NoFolding(CodeGenerator):
    """Never evaluate an expression while compiling (Jinja folds constant output, so that
    ``{{ 'x' | center(10**9) }}`` would allocate before anything runs)."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> str:
        raise nodes.Impossible()


_WIDTH = re.compile(r"\d{7}")  # a width or precision of a million or more in a format string


def _no_huge_widths(what: str, fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDTH.search(fmt):
        raise SecurityError(f"{what}: a format width over {_MAX_SIZE}")


def _no_huge_ints(what: str, args: Any, kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_SIZE:
            raise SecurityError(f"{what} with a size over {_MAX_SIZE}")


def _sized(name: str, func: Any) -> Any:
    """A filter that pads or wraps to a width, refusing widths that would allocate gigabytes."""

    @functools.wraps(func)  # keeps Jinja's pass_environment/pass_context marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _no_huge_ints(f"filter {name!r}", args[1:], kwargs)
        if name == "format" and args:
            _no_huge_widths("filter 'format'", args[0])
        return func(*args, **kwargs)

    return guarded


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(_BINOPS)  # also keeps them out of constant folding
    code_generator_class = _NoFolding

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``result.keys`` is the result's ``keys`` value, not ``dict.keys``: in the plain data that
        actions and parameters give, a key wins over a method of the same name (Jinja tries the
        attribute first: rb-010 printed "0 of <built-in method keys ...> keys have a TTL")."""
        if isinstance(obj, dict) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return _guarded_binop(operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if getattr(__obj, "__name__", "") in _PADDING_METHODS:  # 'x'.ljust(10**9), ...
            _no_huge_ints(f"{__obj.__name__}()", args, kwargs)
            _no_huge_widths(f"{__obj.__name__}()", getattr(__obj, "__self__", None))
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:  # '{:>999999999}'.format(1)
        name = getattr(value, "__name__", "")
        if name in ("format", "format_map"):
            _no_huge_widths(f"{name}()", getattr(value, "__self__", None))
        return super().wrap_str_format(value)


_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs", "format",
                              "format_map"})


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                       optimized=False)
    for name in ("center", "indent", "wordwrap", "format", "batch", "slice"):
        env.filters[name] = _sized(name, env.filters[name])
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
    except (Exception, RecursionError, MemoryError) as e:  # the runbook's, with the expression
        raise TemplateError(f"cannot evaluate {expr!r}: {_explain(e)}") from None


def _register_tiny_rendering(template: str, out: str, context: dict[str, Any]) -> None:
    """A tiny secret (1-3 characters) cannot be masked as a word without garbling the output
    ("exit 1"): a text rendered from it is registered with its rendering from the masked
    parameters, and shown that way wherever it appears (errors.mask)."""
    from opsctl.errors import register_rendering, tiny_secrets

    tiny = tiny_secrets()
    params = context.get("params")
    if not tiny or not isinstance(params, dict) or not any(t in out for t in tiny):
        return
    hidden = {k: "***" if isinstance(v, str) and v in tiny else v for k, v in params.items()}
    if hidden != params:
        register_rendering(out, _compiled_template(template).render(**{**context, "params": hidden}))


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
        out = _compiled_template(value).render(**context)
        _register_tiny_rendering(value, out, context)
        return out
    except TemplateSyntaxError as e:
        raise TemplateError(f"invalid template {value!r}: {e.message}") from None
    except (Exception, RecursionError, MemoryError) as e:
        raise TemplateError(f"cannot render {value!r}: {_explain(e)}") from None


# ---- static analysis (validation and the dependency graph) ------------------------------------
# Validation parses each distinct text once (runbooks repeat `{{ params.x }}` a lot) and never
# compiles or evaluates anything: the AST is walked for names, filters and tests.

MAX_TEMPLATE = 65_536  # characters of one template
MAX_BRACKETS = 32  # nesting of (), [], {} inside one template
_BRACKET = re.compile(r"[()\[\]{}]")
_BUILTIN_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "super", "self"})
CHAIN_DEPTH = 4  # what the checks read of a chain: steps.<id>.outputs.<name>, params.<name>


@dataclass(frozen=True)
class Analysis:
    roots: frozenset[str]  # undeclared names
    chains: tuple[tuple[str, ...], ...]  # attribute chains from a root name (their first
    # CHAIN_DEPTH names), longest only
    problems: tuple[str, ...]  # unknown filters or tests, includes, ...


_ANALYSES: dict[tuple[str, bool], Analysis | str] = {}


def analyse(text: str, *, expression: bool) -> Analysis:
    """What a template uses; raises TemplateError (one line) when it cannot be parsed."""
    key = (text, expression)
    got = _ANALYSES.get(key)
    if got is None:
        try:
            got = _analyse(text, expression)
        except TemplateError as e:
            got = str(e)
        except (RecursionError, MemoryError):
            got = f"invalid Jinja {'expression' if expression else 'template'}: nested too deeply"
        if len(_ANALYSES) > 50_000:
            _ANALYSES.clear()
        _ANALYSES[key] = got
    if isinstance(got, str):
        raise TemplateError(got)
    return got


def _nesting(text: str) -> int:
    depth = deepest = 0
    for m in _BRACKET.finditer(text):
        depth += 1 if m.group() in "([{" else -1
        deepest = max(deepest, depth)
    return deepest


def _analyse(text: str, expression: bool) -> Analysis:
    kind = "expression" if expression else "template"
    if len(text) > MAX_TEMPLATE:
        raise TemplateError(f"Jinja {kind} of {len(text)} characters (the limit is {MAX_TEMPLATE})")
    if _nesting(text) > MAX_BRACKETS:
        raise TemplateError(f"invalid Jinja {kind}: brackets nested more than {MAX_BRACKETS} deep")
    return _walk(parse(text, expression=expression))


def _children(node: nodes.Node) -> list[nodes.Node]:
    """``node.iter_child_nodes()`` as one list (Jinja's two nested generators were a third of the
    walk)."""
    out: list[nodes.Node] = []
    for name in node.fields:
        item = getattr(node, name, None)
        if isinstance(item, nodes.Node):
            out.append(item)
        elif isinstance(item, list):
            out += [n for n in item if isinstance(n, nodes.Node)]
    return out


def _walk(ast: nodes.Node) -> Analysis:
    env = environment()
    loaded: set[str] = set()
    stored: set[str] = set()
    problems: list[str] = []
    chains: list[tuple[str, ...]] = []
    stack: list[tuple[nodes.Node, bool]] = [(ast, False)]  # (node, inside a chain already seen)
    while stack:
        node, inside = stack.pop()
        if isinstance(node, nodes.Name):
            (loaded if node.ctx == "load" else stored).add(node.name)
        elif isinstance(node, nodes.Filter | nodes.Test) and node.name is not None:
            known = env.filters if isinstance(node, nodes.Filter) else env.tests
            if node.name not in known:
                from opsctl.schema import did_you_mean

                what = "filter" if isinstance(node, nodes.Filter) else "test"
                problems.append(f"unknown {what} {node.name!r}{did_you_mean(node.name, known)}")
        elif isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
            problems.append("a runbook template cannot include or import other templates")
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            chain = None if inside else _chain(node)
            if chain and chain[0] in ROOTS:
                chains.append(tuple(chain[:CHAIN_DEPTH]))
            # the chain of `a.b.c` holds those of `a.b` and `a`: do not walk it again (quadratic)
            stack.extend((child, (inside or chain is not None) and child is node.node)
                         for child in _children(node))
        else:
            stack.extend((child, False) for child in _children(node))
    # keep the longest chains only (steps.a.outputs.x implies steps.a)
    # (a set of the kept chains' prefixes: comparing each chain with every kept one is quadratic,
    # seconds for the few thousand chains a 64 KB template can hold)
    chains.sort(key=len, reverse=True)
    kept: list[tuple[str, ...]] = []
    covered: set[tuple[str, ...]] = set()
    for c in chains:
        if c not in covered:
            kept.append(c)
            covered.update(c[:i] for i in range(1, len(c) + 1))
    return Analysis(frozenset(loaded - stored - _BUILTIN_NAMES), tuple(kept), tuple(problems))


def parse(text: str, *, expression: bool) -> nodes.Template:
    """Parse a template or a bare expression; raises TemplateError with Jinja's message."""
    source = "{{ " + strip_braces(text) + " }}" if expression else text
    try:
        # Environment.parse without its last pass, which walks the whole tree again to hand every
        # node the environment (only compiling needs it; nothing here compiles these trees)
        return nodes.Template(Parser(environment(), source).subparse(), lineno=1)
    except TemplateSyntaxError as e:
        kind = "expression" if expression else "template"
        raise TemplateError(f"invalid Jinja {kind}: {e.message}") from None


def _chain(node: nodes.Node) -> list[str] | None:
    """``steps.usage.result`` / ``steps['usage']`` -> ['steps', 'usage', 'result']."""
    out: list[str] = []
    while True:
        if isinstance(node, nodes.Name):
            out.append(node.name)
            return out[::-1]
        if isinstance(node, nodes.Getattr):
            out.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str):
            out.append(node.arg.value)
        else:
            return None
        node = node.node


def references(ast: nodes.Template) -> tuple[set[str], list[list[str]]]:
    """Undeclared root names, and every attribute chain that starts at a root name."""
    a = _walk(ast)
    return set(a.roots), [list(c) for c in a.chains]
