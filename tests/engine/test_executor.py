"""Executor semantics through the real CLI: dry-run, confirmation, concurrency, timeouts, retries,
conditions, Ctrl-C, resume, options, phases and exit codes."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import events, rb, run_logs, run_pty, step_started, steps_of
from tests.fixtures.core import Result
from tests.timing import budget

Opsctl = Callable[..., Result]


def _json(result: Result) -> dict[str, Any]:
    assert "Traceback" not in result.output
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {result.code}):\n{result.output}")


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---- dry-run -----------------------------------------------------------------------------------

def test_dry_run_never_applies(opsctl: Opsctl, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = opsctl("run", rb("rb-401"), "--dry-run", "-p", f"target={target}", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    assert not target.exists()
    steps = steps_of(doc)
    assert steps["write_flag"]["status"] == "planned"
    assert steps["write_flag"]["plan"]["changes"] == [
        {"target": str(target), "operation": "create", "before": None, "after": "on", "detail": ""}]
    assert steps["write_flag"]["confirmed"] is None
    # verify still runs (read-only) and reports what it sees
    assert steps["check"]["status"] == "ok"
    assert [f["severity"] for f in steps["check"]["findings"]] == ["ok"]
    assert (doc["dry_run"], doc["status"]) == (True, "ok")
    [log] = run_logs(opsctl_env)
    ends = {e["record"]["id"]: e["record"] for e in events(log) if e["event"] == "step_end"}
    assert ends["write_flag"]["status"] == "planned"
    assert not any(e["event"] == "confirm" for e in events(log))


def test_dry_run_with_yes_still_never_applies(opsctl: Opsctl, tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = opsctl("run", rb("rb-401"), "--dry-run", "--yes", "-p", f"target={target}")
    assert r.code == 0, r.output
    assert not target.exists()
    assert "DRY-RUN" in r.stdout


# ---- confirmation --------------------------------------------------------------------------------

def test_no_tty_without_yes_refuses_before_any_change(opsctl: Opsctl, opsctl_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = opsctl("run", rb("rb-401"), "-p", f"target={target}", "-o", "json")
    doc = _json(r)
    assert r.code == 3
    assert not target.exists()
    steps = steps_of(doc)
    assert steps["write_flag"]["status"] == "refused"
    assert "stdin is not a terminal and --yes was not given" in steps["write_flag"]["reason"]
    assert steps["check"]["status"] == "not_run"  # nothing after the refusal runs
    assert steps["applied"]["status"] == "not_run"
    assert doc["status"] == "not_confirmed"
    [log] = run_logs(opsctl_env)
    assert events(log)[-1]["event"] == "run_end" and events(log)[-1]["exit_code"] == 3


def test_yes_applies_and_verifies(opsctl: Opsctl, tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = opsctl("run", rb("rb-401"), "--yes", "-p", f"target={target}", "-p", "content=hello", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    assert target.read_text() == "hello"
    steps = steps_of(doc)
    assert (steps["write_flag"]["status"], steps["write_flag"]["confirmed"]) == ("applied", True)
    assert steps["write_flag"]["result"] == {"path": str(target), "written": 5}
    assert [f["severity"] for f in steps["check"]["findings"]] == ["warning"]  # content is not 'on'
    assert [f["severity"] for f in steps["applied"]["findings"]] == ["ok"]
    assert doc["message"] == "verified"


def test_second_apply_is_a_noop(opsctl: Opsctl, tmp_path: Path) -> None:
    target = tmp_path / "flag"
    target.write_text("on")
    r = opsctl("run", rb("rb-401"), "-p", f"target={target}", "-o", "json")  # no --yes, no tty
    doc = _json(r)
    # nothing to change: no confirmation needed, even without a terminal
    assert steps_of(doc)["write_flag"]["status"] == "noop"
    assert steps_of(doc)["write_flag"]["plan"]["changes"] == []
    assert r.code == 0, r.output


def test_pty_enter_declines(opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = run_pty(["run", rb("rb-401"), "-p", f"target={target}"], opsctl_env, tmp_path,
                [("[y/n]", "\r")])
    assert r.answered, r.output
    assert r.code == 3, r.output
    assert not target.exists()
    assert "(n)" in r.output  # the default shown is No
    assert "declined" in r.output


def test_pty_yes_applies(opsctl_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = run_pty(["run", rb("rb-401"), "-p", f"target={target}"], opsctl_env, tmp_path,
                [("[y/n]", "y\r")])
    assert r.answered, r.output
    assert r.code == 0, r.output
    assert target.read_text() == "on"
    # exactly what will change is shown before the question
    prompt = r.output.index("Apply 1 change(s) of step write_flag?")
    plan = r.output.index("plan for write_flag")
    assert plan < r.output.index(str(target), plan) < prompt
    assert "create" in r.output[plan:prompt]
    [log] = run_logs(opsctl_env)
    confirms = [e for e in events(log) if e["event"] == "confirm"]
    assert [(c["step"], c["answer"]) for c in confirms] == [("write_flag", True)]


# ---- concurrency, timeouts, retries, conditions --------------------------------------------------

def test_independent_read_only_steps_run_concurrently(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-402"), "-o", "json")
    doc = _json(r)
    assert r.code == 0
    steps = steps_of(doc)
    sleeps = [steps[s] for s in ("s1", "s2", "s3")]
    assert all(s["status"] == "ok" and s["result"]["slept"] >= 1.0 for s in sleeps)
    last_start = max(_ts(s["started_at"]) for s in sleeps)
    first_end = min(_ts(s["ended_at"]) for s in sleeps)
    assert last_start < first_end  # all three were running at the same time
    after = steps["after_s1"]
    assert after["status"] == "ok"
    assert _ts(after["started_at"]) >= _ts(steps["s1"]["ended_at"])
    assert after["result"]["value"] == steps["s1"]["result"]["slept"]


def test_a_mutating_step_runs_alone(opsctl: Opsctl, tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-413"), "--yes", "-p", f"target={tmp_path / 'x'}", "-o", "json")
    doc = _json(r)
    assert r.code == 0, r.output
    steps = steps_of(doc)
    write = steps["write"]
    assert write["status"] == "applied"
    for before in ("before_a", "before_b"):
        assert _ts(steps[before]["ended_at"]) <= _ts(write["started_at"])
    assert _ts(steps["after_a"]["started_at"]) >= _ts(write["ended_at"])
    # the read-only steps before it still ran together
    assert _ts(steps["before_b"]["started_at"]) < _ts(steps["before_a"]["ended_at"])


def test_timeout_stops_the_work(opsctl: Opsctl) -> None:
    t0 = time.monotonic()
    r = opsctl("run", rb("rb-403"), "-o", "json", timeout=20)
    wall = time.monotonic() - t0
    doc = _json(r)
    assert r.code == 1
    assert doc["duration"] < budget(3.0), f"a 1 s timeout took {doc['duration']} s"
    assert wall < budget(10.0), f"a 1 s timeout took {wall:.1f} s with start-up"
    slow = steps_of(doc)["slow"]
    assert slow["status"] == "timed_out"
    assert slow["reason"] == "timed out after 1 s; the work was stopped"
    assert 0.9 <= slow["duration"] < budget(2.0)
    assert steps_of(doc)["later"]["status"] == "not_run"


class _Counter(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits += 1
        body = json.dumps({"n": type(self).hits}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def counter_url() -> Iterator[str]:
    handler = type("Counter", (_Counter,), {"hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/count"
    server.shutdown()
    server.server_close()


def test_until_polls_until_the_condition_holds(opsctl: Opsctl, counter_url: str) -> None:
    r = opsctl("run", rb("rb-404"), "-p", f"url={counter_url}", "-p", "wanted=3", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    poll = steps_of(doc)["poll"]
    assert (poll["status"], poll["attempts"], poll["outputs"]) == ("ok", 3, {"n": 3})


def test_until_never_true_fails_after_all_retries(opsctl: Opsctl, counter_url: str) -> None:
    r = opsctl("run", rb("rb-404"), "-p", f"url={counter_url}", "-p", "wanted=100", "-o", "json")
    doc = _json(r)
    assert r.code == 1
    poll = steps_of(doc)["poll"]
    assert (poll["status"], poll["attempts"]) == ("failed", 5)
    assert poll["reason"] == "condition not met after 5 attempt(s): result.json.n >= params.wanted"
    assert poll["result"]["json"] == {"n": 5}


def test_unreachable_backend_exits_4(opsctl: Opsctl) -> None:
    from tests.fixtures.core import free_port

    r = opsctl("run", rb("rb-404"), "-p", f"url=http://127.0.0.1:{free_port()}/", "-o", "json")
    doc = _json(r)
    assert r.code == 4, r.output
    poll = steps_of(doc)["poll"]
    assert (poll["status"], poll["error_kind"]) == ("failed", "backend")
    assert poll["attempts"] == 5  # a backend error is retried like an unmet condition
    assert doc["status"] == "backend_error"


def test_when_false_skips_the_step_and_its_dependants(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-405"), "-o", "json")
    doc = _json(r)
    assert r.code == 0
    steps = steps_of(doc)
    assert (steps["maybe"]["status"], steps["maybe"]["reason"]) == ("skipped", "enabled is false")
    assert steps["needs_maybe"]["status"] == "skipped"
    assert steps["needs_maybe"]["reason"] == "needs step 'maybe', which is skipped"
    assert steps["always"]["status"] == "ok"
    r = opsctl("run", rb("rb-405"), "-p", "enabled=true", "-o", "json")
    assert {s["id"]: s["status"] for s in _json(r)["steps"]} == {
        "maybe": "ok", "needs_maybe": "ok", "always": "ok"}


# ---- exit codes ----------------------------------------------------------------------------------

def test_exit_1_on_failed_verification_but_0_in_dry_run(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-411"), "-o", "json")
    doc = _json(r)
    assert (r.code, doc["status"], doc["message"]) == (1, "verify_failed", "verification failed: still 5")
    # a warning in diagnose is a finding, not a failure
    assert [f["severity"] for f in doc["findings"]] == ["warning", "critical"]
    r = opsctl("run", rb("rb-411"), "--dry-run", "-o", "json")
    doc = _json(r)
    assert (r.code, doc["status"]) == (0, "ok")
    # nothing was applied: verify reports the state before mitigation, not a failed fix
    [check] = [f for f in doc["findings"] if f["phase"] == "verify"]
    assert (check["severity"], check["message"]) == ("warning", "not yet (dry-run, nothing applied): still 5")


def test_verify_reading_a_skipped_mitigation_is_skipped_not_bad_input(opsctl: Opsctl) -> None:
    # the diagnosis recommends no option: mitigate is skipped, and a verify step that reads the
    # fix is skipped with it (it used to fail the run as "needs a step that did not run", exit 2);
    # the verdict says that nothing was applied
    r = opsctl("run", rb("rb-417"), "--yes", "-o", "json")
    doc = _json(r)
    assert r.code == 0, r.output
    assert doc["message"] == "verified (no mitigation was applied)"
    steps = steps_of(doc)
    fix = steps["fix"]
    assert (fix["status"], fix["reason"]) == ("skipped", "mitigation skipped: no option chosen")
    assert steps["fixed"]["status"] == "skipped" and steps["healthy"]["status"] == "ok"


def test_exit_1_on_failed_step_text_output(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-407"))
    assert r.code == 1
    assert "gate is closed" in r.stdout
    assert "Traceback" not in r.output


def test_exit_2_on_invalid_runbook(opsctl: Opsctl) -> None:
    from tests.engine.helpers import DATA

    r = opsctl("run", str(DATA / "invalid" / "rb-206-unknown-action.yaml"))
    assert r.code == 2
    assert "rb-206-unknown-action.yaml:7:13: diagnose[0].action: unknown action 'core.ecko'" in r.stderr
    assert "Traceback" not in r.output


def test_template_error_at_run_time_fails_the_step_with_exit_2(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-412"), "-o", "json")
    doc = _json(r)
    assert r.code == 2
    second = steps_of(doc)["second"]
    assert (second["status"], second["error_kind"]) == ("failed", "template")
    assert second["reason"] == ("with: cannot evaluate ' steps.first.result.value.cuont ': undefined "
                                "value: 'dict object' has no attribute 'cuont'")


def test_argument_error_is_bad_input_exit_2_and_never_retried(opsctl: Opsctl) -> None:
    # "no targets" is the user's input, not a failed probe: no retry, and exit 2 even though an
    # earlier step failed for an ordinary reason (bad input is the root cause to report)
    start = time.monotonic()
    r = opsctl("run", rb("rb-416"), "-o", "json")
    doc = _json(r)
    assert r.code == 2, r.output
    probe = steps_of(doc)["probe"]
    assert (probe["status"], probe["error_kind"], probe["attempts"]) == ("failed", "usage", 1)
    assert doc["status"] == "invalid" and "no targets" in doc["message"]
    assert steps_of(doc)["gate"]["error_kind"] == "action"
    assert time.monotonic() - start < budget(10)  # no 10 s retry interval was slept


def test_exit_2_on_unknown_runbook_id(opsctl: Opsctl) -> None:
    r = opsctl("run", "rb-999")
    assert r.code == 2
    assert r.stderr.startswith("error: no runbook with id 'rb-999'")


# ---- Ctrl-C and resume ---------------------------------------------------------------------------

def _wait_for(predicate: Callable[[], bool], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail("timed out waiting")


def test_ctrl_c_exits_130_records_it_and_resume_finishes(opsctl: Opsctl, opsctl_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", "run", rb("rb-406"), "-o", "json"],
                            cwd=tmp_path, env=opsctl_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: step_started(opsctl_env, "long_wait"))
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - t0 < budget(5)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    doc = json.loads(out)
    assert doc["status"] == "interrupted"
    assert steps_of(doc)["long_wait"]["status"] == "interrupted"
    [log] = run_logs(opsctl_env)
    evs = events(log)
    kinds = [e["event"] for e in evs]
    assert "interrupted" in kinds
    assert evs[-1]["event"] == "run_end"
    assert (evs[-1]["status"], evs[-1]["exit_code"]) == ("interrupted", 130)
    first_id = evs[0]["run_id"]

    r = opsctl("run", rb("rb-406"), "--resume", first_id, "-p", "seconds=0", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    steps = steps_of(doc)
    assert steps["quick"]["reused_from"] == first_id
    assert steps["quick"]["status"] == "ok"
    assert steps["long_wait"]["reused_from"] is None
    assert steps["long_wait"]["status"] == "ok"

    md = opsctl("report", first_id).stdout
    assert "- Outcome: **interrupted** (exit 130)" in md
    assert "run interrupted (Ctrl-C)" in md
    assert any("diagnose `long_wait`" in line and "**interrupted**" in line for line in md.splitlines())


def test_resume_of_an_unknown_run(opsctl: Opsctl) -> None:
    r = opsctl("run", rb("rb-407"), "--resume", "20990101T000000Z-rb-407-dead")
    assert r.code == 2
    assert r.stderr.startswith("error: run '20990101T000000Z-rb-407-dead' not found in ")


def test_resume_after_failure_reuses_completed_steps(opsctl: Opsctl, opsctl_env: dict[str, str]) -> None:
    r = opsctl("run", rb("rb-407"), "-o", "json")
    first = _json(r)
    assert r.code == 1
    steps = steps_of(first)
    assert (steps["first"]["status"], steps["gate"]["status"]) == ("ok", "failed")
    assert steps["after"]["status"] == "not_run"

    r = opsctl("run", rb("rb-407"), "--resume", first["run_id"], "-p", "ok=true", "-o", "json")
    second = _json(r)
    assert r.code == 0, r.output
    steps = steps_of(second)
    assert steps["first"]["reused_from"] == first["run_id"]
    # the reused step keeps its recorded result (the first run's id), it was not run again
    assert steps["first"]["result"] == {"value": first["run_id"]}
    assert steps["gate"]["reused_from"] is None and steps["gate"]["status"] == "ok"
    assert steps["after"]["status"] == "ok" and steps["after"]["result"] == {"value": True}
    start = events(run_logs(opsctl_env)[-1])[0]
    assert start["resumed_from"] == first["run_id"]
    assert start["params"] == {"ok": True}


def test_resume_never_applies_a_completed_mutation_again(opsctl: Opsctl, tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = opsctl("run", rb("rb-415"), "--yes", "-p", f"target={target}", "-o", "json")
    first = _json(r)
    assert (r.code, first["status"]) == (1, "verify_failed")
    steps = steps_of(first)
    assert (steps["optional_probe"]["status"], steps["write_flag"]["status"]) == ("failed", "applied")
    target.unlink()  # if --resume applied it again, the file would come back
    r = opsctl("run", rb("rb-415"), "--resume", first["run_id"], "-p", "healthy=true", "-o", "json")
    second = _json(r)
    assert r.code == 0, r.output
    steps = steps_of(second)
    assert steps["write_flag"]["reused_from"] == first["run_id"]
    assert steps["write_flag"]["status"] == "applied"
    assert not target.exists()
    assert steps["healthy"]["reused_from"] is None
    assert [f["severity"] for f in steps["healthy"]["findings"]] == ["ok"]
    # a failed continue_on_error step is run again, and again does not stop the run
    assert (steps["optional_probe"]["status"], steps["optional_probe"]["reused_from"]) == ("failed", None)


def test_resume_of_another_runbook_is_refused(opsctl: Opsctl) -> None:
    first = _json(opsctl("run", rb("rb-405"), "-o", "json"))
    r = opsctl("run", rb("rb-407"), "--resume", first["run_id"])
    assert r.code == 2
    assert f"run {first['run_id']} is a run of rb-405, not rb-407" in r.stderr


# ---- options and phases ------------------------------------------------------------------------

def test_unknown_option_is_exit_2_with_did_you_mean(opsctl: Opsctl, tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--option", "hadr")
    assert r.code == 2
    assert r.stderr.strip() == ("error: rb-408 has no option 'hadr' (did you mean 'hard'?); "
                                "options: soft, hard, nuke")
    assert not list(tmp_path.glob("soft*"))


def test_dry_run_without_option_plans_every_option(opsctl: Opsctl, tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--dry-run", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    steps = steps_of(doc)
    assert {s: steps[s]["status"] for s in ("soft_fix", "hard_fix", "nuke_fix")} == {
        "soft_fix": "planned", "hard_fix": "planned", "nuke_fix": "planned"}
    assert sorted(doc["option"]) == ["hard", "nuke", "soft"]
    assert not any(tmp_path.glob("soft")) and not any(tmp_path.glob("hard"))


def test_recommended_option_is_used_without_a_tty(opsctl: Opsctl, opsctl_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--yes", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    steps = steps_of(doc)
    assert (steps["soft_fix"]["status"], steps["hard_fix"]["status"], steps["nuke_fix"]["status"]) == (
        "applied", "skipped", "skipped")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["soft"]
    assert doc["option"] == ["soft"]
    assert steps["check"]["result"] == {"value": "soft"}
    option = [e for e in events(run_logs(opsctl_env)[0]) if e["event"] == "option"]
    assert [(e["chosen"], e["by"]) for e in option] == [("soft", "recommendation")]


def test_explicit_option_is_applied_only_when_named(opsctl: Opsctl, tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--yes", "--option", "nuke", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    assert steps_of(doc)["nuke_fix"]["status"] == "applied"
    assert (tmp_path / "nuke").read_text() == "nuke"
    assert not (tmp_path / "soft").exists()


def test_explicit_option_is_never_chosen_implicitly(opsctl: Opsctl, opsctl_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-409"), "-p", f"dir={tmp_path}", "--yes")
    assert r.code == 2
    assert "choose with --option NAME" in r.stderr
    assert "skip-to-latest" in r.stderr
    assert not (tmp_path / "skip").exists() and not (tmp_path / "replay").exists()
    assert "Traceback" not in r.output


def test_option_usage_error_mid_run_still_ends_the_run_log(opsctl: Opsctl, opsctl_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """The run started (diagnose ran and was logged): its log must say how it ended."""
    r = opsctl("run", rb("rb-409"), "-p", f"dir={tmp_path}", "--yes")
    assert r.code == 2
    [log] = run_logs(opsctl_env)
    last = events(log)[-1]
    assert last["event"] == "run_end", [e["event"] for e in events(log)]
    assert last["exit_code"] == 2


def test_pty_option_menu_defaults_to_the_recommended_option(opsctl_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    r = run_pty(["run", rb("rb-408"), "-p", f"dir={tmp_path}"], opsctl_env, tmp_path,
                [("Choose an option", "\r"), ("[y/n]", "y\r")])
    assert r.answered, r.output
    assert r.code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["soft"]
    assert "(recommended by the diagnosis)" in r.output


def test_phase_runs_only_that_phase(opsctl: Opsctl, tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--phase", "diagnose", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    assert {s["id"]: s["status"] for s in doc["steps"]} == {
        "probe": "ok", "soft_fix": "not_run", "hard_fix": "not_run", "nuke_fix": "not_run",
        "check": "not_run"}
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--phase", "mitigate", "--option", "hard",
               "--yes", "-o", "json")
    doc = _json(r)
    assert r.code == 0
    assert {s["id"]: s["status"] for s in doc["steps"]} == {
        "probe": "not_run", "soft_fix": "skipped", "hard_fix": "applied", "nuke_fix": "skipped",
        "check": "not_run"}
    assert (tmp_path / "hard").read_text() == "hard"


def test_unknown_phase_is_a_usage_error(opsctl: Opsctl, tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--phase", "nope")
    assert "internal error" not in r.stderr
    assert r.code == 2
    assert "'nope' is not one of 'diagnose', 'mitigate', 'verify', 'rollback'" in r.stderr


def test_pty_ctrl_c_at_the_prompt_exits_130_without_applying(opsctl_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    target = tmp_path / "flag"
    started = time.monotonic()
    r = run_pty(["run", rb("rb-401"), "-p", f"target={target}"], opsctl_env, tmp_path,
                [("[y/n]", "\x03")])  # ^C on the terminal: SIGINT to the foreground process
    assert r.answered, r.output
    assert r.code == 130, r.output
    # the step waiting for the answer stops at once: no 5 s grace spent waiting for it
    assert time.monotonic() - started < budget(4.5)
    assert not target.exists()
    assert "Traceback" not in r.output
    [log] = run_logs(opsctl_env)
    evs = events(log)
    assert "interrupted" in [e["event"] for e in evs]
    assert (evs[-1]["event"], evs[-1]["status"]) == ("run_end", "interrupted")
    ends = {e["record"]["id"]: e["record"]["status"] for e in evs if e["event"] == "step_end"}
    assert ends["write_flag"] == "interrupted"


def test_pty_prompt_with_json_output_keeps_stdout_parseable(opsctl_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    """The question goes to the terminal (stderr); stdout carries only the JSON document."""
    target = tmp_path / "flag"
    r = run_pty(["run", rb("rb-401"), "-p", f"target={target}", "-o", "json"], opsctl_env, tmp_path,
                [("[y/n]", "y\r")], stdout_pipe=True)
    assert r.answered, r.output
    assert r.code == 0, r.output + r.stdout
    assert "Apply 1 change(s) of step write_flag?" in r.output
    assert str(target) in r.output  # the plan was shown before the question
    doc = json.loads(r.stdout)
    assert steps_of(doc)["write_flag"]["confirmed"] is True
    assert target.read_text() == "on"


def test_option_none_skips_every_option(opsctl: Opsctl, tmp_path: Path) -> None:
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--option", "none", "-o", "json")
    doc = _json(r)
    assert r.code == 0, r.output
    assert {s["id"]: s["status"] for s in doc["steps"]} == {
        "probe": "ok", "soft_fix": "skipped", "hard_fix": "skipped", "nuke_fix": "skipped",
        "check": "ok"}
    assert not any(p.is_file() for p in tmp_path.iterdir())


def test_phase_mitigate_without_option_does_not_claim_success(opsctl: Opsctl, tmp_path: Path) -> None:
    """With --phase mitigate the diagnosis did not run, so recommended_when cannot be evaluated:
    that is not "the diagnosis recommends no mitigation" and exit 0, it is a usage error (2)
    asking for --option."""
    r = opsctl("run", rb("rb-408"), "-p", f"dir={tmp_path}", "--phase", "mitigate", "--yes")
    assert "the diagnosis recommends no mitigation" not in r.output
    assert r.code == 2, r.output
    assert "--option" in r.stderr
    assert not any(p.is_file() for p in tmp_path.iterdir())
