"""The rehearsal kit as users get it: the shipped rehearsal files pass against the real servers
(through the pytest plugin's session servers), `opsctl rehearse` fails with a located message when a
must-hold is false, and `opsctl new` scaffolds a runbook that validates and rehearses green against a
real PostgreSQL with an injected fault."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.core import REPO, Result

SHIPPED = sorted((REPO / "runbooks").glob("*.rehearsal.yaml"))


def test_the_shipped_catalogue_keeps_the_rb_nnn_convention() -> None:
    import re

    from opsctl.catalog import runbook_files

    files = runbook_files([REPO / "runbooks"])
    assert files and all(re.fullmatch(r"rb-\d{3}-[a-z0-9-]+\.yaml", f.name) for f in files), files


def test_every_backend_kind_has_a_shipped_rehearsal() -> None:
    from opsctl.testing.rehearse import read_file

    kinds = {k for path in SHIPPED for k in read_file(path).servers}
    assert kinds == {"postgres", "redis", "kafka", "aws"}, kinds


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name.split(".")[0][:6] for p in SHIPPED])
def test_shipped_rehearsals_pass(path: Path, opsctl_rehearse: Callable[..., Any]) -> None:
    # each file's first rehearsal (the fault mitigated and what must hold after); rb-006's second one,
    # a dry-run that changes nothing, is tests/runbooks/test_rb006.py's too (CI time is short)
    results = opsctl_rehearse(path, only=[0])
    assert len(results) == 1 and results[0].ok, results[0].failures


def test_a_rehearsal_starts_from_clean_servers(opsctl_moto: Any,
                                              opsctl_rehearse: Callable[..., Any]) -> None:
    # an earlier test of the session left messages in the queues the rehearsal uses (seen in CI:
    # rb-007's rehearsal found 55 messages in orders-dlq where it had put 40)
    from opsctl.testing.aws import fill, make_queue_with_dlq

    opsctl_moto.reset()
    _, dlq = make_queue_with_dlq(opsctl_moto, "orders")
    fill(opsctl_moto, dlq, 15)
    results = opsctl_rehearse(REPO / "runbooks" / "rb-007-sqs-dlq-redrive.rehearsal.yaml", only=[0])
    assert len(results) == 1 and results[0].ok, results[0].failures


def test_a_false_must_hold_fails_located(opsctl: Callable[..., Result], tmp_path: Path) -> None:
    rehearsal = tmp_path / "rb-010.rehearsal.yaml"
    rehearsal.write_text(
        f"runbook: {REPO / 'runbooks' / 'rb-010-redis-cache-degradation.yaml'}\n"
        "servers: [redis]\n"
        "rehearsals:\n"
        "  - name: a healthy cache is left alone\n"
        "    dry_run: true\n"
        "    expect:\n"
        "      exit_code: 0\n"
        "      state:\n"
        "        - redis.config: {name: maxmemory-policy, equals: allkeys-lru}\n")
    result = opsctl("rehearse", str(rehearsal))
    assert result.code == 1, result.output
    assert (f"{rehearsal}:9:11: a healthy cache is left alone: redis.config {{name: maxmemory-policy}}: "
            "expected equals 'allkeys-lru', got 'noeviction'") in result.stdout, result.output
    assert "1 failed" in result.stdout


def test_an_invalid_rehearsal_file_is_exit_2_located(opsctl: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "x.yaml").write_text("id: x\n")
    (tmp_path / "runbooks" / "x.rehearsal.yaml").write_text(
        "servers: [redis]\nrehearsals:\n  - name: n\n    faults:\n"
        "      - postgres.leak_connection: {count: 1}\n    expect: {exit_code: 0}\n")
    result = opsctl("rehearse", cwd=tmp_path)
    assert result.code == 2, result.output
    line = result.stderr.splitlines()[0]
    assert line.startswith("runbooks/x.rehearsal.yaml:5:9: ") and "nothing was run" in result.stderr
    assert "unknown fault 'postgres.leak_connection' (did you mean 'postgres.leak_connections'?)" in line


@pytest.mark.postgres
def test_new_scaffolds_a_runbook_that_validates_and_rehearses_green(
        opsctl: Callable[..., Result], tmp_path: Path, opsctl_rehearse: Callable[..., Any]) -> None:
    made = opsctl("new", "pg-pool-exhausted", "--backend", "postgres", cwd=tmp_path)
    assert made.code == 0, made.output
    runbook = tmp_path / "runbooks" / "pg-pool-exhausted.yaml"
    assert runbook.read_text().startswith("# yaml-language-server: $schema=../runbook.schema.json")
    assert (tmp_path / "runbook.schema.json").is_file()
    assert opsctl("validate", "runbooks", cwd=tmp_path).code == 0
    # the first rehearsal (leak injected, option applied, what must hold); the second, a dry-run
    # changing nothing, is the shipped rb-006 rehearsal's too
    results = opsctl_rehearse(tmp_path / "runbooks" / "pg-pool-exhausted.rehearsal.yaml", only=[0])
    assert [r.ok for r in results] == [True], [f for r in results for f in r.failures]
    assert opsctl("new", "pg-pool-exhausted", "--backend", "postgres", cwd=tmp_path).code == 2  # exists


def test_new_from_a_shipped_runbook_and_every_backend_template_validate(
        opsctl: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsctl.errors import UsageError
    from opsctl.scaffold import new

    monkeypatch.setenv("OPSCTL_RUNBOOK_PATH", str(REPO / "runbooks"))
    new("rb-042", source="rb-006", directory=tmp_path / "runbooks")
    for backend in ("redis", "kafka", "aws"):
        new(f"{backend}-check", backend=backend, directory=tmp_path / "runbooks")
    text = (tmp_path / "runbooks" / "rb-042.yaml").read_text()
    assert "\nid: rb-042\n" in text and "option: kill-long-queries" in text
    assert "kill_sessions: applied" in (tmp_path / "runbooks" / "rb-042.rehearsal.yaml").read_text()
    checked = opsctl("validate", "runbooks", cwd=tmp_path)
    assert checked.code == 0 and "4 file(s) checked: all valid" in checked.stderr, checked.output
    with pytest.raises(UsageError, match="slug"):
        new("Bad Name", backend="postgres", directory=tmp_path / "runbooks")
    with pytest.raises(UsageError, match="exists"):
        new("redis-check", backend="redis", directory=tmp_path / "runbooks")
