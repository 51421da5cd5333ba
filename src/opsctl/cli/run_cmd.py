"""`opsctl run RUNBOOK`: resolve, type the params, pick the environment, hand over to the executor."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer


class Phase(StrEnum):
    diagnose = "diagnose"
    mitigate = "mitigate"
    verify = "verify"
    rollback = "rollback"


class Output(StrEnum):
    text = "text"
    json = "json"


def complete_runbook(incomplete: str) -> list[tuple[str, str]]:
    from opsctl.catalog import quick_index

    return [(e.id, e.title) for e in quick_index() if e.id.startswith(incomplete)]


def parse_params(pairs: list[str]) -> dict[str, str]:
    from opsctl.errors import UsageError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param expects KEY=VALUE, got {pair!r}")
        if key.strip() in out:
            # values are not repeated here: a parameter may be a secret
            raise UsageError(f"--param {key.strip()!r} given twice: give each parameter once")
        out[key.strip()] = value
    return out


def run(
    runbook: Annotated[str, typer.Argument(help="Runbook id (rb-006) or path to a runbook file.",
                                           autocompletion=complete_runbook)],
    dry_run: Annotated[bool, typer.Option("--dry-run",
                                          help="Diagnose for real, only plan mutations.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve every mutation without asking.")] = False,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", metavar="KEY=VALUE",
                                                    help="Runbook parameter (repeatable).")] = None,
    option: Annotated[str | None, typer.Option("--option", help="Mitigation option to apply "
                                               "('none' skips mitigation).")] = None,
    phase: Annotated[Phase | None, typer.Option("--phase", help="Run only this phase.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml.")] = None,
    output: Annotated[Output, typer.Option("--output", "-o",
                                           help="text for people, json for tools.")] = Output.text,
    resume: Annotated[str | None, typer.Option("--resume", metavar="RUN_ID",
                                               help="Continue a failed or interrupted run.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every result in full.")] = False,
) -> int:
    """Run a runbook: diagnose -> mitigate (plan, confirm, apply) -> verify."""
    from opsctl import audit, catalog, config
    from opsctl.executor import Executor, RunSettings

    rb = catalog.load(runbook)
    given = parse_params(param or [])
    previous, resumed_from = None, None
    if resume:
        given, option, previous, resumed_from = _resume(rb, resume, given, option)
    _check_option(rb, option)
    params = rb.resolve_params(given)
    if option and option != "none":
        rb.check_requires(option, params)
    environment = config.load_environment(env)
    settings = RunSettings(dry_run=dry_run, yes=yes, interactive=sys.stdin.isatty(), option=option,
                           phase=phase.value if phase else None)
    log = audit.RunLog(audit.new_run_id(rb.id), resumed_from=resumed_from)
    renderer = _renderer(output, verbose)
    log.start(rb, params, environment.name, settings, sys.argv[1:])
    renderer.secrets = log.secrets
    renderer.start(rb, environment, log.run_id, dry_run, audit.redact(rb.redacted(params)))
    outcome = Executor(rb, params, environment, settings, renderer, log, previous).execute()
    log.end(outcome)
    renderer.finish(outcome)
    if outcome.status == "invalid":  # decided mid-run (e.g. no option chosen): say it where errors go
        typer.echo(f"error: {outcome.message}", err=True)
    return outcome.exit_code


def _renderer(output: Output, verbose: bool) -> Any:
    from opsctl.render import HumanRenderer, JsonRenderer

    return JsonRenderer() if output == Output.json else HumanRenderer(verbose=verbose)


def _check_option(rb: Any, option: str | None) -> None:
    from opsctl.errors import UsageError
    from opsctl.schema import did_you_mean

    names = [o.name for o in rb.options]
    if option and option != "none" and option not in names:
        raise UsageError(f"{rb.id} has no option {option!r}{did_you_mean(option, names)}; "
                         f"options: {', '.join(names) or 'none'}")


def _resume(rb: Any, run_id: str, given: dict[str, str], option: str | None) -> tuple[Any, ...]:
    from opsctl import audit
    from opsctl.errors import UsageError

    events = audit.read_run(run_id)
    start = events[0]
    if start["runbook"] != rb.id:
        raise UsageError(f"run {run_id} is a run of {start['runbook']}, not {rb.id}")
    secret = {k for k, p in rb.params.items() if p.secret}
    previous_params = {k: str(v) for k, v in (start.get("params") or {}).items()
                       if v is not None and k not in secret and k in rb.params}
    changed = {k: v for k, v in given.items() if previous_params.get(k) != v}
    if changed:
        typer.echo(f"resuming {run_id} with changed parameters: "
                   + ", ".join(f"{k}={v}" for k, v in changed.items()), err=True)
    option = option or start.get("option") or next(
        (e.get("chosen") for e in events if e["event"] == "option" and e.get("chosen")), None)
    return {**previous_params, **given}, option, audit.final_records(events), start["run_id"]
