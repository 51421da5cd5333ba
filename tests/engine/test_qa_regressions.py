"""Regressions from the exploratory acceptance pass: each was a wrong exit code or a crash."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.helpers import events, run_logs

PHASED = """\
id: rb-960
title: Phases that depend on each other
severity: P3
summary: verify reads the diagnosis
params:
  target: {type: string, default: /tmp}   # a directory: the plan cannot read it and refuses
diagnose:
  - id: probe
    action: core.echo
    with: {value: 7}
mitigate:
  - id: write
    action: core.write_file
    with: {path: "{{ params.target }}", content: "x"}
verify:
  - id: check
    action: core.echo
    with: {value: "{{ steps.probe.result.value }}"}
    expect:
      - that: "result.value == 7"
"""


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_recursive_alias_is_a_located_error_and_other_files_still_report(opsctl, tmp_path):
    _file(tmp_path, "rb-961-rec.yaml", "a: &a [*a]\n")
    _file(tmp_path, "rb-962-bad.yaml", "id: rb-962\n")
    r = opsctl("validate", str(tmp_path))
    assert r.code == 2, r.output
    assert "rb-961-rec.yaml:1:4: a[0]: recursive YAML alias" in r.stdout
    assert "rb-962-bad.yaml:1:1: missing required key 'title'" in r.stdout
    assert "internal error" not in r.output


def test_semantic_errors_are_reported_next_to_schema_errors(opsctl, tmp_path):
    text = PHASED.replace("severity: P3", "severity: P9").replace(
        "    with: {value: 7}\n", "    with: {value: 7}\n  - id: probe\n    action: core.echo\n"
        "    with: {value: 8}\n", 1)
    r = opsctl("validate", _file(tmp_path, "rb-960-two.yaml", text))
    assert r.code == 2
    assert "rb-960-two.yaml:3:11: severity: expected one of P0, P1, P2, P3, P4, got 'P9'" in r.stdout
    assert "rb-960-two.yaml:11:9: diagnose[1].id: duplicate step id 'probe'" in r.stdout


def test_run_json_usage_error_is_a_json_document(opsctl):
    r = opsctl("run", "rb-nope", "-o", "json")
    assert r.code == 2
    doc = json.loads(r.stdout)
    assert doc["status"] == "invalid" and doc["exit_code"] == 2 and "rb-nope" in doc["message"]


def test_dry_run_reports_a_refusing_plan_as_a_finding_with_exit_0(opsctl, tmp_path):
    r = opsctl("run", _file(tmp_path, "rb-960-p.yaml", PHASED), "--dry-run", "-o", "json")
    assert r.code == 0, r.output
    doc = json.loads(r.stdout)
    write = next(s for s in doc["steps"] if s["id"] == "write")
    assert write["status"] == "planned" and "the plan refuses" in write["reason"]
    assert any(f["severity"] == "critical" and f["step"] == "write" for f in doc["findings"])
    real = opsctl("run", _file(tmp_path, "rb-960-q.yaml", PHASED), "--yes")
    assert real.code == 1, real.output  # outside a dry-run the refusal fails the step


def test_phase_needing_another_phase_is_exit_2_unless_resumed(opsctl, opsctl_env, tmp_path):
    path = _file(tmp_path, "rb-960-r.yaml", PHASED)
    alone = opsctl("run", path, "--phase", "verify")
    assert alone.code == 2, alone.output
    assert "needs the result of diagnose step 'probe'" in alone.stdout
    first = opsctl("run", path, "--phase", "diagnose")
    assert first.code == 0, first.output
    run_id = events(run_logs(opsctl_env)[-1])[0]["run_id"]
    resumed = opsctl("run", path, "--phase", "verify", "--resume", run_id, "-o", "json")
    assert resumed.code == 0, resumed.output
    assert json.loads(resumed.stdout)["message"] == "verified (no mitigation was applied)"
