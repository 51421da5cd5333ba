"""Protected environments and the applies-per-hour breaker (issue 11 §4), through the real CLI on
a runbook whose one mutation writes a local file (rb-401)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.engine.helpers import rb, run_pty
from tests.fixtures.core import Result

Opsctl = Callable[..., Result]
CONFIG = """\
environments:
  prod:
    protected: true
    settings: {namespace: checkout}
  staging:
    max_applies_per_hour: {default: 5, rb-401: 2}
"""


def _setup(tmp_path: Path) -> Path:
    (tmp_path / "opsctl.yaml").write_text(CONFIG)
    return tmp_path / "flag"


def test_yes_is_refused_in_a_protected_environment_unless_named(opsctl: Opsctl, tmp_path: Path) -> None:
    target = _setup(tmp_path)
    r = opsctl("run", rb("rb-401"), "-e", "prod", "--yes", "-p", f"target={target}")
    assert r.code == 3, r.output
    assert "protected" in r.stderr and "--yes-protected prod" in r.stderr
    assert not target.exists()
    r = opsctl("run", rb("rb-401"), "-e", "prod", "--yes", "--yes-protected", "staging", "-p",
               f"target={target}")
    assert r.code == 2 and "does not name" in r.stderr, r.output
    assert not target.exists()
    r = opsctl("run", rb("rb-401"), "-e", "prod", "--yes", "--yes-protected", "prod", "-p",
               f"target={target}", "-o", "json")
    assert r.code == 0, r.output
    assert target.read_text() == "on" and json.loads(r.stdout)["protected"] is True
    dry = opsctl("run", rb("rb-401"), "-e", "prod", "--dry-run", "-p", f"target={tmp_path / 'other'}")
    assert dry.code == 0 and "(protected)" in dry.stdout, dry.output


def test_a_person_types_the_environment_name(opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = _setup(tmp_path)
    args = ["run", rb("rb-401"), "-e", "prod", "-p", f"target={target}"]
    said_yes = run_pty(args, opsctl_env, tmp_path, [("Type its name", "y\n")], timeout=60)
    assert said_yes.answered and said_yes.code == 3, said_yes.output
    assert "prod (protected)" in said_yes.output and not target.exists()
    typed = run_pty(args, opsctl_env, tmp_path, [("Type its name", "prod\n")], timeout=60)
    assert typed.answered and typed.code == 0, typed.output
    assert target.read_text() == "on"


def test_max_applies_per_hour_counts_the_run_log(opsctl: Opsctl, tmp_path: Path) -> None:
    target = _setup(tmp_path)
    for i in range(2):
        r = opsctl("run", rb("rb-401"), "-e", "staging", "--yes", "-p", f"target={target}", "-p",
                   f"content=v{i}")
        assert r.code in (0, 1), r.output  # verify wants 'on': the content differs on purpose
    assert target.read_text() == "v1"
    dry = opsctl("run", rb("rb-401"), "-e", "staging", "--dry-run", "-p", f"target={target}")
    assert dry.code == 0, dry.output  # a dry-run changes nothing: never rate-limited
    r = opsctl("run", rb("rb-401"), "-e", "staging", "--yes", "-p", f"target={target}", "-p", "content=v2")
    assert r.code == 3, r.output
    assert "rate limit" in r.stderr and "max_applies_per_hour is 2" in r.stderr
    assert target.read_text() == "v1"
