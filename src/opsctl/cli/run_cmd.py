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
    param_file: Annotated[list[str] | None, typer.Option("--param-file", metavar="FILE",
                                                         help="KEY=VALUE lines (secrets stay out of ps "
                                                              "and shell history).")] = None,
    yes_protected: Annotated[str | None, typer.Option("--yes-protected", metavar="ENV",
                                                      help="Approve in a protected environment: its "
                                                           "name (--yes alone is refused there).")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="Run without a run log (e.g. a read-only "
                                                          "state directory).")] = False,
    lock_wait: Annotated[float, typer.Option("--lock-wait", metavar="SECONDS",
                                             help="How long to wait for another apply of the same "
                                                  "target.")] = 30.0,
    no_notify: Annotated[bool, typer.Option("--no-notify", help="Do not post this run's start, "
                                            "mitigation and verdict to Slack.")] = False,
) -> int:
    """Run a runbook: diagnose -> mitigate (plan, confirm, apply) -> verify."""
    from opsctl import catalog, config
    from opsctl.executor import Executor, RunSettings
    from opsctl.locks import ApplyGate

    rb = catalog.load(runbook)
    given = gather_params(param, param_file, rb)
    previous, resumed_from = None, None
    if resume:
        given, option, previous, resumed_from = _resume(rb, resume, given, option)
    _check_option(rb, option)
    environment = config.load_environment(env)
    params = rb.resolve_params(with_environment(rb, environment, given))
    if option and option != "none":
        rb.check_requires(option, params)
    settings = RunSettings(dry_run=dry_run, yes=yes or bool(yes_protected), interactive=_interactive(),
                           option=option, phase=phase.value if phase else None, notify=not no_notify)
    check_protected(environment, settings, yes_protected)
    check_rate(rb, environment, settings)
    log, renderer = open_run(rb, params, environment, settings, output, verbose, no_log,
                             resumed_from=resumed_from)
    gate = None if dry_run else ApplyGate(rb.id, log.run_id, environment, renderer, log, wait=lock_wait)
    outcome = Executor(rb, params, environment, settings, renderer, log, previous, gate=gate).execute()
    log.end(outcome)
    renderer.finish(outcome)
    if outcome.status == "invalid":  # decided mid-run (e.g. no option chosen): say it where errors go
        typer.echo(f"error: {outcome.message}", err=True)
    return outcome.exit_code


def with_environment(rb: Any, environment: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The environment's parameter values (opsctl.yaml `params`) under what the command line gave."""
    from opsctl.errors import register_secret

    own = environment.params_for(rb)
    register_secret(*(str(v) for k, v in own.items() if rb.params[k].secret and v not in (None, "")))
    return {**own, **given}


def gather_params(pairs: list[str] | None, files: list[str] | None = None,
                  runbook: Any = None) -> dict[str, str]:
    """-p KEY=VALUE, --param-file lines and OPSCTL_PARAM_<KEY> variables (lowest first);
    a value ``@PATH`` is read from that file (``@@`` for a literal leading @), so that a secret
    need not be on the command line (ps, shell history)."""
    import os

    from opsctl.errors import UsageError

    out = {k[len("OPSCTL_PARAM_"):].lower(): v for k, v in os.environ.items()
           if k.startswith("OPSCTL_PARAM_") and len(k) > len("OPSCTL_PARAM_")}
    lines: list[str] = []
    for path in files or []:
        try:
            text = _read_value_file(path)
        except OSError as e:
            raise UsageError(f"--param-file {path}: {e.strerror}") from None
        lines += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    given = parse_params(lines + list(pairs or []))
    for key, value in given.items():
        if value.startswith("@@"):
            value = value[1:]
        elif value.startswith("@") and len(value) > 1:
            try:
                value = _read_value_file(value[1:]).rstrip("\r\n")
            except OSError as e:
                raise UsageError(f"-p {key}=@{value[1:]}: cannot read the file: {e.strerror}") from None
        out[key] = value
    if runbook is not None:  # masked from here on, even in a "bad value" message of coercion
        from opsctl.errors import register_secret

        register_secret(*(v for k, v in out.items() if k in runbook.params and runbook.params[k].secret))
    return out


def _read_value_file(path: str) -> str:
    from opsctl.errors import UsageError

    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            return fh.read(1_000_000)
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None


def _interactive() -> bool:
    try:
        return sys.stdin is not None and not sys.stdin.closed and sys.stdin.isatty()
    except (ValueError, OSError):  # stdin closed or not a file
        return False


def check_protected(environment: Any, settings: Any, yes_protected: str | None) -> None:
    """A protected environment: --yes is refused unless --yes-protected names it; a person types
    its name to confirm (the renderer asks)."""
    from opsctl.errors import NotConfirmed, UsageError

    if yes_protected is not None and yes_protected != environment.name:
        raise UsageError(f"--yes-protected {yes_protected!r} does not name the environment of this run "
                         f"({environment.name!r})")
    if not getattr(environment, "protected", False) or settings.dry_run:
        return
    if settings.yes and yes_protected != environment.name:
        raise NotConfirmed(f"environment {environment.name!r} is protected: --yes is refused there; pass "
                           f"--yes-protected {environment.name} to approve unattended, or confirm "
                           "at the terminal by typing its name")


def check_rate(rb: Any, environment: Any, settings: Any) -> None:
    """max_applies_per_hour (opsctl.yaml, per environment, optionally per runbook), from the run log."""
    from opsctl import audit
    from opsctl.errors import NotConfirmed

    limit = environment.max_applies(rb.id) if hasattr(environment, "max_applies") else None
    if limit is None or settings.dry_run:
        return
    recent = audit.recent_applies(rb.id, environment.name, 3600.0)
    if len(recent) >= limit:
        raise NotConfirmed(f"rate limit: {rb.id} applied changes {len(recent)} time(s) in environment "
                           f"{environment.name!r} in the last hour (runs {', '.join(recent[-3:])}); "
                           f"max_applies_per_hour is {limit}: nothing was run. Look at why the "
                           "mitigation does not hold before applying it again")


def open_run(rb: Any, params: dict[str, Any], environment: Any, settings: Any, output: Output,
             verbose: bool, no_log: bool, resumed_from: str | None = None,
             plan_digest: str | None = None) -> tuple[Any, Any]:
    """The run log (or none with --no-log) and the renderer, with the header printed."""
    from opsctl import audit

    log = audit.open_log(rb.id, no_log=no_log, resumed_from=resumed_from)
    renderer = _renderer(output, verbose)
    log.start(rb, params, environment.name, settings, sys.argv[1:], plan_digest=plan_digest)
    renderer.secrets = log.secrets
    renderer.protected = environment.name if getattr(environment, "protected", False) else None
    if log.warning:
        renderer.note(log.warning)
    renderer.start(rb, environment, log.run_id, settings.dry_run, audit.redact(rb.redacted(params)))
    return log, renderer


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
    if changed:  # a secret is named, never shown (it is not in the run log to compare with either)
        typer.echo(f"resuming {run_id} with changed parameters: "
                   + ", ".join(f"{k}=***" if k in secret else f"{k}={v}" for k, v in changed.items()),
                   err=True)
    option = option or start.get("option") or next(
        (e.get("chosen") for e in events if e["event"] == "option" and e.get("chosen")), None)
    return {**previous_params, **given}, option, audit.final_records(events), start["run_id"]
