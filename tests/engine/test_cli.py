"""The CLI surface: help, version, import cost, usage errors, list/show/actions/schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from opsctl import __version__
from tests.engine.helpers import DATA
from tests.fixtures.core import Result

Opsctl = Callable[..., Result]
HEAVY = ("boto3", "botocore", "kubernetes", "psycopg", "redis", "kafka")
VALID = {"OPSCTL_RUNBOOK_PATH": str(DATA / "valid")}


def _imported(stderr: str) -> set[str]:
    """Top-level module names from `-X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


def test_help(opsctl: Opsctl) -> None:
    r = opsctl("--help")
    assert r.code == 0, r.output
    for command in ("run", "validate", "list", "show", "actions", "schema", "runs", "report"):
        assert f" {command} " in r.stdout
    r = opsctl("run", "--help")
    assert r.code == 0, r.output
    for option in ("--dry-run", "--yes", "--param", "--option", "--phase", "--env", "--output",
                   "--resume"):
        assert option in r.stdout


def test_help_does_not_import_backends(opsctl_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "opsctl", "--help"], cwd=tmp_path,
                          env=opsctl_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = _imported(proc.stderr)
    assert "opsctl" in imported and "typer" in imported  # the parsing works
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    # nor the engine's own heavier dependencies (the promise of opsctl.cli.main)
    assert not imported & {"jinja2", "jsonschema", "yaml"}, sorted(imported & {"jinja2", "jsonschema"})


def test_completion_is_fast_and_works(opsctl_env: dict[str, str], tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "opsctl"
    if not script.exists():
        pytest.skip("the opsctl console script is not installed next to this python")
    env = {**opsctl_env, **VALID, "_OPSCTL_COMPLETE": "complete_bash", "COMP_WORDS": "opsctl run rb-1",
           "COMP_CWORD": "2", "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["rb-101"]
    imported = _imported(proc.stderr)
    assert "opsctl" in imported
    assert not imported & {*HEAVY, "jinja2", "jsonschema", "yaml"}


def test_version(opsctl: Opsctl) -> None:
    r = opsctl("--version")
    assert (r.code, r.stdout) == (0, f"opsctl {__version__}\n")


def test_no_arguments_shows_help_not_a_crash(opsctl: Opsctl) -> None:
    r = opsctl()
    assert "internal error" not in r.output
    assert "Usage:" in r.output
    assert r.code in (0, 2)


@pytest.mark.parametrize(("args", "message"), [
    (("nosuch",), "No such command 'nosuch'"),
    (("run",), "runbook"),
    (("run", "rb-101", "--bogus"), "No such option: --bogus"),
    (("run", "rb-101", "--output", "xml"), "'xml' is not one of 'text', 'json'"),
])
def test_usage_errors_exit_2(opsctl: Opsctl, args: tuple[str, ...], message: str) -> None:
    r = opsctl(*args, env=VALID)
    assert "internal error" not in r.stderr, r.stderr
    assert r.code == 2
    assert message.lower() in r.stderr.lower()
    assert "Traceback" not in r.output


def test_list(opsctl: Opsctl) -> None:
    r = opsctl("list", "--output", "json", env=VALID)
    assert r.code == 0, r.output
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert rows["rb-101"] == {
        "id": "rb-101", "title": "Every feature of the format, valid", "severity": "P2",
        "triggers": ["SomethingIsWrong"], "options": ["soft", "hard"],
        "path": str(DATA / "valid" / "rb-101-everything.yaml"), "valid": True}
    assert "rb-006" in rows  # shipped inside the package
    text = opsctl("list", env=VALID)
    assert text.code == 0
    line = next(x for x in text.stdout.splitlines() if "rb-101" in x)
    assert "P2" in line and "Every feature of the format, valid" in line and "SomethingIsWrong" in line


def test_list_marks_invalid_runbooks(opsctl: Opsctl) -> None:
    r = opsctl("list", "-o", "json", env={"OPSCTL_RUNBOOK_PATH": str(DATA / "invalid")})
    assert r.code == 0, r.output
    rows = [row for row in json.loads(r.stdout) if "/invalid/" in row["path"]]
    assert rows and not any(row["valid"] for row in rows)


def test_show(opsctl: Opsctl) -> None:
    r = opsctl("show", "rb-101", env=VALID)
    assert r.code == 0, r.output
    out = r.stdout
    for text in ("rb-101: Every feature of the format, valid (P2)", "Diagnose", "Mitigate", "Verify",
                 "Option soft: Option 1: soft", "Option hard: Option 2: hard", "Probe",
                 "core.write_file", "expect result.value < 10 (warning)", "DBA on-call"):
        assert text in out, text
    assert out.index("Diagnose") < out.index("Mitigate") < out.index("Verify")
    missing = opsctl("show", "rb-102", env=VALID)
    assert missing.code == 2
    assert "no runbook with id 'rb-102' (did you mean 'rb-101'?)" in missing.stderr


def test_actions(opsctl: Opsctl) -> None:
    r = opsctl("actions", "--output", "json")
    assert r.code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["core.echo"]["read_only"] is True
    assert rows["core.write_file"]["read_only"] is False
    assert rows["core.write_file"]["required"] == ["path", "content"]
    assert set(rows["core.sleep"]["arguments"]) == {"seconds"}
    assert rows["http.get"]["backend"] == "http"
    text = opsctl("actions")
    assert text.code == 0
    line = next(x for x in text.stdout.splitlines() if "core.write_file" in x)
    assert "mutating" in line and "path*" in line


def test_schema_is_valid_json_schema_and_validates_runbooks(opsctl: Opsctl) -> None:
    r = opsctl("schema")
    assert r.code == 0, r.stderr
    schema = json.loads(r.stdout)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    good = yaml.safe_load((DATA / "valid" / "rb-101-everything.yaml").read_text())
    assert list(validator.iter_errors(good)) == []
    for path in sorted((DATA / "run").glob("*.yaml")):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    # the per-action argument schemas are part of the editor schema
    bad = yaml.safe_load((DATA / "invalid" / "rb-207-action-args.yaml").read_text())
    assert list(validator.iter_errors(bad))
    unknown_action = yaml.safe_load((DATA / "invalid" / "rb-206-unknown-action.yaml").read_text())
    assert list(validator.iter_errors(unknown_action))


def test_runbook_lookup_by_id_in_cwd_runbooks(opsctl: Opsctl, tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    src = (DATA / "run" / "rb-405-when.yaml").read_text()
    (tmp_path / "runbooks" / "rb-405-when.yaml").write_text(src)
    r = opsctl("run", "rb-405", "-o", "json", cwd=tmp_path)
    assert r.code == 0, r.output
    assert json.loads(r.stdout)["runbook"] == "rb-405"
    v = opsctl("validate", cwd=tmp_path)  # default: ./runbooks
    assert v.code == 0, v.output


def test_environment_settings_reach_templates(opsctl: Opsctl, tmp_path: Path) -> None:
    (tmp_path / "opsctl.yaml").write_text(
        "environments:\n  staging:\n    settings: {namespace: shop}\n")
    rb_text = (DATA / "run" / "rb-405-when.yaml").read_text().replace(
        "with: {value: 2}", "with: {value: \"{{ env.name }}/{{ env.namespace }}\"}")
    path = tmp_path / "rb-405-when.yaml"
    path.write_text(rb_text)
    r = opsctl("run", str(path), "--env", "staging", "-o", "json")
    assert r.code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["environment"] == "staging"
    assert {s["id"]: s["result"] for s in doc["steps"]}["always"] == {"value": "staging/shop"}
    bad = opsctl("run", str(path), "--env", "prod")
    assert bad.code == 2
    assert "unknown environment 'prod'" in bad.stderr
    assert os.path.exists(path)
