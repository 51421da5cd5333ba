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


def test_dry_run_whose_plan_refuses_is_exit_1_and_says_why(opsctl, tmp_path):
    """A dry-run is a rehearsal: a mutation that would be refused is a critical finding and the
    run's exit code (1, as the real run's), never "dry-run complete", exit 0."""
    r = opsctl("run", _file(tmp_path, "rb-960-p.yaml", PHASED), "--dry-run", "-o", "json")
    assert r.code == 1, r.output
    doc = json.loads(r.stdout)
    write = next(s for s in doc["steps"] if s["id"] == "write")
    assert write["status"] == "planned" and "the plan refuses" in write["reason"]
    assert any(f["severity"] == "critical" and f["step"] == "write" for f in doc["findings"])
    assert doc["message"].startswith("dry-run: nothing was changed, but mitigate/write would not run: "
                                     "the plan refuses: ")
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


OPTIONS = """\
id: rb-963
title: Two options, one of which refuses
severity: P3
summary: a dry-run without --option plans both
params:
  good: {type: string, required: true}
options:
  - {name: bad, title: writes into a directory (refused)}
  - {name: good, title: writes a file}
diagnose:
  - id: probe
    action: core.echo
    with: {value: 7}
mitigate:
  - id: bad_write
    option: bad
    action: core.write_file
    with: {path: /tmp, content: "x"}
  - id: good_write
    option: good
    action: core.write_file
    with: {path: "{{ params.good }}", content: "x"}
verify:
  - id: check
    action: core.echo
    with: {value: 7}
"""


def test_a_dry_run_of_every_option_exits_0_while_one_of_them_would_work(opsctl, tmp_path):
    """Without --option the dry-run plans every alternative: a refused one is a finding; the exit
    code is 1 only when the option chosen (or every planned one) would be refused."""
    path = _file(tmp_path, "rb-963-options.yaml", OPTIONS)
    target = str(tmp_path / "out.txt")
    every = opsctl("run", path, "--dry-run", "-o", "json", "-p", f"good={target}")
    assert every.code == 0, every.output
    doc = json.loads(every.stdout)
    assert any(f["severity"] == "critical" and f["step"] == "bad_write" for f in doc["findings"])
    chosen = opsctl("run", path, "--dry-run", "-o", "json", "-p", f"good={target}", "--option", "bad")
    assert chosen.code == 1, chosen.output
    assert "mitigate/bad_write would not run" in json.loads(chosen.stdout)["message"]
    assert not Path(target).exists()

