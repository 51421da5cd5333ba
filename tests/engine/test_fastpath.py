"""`opsctl run` without building the Typer CLI (cli.fastpath): its option table is the Typer
command's, which command lines it takes, and that it answers what the Typer command answers."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsctl.cli import fastpath, run_cmd
from tests.engine.helpers import rb
from tests.engine.test_cli import _imported
from tests.fixtures.core import Result

Opsctl = Callable[..., Result]


def _typer_command() -> Any:
    import typer.main

    from opsctl.cli.main import app

    return typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]


def test_the_option_table_is_the_typer_commands() -> None:
    command = _typer_command()
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    [argument] = [p.name for p in command.params if p.param_type_name == "argument"]
    assert fastpath.RUN.argument == argument
    table: dict[str, set[str]] = {}
    for name, opt in fastpath.RUN.options.items():
        table.setdefault(opt.dest, set()).add(name)
    assert table.keys() == options.keys()  # a new option of `run` needs its line in the table
    for dest, names in table.items():
        param = options[dest]
        assert names == {*param.opts, *param.secondary_opts}, dest
        opt = fastpath.RUN.options[next(iter(names))]
        assert (opt.kind == "flag") == bool(param.is_flag), dest
        assert (opt.kind == "many") == bool(param.multiple), dest
        assert param.envvar is None, dest  # a value from the environment: the table cannot know it
    signature = inspect.signature(run_cmd.run)
    assert {o.dest for o in fastpath.RUN.options.values()} | {argument} == signature.parameters.keys()
    assert fastpath.RUN.options["--phase"].choices == tuple(run_cmd.Phase)
    assert fastpath.RUN.options["--output"].choices == tuple(run_cmd.Output)


@pytest.mark.parametrize(("argv", "expected"), [
    (["rb-1"], {"runbook": "rb-1"}),
    (["--dry-run", "rb-1", "-p", "a=1", "-pb=2", "--param=c=", "-ojson"],
     {"runbook": "rb-1", "dry_run": True, "param": ["a=1", "b=2", "c="], "output": "json"}),
    (["rb-1", "-y", "--option", "none", "--phase=verify", "-e", "prod", "--env", "dev", "-v"],
     {"runbook": "rb-1", "yes": True, "option": "none", "phase": "verify", "env": ["prod", "dev"],
      "verbose": True}),
    (["--lock-wait", "2.5", "--max-concurrency", "3", "--max-errors=1", "--output", "text",
      "-o", "json", "rb-1"],  # the last --output wins, as in Click
     {"runbook": "rb-1", "lock_wait": 2.5, "max_concurrency": 3, "max_errors": 1, "output": "json"}),
    (["--", "-odd.yaml"], {"runbook": "-odd.yaml"}),
])
def test_plain_command_lines_run_here(argv: list[str], expected: dict[str, Any]) -> None:
    assert fastpath.parse(fastpath.RUN, argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["rb-1", "rb-2"], ["rb-1", "--help"], ["-"], ["rb-1", "-yv"], ["rb-1", "--dry-run=yes"],
    ["rb-1", "--dry"], ["rb-1", "-p"], ["rb-1", "-p", "-x"], ["rb-1", "--phase", "Verify"],
    ["rb-1", "-o", "xml"], ["rb-1", "--max-concurrency", "0"], ["rb-1", "--max-errors", "01"],
    ["rb-1", "--max-errors", "1.0"], ["rb-1", "--lock-wait", "-1"], ["rb-1", "--lock-wait", "1e3"],
    ["rb-1", "--max-concurrency", "٣"], ["rb-1", "--bogus"],
])
def test_everything_else_goes_to_the_typer_cli(argv: list[str]) -> None:
    assert fastpath.parse(fastpath.RUN, argv) is None


_CLOCK = ("run_id", "started_at", "ended_at", "duration")


def _comparable(stdout: str) -> dict[str, Any]:
    """The JSON document of a run without what the clock decides."""
    doc = {k: v for k, v in json.loads(stdout).items() if k not in _CLOCK}
    doc["steps"] = [{k: v for k, v in step.items() if k not in _CLOCK} for step in doc["steps"]]
    return doc


def test_the_fast_path_imports_no_pydantic_and_answers_like_the_typer_command(
        opsctl_env: dict[str, str], tmp_path: Path) -> None:
    args = ["run", rb("rb-401"), "--dry-run", "-p", f"target={tmp_path / 'flag'}", "-o", "json"]
    fast = subprocess.run([sys.executable, "-X", "importtime", "-m", "opsctl", *args],
                          capture_output=True, text=True, env=opsctl_env, cwd=tmp_path)
    assert fast.returncode == 0, fast.stderr[-2000:]
    assert not {"pydantic", "jsonschema"} & _imported(fast.stderr)
    typed = subprocess.run([sys.executable, "-c", "import sys; from opsctl.cli.main import main; "
                            "sys.argv[0] = 'opsctl'; main()", *args],
                           capture_output=True, text=True, env=opsctl_env, cwd=tmp_path)
    assert typed.returncode == 0, typed.stderr[-2000:]
    assert _comparable(fast.stdout) == _comparable(typed.stdout)
    assert _comparable(fast.stdout)["steps"]  # a run that did something to compare


@pytest.mark.parametrize("args", [["run", "rb-nothing-like-it", "-o", "json"],
                                  ["run", "rb-401", "-p", "no-equals-sign"]])
def test_errors_answer_like_the_typer_command(args: list[str], opsctl_env: dict[str, str],
                                             tmp_path: Path) -> None:
    if args[1] == "rb-401":
        args = [args[0], rb("rb-401"), *args[2:]]
    fast = subprocess.run([sys.executable, "-m", "opsctl", *args], capture_output=True, text=True,
                          env=opsctl_env, cwd=tmp_path)
    typed = subprocess.run([sys.executable, "-c", "import sys; from opsctl.cli.main import main; main()",
                            *args], capture_output=True, text=True, env=opsctl_env, cwd=tmp_path)
    assert fast.returncode == typed.returncode == 2
    assert (fast.stdout, fast.stderr) == (typed.stdout, typed.stderr)
    assert fast.stderr.startswith("error: ") and "Traceback" not in fast.stderr
