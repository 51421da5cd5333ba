"""`opsctl run RUNBOOK`: resolve, type the params, pick the environment, hand over to the executor."""

from __future__ import annotations

import re
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


def complete_env(incomplete: str) -> list[str]:
    """Environment names of opsctl.yaml (shell completion; nothing when the file is broken)."""
    from opsctl import config
    from opsctl.errors import OpsctlError

    try:
        return [n for n in config.environment_names() if n.startswith(incomplete)]
    except OpsctlError:
        return []
_OPTION_NAME = re.compile(r"^\s*-\s+name:\s*['\"]?([a-z0-9][a-z0-9_-]*)", re.M)


def complete_option(ctx: typer.Context, args: list[str], incomplete: str) -> list[tuple[str, str]]:
    """--option values: the runbook's option names, read from its file without parsing YAML
    (completion stays instant), plus none."""
    import os
    import shlex
    from pathlib import Path

    from opsctl.catalog import quick_index

    typed = os.environ.get("_TYPER_COMPLETE_ARGS") or os.environ.get("COMP_WORDS") or ""
    try:  # the words typed so far, as the shell hands them to the completion
        words = shlex.split(typed)
    except ValueError:
        words = typed.split()
    ref = str(ctx.params.get("runbook") or _first_argument(args) or _first_argument(words))
    path = Path(ref) if ref.endswith((".yaml", ".yml")) else next(
        (e.path for e in quick_index() if e.id == ref.lower()), None)
    names: list[tuple[str, str]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path else ""
    except OSError:
        text = ""
    block = re.search(r"(?ms)^options:\s*\n(.*?)(?=^\S)", text)
    if block:
        names = [(m, "mitigation option") for m in _OPTION_NAME.findall(block.group(1))]
    names.append(("none", "skip mitigation"))
    return [(n, h) for n, h in names if n.startswith(incomplete)]


def _first_argument(args: list[str]) -> str:
    """The runbook among the words typed so far (`run [OPTIONS] RUNBOOK ...`): the first word
    after `run` that is neither an option nor an option's value."""
    takes_value = {"-p", "--param", "--option", "--phase", "--env", "-e", "--output", "-o", "--resume",
                   "--param-file", "--yes-protected", "--lock-wait"}
    words = args[args.index("run") + 1:] if "run" in args else list(args)
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word
    return ""


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
                                               "('none' skips mitigation).",
                                               autocompletion=complete_option)] = None,
    phase: Annotated[Phase | None, typer.Option("--phase", help="Run only this phase.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml "
                                                  "(repeatable: one run per environment).",
                                                  autocompletion=complete_env)] = None,
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
    all_envs: Annotated[bool, typer.Option("--all-envs", help="Run in every environment of "
                                                              "opsctl.yaml.")] = False,
    env_tag: Annotated[list[str] | None, typer.Option("--env-tag", metavar="TAG",
                                                      help="Run in the environments tagged TAG "
                                                           "(repeatable: all of them).")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, metavar="N",
                                                 help="Several environments, read-only: at most N at "
                                                      "a time.")] = 4,
    max_errors: Annotated[int | None, typer.Option("--max-errors", min=1, metavar="N",
                                                   help="Several environments: start no more once N "
                                                        "have failed.")] = None,
) -> int:
    """Run a runbook: diagnose -> mitigate (plan, confirm, apply) -> verify."""
    from opsctl import catalog, config
    from opsctl.executor import Executor, RunSettings
    from opsctl.locks import ApplyGate

    rb = catalog.load(runbook)
    given = gather_params(param, param_file, rb)
    previous, resumed_from, resumed_plans = None, None, None
    if resume:
        given, option, previous, resumed_from, resumed_plans = _resume(rb, resume, given, option)
    _check_option(rb, option)
    settings = RunSettings(dry_run=dry_run, yes=yes or bool(yes_protected), interactive=_interactive(),
                           option=option, phase=phase.value if phase else None, notify=not no_notify)
    if all_envs or env_tag or len(env or []) > 1:
        return _fan_out(rb, given, settings, env, all_envs, env_tag, output, verbose, no_log, lock_wait,
                        resume, yes_protected, max_concurrency, max_errors)
    environment = config.load_environment(env[0] if env else None)
    params = environment_params(rb, environment, given, option)
    check_protected(environment, settings, yes_protected)
    check_rate(rb, environment, settings)
    log, renderer = open_run(rb, params, environment, settings, output, verbose, no_log,
                             resumed_from=resumed_from)
    renderer.command = rerun_command(runbook, param, param_file, env[0] if env else None, rb)
    gate = None if dry_run else ApplyGate(rb.id, log.run_id, environment, renderer, log, wait=lock_wait)
    outcome = Executor(rb, params, environment, settings, renderer, log, previous, gate=gate,
                       resumed_plans=resumed_plans).execute()
    log.end(outcome)
    renderer.finish(outcome)
    if outcome.status == "invalid":  # decided mid-run (e.g. no option chosen): say it where errors go
        typer.echo(f"error: {outcome.message}", err=True)
    return outcome.exit_code


def _fan_out(rb: Any, given: dict[str, Any], settings: Any, env: list[str] | None, all_envs: bool,
             env_tag: list[str] | None, output: Output, verbose: bool, no_log: bool, lock_wait: float,
             resume: str | None, yes_protected: str | None, max_concurrency: int,
             max_errors: int | None) -> int:
    """Several environments (docs/configuration.md, "Several environments at once")."""
    from opsctl import config
    from opsctl.fanout import FanOut, cannot_mutate, check_fanout_usage

    environments = config.select_environments(env, all_envs=all_envs, tags=env_tag)
    check_fanout_usage(resume, yes_protected, environments, settings)
    params = {}
    for environment in environments:  # every refusal before anything runs anywhere
        check_rate(rb, environment, settings)
        params[environment.name] = environment_params(rb, environment, given, settings.option)
    if cannot_mutate(rb, settings):
        settings.interactive = False  # nothing to confirm; nobody to ask in parallel

    def start(environment: Any, renderer: Any) -> tuple[Any, Any]:
        return open_run(rb, params[environment.name], environment, settings, output, verbose, no_log,
                        renderer=renderer)

    return FanOut(rb, params, environments, settings, output=output.value, verbose=verbose,
                  no_log=no_log, max_concurrency=max_concurrency, max_errors=max_errors,
                  lock_wait=lock_wait, open_run=start,
                  text_renderer=lambda: _renderer(Output.text, verbose)).run()


def rerun_command(runbook: str, params: list[str] | None, files: list[str] | None, env: str | None,
                  rb: Any) -> list[str]:
    """`opsctl run RUNBOOK -p ...` as the user gave it (secret values left out), for the hint a
    dry-run ends with."""
    secret = {n for n, p in rb.params.items() if getattr(p, "secret", False)}
    cmd = ["opsctl", "run", runbook]
    for pair in params or []:
        key = pair.partition("=")[0].strip()
        cmd += ["-p", f"{key}=@FILE" if key in secret and not pair.partition("=")[2].startswith("@")
                else pair]
    for f in files or []:
        cmd += ["--param-file", f]
    return cmd + (["--env", env] if env else [])


def environment_params(rb: Any, environment: Any, given: dict[str, Any],
                       option: str | None) -> dict[str, Any]:
    """The run's parameters in one environment (typed, checked), and what the option requires."""
    params: dict[str, Any] = rb.resolve_params(with_environment(rb, environment, given))
    if option and option != "none":
        rb.check_requires(option, params)
    return params


def with_environment(rb: Any, environment: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The environment's parameter values (opsctl.yaml `params`) under what the command line gave."""
    from opsctl.errors import register_secret

    own = environment.params_for(rb, overridden=given)
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
    """max_applies_per_hour before anything runs (a dry-run is never limited); checked again under
    each apply lock (opsctl.locks.check_rate)."""
    from opsctl.locks import check_rate as check

    if not settings.dry_run:
        check(rb.id, environment)


def open_run(rb: Any, params: dict[str, Any], environment: Any, settings: Any, output: Output,
             verbose: bool, no_log: bool, resumed_from: str | None = None,
             plan_digest: str | None = None, renderer: Any = None) -> tuple[Any, Any]:
    """The run log (or none with --no-log) and the renderer, with the header printed."""
    from opsctl import audit

    log = audit.open_log(rb.id, no_log=no_log, resumed_from=resumed_from)
    renderer = renderer or _renderer(output, verbose)
    log.start(rb, params, environment.name, settings, sys.argv[1:], plan_digest=plan_digest)
    renderer.secrets = log.secrets
    renderer.protected = environment.name if getattr(environment, "protected", False) else None
    if log.warning:
        renderer.note(log.warning)
    renderer.start(rb, environment, log.run_id, settings.dry_run, audit.redact(rb.redacted(params)))
    return log, renderer


def _renderer(output: Output, verbose: bool) -> Any:
    from opsctl.audit import log_to_stdout
    from opsctl.render import HumanRenderer, JsonRenderer

    if log_to_stdout():  # stdout carries the run log's JSON lines (an exported Job or workflow)
        from rich.console import Console

        if output == Output.json:
            return JsonRenderer(stream=sys.stderr)
        return HumanRenderer(Console(stderr=True, highlight=False), verbose=verbose)
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
    return ({**previous_params, **given}, option, audit.final_records(events), start["run_id"],
            audit.unfinished_plans(events))
