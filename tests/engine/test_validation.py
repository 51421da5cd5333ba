"""`opsctl validate`: every rule, each error as `file:line:col: json.path: message`.

The CLI runs once over every broken fixture (text and JSON); each test checks the exact lines of
its rule, so a moved caret or a changed message fails the test that owns it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update({"OPSCTL_STATE_DIR": str(state), "XDG_CONFIG_HOME": str(state / "cfg"),
                "XDG_CACHE_HOME": str(state / "cache"),
                "COLUMNS": "200", "NO_COLOR": "1"})
    return subprocess.run([sys.executable, "-m", "opsctl", *args], cwd=DATA, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return _cli("validate", "invalid", state=tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def lines(text_run: subprocess.CompletedProcess[str]) -> list[str]:
    return text_run.stdout.splitlines()


def _of(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if line.startswith(f"invalid/{name}:")]


# an exact line, or a pattern where only the gist of the message is pinned down
RULES: dict[str, list[str | re.Pattern[str]]] = {
    "rb-201-unknown-key.yaml": [
        "invalid/rb-201-unknown-key.yaml:5:1: trigers: unknown key 'trigers' (did you mean 'triggers'?)",
    ],
    "rb-202-missing-key.yaml": [
        "invalid/rb-202-missing-key.yaml:1:1: missing required key 'severity'",
        "invalid/rb-202-missing-key.yaml:5:5: diagnose[0]: missing required key 'action'",
    ],
    "rb-203-wrong-type.yaml": [
        "invalid/rb-203-wrong-type.yaml:9:14: diagnose[0].retries: expected integer, got string 'three'",
    ],
    "rb-204-bad-severity.yaml": [
        "invalid/rb-204-bad-severity.yaml:3:11: severity: expected one of P0, P1, P2, P3, P4, got 'P7'",
    ],
    "rb-205-duplicate-step.yaml": [
        "invalid/rb-205-duplicate-step.yaml:9:9: diagnose[1].id: duplicate step id 'probe' "
        "(first used at diagnose[0])",
    ],
    "rb-206-unknown-action.yaml": [
        "invalid/rb-206-unknown-action.yaml:7:13: diagnose[0].action: unknown action 'core.ecko' "
        "(did you mean 'core.echo'?)",
    ],
    "rb-207-action-args.yaml": [
        "invalid/rb-207-action-args.yaml:10:7: diagnose[0].with.secs: unknown key 'secs' "
        "(did you mean 'seconds'?)",
        "invalid/rb-207-action-args.yaml:13:11: diagnose[1].with: missing required key 'seconds'",
        "invalid/rb-207-action-args.yaml:17:16: diagnose[2].with.seconds: expected number, got string 'long'",
    ],
    "rb-208-unknown-refs.yaml": [
        "invalid/rb-208-unknown-refs.yaml:11:14: diagnose[0].with.value: unknown parameter 'databse' "
        "(did you mean 'database'?)",
        "invalid/rb-208-unknown-refs.yaml:15:14: diagnose[1].with.value: unknown step 'prob' "
        "(did you mean 'probe'?)",
    ],
    "rb-209-later-step.yaml": [
        "invalid/rb-209-later-step.yaml:9:14: diagnose[0].with.value: step 'second' runs later "
        "(diagnose[1]); a step can only use the results of earlier steps",
    ],
    "rb-210-unknown-output.yaml": [
        "invalid/rb-210-unknown-output.yaml:14:14: diagnose[1].with.value: step 'first' has no output "
        "'cuont' (did you mean 'count'?)",
    ],
    "rb-211-other-option.yaml": [
        "invalid/rb-211-other-option.yaml:24:16: mitigate[1].with.content: step 'soft_write' belongs to "
        "option 'soft', which never runs together with option 'hard'",
    ],
    "rb-212-result-outside.yaml": [
        "invalid/rb-212-result-outside.yaml:9:11: diagnose[0].when: 'result' is only available in "
        "expect, outputs and until (use steps.<id>.result for an earlier step)",
        "invalid/rb-212-result-outside.yaml:13:14: diagnose[1].with.value: 'result' is only available in "
        "expect, outputs and until (use steps.<id>.result for an earlier step)",
    ],
    "rb-213-invalid-jinja.yaml": [
        "invalid/rb-213-invalid-jinja.yaml:9:14: diagnose[0].with.value: invalid Jinja template: "
        "expected name or number",
        "invalid/rb-213-invalid-jinja.yaml:11:15: diagnose[0].expect[0].that: invalid Jinja expression: "
        "unexpected 'end of print statement'",
    ],
    "rb-214-no-verify.yaml": [
        "invalid/rb-214-no-verify.yaml:9:1: mitigate: a runbook with a mitigate phase needs a verify "
        "phase (how do we know the mitigation worked?)",
    ],
    "rb-215-undefined-option.yaml": [
        "invalid/rb-215-undefined-option.yaml:15:13: mitigate[0].option: option 'restrat' is not defined "
        "in 'options' (did you mean 'restart'?)",
    ],
    "rb-216-id-mismatch.yaml": [
        "invalid/rb-216-id-mismatch.yaml:1:5: id: id 'rb-261' does not match the file name "
        "'rb-216-id-mismatch.yaml' (expected rb-261-<slug>.yaml)",
    ],
    "rb-217-bad-default.yaml": [
        "invalid/rb-217-bad-default.yaml:6:41: params.max_targets.default: bad default: expected an "
        "integer, got 'many'",
        "invalid/rb-217-bad-default.yaml:7:37: params.window.default: bad default: not a duration: "
        "'soon' (use e.g. 30s, 5m, 1h30m)",
        "invalid/rb-217-bad-default.yaml:8:56: params.mode.default: bad default: expected one of soft, "
        "hard, got 'medium'",
    ],
    "rb-218-duplicate-key.yaml": [
        "invalid/rb-218-duplicate-key.yaml:10:5: diagnose[0].title: duplicate key 'title' "
        "(first defined at line 9)",
    ],
    "rb-219-yaml-syntax.yaml": [
        "invalid/rb-219-yaml-syntax.yaml:9:1: invalid YAML: while parsing a flow mapping (from line 8, "
        "column 11): did not find expected ',' or '}'",
    ],
    "rb-220-misc.yaml": [
        "invalid/rb-220-misc.yaml:8:23: options[0].recommended_when: step 'apply_fix' is not a diagnose "
        "step: recommendations can only use the diagnosis",
        "invalid/rb-220-misc.yaml:9:11: options[1].name: duplicate option 'fix'",
        "invalid/rb-220-misc.yaml:14:13: diagnose[0].option: only mitigate steps can belong to an option",
        "invalid/rb-220-misc.yaml:16:14: diagnose[0].with.value: unknown name 'parms' (did you mean "
        "'params'?); templates can use params, steps, env, run and result",
        "invalid/rb-220-misc.yaml:17:12: diagnose[0].until: 'until' needs 'retries' (how many times to poll) "
        "or 'within' (a convergence window)",
        "invalid/rb-220-misc.yaml:27:14: verify[0].with.value: steps.probe.reslt: unknown field; use one "
        "of result, outputs, status, findings, plan (did you mean 'result'?)",
    ],
    "rb-221-step-keys.yaml": [
        "invalid/rb-221-step-keys.yaml:7:26: params.limit.defualt: unknown key 'defualt' "
        "(did you mean 'default'?)",
        "invalid/rb-221-step-keys.yaml:11:5: options[0].recomended_when: unknown key 'recomended_when' "
        "(did you mean 'recommended_when'?)",
        "invalid/rb-221-step-keys.yaml:16:5: diagnose[0].timout: unknown key 'timout' "
        "(did you mean 'timeout'?)",
        # not "'soon' is not of type 'number'": the user wrote a duration, say what a duration is
        re.compile(r"invalid/rb-221-step-keys\.yaml:20:14: diagnose\[1\]\.timeout: "
                   r"(?=.*'soon')(?=.*duration).*"),
        "invalid/rb-221-step-keys.yaml:23:19: diagnose[1].expect[0].severity: expected one of warning, "
        "critical, got 'fatal'",
    ],
    "rb-222-choice-without-choices.yaml": [
        "invalid/rb-222-choice-without-choices.yaml:6:9: params.mode: a choice parameter needs 'choices'",
    ],
    "rb-223-self-reference.yaml": [
        "invalid/rb-223-self-reference.yaml:10:15: diagnose[0].expect[0].that: step 'probe' refers to "
        "itself: use 'result'",
    ],
    "rb-224-param-ranges.yaml": [
        "invalid/rb-224-param-ranges.yaml:6:9: params.name: 'min'/'max' apply to integer, number and "
        "duration parameters, not string",
        "invalid/rb-224-param-ranges.yaml:7:13: params.replicas: 'min' (5) is greater than 'max' (2)",
        "invalid/rb-224-param-ranges.yaml:8:50: params.ratio.default: bad default: 1.5 is above the "
        "maximum 1",
        "invalid/rb-224-param-ranges.yaml:9:46: params.window.default: bad default: '10s' is below the "
        "minimum 1m",
    ],
    # schema errors do not hide semantic ones: one pass, position order
    "rb-225-one-pass.yaml": [
        "invalid/rb-225-one-pass.yaml:6:26: params.limit.defualt: unknown key 'defualt' "
        "(did you mean 'default'?)",
        "invalid/rb-225-one-pass.yaml:10:14: diagnose[0].retries: expected integer, got string 'many'",
        "invalid/rb-225-one-pass.yaml:11:19: diagnose[0].with.value: unknown parameter 'limt' "
        "(did you mean 'limit'?)",
        "invalid/rb-225-one-pass.yaml:14:5: diagnose[1].timout: unknown key 'timout' "
        "(did you mean 'timeout'?)",
        "invalid/rb-225-one-pass.yaml:15:19: diagnose[1].with.value: unknown step 'prob' "
        "(did you mean 'probe'?)",
        "invalid/rb-225-one-pass.yaml:18:19: diagnose[2].with.value: unknown filter 'durration' "
        "(did you mean 'duration'?)",
        "invalid/rb-225-one-pass.yaml:20:15: diagnose[2].expect[0].that: unknown test 'nosuchtest'",
    ],
}


def _same(actual: list[str], expected: list[str | re.Pattern[str]]) -> bool:
    if len(actual) != len(expected):
        return False
    pairs = zip(actual, expected, strict=True)
    return all(e.fullmatch(a) if isinstance(e, re.Pattern) else a == e for a, e in pairs)


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule(lines: list[str], name: str) -> None:
    got = _of(lines, name)
    assert _same(got, RULES[name]), "\n".join(["got:", *got, "expected:", *map(str, RULES[name])])


def test_every_fixture_has_its_rule() -> None:
    assert sorted(p.name for p in (DATA / "invalid").glob("*.yaml")) == sorted(RULES)


def test_all_errors_of_all_files_in_one_run(text_run: subprocess.CompletedProcess[str]) -> None:
    """Every file's errors, in file order then position order (messages: one test per rule)."""
    expected = [line for name in sorted(RULES) for line in RULES[name]]
    where = [(e.pattern.split(": ")[0].replace("\\", "") if isinstance(e, re.Pattern) else e.split(": ")[0])
             for e in expected]
    assert text_run.returncode == 2
    assert [line.split(": ")[0] for line in text_run.stdout.splitlines()] == where
    n = len(RULES)
    assert text_run.stderr.strip() == f"{n} file(s) checked, {len(expected)} error(s) in {n} file(s)"
    assert "Traceback" not in text_run.stderr


def test_json_output(tmp_path: Path) -> None:
    proc = _cli("validate", "--output", "json", "invalid/rb-207-action-args.yaml",
                "invalid/rb-201-unknown-key.yaml", state=tmp_path)
    assert proc.returncode == 2
    assert json.loads(proc.stdout) == [
        {"file": "invalid/rb-207-action-args.yaml", "line": 10, "column": 7,
         "path": "diagnose[0].with.secs", "message": "unknown key 'secs' (did you mean 'seconds'?)"},
        {"file": "invalid/rb-207-action-args.yaml", "line": 13, "column": 11,
         "path": "diagnose[1].with", "message": "missing required key 'seconds'"},
        {"file": "invalid/rb-207-action-args.yaml", "line": 17, "column": 16,
         "path": "diagnose[2].with.seconds", "message": "expected number, got string 'long'"},
        {"file": "invalid/rb-201-unknown-key.yaml", "line": 5, "column": 1, "path": "trigers",
         "message": "unknown key 'trigers' (did you mean 'triggers'?)"},
    ]


def test_clean_files_exit_0(tmp_path: Path) -> None:
    proc = _cli("validate", "valid", "run", state=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().endswith("file(s) checked: all valid")
    clean = _cli("validate", "--output", "json", "valid", state=tmp_path)
    assert (clean.returncode, json.loads(clean.stdout)) == (0, [])


def test_shipped_runbooks_validate(tmp_path: Path) -> None:
    proc = _cli("validate", str(REPO / "runbooks"), str(REPO / "src" / "opsctl" / "runbooks"),
                state=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unsafe_tags_are_located_errors_not_a_crash(tmp_path: Path) -> None:
    proc = _cli("validate", "loader/rb-301-python-object.yaml", "loader/rb-302-python-scalar.yaml",
                state=tmp_path)
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 2
    out = proc.stdout.splitlines()
    # !!python/object/apply on a sequence must be rejected by name, not silently turned into a list
    assert out[0].startswith("loader/rb-301-python-object.yaml:4:10: summary: ")
    assert "python/object/apply" in out[0]
    assert any(line.startswith("loader/rb-302-python-scalar.yaml:4:10: summary: ") for line in out)


def test_no_paths_and_no_runbooks_dir_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env["OPSCTL_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.run([sys.executable, "-m", "opsctl", "validate"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: nothing to validate")
