"""Plain command lines without building the Typer CLI: what the tests, rehearsals, scripts and CI run
most (`opsctl run ...`, `opsctl validate ...`) starts about a third faster.

Typer builds the Click commands of every subcommand and coerces each parameter through pydantic
(typer >= 0.29), about 0.25 s of CPU per start.  ``opsctl.__main__`` hands the command line here
first.  A command of ``COMMANDS`` given only its argument and options spelled as Click reads them
(``--name value``, ``--name=value``, ``-n value``, ``-nvalue``, flags, ``--``) with values of the
option's type runs here: the same command function, the same values (a table checked against the
Typer command by tests/engine/test_fastpath.py), inside the error boundary of ``cli.guard``.
Anything else (``--help``, an unknown, combined or misspelt option, a bad or missing value, a
value starting with ``-``, shell completion) returns here and goes to the Typer CLI, which
answers exactly as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Opt:
    """One option: the command function's parameter and how its value is read."""

    dest: str
    kind: str  # flag | off (a flag's --no- spelling) | text | many (repeatable text) | int | float | choice
    minimum: int | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    argument: str  # the positional parameter
    options: dict[str, Opt]
    call: Callable[[dict[str, Any]], object]  # imports the command and runs it with the values
    many: bool = False  # the argument takes any number of values (a list), else exactly one
    exit_now: bool = False  # nothing to clean up once it returns: skip the interpreter's teardown


def _run(values: dict[str, Any]) -> object:
    from opsctl.cli import run_cmd

    if "phase" in values:
        values["phase"] = run_cmd.Phase(values["phase"])
    if "output" in values:
        values["output"] = run_cmd.Output(values["output"])
    return run_cmd.run(**values)


def _names(table: dict[tuple[str, ...], Opt]) -> dict[str, Opt]:
    return {name: opt for names, opt in table.items() for name in names}


RUN = Command("runbook", _names({
    ("--dry-run",): Opt("dry_run", "flag"),
    ("--yes", "-y"): Opt("yes", "flag"),
    ("--param", "-p"): Opt("param", "many"),
    ("--option",): Opt("option", "text"),
    ("--phase",): Opt("phase", "choice", choices=("diagnose", "mitigate", "verify", "rollback")),
    ("--env", "-e"): Opt("env", "many"),
    ("--output", "-o"): Opt("output", "choice", choices=("text", "json")),
    ("--resume",): Opt("resume", "text"),
    ("--verbose", "-v"): Opt("verbose", "flag"),
    ("--param-file",): Opt("param_file", "many"),
    ("--yes-protected",): Opt("yes_protected", "text"),
    ("--no-log",): Opt("no_log", "flag"),
    ("--lock-wait",): Opt("lock_wait", "float"),
    ("--no-notify",): Opt("no_notify", "flag"),
    ("--all-envs",): Opt("all_envs", "flag"),
    ("--env-tag",): Opt("env_tag", "many"),
    ("--max-concurrency",): Opt("max_concurrency", "int", minimum=1),
    ("--max-errors",): Opt("max_errors", "int", minimum=1),
}), _run)

def _validate(values: dict[str, Any]) -> object:
    from opsctl.cli.validate_fast import run

    return run(values.get("paths", []), as_json=values.get("output") == "json",
               jobs=values.get("jobs", 0), use_cache=values.get("cache", True))


# `--alerts` (a replay of stored alerts) is not here: the Typer command answers it
VALIDATE = Command("paths", _names({
    ("--output", "-o"): Opt("output", "choice", choices=("text", "json")),
    ("--jobs", "-j"): Opt("jobs", "int", minimum=0),
    ("--cache",): Opt("cache", "flag"),
    ("--no-cache",): Opt("cache", "off"),
}), _validate, many=True, exit_now=True)

COMMANDS = {"run": RUN, "validate": VALIDATE}
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")


def _value(opt: Opt, text: str) -> Any:
    """The option's value, or None where Typer may answer otherwise (it then decides)."""
    if opt.kind in ("text", "many"):
        return text
    if opt.kind == "choice":
        return text if text in opt.choices else None
    if not text.isascii() or not _NUMBER.fullmatch(text):
        return None
    if opt.kind == "float":
        return float(text)
    if "." in text or (len(text) > 1 and text.startswith("0")):
        return None
    number = int(text)
    return None if opt.minimum is not None and number < opt.minimum else number


def parse(command: Command, argv: list[str]) -> dict[str, Any] | None:
    """The command function's keyword arguments (only those given), or None for the Typer CLI."""
    values: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, text = arg, None
        if arg.startswith("--") and "=" in arg:
            name, text = arg.split("=", 1)
        elif not arg.startswith("--") and len(arg) > 2:
            name, text = arg[:2], arg[2:]
        opt = command.options.get(name)
        if opt is None:
            return None
        if opt.kind in ("flag", "off"):
            if text is not None:
                return None
            values[opt.dest] = opt.kind == "flag"  # given twice: the last one wins, as in Click
            continue
        if text is None:
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            text, i = argv[i], i + 1
        value = _value(opt, text)
        if value is None:
            return None
        if opt.kind == "many":
            values.setdefault(opt.dest, []).append(value)
        else:
            values[opt.dest] = value  # given twice: the last one wins, as in Click
    if "-" in positional or (not command.many and len(positional) != 1):
        return None
    if positional or not command.many:
        values[command.argument] = positional if command.many else positional[0]
    return values


def main(argv: list[str]) -> None:
    """Run and exit when ``argv`` is a plain command line of a command here; else return."""
    if not argv or any(k.endswith("_COMPLETE") and k.startswith("_OPSCTL") for k in os.environ):
        return
    command = COMMANDS.get(argv[0])
    values = parse(command, argv[1:]) if command else None
    if command is None or values is None:
        return
    from opsctl.cli.guard import boundary

    boundary(lambda: command.call(values), exit_now=command.exit_now)
