"""Inputs outside the suite's fuzz generator that made `opsctl validate` hang or grow without bound.

Found by a separate mutation campaign (QA): costs that were quadratic in the size of a file (every
duplicate key looked its first occurrence up again; every misspelt name was compared with every
parameter; every attribute chain of a template with every other), the number of errors of one
file (90,000 lines for 15,000 broken steps), and a FIFO named like a runbook (`open` waits for a
writer forever).  CPU time is bounded with tests/timing.py's budget (the inputs took minutes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsctl import catalog, loader, templating
from opsctl.errors import MAX_FILE_ERRORS
from tests.timing import budget

REPO = Path(__file__).resolve().parents[2]
BASE = (REPO / "runbooks" / "rb-010-redis-cache-degradation.yaml").read_text(encoding="utf-8")
NAME = "rb-010-x.yaml"
LOCATED = re.compile(rf"^{re.escape(NAME)}:[1-9]\d*:[1-9]\d*: \S")
WITH_LINE = '      sample_seconds: "{{ params.sample_seconds }}"'


def check(text: str) -> tuple[list[str], float]:
    """The errors of a file (each located, one line) and the CPU seconds the check took."""
    t0 = time.process_time()
    errors = catalog.check_bytes(text.encode(), NAME, build=False)[1]
    took = time.process_time() - t0
    lines = [str(e) for e in errors]
    for line in lines:
        assert "\n" not in line and LOCATED.match(line), line
    return lines, took


@pytest.fixture
def past_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """These inputs are larger than a runbook may be (loader.MAX_FILE_BYTES, 256 KB): the checks
    must stay linear behind the cap too, so the cap is lifted to 1 MB for them."""
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 1024 * 1024)


@pytest.mark.usefixtures("past_the_size_cap")
def test_many_duplicate_keys_cost_linear_time() -> None:
    n = 20_000  # 430 KB; each duplicate searched the mapping for its first occurrence: > 60 s
    keys = ", ".join(f"k{i}: 1" for i in range(n))
    dups = ", ".join(f"k{n - 1}: 1" for _ in range(n))
    lines, took = check(BASE + f"x_dups: {{{keys}, {dups}}}\n")
    assert took < budget(5), took
    assert f"duplicate key 'k{n - 1}' (first defined at line" in lines[0]
    assert len(lines) == MAX_FILE_ERRORS + 1


@pytest.mark.usefixtures("past_the_size_cap")
def test_misspelt_names_among_thousands_of_parameters() -> None:
    params = "".join(f"  zparam{i}: {{type: string}}\n" for i in range(15_000))
    refs = " ~ ".join(f"params.zqaram{i}x" for i in range(3_000))
    text = BASE.replace("params:\n", "params:\n" + params, 1).replace(
        WITH_LINE, WITH_LINE + '\n      extra: "{{ ' + refs + ' }}"', 1)
    lines, took = check(text)
    assert took < budget(5), took  # was > 30 s: difflib against 15,000 names per unknown name
    assert any("unknown parameter 'zqaram2999x'" in line for line in lines)


def test_thousands_of_attribute_chains_in_one_template() -> None:
    names = [f"{a}{b}{c}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"
             for c in "abcdefghijklmnopqrstuvwxyz"][:8_000]
    text = "{{ " + "~".join(f"env.{n}" for n in names) + " }}"  # 64 KB, 8,000 chains
    t0 = time.process_time()
    analysis = templating.analyse(text, expression=False)
    # every chain was compared with every kept one: 32 million comparisons, 3 s of CPU (0.15 s now)
    assert time.process_time() - t0 < budget(0.6)
    assert len(analysis.chains) == len(names)
    assert ("env", "abc") in analysis.chains


def test_a_very_long_attribute_chain() -> None:
    t0 = time.process_time()
    analysis = templating.analyse("{{ params.a" + ".b" * 30_000 + " }}", expression=False)
    assert time.process_time() - t0 < budget(2)
    assert analysis.chains == (("params", "a", "b", "b"),)  # what the checks read of a chain


def test_one_template_naming_an_unknown_parameter_many_times_says_it_once() -> None:
    refs = " ~ ".join(f"params.nope.k{i}" for i in range(500))
    lines, _ = check(BASE.replace(WITH_LINE, WITH_LINE + '\n      extra: "{{ ' + refs + ' }}"', 1))
    assert sum("unknown parameter 'nope'" in line for line in lines) == 1


@pytest.mark.usefixtures("past_the_size_cap")
@pytest.mark.parametrize("kind", ["steps", "params", "keys"])
def test_errors_of_one_file_stop_at_the_cap_and_say_so(kind: str) -> None:
    if kind == "steps":  # schema errors: 6 per step
        junk = "".join(f"  - {{idd: s{i}, titl: t, actio: redis.infoo, wit: 3}}\n" for i in range(15_000))
        text = BASE.replace("diagnose:\n", "diagnose:\n" + junk, 1)
    elif kind == "params":  # semantic errors
        junk = "".join(f"  p{i}: {{type: choice, choices: [a, b], default: c}}\n" for i in range(5_000))
        text = BASE.replace("params:\n", "params:\n" + junk, 1)
    else:  # the loader's errors
        text = BASE + "x: {" + ", ".join("a: 1" for _ in range(5_000)) + "}\n"
    lines, took = check(text)
    assert took < budget(5), took
    assert len(lines) == MAX_FILE_ERRORS + 1
    assert lines[-1].endswith(f"the check of a file stops after {MAX_FILE_ERRORS} errors "
                              "(fix these first)")


def test_a_fifo_named_like_a_runbook_is_an_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "rb-099-pipe.yaml"
    os.mkfifo(fifo)
    (tmp_path / NAME).write_text(BASE, encoding="utf-8")
    data, errors = loader.read(str(fifo))
    assert data is None and [str(e) for e in errors] == [
        f"{fifo}:1:1: cannot read: not a regular file"]
    env = {**os.environ, "OPSCTL_STATE_DIR": str(tmp_path / "state"), "OPSCTL_RUNBOOK_PATH": "",
           "OPSCTL_CACHE_DIR": str(tmp_path / "cache")}
    for cache in ("--no-cache", "--cache"):  # the warm path hashes each file's bytes first
        out = subprocess.run([sys.executable, "-m", "opsctl", "validate", cache, str(tmp_path)],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 2, out.stderr
        assert out.stdout.splitlines() == [f"{fifo}:1:1: cannot read: not a regular file"], cache
    # `opsctl run rb-010` finds runbook ids by reading the head of every file in ./runbooks
    (tmp_path / "runbooks").mkdir()
    os.mkfifo(tmp_path / "runbooks" / "rb-098-pipe.yaml")
    (tmp_path / "runbooks" / NAME).write_text(BASE, encoding="utf-8")
    resolve = subprocess.run([sys.executable, "-c", "from opsctl import catalog; "
                              "print(catalog.resolve('rb-010'))"],
                             capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert resolve.returncode == 0, resolve.stderr
    assert resolve.stdout.strip().endswith(NAME)


def test_a_file_name_with_a_newline_or_an_escape_still_gives_one_line_per_error(tmp_path: Path) -> None:
    # a name may hold any byte but "/" and NUL: the text output writes control characters as escapes
    # (one line per error, no terminal escape sequence), --output json keeps the real name
    name = "rb-099-new\nline\x1b[31m.yaml"
    (tmp_path / name).write_text("id: rb-099\n", encoding="utf-8")
    env = {**os.environ, "OPSCTL_STATE_DIR": str(tmp_path / "state"),
           "OPSCTL_CACHE_DIR": str(tmp_path / "cache")}
    for cache in ("--no-cache", "--cache", "--cache"):  # the second --cache run reads the cached verdict
        out = subprocess.run([sys.executable, "-m", "opsctl", "validate", cache, str(tmp_path)],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 2, out.stderr
        lines = out.stdout.splitlines()
        assert lines and all(line.startswith(f"{tmp_path}/rb-099-new\\nline\\x1b[31m.yaml:1:1: ")
                             for line in lines), lines
        assert "\x1b" not in out.stdout
    js = subprocess.run([sys.executable, "-m", "opsctl", "validate", "--no-cache", "-o", "json",
                         str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert {e["file"] for e in json.loads(js.stdout)} == {str(tmp_path / name)}
