"""The executor's watchdog, in process: an action that ignores its deadline (a client call that
hangs without honouring any timeout) is abandoned GRACE seconds after it, the run goes on to its
verdict, and the abandoned step is told to stop.

In process because such an action cannot be shipped: every real action honours its deadline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsctl import actions, audit, catalog, executor
from opsctl.actions.base import Action, type_schema
from opsctl.config import Environment
from opsctl.render import JsonRenderer
from tests.timing import budget

STOPPED = threading.Event()


class Stubborn(Action):
    """Sleeps in slices, ignoring the deadline; stops only when told (the cancel event)."""

    name = "test.stubborn"
    summary = "ignores its deadline"
    schema = type_schema({"seconds": {"type": "number"}}, required=["seconds"])

    def run(self) -> Any:
        end = time.monotonic() + self.args["seconds"]
        while time.monotonic() < end:
            if self.ctx.cancelled.is_set():
                STOPPED.set()
                break
            time.sleep(0.05)
        return {"slept": True}


RUNBOOK = """\
id: rb-480
title: A step that ignores its deadline
severity: P3
summary: the watchdog must give up on it and finish the run.
diagnose:
  - id: hang
    action: test.stubborn
    with: {seconds: 30}
    timeout: 1s
  - id: other
    action: core.echo
    with: {value: 1}
"""


@pytest.fixture
def stubborn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    actions.load_all()
    actions.register(Stubborn)
    monkeypatch.setenv("OPSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(executor, "GRACE", 1.0)
    path = tmp_path / "rb-480-stubborn.yaml"
    path.write_text(RUNBOOK)
    STOPPED.clear()
    try:
        yield path
    finally:
        actions._REGISTRY.pop(Stubborn.name, None)


def test_an_action_ignoring_its_deadline_is_abandoned(stubborn: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rb = catalog.load(str(stubborn))
    log = audit.RunLog(audit.new_run_id(rb.id))
    started = time.monotonic()
    outcome = executor.Executor(rb, rb.resolve_params({}), Environment(name="test"),
                                executor.RunSettings(), JsonRenderer(), log).execute()
    elapsed = time.monotonic() - started
    # deadline (1 s) + GRACE (1 s): not the action's 30 s, nor an extra retry interval (5 s)
    assert 2.0 <= elapsed < budget(6)
    assert outcome.exit_code == 1
    ends = [json.loads(line) for line in log.path.read_text().splitlines()]
    records = {e["record"]["id"]: e["record"] for e in ends if e["event"] == "step_end"}
    hang = records["hang"]
    assert (hang["status"], hang["error_kind"]) == ("timed_out", "timeout")
    assert "abandoned" in hang["reason"]
    assert records["other"]["status"] == "ok"  # the run went on around it
    assert STOPPED.wait(2), "the abandoned action was never told to stop"


class StopsWhenTold(Action):
    """Ignores its deadline; when the watchdog's cancel event reaches it, it stops the way every
    real action does (ctx.check_cancelled() raises Cancelled), after a little cleanup."""

    name = "test.stops_when_told"
    summary = "ignores its deadline, honours cancellation"
    schema = type_schema({"seconds": {"type": "number"}}, required=["seconds"])

    def run(self) -> Any:
        end = time.monotonic() + self.args["seconds"]
        while time.monotonic() < end:
            if self.ctx.cancelled.is_set():
                time.sleep(0.2)  # cleanup: the watchdog has already recorded its verdict
                STOPPED.set()
                self.ctx.check_cancelled()  # raises Cancelled, as ctx.sleep() would
            time.sleep(0.05)
        return {"slept": True}


ABANDONED = """\
id: rb-481
title: A step abandoned by the watchdog, which then stops
severity: P3
summary: the watchdog's verdict (timed out) must stand; no Ctrl-C was pressed.
diagnose:
  - id: hang
    action: test.stops_when_told
    with: {seconds: 30}
    timeout: 1s
    continue_on_error: true
verify:
  - id: later
    action: core.sleep
    with: {seconds: 1.5}
"""


def test_a_step_abandoned_by_the_watchdog_never_turns_the_run_into_interrupted(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Defect 8 (issue 9): the watchdog marked the step timed out and set its cancel event; the
    thread then stopped (Cancelled) and rewrote the status to "interrupted", so the run exited 130
    with no Ctrl-C.  The first verdict recorded for a step wins; 130 is for a real SIGINT only."""
    actions.load_all()
    actions.register(StopsWhenTold)
    monkeypatch.setenv("OPSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(executor, "GRACE", 0.5)
    path = tmp_path / "rb-481-abandoned.yaml"
    path.write_text(ABANDONED)
    STOPPED.clear()
    try:
        rb = catalog.load(str(path))
        log = audit.RunLog(audit.new_run_id(rb.id))
        outcome = executor.Executor(rb, rb.resolve_params({}), Environment(name="test"),
                                    executor.RunSettings(), JsonRenderer(), log).execute()
    finally:
        actions._REGISTRY.pop(StopsWhenTold.name, None)
    assert STOPPED.is_set(), "the abandoned step never saw its cancel event"
    hang = next(r for r in outcome.records if r.id == "hang")
    assert (hang.status, hang.error_kind) == ("timed_out", "timeout"), hang
    # the run went on (continue_on_error) while the thread stopped: no Ctrl-C, so never 130
    assert (outcome.exit_code, outcome.status) == (0, "ok"), outcome.message
    assert next(r for r in outcome.records if r.id == "later").status == "ok"
    ends = [json.loads(line) for line in log.path.read_text().splitlines()]
    logged = [e["record"]["status"] for e in ends if e["event"] == "step_end" and e["record"]["id"] == "hang"]
    assert logged == ["timed_out"]
    assert not any(e["event"] == "interrupted" for e in ends)
