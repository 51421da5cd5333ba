"""`opsctl validate` without Typer: which command lines the fast path takes, and that what it
answers is what the Typer command answers (same `run`, same exit codes, same output)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from opsctl.cli.validate_fast import parse
from tests.engine.helpers import DATA
from tests.engine.test_cli import _imported
from tests.fixtures.core import Result

Opsctl = Callable[..., Result]


@pytest.mark.parametrize(("argv", "expected"), [
    ([], ([], False, 0, True)),
    (["a.yaml", "dir"], (["a.yaml", "dir"], False, 0, True)),
    (["-o", "json", "x"], (["x"], True, 0, True)),
    (["-ojson", "--output=text", "x"], (["x"], False, 0, True)),  # the last one wins, as in Click
    (["--jobs=3", "x", "-j", "0", "--no-cache"], (["x"], False, 0, False)),
    (["-j2", "--no-cache", "--cache"], ([], False, 2, True)),
    (["--", "-odd-name.yaml"], (["-odd-name.yaml"], False, 0, True)),
])
def test_plain_command_lines_run_without_typer(argv: list[str],
                                               expected: tuple[list[str], bool, int, bool]) -> None:
    assert parse(argv) == expected


@pytest.mark.parametrize("argv", [
    ["--help"], ["x", "-h"], ["--alerts", "dir"], ["-o", "xml"], ["-o"], ["-j", "-1"], ["-j", "two"],
    ["--jobs"], ["--bogus"], ["-"], ["--output=JSON"], ["-j", "٣"],
])
def test_everything_else_goes_to_the_typer_cli(argv: list[str]) -> None:
    assert parse(argv) is None


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
