"""Options that need parameters, run.option during the diagnosis, resume overrides, repeated errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.helpers import events, run_logs

RUNBOOK = """\
id: rb-950
title: Options with requirements
severity: P2
summary: an option that needs a parameter
params:
  target: {type: string, default: ""}
  flag: {type: string, default: ""}
options:
  - name: write
    title: Write the target
    requires: [target]
    recommended_when: "true"
  - name: nothing
    title: Do nothing
diagnose:
  - id: seen
    action: core.echo
    with: {value: "{{ run.option }}"}
mitigate:
  - id: w
    option: write
    action: core.write_file
    with: {path: "{{ params.target }}", content: "x"}
verify:
  - id: done
    action: core.echo
    with: {value: 1}
"""

BROKEN = RUNBOOK.replace("requires: [target]", "requires: [targt]")


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rb-950-options.yaml"
    path.write_text(text)
    return str(path)


def test_explicit_option_missing_its_param_is_exit_2_before_anything_runs(opsctl, tmp_path):
    r = opsctl("run", _write(tmp_path, RUNBOOK), "--yes", "--option", "write")
    assert r.code == 2, r.output
    assert "option 'write' needs target (-p target=...)" in r.stderr
    assert "Traceback" not in r.output
    assert "seen" not in r.stdout  # refused before the diagnosis


def test_recommended_option_missing_its_param_is_exit_2_and_changes_nothing(opsctl, tmp_path):
    r = opsctl("run", _write(tmp_path, RUNBOOK), "--yes")
    assert r.code == 2, r.output
    assert "needs target" in r.stderr


def test_option_with_its_param_runs_and_diagnosis_sees_run_option(opsctl, tmp_path):
    target = tmp_path / "out.txt"
    r = opsctl("run", _write(tmp_path, RUNBOOK), "--yes", "--option", "write", "-p",
               f"target={target}", "-o", "json")
    assert r.code == 0, r.output
    doc = json.loads(r.stdout)
    seen = next(s for s in doc["steps"] if s["id"] == "seen")
    assert seen["result"] == {"value": "write"}
    assert target.read_text() == "x"


def test_requires_names_must_be_params(opsctl, tmp_path):
    r = opsctl("validate", _write(tmp_path, BROKEN))
    assert r.code == 2
    assert ":11:16: options[0].requires[0]: unknown parameter 'targt' (did you mean 'target'?)" in r.stdout


def test_resume_says_which_parameters_changed(opsctl, opsctl_env, tmp_path):
    path = _write(tmp_path, RUNBOOK)
    first = opsctl("run", path, "--option", "nothing", "-p", "flag=a")
    assert first.code == 0, first.output
    run_id = events(run_logs(opsctl_env)[-1])[0]["run_id"]
    again = opsctl("run", path, "--resume", run_id, "-p", "flag=b")
    assert again.code == 0, again.output
    assert f"resuming {run_id} with changed parameters: flag=b" in again.stderr


def test_the_same_failure_is_printed_once(opsctl, tmp_path):
    text = """\
id: rb-951
title: Two probes, one dead endpoint
severity: P3
summary: both probes fail the same way
diagnose:
  - id: one
    action: core.assert
    with: {that: false, message: the backend is down}
    continue_on_error: true
  - id: two
    action: core.assert
    with: {that: false, message: the backend is down}
    continue_on_error: true
"""
    path = tmp_path / "rb-951-same.yaml"
    path.write_text(text)
    r = opsctl("run", str(path))
    assert r.stdout.count("the backend is down") == 1, r.stdout
    assert "same error as one" in r.stdout or "same error as two" in r.stdout
