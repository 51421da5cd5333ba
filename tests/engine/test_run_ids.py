"""Run ids never collide (issue 11 §3): two runs in the same second used to share one about once
in 65,536 (16 random bits); now milliseconds, 32 random bits, and an exclusive log file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opsctl import audit


def test_ids_of_one_second_are_distinct() -> None:
    ids = [audit.new_run_id("rb-006") for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert all(i.split("-rb-006-")[0].endswith("Z") and len(i.rsplit("-", 1)[1]) == 8 for i in ids)


def test_a_taken_id_gets_a_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_STATE_DIR", str(tmp_path))
    first = audit.RunLog("20260101T000000000Z-rb-006-00000000")
    second = audit.RunLog("20260101T000000000Z-rb-006-00000000")  # the same id, as if by chance
    assert first.run_id != second.run_id and second.run_id.split("-", 1)[1].startswith("rb-006-")
    assert first.path.exists() and second.path.exists() and first.path != second.path
    assert sorted(os.listdir(tmp_path / "runs")) == sorted([first.path.name, second.path.name])
