"""Run notifications (opsctl.notifier): a P0/P1 runbook announces its start, the chosen mitigation
and its verdict to the environment's Slack channel, through the real CLI, against a local
Slack-compatible receiver (tests/alerts/helpers.py).  A Slack that is dead, hung or failing is a
warning and never changes the verdict."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.alerts.helpers import SlackReceiver
from tests.fixtures.core import Result, SilentServer, free_port
from tests.timing import budget

RUNBOOK = """\
id: rb-902
title: Checkout errors
severity: {severity}
summary: a runbook with one option whose mitigation writes a flag file
params:
  path: {{type: string, required: true}}
  fail_verify: {{type: boolean, default: false}}
options:
  - name: write-flag
    title: Write the flag file
    recommended_when: "steps.look.result.value == 1"
diagnose:
  - id: look
    action: core.echo
    with: {{value: 1}}
mitigate:
  - id: flag
    option: write-flag
    action: core.write_file
    with: {{path: "{{{{ params.path }}}}", content: "on"}}
verify:
  - id: check
    action: core.assert
    with: {{that: "{{{{ not params.fail_verify }}}}", message: the flag did not help}}
"""


def write_config(cwd: Path, notify: dict[str, object] | None) -> None:
    env: dict[str, object] = {"settings": {"namespace": "default"}}
    if notify is not None:
        env["notify"] = notify
    (cwd / "opsctl.yaml").write_text(json.dumps({"environments": {"staging": env}}))


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def runbook(tmp_path: Path) -> Callable[[str], Path]:
    def make(severity: str = "P1") -> Path:
        path = tmp_path / f"rb-902-{severity}.yaml"
        path.write_text(RUNBOOK.format(severity=severity))
        return path

    return make


def run(opsctl: Callable[..., Result], tmp_path: Path, rb: Path, *extra: str) -> tuple[Result, dict]:
    result = opsctl("run", str(rb), "--env", "staging", "-p", f"path={tmp_path / 'flag'}", "-o", "json",
                    *extra, cwd=tmp_path)
    assert result.stdout.lstrip().startswith("{"), result.output
    return result, json.loads(result.stdout)


def test_start_option_and_verdict_are_posted_in_order_from_the_teams_templates(
        opsctl: Callable[..., Result], tmp_path: Path, slack: SlackReceiver,
        runbook: Callable[[str], Path]) -> None:
    write_config(tmp_path, {"slack_webhook_url": slack.url, "channel": "#ops-incidents",
                            "templates": {"start": "START {{ runbook.id }} {{ runbook.severity }} in "
                                                   "{{ env.name }} by {{ run.user }}"}})
    result, doc = run(opsctl, tmp_path, runbook("P1"), "--yes")
    assert result.code == 0 and (tmp_path / "flag").read_text() == "on", result.output
    texts = [p["text"] for p in slack.posts]
    assert len(texts) == 3, texts
    assert texts[0].startswith("START rb-902 P1 in staging by "), texts[0]  # the team's template
    assert texts[1] == (f"[INCIDENT P1] Checkout errors. Status: Mitigating. Chosen mitigation: "
                        f"write-flag (Write the flag file). Run {doc['run_id']}.")
    assert texts[2].startswith("[INCIDENT P1] Checkout errors. Status: Mitigated and verified: verified.")
    assert f"opsctl report {doc['run_id']}" in texts[2]
    assert all(p["channel"] == "#ops-incidents" for p in slack.posts)
    assert not [n for n in doc["notes"] if n.startswith("warning")], doc["notes"]
    report = opsctl("report", doc["run_id"], cwd=tmp_path)
    assert report.code == 0, report.output
    timeline = report.stdout.split("## Timeline")[1].split("## Findings")[0]
    assert timeline.count("Slack start message posted to #ops-incidents") == 1, timeline
    assert "Chosen mitigation: write-flag" in timeline and "Mitigated and verified" in timeline


def test_a_failed_verification_is_announced_as_not_resolved(
        opsctl: Callable[..., Result], tmp_path: Path, slack: SlackReceiver,
        runbook: Callable[[str], Path]) -> None:
    write_config(tmp_path, {"slack_webhook_url": slack.url})
    result, _ = run(opsctl, tmp_path, runbook("P0"), "--yes", "-p", "fail_verify=true")
    assert result.code == 1, result.output
    verdict = slack.posts[-1]["text"]
    assert verdict.startswith("[INCIDENT P0] Checkout errors. Status: NOT resolved (failed): "
                              "verify/check: the flag did not help"), verdict


def test_quiet_when_not_configured_dry_run_p2_or_no_notify(
        opsctl: Callable[..., Result], tmp_path: Path, slack: SlackReceiver,
        runbook: Callable[[str], Path]) -> None:
    write_config(tmp_path, None)  # no webhook: silent, and no warning either
    result, doc = run(opsctl, tmp_path, runbook("P1"), "--yes")
    assert result.code == 0 and not [n for n in doc["notes"] if "Slack" in n], doc["notes"]
    write_config(tmp_path, {"slack_webhook_url": slack.url})
    for rb, extra in ((runbook("P1"), ("--dry-run",)), (runbook("P2"), ("--yes",)),
                      (runbook("P1"), ("--yes", "--no-notify"))):
        result, _ = run(opsctl, tmp_path, rb, *extra)
        assert result.code == 0, result.output
    assert slack.posts == []
    write_config(tmp_path, {"slack_webhook_url": slack.url, "severities": ["P2"]})  # the team's levels
    result, _ = run(opsctl, tmp_path, runbook("P2"), "--yes")
    assert result.code == 0 and len(slack.posts) == 3, slack.posts


def test_dead_or_failing_slack_is_a_warning_and_the_verdict_stands(
        opsctl: Callable[..., Result], tmp_path: Path, runbook: Callable[[str], Path]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/services/T0/B0/dead-secret-path"
    write_config(tmp_path, {"slack_webhook_url": dead})
    result, doc = run(opsctl, tmp_path, runbook("P1"), "--yes")
    assert result.code == 0 and doc["status"] == "ok", result.output
    warnings = [n for n in doc["notes"] if n.startswith("warning: Slack")]
    assert len(warnings) == 3 and "cannot reach the Slack webhook at 127.0.0.1" in warnings[0], doc["notes"]
    assert "dead-secret-path" not in result.output  # the URL is the secret
    failing = SlackReceiver(fail_first=10)
    try:
        write_config(tmp_path, {"slack_webhook_url": failing.url})
        result, doc = run(opsctl, tmp_path, runbook("P1"), "--yes", "-p", "fail_verify=true")
        assert result.code == 1 and doc["status"] == "failed", result.output  # its own verdict
        assert any("answered HTTP 500" in n for n in doc["notes"]), doc["notes"]
    finally:
        failing.close()
    report = opsctl("report", doc["run_id"], cwd=tmp_path)
    assert "Slack verdict message NOT posted (notify: Slack webhook at" in report.stdout, report.stdout


def test_hung_slack_costs_one_bounded_wait(opsctl: Callable[..., Result], tmp_path: Path,
                                           silent_server: SilentServer,
                                           runbook: Callable[[str], Path]) -> None:
    write_config(tmp_path, {"slack_webhook_url": f"http://127.0.0.1:{silent_server.port}/hook",
                            "timeout": 1})
    t0 = time.monotonic()
    result, doc = run(opsctl, tmp_path, runbook("P1"), "--yes")
    elapsed = time.monotonic() - t0
    assert result.code == 0 and doc["status"] == "ok", result.output
    assert any("did not answer" in n for n in doc["notes"]), doc["notes"]
    # three posts of at most 1 s each in the background, plus the CLI's start-up
    assert elapsed < budget(15), elapsed


def test_a_broken_template_in_opsctl_yaml_is_a_located_config_error(
        opsctl: Callable[..., Result], tmp_path: Path, runbook: Callable[[str], Path]) -> None:
    (tmp_path / "opsctl.yaml").write_text(
        "environments:\n  staging:\n    notify:\n      templates:\n        verdict: \"{{ outcome.status \"\n")
    result = opsctl("run", str(runbook("P1")), "--env", "staging", "-p", "path=x", cwd=tmp_path)
    assert result.code == 4, result.output
    assert "opsctl.yaml:5:" in result.stderr and "template 'verdict'" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    (tmp_path / "opsctl.yaml").write_text(
        "environments:\n  staging:\n    notify:\n      templates:\n        strat: hello\n")
    result = opsctl("run", str(runbook("P1")), "--env", "staging", "-p", "path=x", cwd=tmp_path)
    assert result.code == 4 and "unknown message template 'strat'" in result.stderr, result.output
