"""One apply at a time through the CLI for a backend without a lock of its own (core.write_file:
the local lock file): the second run names the holder and changes nothing; once released it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opsctl.backends.locking import FileLock, Holder
from tests.engine.helpers import rb
from tests.fixtures.core import Result


def test_a_held_lock_file_names_its_holder(opsctl: Callable[..., Result], opsctl_env: dict[str, str],
                                           tmp_path: Path) -> None:
    target = tmp_path / "flag"
    alice = Holder("alice", "bastion-1", "20260101T000000000Z-rb-401-cafe0001", "2026-01-01T00:00:00Z")
    lock = FileLock(Path(opsctl_env["OPSCTL_STATE_DIR"]) / "locks", "opsctl:rb-401:core:default", alice)
    assert lock.try_acquire() is None
    try:
        r = opsctl("run", rb("rb-401"), "--yes", "--lock-wait", "1", "-p", f"target={target}")
        assert r.code == 3, r.output
        assert "alice@bastion-1" in r.output and alice.run_id in r.output and "waiting for" in r.output
        assert not target.exists()
    finally:
        lock.release()
    r = opsctl("run", rb("rb-401"), "--yes", "-p", f"target={target}")
    assert r.code == 0, r.output
    assert target.read_text() == "on"
