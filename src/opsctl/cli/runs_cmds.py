"""`opsctl runs` and `opsctl report RUN_ID`: the run log, and the post-mortem timeline."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from opsctl.cli.run_cmd import Output


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many recent runs.")] = 20,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> int:
    """List recent runs (newest first)."""
    from rich.console import Console
    from rich.table import Table

    from opsctl.audit import list_runs, state_dir

    items = list_runs(limit)
    if output == Output.json:
        typer.echo(json.dumps(items, indent=2))
        return 0
    if not items:
        typer.echo(f"no runs yet in {state_dir() / 'runs'}")
        return 0
    table = Table()
    table.add_column("run id", no_wrap=True)  # it is copied into `opsctl report`
    for col in ("runbook", "started", "user", "mode", "status", "exit"):
        table.add_column(col)
    for r in items:
        table.add_row(r["run_id"], r["runbook"], r["started"], str(r["user"]),
                      "dry-run" if r["dry_run"] else "live", r["status"], str(r["exit_code"]))
    Console().print(table)
    return 0


def report(
    run_id: Annotated[str, typer.Argument(help="A run id from `opsctl runs` (a unique part is enough).")],
) -> int:
    """Render a run as a Markdown incident timeline for the post-mortem."""
    from opsctl.report import markdown

    typer.echo(markdown(run_id))
    return 0
