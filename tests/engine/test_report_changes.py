"""`opsctl report` is faithful (issue 9 defects 9 and 12): per change it shows what was planned, the
decision (confirmed / declined / refused), whether it was applied, and before/after values; a
declined or refused change is never shown as done; a mutation that was sent is never reported as
"Actions taken: none", even when the run was cut by a double Ctrl-C, and the moved count reported
so far survives in the output and the run log.  Through the CLI and the run log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.engine.helpers import events, rb, run_logs, run_pty
from tests.fixtures.core import REPO


def _report(opsctl: Any, env: dict[str, str]) -> str:
    run_id = run_logs(env)[-1].stem
    r = opsctl("report", run_id)
    assert r.code == 0, r.output
    return r.stdout


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_a_declined_change_is_reported_as_planned_and_declined_never_done(
        opsctl: Any, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = run_pty(["run", rb("rb-401"), "-p", f"target={target}"], opsctl_env, tmp_path, [("[y/n]", "n\r")])
    assert r.code == 3 and not target.exists(), r.output
    text = _report(opsctl, opsctl_env)
    assert "→" not in text
    assert "- none: no change was sent to any system" in _section(text, "Actions taken")
    planned = _section(text, "Planned, not applied")
    assert "`write_flag` (core.write_file): declined" in planned
    assert "decision: declined (the operator)" in planned and "applied: no" in planned
    assert f"create {target}: before `-`, planned `on`: not applied (declined)" in planned


def test_a_refused_change_is_reported_as_refused(opsctl: Any, opsctl_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    target = tmp_path / "flag"
    assert opsctl("run", rb("rb-401"), "-p", f"target={target}").code == 3  # no terminal, no --yes
    text = _report(opsctl, opsctl_env)
    planned = _section(text, "Planned, not applied")
    assert ("decision: refused: step 'write_flag' would change 1 thing(s) but stdin is not a "
            "terminal") in planned
    assert "not applied (refused)" in planned and "→" not in text
    assert "none: no change was sent" in _section(text, "Actions taken")


def test_an_applied_change_shows_the_decision_and_before_after(opsctl: Any, opsctl_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    target = tmp_path / "flag"
    target.write_text("off")
    assert opsctl("run", rb("rb-401"), "-p", f"target={target}", "--yes").code == 0
    text = _report(opsctl, opsctl_env)
    taken = _section(text, "Actions taken")
    assert "decision: confirmed (--yes)" in taken and "applied: yes" in taken
    assert f"update {target}: before `off`, after `on`: applied" in taken
    assert "- none" in _section(text, "Planned, not applied")
    kinds = [e["event"] for e in events(run_logs(opsctl_env)[-1])]
    # the mutation is logged as sent before apply() runs, after the confirmation
    assert kinds.index("confirm") < kinds.index("apply_start") < kinds.index("run_end")


MOVER = """\
id: rb-484
title: Move files (a redrive in miniature)
severity: P3
summary: one slow mutation that reports progress.
params:
  src: {type: string, required: true}
  dst: {type: string, required: true}
diagnose:
  - id: seen
    action: core.echo
    with: {value: 1}
mitigate:
  - id: move
    action: test.slow_move
    with: {src: "{{ params.src }}", dst: "{{ params.dst }}"}
verify:
  - id: done
    action: core.echo
    with: {value: 1}
"""


def test_a_double_ctrl_c_mid_mutation_keeps_the_moved_count_and_the_report_says_it_was_sent(
        opsctl: Any, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for i in range(200):
        (src / f"m{i:03}").write_text(str(i))
    path = tmp_path / "rb-484-mover.yaml"
    path.write_text(MOVER)
    env = {**opsctl_env, "PYTHONPATH": str(REPO) + os.pathsep + opsctl_env.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "tests.engine.slow_mover", "run", str(path), "--yes",
                             "-p", f"src={src}", "-p", f"dst={dst}", "-o", "json"],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the run log shows progress of the mutation
            logs = run_logs(opsctl_env)
            if logs and any(e["event"] == "apply_progress" and e["progress"].get("moved", 0) >= 3
                            for e in events(logs[0])):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the mutation never reported progress")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # the second Ctrl-C: stop waiting for the step
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    doc = json.loads(out)
    move = next(s for s in doc["steps"] if s["id"] == "move")
    assert move["status"] == "interrupted"
    assert "while applying: the change was being sent" in move["reason"]
    reported = move["result"]["progress"]["moved"]
    assert 3 <= reported <= len(os.listdir(dst))  # what it had reported: never more than was moved
    evs = events(run_logs(opsctl_env)[0])
    kinds = [e["event"] for e in evs]
    assert kinds.index("apply_start") < kinds.index("interrupted")
    end = next(e for e in evs if e["event"] == "step_end" and e["record"]["id"] == "move")
    assert end["record"]["result"]["progress"]["moved"] == reported
    text = _report(opsctl, opsctl_env)
    taken = _section(text, "Actions taken")
    assert "none: no change was sent" not in taken
    assert "`move` (test.slow_move): interrupted" in taken
    assert "applied: partly or unknown: the change was sent" in taken
    assert f"moved={reported}" in taken
    assert "change sent: step `move`" in _section(text, "Timeline (UTC)")


def test_a_killed_run_whose_mutation_was_sent_is_not_reported_as_no_action(
        opsctl: Any, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    """The process dies (SIGKILL) mid-mutation: no step_end, no run_end; the apply_start event is
    what tells the post-mortem that the change was sent."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for i in range(100):
        (src / f"m{i:03}").write_text(str(i))
    path = tmp_path / "rb-484-mover.yaml"
    path.write_text(MOVER)
    env = {**opsctl_env, "PYTHONPATH": str(REPO) + os.pathsep + opsctl_env.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "tests.engine.slow_mover", "run", str(path), "--yes",
                             "-p", f"src={src}", "-p", f"dst={dst}", "-o", "json"],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logs = run_logs(opsctl_env)
            if logs and any(e["event"] == "apply_progress" for e in events(logs[0])):
                break
            time.sleep(0.1)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = _report(opsctl, opsctl_env)
    taken = _section(text, "Actions taken")
    assert "`move` (test.slow_move)" in taken
    assert "unknown: the change was sent and the run log ends before the step did" in taken
    assert "moved=" in taken




def test_resume_hands_back_only_the_plans_whose_apply_did_not_finish() -> None:
    from opsctl.audit import unfinished_plans

    def sent(step: str, n: int) -> dict[str, Any]:
        return {"event": "apply_start", "step": step, "plan_data": {"n": n}}

    def ended(step: str, status: str) -> dict[str, Any]:
        return {"event": "step_end", "record": {"id": step, "status": status}}

    events = [{"event": "run_start"}, sent("done", 1), ended("done", "applied"),
              sent("cut", 2), ended("cut", "interrupted"), sent("killed", 3),
              sent("failed", 4), ended("failed", "failed"), ended("read", "ok")]
    assert unfinished_plans(events) == {"cut": {"n": 2}, "killed": {"n": 3}, "failed": {"n": 4}}
    assert unfinished_plans([sent("old", 5) | {"plan_data": None}]) == {}  # a log from before plan_data
