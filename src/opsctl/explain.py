"""Why a step was skipped, in words: ``when: params.deployment != ''`` false reads "no deployment
given (-p deployment=...)", not the raw expression.

Understands the shapes runbooks use (comparisons of a name with a constant, ``not``, ``and``/``or``,
``run.option == '...'``, ``run.dry_run``); anything else falls back to "its condition is false"
with the names it looked at and their values.
"""

from __future__ import annotations

from typing import Any

from jinja2 import nodes

_OPS = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<=", "in": "in",
        "notin": "not in"}
_MISSING = object()


class _Unknown(Exception):
    pass


def why_false(expr: str, context: dict[str, Any]) -> str:
    from opsctl import templating

    try:
        ast = templating.parse(expr, expression=True)
        node = ast.body[0].nodes[0]  # type: ignore[attr-defined]
        return _why(node, context)
    except Exception:  # noqa: BLE001 - an explanation must never fail the run
        return f"its condition is false ({templating.strip_braces(expr)})"


def _chain(node: nodes.Node) -> list[str] | None:
    if isinstance(node, nodes.Name):
        return [node.name]
    if isinstance(node, nodes.Getattr):
        base = _chain(node.node)
        return None if base is None else [*base, node.attr]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _chain(node.node)
        return None if base is None else [*base, str(node.arg.value)]
    return None


def _value(node: nodes.Node, ctx: dict[str, Any]) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        return [_value(item, ctx) for item in node.items]
    path = _chain(node)
    if path is not None:
        cur: Any = ctx
        for part in path:
            cur = cur.get(part, _MISSING) if isinstance(cur, dict) else getattr(cur, part, _MISSING)
            if cur is _MISSING:
                raise _Unknown
        return cur
    if isinstance(node, nodes.Not):
        return not _value(node.node, ctx)
    if isinstance(node, nodes.And):
        return _value(node.left, ctx) and _value(node.right, ctx)
    if isinstance(node, nodes.Or):
        return _value(node.left, ctx) or _value(node.right, ctx)
    if isinstance(node, nodes.Compare) and len(node.ops) == 1:
        left, right, op = _value(node.expr, ctx), _value(node.ops[0].expr, ctx), node.ops[0].op
        return {"eq": lambda: left == right, "ne": lambda: left != right, "gt": lambda: left > right,
                "gteq": lambda: left >= right, "lt": lambda: left < right, "lteq": lambda: left <= right,
                "in": lambda: left in right, "notin": lambda: left not in right}[op]()
    raise _Unknown


def _name(node: nodes.Node) -> str:
    path = _chain(node)
    if path is None:
        raise _Unknown
    if path[0] == "steps" and len(path) > 3 and path[2] in ("result", "outputs"):
        return f"{'.'.join(path[3:])} of step {path[1]}"
    return ".".join(path[1:]) if path[0] in ("params", "run") else ".".join(path)


def _why(node: nodes.Node, ctx: dict[str, Any]) -> str:
    try:
        if isinstance(node, nodes.And):  # name the part that is false
            part = node.left if not _value(node.left, ctx) else node.right
            return _why(part, ctx)
        if isinstance(node, nodes.Or):
            return f"{_why(node.left, ctx)}, and {_why(node.right, ctx)}"
        path = _chain(node)
        if path == ["run", "dry_run"]:
            return "runs in a dry-run only"
        if isinstance(node, nodes.Not):
            inner = _chain(node.node)
            if inner == ["run", "dry_run"]:
                return "a dry-run applied nothing, so there is nothing to check"
            if inner is not None:
                return f"{_name(node.node)} is {_show(_value(node.node, ctx))}"
            raise _Unknown
        if path is not None:
            if path[0] == "params" and not isinstance(_value(node, ctx), bool | int | float):
                return f"no {_name(node)} given (-p {path[-1]}=...)"
            return f"{_name(node)} is {_show(_value(node, ctx))}"
        if isinstance(node, nodes.Compare) and len(node.ops) == 1:
            lhs, op, rhs = node.expr, node.ops[0].op, node.ops[0].expr
            lpath = _chain(lhs)
            if lpath == ["run", "option"] and op == "eq" and isinstance(rhs, nodes.Const):
                return f"option {rhs.value} was not chosen"
            if lpath == ["run", "option"] and op == "in":
                return f"none of the options {', '.join(map(str, _value(rhs, ctx)))} was chosen"
            if lpath and lpath[0] == "params" and op == "ne" and isinstance(rhs, nodes.Const) \
                    and rhs.value in ("", None, 0):
                return f"no {_name(lhs)} given (-p {lpath[-1]}=...)"
            want = _show(_value(rhs, ctx)) if isinstance(rhs, nodes.Const) else _name(rhs)
            return f"{_name(lhs)} is {_show(_value(lhs, ctx))}, not {_OPS[op]} {want}"
    except (_Unknown, KeyError, TypeError):
        pass
    raise _Unknown


def _show(value: Any) -> str:
    if value in ("", None):
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
