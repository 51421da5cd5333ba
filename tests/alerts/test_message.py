"""The Slack message of an alert-triggered run, built in-process from a real (core-action) run:
alert text cannot inject links or mentions, secret parameters never appear, the apply command is
exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.alerts.test_serve import BURST_RUNBOOK


@pytest.fixture
def catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from opsctl.alerts import load_catalogue

    monkeypatch.setenv("OPSCTL_STATE_DIR", str(tmp_path / "state"))
    d = tmp_path / "rb"
    d.mkdir()
    secret = '  token: {type: string, secret: true, default: ""}\n'
    text = BURST_RUNBOOK.replace("FLAG", str(tmp_path / "flag")).replace(
        "  flag: {type: string", secret + "  flag: {type: string")
    (d / "rb-901-burst.yaml").write_text(text)
    catalogue, errors = load_catalogue([str(d)])
    assert errors == []
    return catalogue


def test_message_escapes_alert_text_and_hides_secrets(catalogue, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from opsctl.alerts import message, runner
    from opsctl.alerts.payloads import Alert
    from opsctl.config import Environment

    labels = {"alertname": "BurstTest", "item": "<!channel> <http://evil|x> & co"}
    alert = Alert("BurstTest", "firing", labels,
                  {"opsctl_params": "token=s3cr3t-t0ken-value pause=0.01",
                   "runbook_url": "javascript:alert(1)"},
                  "2026-11-29T03:00:00.000Z", generator_url="http://prom.example/graph?a=1&b=2")
    mapping = catalogue.map(alert)
    match = mapping.matches[0]
    assert "token is a secret parameter: ignored" in match.warnings[0]
    assert "token" not in match.given
    # a secret given another way (the run's own secrets) is redacted from the message too
    match.given["token"] = "s3cr3t-t0ken-value"
    assert match.params is not None
    match.params["token"] = "s3cr3t-t0ken-value"
    result = runner.diagnose(catalogue.runbooks["rb-901"], alert, match, Environment("prod"))
    doc = message.blocks(result)
    text = json.dumps(doc)
    assert "s3cr3t-t0ken-value" not in text
    assert "<!channel>" not in text and "<http://evil" not in text
    assert "&lt;!channel&gt; &lt;http://evil|x&gt; &amp; co" in text
    assert "javascript:" not in text  # only http(s) links
    assert "<http://prom.example/graph?a=1&b=2|source>" in text
    assert result.plan_file and f"opsctl apply {result.plan_file}" in text
    assert f"opsctl show-plan {result.plan_file}" in text
    assert "s3cr3t-t0ken-value" not in Path(result.plan_file).read_text()
    assert not (tmp_path / "flag").exists()
    # without a plan file, the run line (shell-quoted, secrets as variables)
    line = message.apply_command(catalogue.runbooks["rb-901"], match.given, "write-flag", "prod")
    assert line == ("opsctl run rb-901 --env prod -p 'item=<!channel> <http://evil|x> & co' "
                    "-p pause=0.01 -p token=${TOKEN} --option write-flag")


def test_slack_sender_outlasts_an_outage_in_order_and_drops_stale_posts() -> None:
    """A real HTTP receiver failing 12 posts in a row (an outage longer than a fixed number of
    attempts would cover): every message arrives, in order; one older than max_age is dropped."""
    from opsctl.serve.metrics import Metrics
    from opsctl.serve.slack import SlackSender
    from tests.alerts.helpers import SlackReceiver, wait_for

    receiver = SlackReceiver(fail_first=12)
    metrics = Metrics()

    def posts(result: str) -> float | None:
        return metrics.registry.get_sample_value("opsctl_slack_posts_total", {"result": result})

    sender = SlackSender(receiver.url, metrics, first_delay=0.01, max_delay=0.05, max_age=60)
    try:
        for i in range(5):
            sender.send({"text": f"m{i}"})
        wait_for(lambda: len(receiver.posts) == 5, 60, "the five posts after the outage")
        assert [p["text"] for p in receiver.posts] == [f"m{i}" for i in range(5)]
        assert posts("retried") == 12
    finally:
        sender.close()
    stale = SlackReceiver(fail_first=1000)
    sender = SlackSender(stale.url, metrics, first_delay=0.01, max_delay=0.05, max_age=0.3)
    try:
        sender.send({"text": "late"})
        wait_for(lambda: posts("dropped") == 1, 60, "the stale post dropped")
        assert stale.posts == [] and stale.failures >= 3
    finally:
        sender.close()
        receiver.close()
        stale.close()
