"""`opsctl validate [PATH...]`: every error of every file, as file:line:col: path: message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli.run_cmd import Output


def validate(
    paths: Annotated[list[str] | None, typer.Argument(help="Runbook files or directories "
                                                      "(default: ./runbooks).")] = None,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0,
                                      help="Worker processes (0: one per core, at most 8).")] = 0,
    cache: Annotated[bool, typer.Option("--cache/--no-cache",
                                        help="Reuse the verdicts on unchanged files "
                                             "(keyed by content, opsctl and its action registry).")
                     ] = True,
    alerts: Annotated[str | None, typer.Option("--alerts", metavar="DIR", help="Replay the stored "
                                               "alert payloads of DIR through the runbooks' triggers."
                                               )] = None,
) -> int:
    """Validate runbooks (schema + semantic checks); exit 0 when clean, 2 on any error."""
    if alerts:
        from opsctl.cli.alert_cmds import validate_alerts

        return validate_alerts(paths, alerts, output)
    from opsctl.catalog import expand_paths
    from opsctl.errors import UsageError
    from opsctl.validation import validate_files

    targets = paths or (["runbooks"] if Path("runbooks").is_dir() else [])
    if not targets:
        raise UsageError("nothing to validate: give runbook files or directories "
                         "(no ./runbooks directory here)")
    files = expand_paths(targets)
    if not files:
        raise UsageError(f"no runbook files (*.yaml) in {', '.join(targets)}")
    errors = validate_files(files, jobs=jobs, use_cache=cache)
    if output == Output.json:
        typer.echo(json.dumps([e.as_dict() for e in errors], indent=2))
    else:
        for err in errors:
            typer.echo(str(err))
        bad = len({e.location.file for e in errors})
        summary = f"{len(files)} file(s) checked, {len(errors)} error(s) in {bad} file(s)"
        typer.echo(summary if errors else f"{len(files)} file(s) checked: all valid", err=True)
    return 2 if errors else 0
