"""`opsctl validate` without Typer: which command lines the fast path takes, and that what it
answers is what the Typer command answers (same `run`, same exit codes, same output)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from opsctl.cli import fastpath, validate_cmd
from tests.engine.helpers import DATA
from tests.engine.test_cli import _imported
from tests.fixtures.core import Result

Opsctl = Callable[..., Result]


def test_the_option_table_is_the_typer_commands() -> None:
    import typer.main

    from opsctl.cli.main import app

    command = typer.main.get_command(app).commands["validate"]  # type: ignore[attr-defined]
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    [argument] = [p for p in command.params if p.param_type_name == "argument"]
    assert fastpath.VALIDATE.argument == argument.name and fastpath.VALIDATE.many == (argument.nargs == -1)
    table: dict[str, set[str]] = {}
    for name, opt in fastpath.VALIDATE.options.items():
        table.setdefault(opt.dest, set()).add(name)
    # --alerts is left to the Typer command; a new option needs its line in the table
    assert table.keys() == options.keys() - {"alerts"}
    for dest, names in table.items():
        assert names == {*options[dest].opts, *options[dest].secondary_opts}, dest
        assert options[dest].envvar is None, dest
    assert fastpath.VALIDATE.options["--output"].choices == ("text", "json")
    assert set(inspect.signature(validate_cmd.validate).parameters) == {*table, argument.name, "alerts"}


@pytest.mark.parametrize(("argv", "expected"), [
    ([], {}),
    (["a.yaml", "dir"], {"paths": ["a.yaml", "dir"]}),
    (["-o", "json", "x"], {"paths": ["x"], "output": "json"}),
    (["-ojson", "--output=text", "x"], {"paths": ["x"], "output": "text"}),  # the last one wins
    (["--jobs=3", "x", "-j", "0", "--no-cache"], {"paths": ["x"], "jobs": 0, "cache": False}),
    (["-j2", "--no-cache", "--cache"], {"jobs": 2, "cache": True}),
    (["--", "-odd-name.yaml"], {"paths": ["-odd-name.yaml"]}),
])
def test_plain_command_lines_run_without_typer(argv: list[str], expected: dict[str, object]) -> None:
    assert fastpath.parse(fastpath.VALIDATE, argv) == expected


@pytest.mark.parametrize("argv", [
    ["--help"], ["x", "-h"], ["--alerts", "dir"], ["-o", "xml"], ["-o"], ["-j", "-1"], ["-j", "two"],
    ["--jobs"], ["--bogus"], ["-"], ["x", "-"], ["--output=JSON"], ["-j", "٣"], ["--cache=yes"],
    ["--no-cache=1"],
])
def test_everything_else_goes_to_the_typer_cli(argv: list[str]) -> None:
    assert fastpath.parse(fastpath.VALIDATE, argv) is None


def test_the_fast_path_imports_no_typer_and_answers_like_the_typer_command(
        opsctl: Opsctl, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    invalid = str(DATA / "invalid")
    fast = subprocess.run([sys.executable, "-X", "importtime", "-m", "opsctl", "validate",
                           "--no-cache", "-ojson", invalid], capture_output=True, text=True,
                          env=opsctl_env, cwd=tmp_path)
    assert fast.returncode == 2, fast.stderr[-2000:]
    assert not {"typer", "pydantic", "rich"} & _imported(fast.stderr)
    # `--alerts=` (empty: no replay) is not a plain command line: the Typer command runs
    typed = opsctl("validate", "--no-cache", "-ojson", "--alerts=", invalid)
    assert typed.code == 2 and typed.stdout == fast.stdout and json.loads(fast.stdout)
