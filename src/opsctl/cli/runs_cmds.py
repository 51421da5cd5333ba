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
    console = Console()
    wide = console.width >= 110  # at 80 columns: the id (it holds the start time and the runbook)
    table = Table(caption=None if wide else "the run id starts with its UTC start time and runbook")
    table.add_column("run id", no_wrap=True)  # it is copied into `opsctl report`
    if wide:
        for col in ("runbook", "started", "user"):
            table.add_column(col)
    for col in ("mode", "status", "exit"):
        table.add_column(col, no_wrap=True)
    for r in items:
        extra = [r["runbook"], str(r["started"]).replace("T", " ")[:19], str(r["user"])] if wide else []
        table.add_row(r["run_id"], *extra, "dry-run" if r["dry_run"] else "live",
                      str(r["status"]).replace("_", " "), str(r["exit_code"]))
    console.print(table)
    return 0


def report(
    run_id: Annotated[str, typer.Argument(help="A run id from `opsctl runs` (a unique part is enough).")],
) -> int:
    """Render a run as a Markdown incident timeline for the post-mortem."""
    from opsctl.report import markdown

    typer.echo(markdown(run_id))
    return 0
