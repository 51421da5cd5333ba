"""`opsctl list | show | actions | schema`: what runbooks and actions exist."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from opsctl.cli.run_cmd import Output, complete_runbook


def list_runbooks(
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> int:
    """List the runbooks found in ./runbooks, OPSCTL_RUNBOOK_PATH and the package."""
    from rich.console import Console
    from rich.table import Table

    from opsctl.catalog import check_file, runbook_files

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in runbook_files():
        rb, errors = check_file(str(path))
        if rb is None:
            rows.append({"id": path.stem[:6], "title": f"INVALID ({len(errors)} errors)",
                         "severity": "", "triggers": [], "path": str(path), "valid": False})
        elif rb.id not in seen:
            seen.add(rb.id)
            rows.append({"id": rb.id, "title": rb.title, "severity": rb.severity,
                         "triggers": list(rb.triggers), "options": [o.name for o in rb.options],
                         "path": str(path), "valid": True})
    if output == Output.json:
        typer.echo(json.dumps(rows, indent=2))
        return 0
    table = Table()
    for col in ("id", "severity", "title", "triggers"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["id"], r["severity"], r["title"], ", ".join(r["triggers"]))
    Console().print(table)
    return 0


def show(
    runbook: Annotated[str, typer.Argument(help="Runbook id or file.", autocompletion=complete_runbook)],
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml: its "
                                            "parameter values and escalation contacts.")] = None,
) -> int:
    """Show a runbook as a readable procedure, per phase and option."""
    from rich.console import Console
    from rich.markdown import Markdown

    from opsctl import config
    from opsctl.catalog import load

    rb = load(runbook)
    Console().print(Markdown(procedure(rb, config.load_environment(env))))
    return 0


def procedure(rb: Any, environment: Any = None) -> str:
    lines = [f"# {rb.id}: {rb.title} ({rb.severity})", "", rb.summary, ""]
    if rb.triggers:
        lines += ["**Triggers:** " + ", ".join(f"`{t}`" for t in rb.triggers), ""]
    if rb.params:
        here = environment.params_for(rb) if environment else {}
        lines += ["## Parameters", ""]
        env_name = environment.name if environment else ""
        lines += [f"- `{p.name}` ({p.type}{', required' if p.required else ''}"
                  f"{', default ' + repr(p.default) if p.default is not None else ''}"
                  + (f", in {env_name}: {'***' if p.secret else repr(here[p.name])}"
                     if p.name in here else "")
                  + f"): {p.description}"
                  for p in rb.params.values()]
        lines.append("")
    for phase, steps in rb.phases.items():
        if not steps:
            continue
        lines += [f"## {phase.capitalize()}", ""]
        groups: list[tuple[str | None, list[Any]]] = []
        for st in steps:
            if not groups or groups[-1][0] != st.option:
                groups.append((st.option, []))
            groups[-1][1].append(st)
        for opt_name, group in groups:
            if opt_name:
                opt = rb.option(opt_name)
                lines += [f"### Option `{opt_name}`: {opt.title if opt else ''}", ""]
                if opt and opt.description:
                    lines += [opt.description, ""]
            for i, st in enumerate(group, 1):
                lines.append(f"{i}. **{st.label}** (`{st.action}`" +
                             (f", when `{st.when}`" if st.when else "") + ")")
                if st.description:
                    lines.append(f"   {st.description.strip()}")
                lines += [f"   - expect `{e.that}` ({e.severity})" for e in st.expect]
            lines.append("")
    if rb.escalation:
        lines += ["## Escalation", ""]
        for e in rb.escalation:
            who = e.get("contact") or (environment.contact(e["to"]) if environment else "")
            if not who:
                named = environment is not None and environment.source != "environment variables"
                env_name = environment.name if named else "NAME"
                from opsctl.config import role_key

                who = (f"(no contact: set environments.{env_name}.settings.escalation."
                       f"{role_key(e['to'])} in opsctl.yaml)")
            lines.append(f"- after {e.get('after', 'immediately')}: **{e['to']}** {who}"
                         + (f": {e['notes']}" if e.get("notes") else ""))
        lines.append("")
    if rb.references:
        lines += ["## References", ""] + [f"- {r}" for r in rb.references]
    return "\n".join(lines)


def actions(
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> int:
    """List the registered actions, read-only or mutating, with their arguments."""
    from rich.console import Console
    from rich.table import Table

    from opsctl.actions import load_all

    registry = load_all()
    rows = [{"name": n, "backend": c.backend, "read_only": c.read_only, "summary": c.summary,
             "arguments": c.schema.get("properties", {}), "required": c.schema.get("required", [])}
            for n, c in sorted(registry.items())]
    if output == Output.json:
        typer.echo(json.dumps(rows, indent=2))
        return 0
    table = Table()
    for col in ("action", "kind", "arguments", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        args = ", ".join(a + ("*" if a in r["required"] else "") for a in r["arguments"])
        table.add_row(r["name"], "read-only" if r["read_only"] else "[red]mutating[/]", args,
                      r["summary"])
    Console().print(table)
    return 0


def schema() -> int:
    """Print the runbook JSON Schema (for editors: see docs/runbook-format.md)."""
    from opsctl.actions import load_all
    from opsctl.schema import runbook_schema

    typer.echo(json.dumps(runbook_schema(load_all(), editor=True), indent=2))
    return 0
