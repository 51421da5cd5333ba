"""`opsctl plan`, `opsctl apply PLAN_FILE`, `opsctl show-plan PLAN_FILE`: review now, apply later."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from opsctl.cli.run_cmd import Output, complete_runbook


class PlanFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def plan(
    runbook: Annotated[str, typer.Argument(help="Runbook id (rb-006) or path to a runbook file.",
                                           autocompletion=complete_runbook)],
    out: Annotated[str, typer.Option("--out", metavar="FILE", help="Where to write the plan file.")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", metavar="KEY=VALUE",
                                                    help="Runbook parameter (repeatable); "
                                                         "KEY=@FILE reads the value from a file.")] = None,
    param_file: Annotated[list[str] | None, typer.Option(
        "--param-file", metavar="FILE", help="KEY=VALUE lines (secrets stay out of ps).")] = None,
    option: Annotated[str | None, typer.Option("--option", help="Mitigation option to plan (default: "
                                               "the one the diagnosis recommends).")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml.")] = None,
    expires: Annotated[str, typer.Option("--expires", metavar="DURATION",
                                         help="How long the plan may be applied (15m).")] = "15m",
    output: Annotated[Output, typer.Option("--output", "-o",
                                           help="text for people, json for tools.")] = Output.text,
    no_log: Annotated[bool, typer.Option("--no-log", help="Run without a run log.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every result in full.")] = False,
) -> int:
    """Diagnose and plan one mitigation exactly as --dry-run does, and write it as a plan file."""
    from opsctl import catalog, config, planfile
    from opsctl.cli import run_cmd
    from opsctl.errors import UsageError
    from opsctl.executor import Executor, RunSettings
    from opsctl.model import parse_duration

    try:
        ttl = parse_duration(expires)
    except ValueError as e:
        raise UsageError(f"--expires: {e}") from None
    if ttl <= 0:
        raise UsageError("--expires must be a positive duration")
    rb = catalog.load(runbook)
    run_cmd._check_option(rb, option)
    if option == "none":
        raise UsageError("--option none plans nothing: a plan file needs a mitigation option")
    environment = config.load_environment(env)
    params = rb.resolve_params(run_cmd.with_environment(rb, environment,
                                                        run_cmd.gather_params(param, param_file, rb)))
    if option:
        rb.check_requires(option, params)
    settings = RunSettings(dry_run=True, interactive=run_cmd._interactive(), option=option, one_option=True)
    log, renderer = run_cmd.open_run(rb, params, environment, settings, output, verbose, no_log)
    outcome = Executor(rb, params, environment, settings, renderer, log).execute()
    log.end(outcome)
    renderer.finish(outcome)
    if outcome.exit_code != 0:
        typer.echo(f"error: no plan written: {outcome.message}", err=True)
        return outcome.exit_code
    if rb.options and not outcome.option:
        raise UsageError(f"no plan written: the diagnosis recommends no mitigation option of {rb.id}; "
                         "choose one with --option NAME")
    doc = planfile.build(rb, runbook, params, environment, outcome, log.secrets, ttl)
    planfile.write(doc, out)
    if output == Output.text:
        typer.echo(f"plan written to {out} ({doc['digest'][:19]}, expires {doc['expires_at']}); "
                   f"review: opsctl show-plan {out}; apply: opsctl apply {out}")
    else:
        typer.echo(f"plan written to {out} ({doc['digest']})", err=True)
    return 0


def apply(
    plan_file: Annotated[str, typer.Argument(metavar="PLAN_FILE", help="A file written by `opsctl plan`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve without asking.")] = False,
    yes_protected: Annotated[str | None, typer.Option("--yes-protected", metavar="ENV",
                                                      help="With --yes in a protected environment: "
                                                           "its name.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", metavar="KEY=VALUE",
                                                    help="The plan's secret parameters (KEY=@FILE).")] = None,
    param_file: Annotated[list[str] | None, typer.Option("--param-file", metavar="FILE",
                                                         help="KEY=VALUE lines.")] = None,
    lock_wait: Annotated[float, typer.Option("--lock-wait", metavar="SECONDS",
                                             help="How long to wait for another apply of the same "
                                                  "target.")] = 30.0,
    output: Annotated[Output, typer.Option("--output", "-o",
                                           help="text for people, json for tools.")] = Output.text,
    no_log: Annotated[bool, typer.Option("--no-log", help="Run without a run log.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every result in full.")] = False,
) -> int:
    """Apply a plan file: refused (exit 3) when stale, expired or already applied."""
    from opsctl import config, planfile
    from opsctl.cli import run_cmd
    from opsctl.errors import NotConfirmed, UsageError
    from opsctl.executor import Executor, RunSettings
    from opsctl.locks import ApplyGate

    doc = planfile.load(plan_file)
    by = planfile.applied_by(doc)
    if by:
        raise NotConfirmed(planfile.already_applied(doc, by))
    planfile.claims_dir()  # exit 4 now, not after the diagnosis, when the claim cannot be written
    if planfile.expired(doc):
        raise NotConfirmed(f"the plan expired at {doc['expires_at']} (made {doc.get('created_at')}): "
                           "nothing was changed; make a new plan")
    rb = _same_runbook(doc)
    want = doc["environment"]
    # "default": no named environment was selected, the standard variables were used
    environment = config.load_environment(None if want.get("named") is False else want["name"])
    if environment.name != want["name"]:
        raise NotConfirmed(f"the plan was made for environment {want['name']!r}, this would run in "
                           f"{environment.name!r}: nothing was changed")
    fingerprint = planfile.environment_fingerprint(environment)
    if fingerprint != doc["environment"].get("fingerprint"):
        raise NotConfirmed(f"environment {environment.name!r} is not the one the plan was made for (its "
                           f"connection settings changed: fingerprint {doc['environment'].get('fingerprint')}"
                           f" -> {fingerprint}): nothing was changed; make a new plan")
    given = run_cmd.gather_params(param, param_file, rb)
    secret = set(doc.get("withheld_params") or [])
    fixed = sorted(k for k in given if k not in secret)
    if fixed:
        raise UsageError(f"a plan's parameters are fixed; only its secret parameters are given at apply "
                         f"({', '.join(sorted(secret)) or 'none'}), not {', '.join(fixed)}")
    missing = sorted(secret - set(given))
    if missing:
        raise UsageError(f"the plan needs its secret parameter(s) {', '.join(missing)}: pass "
                         + " ".join(f"-p {k}=@FILE" for k in missing))
    raw = {k: v for k, v in (doc["params"] or {}).items() if k not in secret and v is not None}
    params = rb.resolve_params({**{k: str(v) if not isinstance(v, str) else v for k, v in raw.items()},
                                **given})
    option = doc.get("option")
    settings = RunSettings(dry_run=False, yes=yes or bool(yes_protected), interactive=run_cmd._interactive(),
                           option=option)
    run_cmd.check_protected(environment, settings, yes_protected)
    run_cmd.check_rate(rb, environment, settings)
    replay = planfile.Replay.of(doc)
    log, renderer = run_cmd.open_run(rb, params, environment, settings, output, verbose, no_log,
                                     plan_digest=replay.digest)
    gate = ApplyGate(rb.id, log.run_id, environment, renderer, log, replay=replay, wait=lock_wait)
    outcome = Executor(rb, params, environment, settings, renderer, log, replay=replay, gate=gate).execute()
    log.end(outcome)
    renderer.finish(outcome)
    if outcome.exit_code != 0 and output == Output.text:
        typer.echo(f"error: {outcome.message}", err=True)
    return outcome.exit_code


def _same_runbook(doc: dict[str, Any]) -> Any:
    from opsctl import catalog
    from opsctl.errors import NotConfirmed, OpsctlError

    want = doc["runbook"]
    try:
        rb = catalog.load(want.get("file") or want["id"])
    except OpsctlError:
        rb = catalog.load(want["id"])
    if rb.id != want["id"]:
        raise NotConfirmed(f"{want.get('file')} is now runbook {rb.id}, not {want['id']}: nothing was "
                           "changed; make a new plan")
    if rb.sha256 != want["sha256"]:
        raise NotConfirmed(f"runbook {rb.id} changed since the plan was made ({rb.path}: sha256 "
                           f"{want['sha256'][:12]} -> {rb.sha256[:12]}): nothing was changed; "
                           "make a new plan")
    return rb


def show_plan(
    plan_file: Annotated[str, typer.Argument(metavar="PLAN_FILE", help="A file written by `opsctl plan`.")],
    fmt: Annotated[PlanFormat, typer.Option("--format", "-f",
                                            help="text, markdown (a pull request, a chat) or json.")]
    = PlanFormat.text,
) -> int:
    """Render a plan file for a reviewer (checks its digest; says whether it expired or was applied)."""
    import json

    from opsctl import planfile

    doc = planfile.load(plan_file)
    if fmt == PlanFormat.json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(planfile.render(doc, fmt.value), nl=False)
    return 0
