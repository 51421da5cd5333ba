"""The JSONL run log under OPSCTL_STATE_DIR, secret redaction, `opsctl runs` and `opsctl report`."""

from __future__ import annotations

import getpass
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine.helpers import events, rb, run_logs, run_pty, step_started, steps_of
from tests.fixtures.core import Result
from tests.timing import budget

Opsctl = Callable[..., Result]
SECRET = "TOPSECRET-7f3a9c"


def test_run_log_records_the_run(opsctl: Opsctl, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = opsctl("run", rb("rb-401"), "--yes", "-p", f"target={target}", "-o", "json")
    assert r.code == 0, r.output
    doc = json.loads(r.stdout)
    [log] = run_logs(opsctl_env)
    assert log.parent == Path(opsctl_env["OPSCTL_STATE_DIR"]) / "runs"
    assert log.name == f"{doc['run_id']}.jsonl"
    evs = events(log)
    assert all(e["run_id"] == doc["run_id"] and e["ts"].endswith("Z") for e in evs)
    start, end = evs[0], evs[-1]
    assert start["event"] == "run_start"
    assert (start["runbook"], start["user"], start["host"]) == ("rb-401", getpass.getuser(),
                                                               socket.gethostname())
    assert start["sha256"] == hashlib.sha256(Path(rb("rb-401")).read_bytes()).hexdigest()
    assert start["params"] == {"target": str(target), "content": "on"}
    assert (start["dry_run"], start["yes"]) == (False, True)
    assert end["event"] == "run_end"
    assert (end["status"], end["exit_code"]) == ("ok", 0)
    kinds = [e["event"] for e in evs]
    assert kinds.count("step_start") == kinds.count("step_end") == 4
    ends = {e["record"]["id"]: e["record"] for e in evs if e["event"] == "step_end"}
    assert ends["write_flag"]["status"] == "applied"
    assert ends["write_flag"]["plan"]["changes"][0]["after"] == "on"
    assert ends["write_flag"]["result"] == {"path": str(target), "written": 2}
    assert ends["probe"]["started_at"] <= ends["probe"]["ended_at"]
    [confirm] = [e for e in evs if e["event"] == "confirm"]
    assert (confirm["step"], confirm["answer"], confirm["by"]) == ("write_flag", True, "--yes")
    # each step is logged when it ends, before the next phase starts
    assert kinds.index("step_end") < kinds.index("confirm")


def test_secret_params_are_redacted_in_json_output_and_log(opsctl: Opsctl,
                                                          opsctl_env: dict[str, str]) -> None:
    """rb-410's use_token step renders the secret into its arguments (as a bearer header would);
    neither the header, nor the step's arguments or result, nor the log may show the value."""
    r = opsctl("run", rb("rb-410"), "-p", "name=db", "-p", f"token={SECRET}", "-o", "json")
    assert r.code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["params"]["token"] == "***"
    assert steps_of(doc)["use_token"]["status"] == "ok"
    assert SECRET not in r.output
    [log] = run_logs(opsctl_env)
    assert events(log)[0]["params"]["token"] == "***"
    assert SECRET not in log.read_text()


def test_secret_value_never_appears_in_text_output(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-410"), "-p", "name=db", "-p", f"token={SECRET}", "-v")
    assert r.code == 0, r.output
    assert "token=***" in r.stdout
    assert SECRET not in r.output, "the secret leaked into the text output"


def test_runs_lists_runs(opsctl: Opsctl, tmp_path: Path) -> None:
    empty = opsctl("runs")
    assert empty.code == 0 and "no runs yet" in empty.stdout
    first = json.loads(opsctl("run", rb("rb-405"), "-o", "json").stdout)
    second = json.loads(opsctl("run", rb("rb-407"), "-o", "json").stdout)
    r = opsctl("runs", "-o", "json")
    assert r.code == 0
    listed = json.loads(r.stdout)
    assert [(x["run_id"], x["runbook"], x["status"], x["exit_code"]) for x in listed] == [
        (second["run_id"], "rb-407", "failed", 1), (first["run_id"], "rb-405", "ok", 0)]
    assert all(x["user"] == getpass.getuser() and x["dry_run"] is False for x in listed)
    text = opsctl("runs")
    assert text.code == 0
    assert first["run_id"] in text.stdout and second["run_id"] in text.stdout


def test_report_is_a_markdown_timeline(opsctl: Opsctl, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "flag"
    declined = run_pty(["run", rb("rb-401"), "-p", f"target={target}"], opsctl_env, tmp_path,
                       [("[y/n]", "n\r")])
    assert declined.code == 3, declined.output
    run_id = events(run_logs(opsctl_env)[-1])[0]["run_id"]
    r = opsctl("report", run_id)
    assert r.code == 0, r.output
    md = r.stdout
    assert md.startswith("# Incident timeline: rb-401 Write a flag file\n")
    assert f"- Run: `{run_id}`" in md
    assert "- Outcome: **not_confirmed** (exit 3)" in md
    assert "## Timeline (UTC)" in md and "| time | event |" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert "started **rb-401**" in rows[0] and "(interactive, env `default`)" in rows[0]
    assert any("diagnose `probe`" in row and "**ok**" in row for row in rows)
    assert any("declined step `write_flag` (operator)" in row for row in rows)
    assert any("mitigate `write_flag` Write the flag: **declined**" in row for row in rows)
    assert "run ended: **not_confirmed** (exit 3)" in rows[-1]
    # a declined change is planned, never done (issue 9 defect 9): no "None → on"
    assert "## Actions taken\n\n- none: no change was sent to any system" in md
    assert "- `write_flag` (core.write_file): declined" in md and "→" not in md
    assert f"  - create {target}: before `-`, planned `on`: not applied (declined)" in md

    approved = opsctl("run", rb("rb-401"), "--yes", "-p", f"target={target}")
    assert approved.code == 0
    second = events(run_logs(opsctl_env)[-1])[0]["run_id"]
    md = opsctl("report", second[-11:]).stdout  # a unique part of the id ("rb-401-1a2b") is enough
    assert "approved step `write_flag` (--yes)" in md
    assert "- `write_flag` (core.write_file): applied" in md


def test_report_of_an_unknown_run(opsctl: Opsctl) -> None:
    r = opsctl("report", "no-such-run")
    assert r.code == 2
    assert r.stderr.startswith("error: run 'no-such-run' not found in ")
    assert "Traceback" not in r.output


def test_secrets_in_failures_and_url_passwords_are_redacted(opsctl: Opsctl,
                                                            opsctl_env: dict[str, str]) -> None:
    """The guard step fails with a message that renders the secret token; the url param (not
    declared secret) carries a password.  Neither may show in the text or JSON output, the run
    log or the report."""
    from tests.fixtures.core import free_port

    url = f"http://admin:hunter2@127.0.0.1:{free_port()}/health"
    args = ("run", rb("rb-414"), "-p", f"token={SECRET}", "-p", f"url={url}")
    text, js = opsctl(*args), opsctl(*args, "-o", "json")
    assert (text.code, js.code) == (1, 1), text.output
    assert "token *** rejected" in text.stdout
    assert steps_of(json.loads(js.stdout))["guard"]["reason"] == "token *** rejected"
    run_ids = [events(p)[0]["run_id"] for p in run_logs(opsctl_env)]
    report = opsctl("report", run_ids[0])
    assert report.code == 0
    places = [("text output", text.output), ("json output", js.output), ("report", report.stdout),
              *((str(p), p.read_text()) for p in run_logs(opsctl_env))]
    for where, content in places:
        assert SECRET not in content, f"the secret param leaked into {where}"
        assert "hunter2" not in content, f"the URL password leaked into {where}"


def test_a_killed_run_is_listed_reported_and_resumable(opsctl: Opsctl, opsctl_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    """SIGKILL (or a closed laptop) leaves a log without run_end, maybe with a line cut short."""
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", "run", rb("rb-406")], cwd=tmp_path,
                            env=opsctl_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + budget(20)  # the run starts slowly on a loaded machine
        while time.monotonic() < end:
            if step_started(opsctl_env, "long_wait"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached long_wait")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    [log] = run_logs(opsctl_env)
    run_id = events(log)[0]["run_id"]
    with open(log, "a") as fh:
        fh.write('{"ts": "2026-01-01T00:00:00Z", "event": "step_e')  # cut short by the crash
    listed = json.loads(opsctl("runs", "-o", "json").stdout)
    assert [(x["run_id"], x["status"], x["exit_code"]) for x in listed] == [(run_id, "incomplete", None)]
    report = opsctl("report", run_id)
    assert report.code == 0
    assert "- Outcome: **incomplete**" in report.stdout
    r = opsctl("run", rb("rb-406"), "--resume", run_id, "-p", "seconds=0", "-o", "json")
    assert r.code == 0, r.output
    steps = steps_of(json.loads(r.stdout))
    assert steps["quick"]["reused_from"] == run_id
    assert (steps["long_wait"]["status"], steps["long_wait"]["reused_from"]) == ("ok", None)
