"""`opsctl list | show | actions | schema`: what runbooks and actions exist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from opsctl.cli.run_cmd import Output, complete_runbook


def list_runbooks(
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> int:
    """List the runbooks found in ./runbooks, OPSCTL_RUNBOOK_PATH and the package."""
    from opsctl.catalog import runbook_files
    from opsctl.validation import entries

    files = [str(p) for p in runbook_files()]
    # every file is validated; an unchanged file's verdict comes from `opsctl validate`'s cache
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, (errors, _, summary) in entries(files, jobs=1).items():
        if errors or summary is None:
            rows.append({"id": Path(path).stem[:6], "title": f"INVALID ({len(errors)} errors)",
                         "severity": "", "triggers": [], "path": path, "valid": False})
        elif summary["id"] not in seen:
            seen.add(summary["id"])
            rows.append({**{k: summary[k] for k in ("id", "title", "severity", "triggers", "options")},
                         "path": path, "valid": True})
    if output == Output.json:
        typer.echo(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

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

    from opsctl import catalog

    if env is None:  # the procedure as validate's cache keeps it
        Console().print(Markdown(catalog.procedure(runbook, procedure)))
        return 0
    from opsctl import config

    Console().print(Markdown(procedure(catalog.load(runbook), config.load_environment(env))))
    return 0


def _accepts(p: Any) -> str:
    """What a parameter accepts beyond its type: `: a | b` for a choice, ` min..max` for a range."""
    if p.choices:
        return ": " + " | ".join(map(str, p.choices))
    if p.min is None and p.max is None:
        return ""
    return f" {'' if p.min is None else p.min}..{'' if p.max is None else p.max}"


def procedure(rb: Any, environment: Any = None) -> str:
    lines = [f"# {rb.id}: {rb.title} ({rb.severity})", "", rb.summary, ""]
    if rb.triggers:
        lines += ["**Triggers:** " + ", ".join(f"`{t}`" for t in rb.triggers), ""]
    if rb.params:
        here = environment.params_for(rb) if environment else {}
        lines += ["## Parameters", ""]
        env_name = environment.name if environment else ""
        lines += [f"- `{p.name}` ({p.type}{_accepts(p)}{', required' if p.required else ''}"
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
    name: Annotated[str | None, typer.Argument(help="One action, shown in full.")] = None,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
    markdown: Annotated[bool, typer.Option("--markdown", help="The reference page (docs/actions.md).")
                        ] = False,
) -> int:
    """List the registered actions (read-only or mutating); `opsctl actions NAME` shows one in full:
    arguments with types and defaults, permissions, an example."""
    from opsctl.actions import load_all
    from opsctl.reference import describe

    registry = load_all()
    if markdown:
        from opsctl.reference import markdown as page

        typer.echo(page(registry), nl=False)
        return 0
    if name is not None:
        if name not in registry:
            from opsctl.errors import UsageError
            from opsctl.schema import did_you_mean

            raise UsageError(f"no action {name!r}{did_you_mean(name, list(registry))}; "
                             "`opsctl actions` lists them")
        one = describe(registry[name])
        if output == Output.json:
            typer.echo(json.dumps(one, indent=2))
        else:
            _show_action(one)
        return 0
    rows = [{"name": n, "backend": c.backend, "read_only": c.read_only, "summary": c.summary,
             "arguments": c.schema.get("properties", {}), "required": c.schema.get("required", [])}
            for n, c in sorted(registry.items())]
    if output == Output.json:
        typer.echo(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wide = console.width >= 120
    table = Table(caption="`opsctl actions NAME`: one action in full (arguments, permissions, example)")
    table.add_column("action", no_wrap=True)  # copied into runbooks: never cut
    table.add_column("kind", no_wrap=True)
    if wide:
        table.add_column("arguments (* required)", overflow="fold", ratio=1)
    table.add_column("summary", overflow="fold", ratio=2)
    for r in rows:
        kind = "read-only" if r["read_only"] else "[red]mutating[/]"
        args = ", ".join(a + ("*" if a in r["required"] else "") for a in r["arguments"])
        table.add_row(r["name"], kind, *([args] if wide else []), r["summary"])
    console.print(table)
    return 0


def _show_action(a: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.table import Table

    console = Console()
    kind = "read-only" if a["read_only"] else "[red]mutating[/] (planned, shown, confirmed, then applied)"
    console.print(f"[bold]{a['name']}[/]: {a['backend']}, {kind}")
    console.print(a["summary"], highlight=False)
    if a["description"]:
        console.print("\n" + a["description"], highlight=False)
    if "permissions" in a:
        console.print("\n[bold]permissions[/]: " + (", ".join(a["permissions"]) or "none"), highlight=False)
    if a["arguments"]:
        table = Table(title="arguments", title_justify="left")
        for col in ("name", "type", "default", "meaning"):
            table.add_column(col, overflow="fold", no_wrap=col == "name",
                             ratio=2 if col == "meaning" else None)
        for arg in a["arguments"]:
            default = "required" if arg["required"] else ("" if arg["default"] is None
                                                         else json.dumps(arg["default"]))
            table.add_row(arg["name"], arg["type"], default, " ".join(str(arg["description"]).split()))
        console.print(table)
    else:
        console.print("\nno arguments")
    if a["example"]:
        console.print("\n[bold]example[/]")
        console.print(Syntax(a["example"], "yaml", background_color="default"))


def schema() -> int:
    """Print the runbook JSON Schema (for editors: see docs/runbook-format.md)."""
    from opsctl.actions import load_all
    from opsctl.schema import runbook_schema

    typer.echo(json.dumps(runbook_schema(load_all(), editor=True), indent=2))
    return 0
