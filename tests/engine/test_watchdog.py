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
    assert 2.0 <= elapsed < 6
    assert outcome.exit_code == 1
    ends = [json.loads(line) for line in log.path.read_text().splitlines()]
    records = {e["record"]["id"]: e["record"] for e in ends if e["event"] == "step_end"}
    hang = records["hang"]
    assert (hang["status"], hang["error_kind"]) == ("timed_out", "timeout")
    assert "abandoned" in hang["reason"]
    assert records["other"]["status"] == "ok"  # the run went on around it
    assert STOPPED.wait(2), "the abandoned action was never told to stop"
