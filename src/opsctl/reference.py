"""The action reference, generated from the registry: `opsctl actions [NAME]` and docs/actions.md
(``opsctl actions --markdown > docs/actions.md``; tests/engine/test_action_reference.py fails when the
checked-in page is stale)."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

_EXAMPLE = re.compile(r"```ya?ml\n(.*?)```", re.S)


def _type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return " | ".join(json.dumps(v) for v in spec["enum"])
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return " or ".join(dict.fromkeys(_type(s) for s in spec[key]))
    t = spec.get("type", "any")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and isinstance(spec.get("items"), dict):
        return f"list of {_type(spec['items'])}"
    return str(t)


def describe(cls: Any) -> dict[str, Any]:
    """One action as plain data: what `opsctl actions NAME` and the reference show."""
    doc = inspect.getdoc(cls) or ""
    example = _EXAMPLE.search(doc)
    prose = "\n\n".join(" ".join(para.split()) for para in _EXAMPLE.sub("", doc).strip().split("\n\n")
                         if para.strip())
    props = cls.schema.get("properties", {})
    required = set(cls.schema.get("required", []))
    args = [{"name": n, "type": _type(s), "required": n in required,
             "default": s.get("default"), "description": s.get("description", "")}
            for n, s in props.items()]
    perms = getattr(cls, "permissions", None)
    return {"name": cls.name, "backend": cls.backend, "read_only": cls.read_only, "summary": cls.summary,
            "description": prose, "arguments": args, "example": example.group(1).rstrip() if example else "",
            **({"permissions": _perms(perms)} if perms is not None else {})}


def _perms(perms: Any) -> list[str]:
    if isinstance(perms, str):
        return [perms]
    if isinstance(perms, dict):
        return [f"{k}: {v}" for k, v in perms.items()]
    try:
        return [str(p) for p in perms]
    except TypeError:
        return [str(perms)]


def markdown(registry: dict[str, Any]) -> str:
    items = [describe(c) for _, c in sorted(registry.items())]
    lines = ["# Action reference", "",
             "Generated from the action registry by `opsctl actions --markdown > docs/actions.md`;",
             "do not edit by hand (a test fails when it is stale). The backend pages in",
             "`docs/backends/` explain how the actions behave; `opsctl actions NAME` shows one action",
             "in a terminal.", ""]
    for backend in sorted({i["backend"] for i in items}):
        lines += [f"- [{backend}](#{backend})"]
    lines.append("")
    for backend in sorted({i["backend"] for i in items}):
        lines += [f"## {backend}", ""]
        for i in (i for i in items if i["backend"] == backend):
            kind = "read-only" if i["read_only"] else "**mutating** (planned, shown, confirmed, applied)"
            lines += [f"### `{i['name']}`", "", f"{kind}: {i['summary']}", ""]
            if i["description"]:
                lines += [i["description"], ""]
            if "permissions" in i:
                lines += ["Permissions: " + (", ".join(f"`{p}`" for p in i["permissions"]) or "none"), ""]
            if i["arguments"]:
                lines += ["| argument | type | default | meaning |", "|---|---|---|---|"]
                for a in i["arguments"]:
                    default = "required" if a["required"] else (
                        "" if a["default"] is None else f"`{json.dumps(a['default'])}`")
                    desc = " ".join(str(a["description"]).split()).replace("|", "\\|")
                    lines.append(f"| `{a['name']}` | {a['type'].replace('|', '/')} | {default} | {desc} |")
                lines.append("")
            else:
                lines += ["No arguments.", ""]
            if i["example"]:
                lines += ["```yaml", i["example"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"
