"""Typed runbook parameters: conversion, defaults, required, and the CLI's one-line errors."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from opsctl.errors import UsageError
from opsctl.model import Param, parse_duration
from tests.engine.helpers import rb, steps_of
from tests.fixtures.core import Result

Opsctl = Callable[..., Result]


@pytest.mark.parametrize(("type_", "raw", "value"), [
    ("string", "42", "42"),
    ("integer", "42", 42),
    ("integer", " 7 ", 7),
    ("integer", 3.0, 3),
    ("number", "0.25", 0.25),
    ("number", 2, 2.0),
    ("boolean", "true", True),
    ("boolean", "No", False),
    ("boolean", "1", True),
    ("boolean", False, False),
    ("duration", "5m", 300.0),
    ("duration", "1h30m", 5400.0),
    ("duration", "250ms", 0.25),
    ("duration", "90", 90.0),
    ("duration", 45, 45.0),
])
def test_coerce(type_: str, raw: object, value: object) -> None:
    got = Param("p", type_).coerce(raw)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("type_", "raw", "message"), [
    ("integer", "many", "parameter 'p': expected an integer, got 'many'"),
    ("integer", 2.5, "parameter 'p': expected an integer, got 2.5"),
    ("integer", True, "parameter 'p': expected an integer, got True"),
    ("number", "fast", "parameter 'p': expected a number, got 'fast'"),
    ("boolean", "maybe", "parameter 'p': expected a boolean (true/false), got 'maybe'"),
    ("duration", "soon", "parameter 'p': not a duration: 'soon' (use e.g. 30s, 5m, 1h30m)"),
    ("duration", "5 parsecs", "parameter 'p': not a duration: '5 parsecs' (use e.g. 30s, 5m, 1h30m)"),
])
def test_coerce_errors(type_: str, raw: object, message: str) -> None:
    with pytest.raises(UsageError) as e:
        Param("p", type_).coerce(raw)
    assert str(e.value) == message


def test_choice() -> None:
    p = Param("mode", "choice", choices=("soft", "hard", 3))
    assert p.coerce("hard") == "hard"
    assert p.coerce("3") == 3
    with pytest.raises(UsageError, match=r"expected one of soft, hard, 3, got 'medium'"):
        p.coerce("medium")


def test_parse_duration_rejects_booleans_and_garbage() -> None:
    with pytest.raises(ValueError):
        parse_duration(True)
    with pytest.raises(ValueError):
        parse_duration("5m and more")
    assert parse_duration("1d") == 86400.0


# ---- through the CLI ---------------------------------------------------------------------------

def _one_error(r: Result) -> str:
    assert r.code == 2, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert r.stdout == ""  # nothing ran
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_typed_values_reach_the_templates(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-410"), "-p", "name=db", "-p", "count=4", "-p", "enabled=yes",
               "-p", "window=2m", "-p", "mode=hard", "-o", "json")
    assert r.code == 0, r.output
    doc = json.loads(r.stdout)
    assert steps_of(doc)["show"]["result"]["value"] == {
        "name": "db", "count": 4, "ratio": 0.5, "enabled": True, "window": 120.0, "mode": "hard",
        "text": "4 x db"}
    assert doc["params"] == {"name": "db", "count": 4, "ratio": 0.5, "enabled": True, "window": 120.0,
                             "mode": "hard", "token": "***"}


def test_unknown_param(opsctl: Opsctl) -> None:
    line = _one_error(opsctl("run", rb("rb-410"), "-p", "name=x", "-p", "cuont=3"))
    assert line == ("error: rb-410: unknown parameter 'cuont' (did you mean 'count'?); parameters: "
                    "name, count, ratio, enabled, window, mode, token")


def test_bad_typed_param(opsctl: Opsctl) -> None:
    line = _one_error(opsctl("run", rb("rb-410"), "-p", "name=x", "-p", "count=three"))
    assert line == "error: parameter 'count': expected an integer, got 'three'"


def test_missing_required_param(opsctl: Opsctl) -> None:
    line = _one_error(opsctl("run", rb("rb-410")))
    assert line == ("error: rb-410: missing required parameter 'name' (Who to greet); "
                    "pass it with -p name=VALUE")


def test_param_pairs() -> None:
    from opsctl.cli.run_cmd import parse_params

    assert parse_params(["a=1", " b =x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("name", "=3"):
        with pytest.raises(UsageError) as e:
            parse_params([bad])
        assert str(e.value) == f"--param expects KEY=VALUE, got {bad!r}"


@pytest.mark.parametrize(("type_", "raw", "message"), [
    ("number", "nan", "parameter 'p': expected a finite number, got 'nan'"),
    ("number", "inf", "parameter 'p': expected a finite number, got 'inf'"),
    ("number", "-Infinity", "parameter 'p': expected a finite number, got '-Infinity'"),
    ("number", float("nan"), "parameter 'p': expected a finite number, got nan"),
    ("integer", "9" * 5000, "parameter 'p': expected an integer of at most 30 digits, got 5000 characters"),
    ("duration", "nan", "parameter 'p': not a duration: 'nan' (use e.g. 30s, 5m, 1h30m)"),
])
def test_non_finite_and_huge_numbers_are_refused(type_: str, raw: object, message: str) -> None:
    with pytest.raises(UsageError) as e:
        Param("p", type_).coerce(raw)
    assert str(e.value) == message


def test_ranges() -> None:
    p = Param("n", "integer", min=1, max=10)
    assert (p.coerce("1"), p.coerce("10")) == (1, 10)
    for raw, message in (("0", "'0' is below the minimum 1"), ("11", "'11' is above the maximum 10")):
        with pytest.raises(UsageError) as e:
            p.coerce(raw)
        assert str(e.value) == f"parameter 'n': {message}"
    d = Param("w", "duration", min="10s", max="1h")
    assert d.coerce("30m") == 1800.0
    with pytest.raises(UsageError, match=r"'5s' is below the minimum 10s"):
        d.coerce("5s")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"type": "string", "min": 1}, "'min'/'max' apply to integer, number and duration parameters"),
    ({"type": "integer", "min": 5, "max": 1}, "'min' (5) is greater than 'max' (1)"),
    ({"type": "number", "max": "lots"}, "bad bound"),
    ({"type": "number", "max": float("inf")}, "bad bound"),
])
def test_bad_range_declarations(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Param("p", **kwargs)  # type: ignore[arg-type]


def test_repeated_param_is_an_error() -> None:
    from opsctl.cli.run_cmd import parse_params

    with pytest.raises(UsageError) as e:
        parse_params(["a=1", "b=2", "a=3"])
    assert str(e.value) == "--param 'a' given twice: give each parameter once"


@pytest.mark.parametrize(("flags", "message"), [
    (["-p", "replicas=11"], "error: parameter 'replicas': '11' is above the maximum 10"),
    (["-p", "replicas=0"], "error: parameter 'replicas': '0' is below the minimum 1"),
    (["-p", "ratio=nan"], "error: parameter 'ratio': expected a finite number, got 'nan'"),
    (["-p", "ratio=inf"], "error: parameter 'ratio': expected a finite number, got 'inf'"),
    (["-p", "window=2h"], "error: parameter 'window': '2h' is above the maximum 1h"),
    (["-p", "replicas=2", "-p", "replicas=3"], "error: --param 'replicas' given twice: give each "
                                                "parameter once"),
])
def test_bad_params_stop_before_any_backend_is_contacted(opsctl: Opsctl, silent_server: object,
                                                         flags: list[str], message: str) -> None:
    """The runbook's first step connects to a server: a refused parameter means it never does."""
    target = f"127.0.0.1:{silent_server.port}"  # type: ignore[attr-defined]
    line = _one_error(opsctl("run", rb("rb-461"), "-p", f"target={target}", *flags))
    assert line == message
    assert silent_server.accepted == []  # type: ignore[attr-defined]


def test_ranged_params_in_range_run(opsctl: Opsctl, silent_server: object) -> None:
    target = f"127.0.0.1:{silent_server.port}"  # type: ignore[attr-defined]
    r = opsctl("run", rb("rb-461"), "-p", f"target={target}", "-p", "replicas=10", "-p", "ratio=0",
               "-p", "window=10s", "-o", "json")
    doc = json.loads(r.stdout)
    assert steps_of(doc)["show"]["result"]["value"] == {"replicas": 10, "ratio": 0.0, "window": 10.0}
    assert len(silent_server.accepted) == 1  # type: ignore[attr-defined]  # and this time it did connect


def test_an_endless_window_is_refused_before_any_backend_is_contacted(tmp_path: Path) -> None:
    """QA: rb-010 --yes -p verify_window=<40 nines>d on a fix that does not converge waited
    (minutes, then forever) instead of refusing the value."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nobody listens on: contacting it would be exit 4
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "OPSCTL_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run([sys.executable, "-m", "opsctl", "run", "rb-010", "--yes", "--option",
                          "set-eviction-policy", "-p", "verify_window=" + "9" * 40 + "d"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "verify_window" in out.stderr and "above the maximum 30m" in out.stderr


def test_show_says_what_each_parameter_accepts(opsctl: Opsctl) -> None:
    """`opsctl show` lists a parameter's range (and a choice's values), which -p is held to."""
    text = " ".join(opsctl("show", rb("rb-461")).stdout.split())
    assert "replicas (integer 1..10, default 2)" in text
    assert "ratio (number 0..1, default 0.5)" in text
    assert "window (duration 10s..1h, default '5m')" in text
    assert "target (string, required)" in text
    mode = " ".join(opsctl("show", "rb-007").stdout.split())
    assert "mode (choice: client | server | auto, default 'client')" in mode


def test_a_parameter_declaration_verdict_is_kept_by_value_and_type() -> None:
    """The semantic check keeps each parameter declaration's problems by what decides them: a
    default of True must not reuse the verdict of a default of 1 (True == 1 in Python)."""
    from opsctl import loader, semantic

    def problems(default: str) -> list[str]:
        text = ("id: rb-001\nparams:\n  count: {type: integer, default: " + default + "}\n")
        return [str(e) for e in semantic.check(loader.load_text(text, "rb-001-x.yaml"))[0]]

    for _ in range(2):  # the second round from the kept verdicts
        assert problems("1") == []
        assert problems("true") == ["rb-001-x.yaml:3:35: params.count.default: bad default: "
                                    "expected an integer, got True"]
