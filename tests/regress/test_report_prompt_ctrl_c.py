"""`opsctl report` after a Ctrl-C at the confirmation prompt (issue 9, defects 9 and 12): the change
was planned and shown, the operator was asked and answered with Ctrl-C: the report must say so
(never "confirmed", never "not asked"), list it as not applied, and nothing as sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.engine.helpers import events, rb, run_logs, run_pty


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_ctrl_c_at_the_prompt_is_reported_as_asked_and_interrupted(
        opsctl: Any, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = run_pty(["run", rb("rb-401"), "-p", f"target={target}"], opsctl_env, tmp_path, [("[y/n]", "\x03")])
    assert r.code == 130 and not target.exists(), r.output
    log = run_logs(opsctl_env)[-1]
    kinds = [e["event"] for e in events(log)]
    assert "apply_start" not in kinds
    text = opsctl("report", log.stem).stdout
    assert "- none: no change was sent to any system" in _section(text, "Actions taken")
    planned = _section(text, "Planned, not applied")
    assert "`write_flag` (core.write_file): interrupted" in planned, planned
    assert "applied: no" in planned
    assert "decision: interrupted at the confirmation prompt (Ctrl-C): not confirmed" in planned, planned
    assert "not asked" not in planned
