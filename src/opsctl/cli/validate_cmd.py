"""`opsctl validate [PATH...]`: every error of every file, as file:line:col: path: message.

The options as Typer declares them (help, completion, errors); a plain command line is run by
``cli.fastpath`` (its table ``VALIDATE``, checked against this command by a test) before Typer is
even imported, with the same ``run`` (``cli.validate_fast``)."""

from __future__ import annotations

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
    from opsctl.cli.validate_fast import run

    return run(paths or [], as_json=output == Output.json, jobs=jobs, use_cache=cache)
