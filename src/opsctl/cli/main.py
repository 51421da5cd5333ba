"""Entry point: the Typer app, its commands and the single error handler.

Only typer and the stdlib are imported here; each command imports the engine when it runs, so
``opsctl --help`` and shell completion never pay for Jinja, jsonschema or any backend client.
"""

from __future__ import annotations

from typing import Annotated

import typer

from opsctl import __version__
from opsctl.cli import (
    alert_cmds,
    catalog_cmds,
    doctor_cmd,
    export_cmds,
    new_cmd,
    permissions_cmd,
    plan_cmds,
    rehearse_cmd,
    run_cmd,
    runs_cmds,
    validate_cmd,
)
from opsctl.cli.guard import boundary

app = typer.Typer(
    name="opsctl", no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Executable runbooks: diagnose -> mitigate -> verify, with plans, confirmations and "
         "a dry-run that changes nothing.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Executable runbooks for on-call engineers."""


app.command("run")(run_cmd.run)
app.command("validate")(validate_cmd.validate)
app.command("list")(catalog_cmds.list_runbooks)
app.command("show")(catalog_cmds.show)
app.command("actions")(catalog_cmds.actions)
app.command("schema")(catalog_cmds.schema)
app.command("plan")(plan_cmds.plan)
app.command("apply")(plan_cmds.apply)
app.command("show-plan")(plan_cmds.show_plan)
app.command("runs")(runs_cmds.runs)
app.command("report")(runs_cmds.report)
app.command("alert")(alert_cmds.alert)
app.command("serve")(alert_cmds.serve)
app.command("permissions")(permissions_cmd.permissions)
app.add_typer(export_cmds.app, name="export")
app.command("doctor")(doctor_cmd.doctor)
app.command("rehearse")(rehearse_cmd.rehearse)
app.command("new")(new_cmd.new)


def main() -> None:
    """Run the app inside the CLI's error boundary (cli.guard), which also answers Typer's own
    exceptions here."""
    try:  # typer >= 0.20 vendors click; its exceptions are not click's
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover - older typer on real click
        from click import exceptions as click  # type: ignore[no-redef]

    from opsctl.errors import ExitCode

    def typer_errors(e: Exception) -> int | None:
        if isinstance(e, typer.Exit):
            return int(e.exit_code)
        if isinstance(e, typer.Abort):
            typer.echo("aborted", err=True)
            return int(ExitCode.INTERRUPTED)
        if isinstance(e, click.ClickException):
            e.show()
            return int(e.exit_code)
        return None

    boundary(lambda: app(standalone_mode=False), typer_errors)
