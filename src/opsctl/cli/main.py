"""Entry point: the Typer app, its commands and the single error handler.

Only typer and the stdlib are imported here; each command imports the engine when it runs, so
``opsctl --help`` and shell completion never pay for Jinja, jsonschema or any backend client.
"""

from __future__ import annotations

import signal
import sys
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
from opsctl.cli.guard import crash, hostile_streams, quiet_exit

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
    """Run the app; every error becomes one message and an exit code (see errors.ExitCode)."""
    try:  # typer >= 0.20 vendors click; its exceptions are not click's
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover - older typer on real click
        from click import exceptions as click  # type: ignore[no-redef]

    from opsctl.errors import ExitCode, OpsctlError, ValidationFailed

    hostile_streams()
    try:
        # from here on Ctrl-C is a KeyboardInterrupt again (opsctl.__main__ exits quietly before)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = app(standalone_mode=False)
    except ValidationFailed as e:
        for err in e.errors:
            typer.echo(str(err), err=True)
        typer.echo(f"{len(e.errors)} error(s); fix the runbook (`opsctl validate` checks it)", err=True)
        code = e.exit_code
        _json_error(code, "invalid", str(e), [err.as_dict() for err in e.errors])
    except OpsctlError as e:
        typer.echo(f"error: {e}", err=True)
        code = e.exit_code
        _json_error(code, "backend_error" if code == ExitCode.BACKEND else "invalid", str(e))
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = ExitCode.INTERRUPTED
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        code = ExitCode.INTERRUPTED
    except Exception:
        code = crash()
    # a Ctrl-C from now on (interpreter shutdown) must not print a traceback either
    signal.signal(signal.SIGINT, quiet_exit)
    sys.exit(code if isinstance(code, int) else 0)


def _json_error(code: int, status: str, message: str, errors: list[dict[str, object]] | None = None) -> None:
    """With `run -o json`, automation gets a JSON document even when the run never started."""
    argv = sys.argv[1:]
    wants_json = any(a in ("--output=json", "-ojson") for a in argv) or any(
        a in ("-o", "--output") and b == "json" for a, b in zip(argv, argv[1:], strict=False))
    if wants_json and argv[:1] in (["run"], ["plan"], ["apply"]):
        import json

        doc: dict[str, object] = {"status": status, "exit_code": code, "message": message}
        if errors:
            doc["errors"] = errors
        typer.echo(json.dumps(doc, indent=2))
