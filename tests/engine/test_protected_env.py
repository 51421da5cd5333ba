"""Protected environments and the applies-per-hour breaker (issue 11 §4), through the real CLI on
a runbook whose one mutation writes a local file (rb-401)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from opsctl.backends.locking import FileLock, Holder
from tests.engine.helpers import rb, run_pty
from tests.fixtures.core import Result
from tests.timing import budget

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


def test_two_concurrent_applies_at_the_limit_minus_one(opsctl: Opsctl, opsctl_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    """Both runs pass the check made before the run (1 apply of 2 this hour) and queue on the apply
    lock (held here until both wait); the one that gets it applies, the other re-checks under the
    lock, sees it, and changes nothing: exit 3 with the rate-limit message."""
    target = _setup(tmp_path)
    first = opsctl("run", rb("rb-401"), "-e", "staging", "--yes", "-p", f"target={target}")
    assert first.code == 0, first.output
    state = Path(opsctl_env["OPSCTL_STATE_DIR"])
    holder = Holder("alice", "bastion-1", "20260101T000000000Z-rb-401-cafe0001", "2026-01-01T00:00:00Z")
    lock = FileLock(state / "locks", "opsctl:rb-401:core:staging", holder)
    assert lock.try_acquire() is None
    runs: dict[str, subprocess.Popen[str]] = {}
    try:
        for content in ("a", "b"):
            runs[content] = subprocess.Popen(
                [sys.executable, "-m", "opsctl", "run", rb("rb-401"), "-e", "staging", "--yes", "--lock-wait",
                 "600", "-p", f"target={target}", "-p", f"content={content}"],
                cwd=tmp_path, env=opsctl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + budget(60)
        while sum("lock_wait" in f.read_text() for f in (state / "runs").glob("*.jsonl")) < 2:
            assert all(p.poll() is None for p in runs.values()), "a run ended before reaching the lock"
            assert time.monotonic() < deadline, "the two runs did not both wait for the apply lock"
            time.sleep(0.1)
    finally:
        lock.release()
    out = {content: (p.communicate(timeout=budget(120)), p.returncode) for content, p in runs.items()}
    codes = {content: code for content, (_, code) in out.items()}
    refused = [content for content, code in codes.items() if code == 3]
    assert len(refused) == 1, out
    loser, winner = refused[0], next(c for c in codes if c not in refused)
    assert codes[winner] == 0, out[winner]
    assert target.read_text() == winner  # the refused run wrote nothing
    said = "".join(out[loser][0])
    assert "rate limit" in said and "max_applies_per_hour is 2" in said, said
    assert "under the apply lock" in said, said
    logs = {json.loads(f.read_text().splitlines()[0])["params"].get("content"): f.read_text()
            for f in (state / "runs").glob("*.jsonl")}
    assert '"apply_start"' in logs[winner] and '"apply_start"' not in logs[loser]
