"""`opsctl alert` and `opsctl validate --alerts` on the stored payloads of tests/fixtures/alerts, the
trigger bindings' validation, and `opsctl alert --run` against a real pool exhaustion."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.postgres import PASSWORDS, PgServer
from tests.alerts.helpers import FIXTURES
from tests.fixtures.core import REPO, RUNBOOK_FILES, Result
from tests.runbooks.test_rb006 import sessions

ENV = {"OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}


def alert_json(opsctl: Callable[..., Result], *args: str, code: int = 0, **kw: Any) -> dict[str, Any]:
    result = opsctl("alert", *args, "-o", "json", env={**ENV, **kw.pop("env", {})}, **kw)
    assert result.code == code, result.output
    return json.loads(result.stdout)


def test_each_alert_of_a_group_maps_with_its_own_labels(opsctl: Callable[..., Result]) -> None:
    doc = alert_json(opsctl, str(FIXTURES / "alertmanager-pool-two-databases.json"))
    assert doc["source"] == "alertmanager"
    got = [(a["status"], a["matches"][0]["runbook"], a["matches"][0]["params"]) for a in doc["alerts"]]
    # commonLabels has no database (the group holds two): each alert's own labels are used
    assert got == [("mapped", "rb-006", {"database": "app", "namespace": "shop"}),
                   ("mapped", "rb-006", {"database": "billing", "namespace": "finance"})]


def test_text_output_and_stdin(opsctl: Callable[..., Result]) -> None:
    payload = (FIXTURES / "alertmanager-kafka-lag.json").read_text()
    result = opsctl("alert", "-", env=ENV, input=payload)
    assert result.code == 0, result.output
    assert "-> rb-008 group=order-service-group topic=order.events" in result.stdout
    assert re.search(r"rb-008-kafka-consumer-lag\.yaml:\d+:5\]", result.stdout)  # which trigger bound it


@pytest.fixture(scope="module")
def catalogue() -> Any:
    """The shipped runbooks, in-process (the CLI tests above cover the command itself)."""
    from opsctl.alerts import load_catalogue

    cat, errors = load_catalogue([str(REPO / "runbooks")])
    assert errors == []
    return cat


def mapped(catalogue: Any, name: str) -> list[dict[str, Any]]:
    from opsctl.alerts import payloads

    batch = payloads.parse((FIXTURES / name).read_bytes(), catalogue.alert_names)
    return [catalogue.map(a).as_dict() for a in batch.alerts]


def test_pagerduty_annotation_and_when(catalogue: Any) -> None:
    pd = mapped(catalogue, "pagerduty-incident-triggered.json")[0]
    assert pd["alert"]["source"] == "pagerduty" and pd["alert"]["fingerprint"] == "pd-Q2K4MS6D1WFRYQ"
    assert pd["matches"][0]["runbook"] == "rb-006"
    assert pd["matches"][0]["params"] == {"database": "app", "namespace": "shop"}
    rule = mapped(catalogue, "alertmanager-rule-names-runbook.json")[0]
    assert rule["matches"][0] == {**rule["matches"][0], "runbook": "rb-013",
                                  "via": "annotation opsctl_runbook",
                                  "params": {"database": "app", "long_query_seconds": "30"}}
    from opsctl.alerts.payloads import Alert

    for named in ("RB-013", "rb-013-postgres-slow-queries-locks", "rb-013-postgres-slow-queries-locks.yaml"):
        alert = Alert("AnyAlert", "firing", {"alertname": "AnyAlert", "database": "app"},
                      {"opsctl_runbook": named}, "")
        assert catalogue.map(alert).matches[0].runbook == "rb-013", named
    dlq = mapped(catalogue, "alertmanager-dlq-queue-and-lambda.json")
    assert [a["matches"][0]["runbook"] for a in dlq] == ["rb-007", "rb-012"]  # split by `when`
    assert dlq[1]["matches"][0]["params"] == {"function": "jobs-worker", "queue": "jobs-queue"}
    redis = mapped(catalogue, "alertmanager-redis-memory.json")[0]
    assert redis["matches"][0]["connect"] == {"redis": "redis.cache:6379"}
    bad = mapped(catalogue, "bad/alertmanager-invalid-params.json")[0]
    assert bad["status"] == "invalid" and "group" in bad["problem"]


def test_alert_params_over_environment_params_over_defaults(catalogue: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """As `opsctl run --env E -p ...`: what the alert gives, over the environment's opsctl.yaml
    params and OPSCTL_PARAM_* variables, over the runbook's defaults."""
    from opsctl.alerts.bindings import Catalogue
    from opsctl.alerts.payloads import Alert
    from opsctl.config import Environment

    env = Environment("shop", params={"default": {"namespace": "shop-ns"},
                                      "rb-006": {"database": "env-db", "idle_in_transaction_seconds": 45,
                                                 "deployment": "order-service"},
                                      "rb-008": {"group": "env-group"}})
    cat = Catalogue(list(catalogue.runbooks.values()), env)
    monkeypatch.setenv("OPSCTL_PARAM_LONG_QUERY_SECONDS", "120")
    monkeypatch.setenv("OPSCTL_PARAM_NOT_A_PARAMETER", "x")  # names no parameter of rb-006: ignored

    def params(name: str, labels: dict[str, str], **annotations: str) -> dict[str, Any]:
        m = cat.map(Alert(name, "firing", {"alertname": name, **labels}, annotations, ""))
        assert m.status == "mapped", m.problem
        assert m.matches[0].params is not None
        return m.matches[0].params

    p = params("DatabaseConnectionPoolCritical", {"database": "app"})
    assert (p["database"], p["namespace"], p["idle_in_transaction_seconds"], p["deployment"]) == \
        ("app", "shop-ns", 45, "order-service")  # alert > environment (default + own)
    assert p["long_query_seconds"] == 120 and p["critical_pct"] == 95  # variable; runbook default
    p = params("DatabaseConnectionPoolCritical", {"namespace": "finance"},
               opsctl_params="idle_in_transaction_seconds=5")
    assert (p["database"], p["namespace"], p["idle_in_transaction_seconds"]) == ("env-db", "finance", 5)
    # a required parameter the alert lacks, from the environment: mapped (without it: invalid)
    assert params("KafkaConsumerLagHigh", {"topic": "t"})["group"] == "env-group"
    lag = "KafkaConsumerLagHigh"
    bare = catalogue.map(Alert(lag, "firing", {"alertname": lag}, {}, ""))
    assert bare.status == "invalid" and "group" in bare.problem
    # a misconfigured environment is that alert's located problem, not a crash of the receiver
    bad = Catalogue(list(catalogue.runbooks.values()),
                    Environment("shop", source="opsctl.yaml", params={"rb-006": {"nope": 1}}))
    m = bad.map(Alert("DatabaseConnectionPoolCritical", "firing",
                      {"alertname": "DatabaseConnectionPoolCritical"}, {}, ""))
    assert m.status == "invalid" and "environments.shop.params.rb-006" in m.problem and "'nope'" in m.problem


def test_pagerduty_labels_from_incident_details(catalogue: Any) -> None:
    """An incident titled the way Alertmanager's PagerDuty integration does by default (label values
    without names) maps with the labels of its details (Alertmanager's `firing` text, flat ones)."""
    from opsctl.alerts import payloads

    doc = json.loads((FIXTURES / "pagerduty-incident-triggered.json").read_text())
    data = doc["event"]["data"]
    data["title"] = "[FIRING:1] DatabaseConnectionPoolCritical (billing finance critical)"
    data["custom_details"] = {"num_firing": "1", "firing": (
        "Labels:\n - alertname = DatabaseConnectionPoolCritical\n - database = billing\n"
        " - namespace = finance\nAnnotations:\n - database = x\n")}
    m = catalogue.map(payloads.parse(json.dumps(doc), catalogue.alert_names).alerts[0])
    assert m.matches[0].given == {"database": "billing", "namespace": "finance"}
    data.pop("custom_details")
    data["title"] = "pool exhausted"
    data["body"] = {"details": {"alertname": "DatabaseConnectionPoolCritical", "database": "app",
                                "nested": {"no": 1}}}
    m = catalogue.map(payloads.parse(json.dumps(doc), catalogue.alert_names).alerts[0])
    assert m.matches[0].runbook == "rb-006" and m.matches[0].given == {"database": "app"}


def test_truncated_alerts_are_warned(opsctl: Callable[..., Result]) -> None:
    result = opsctl("alert", str(FIXTURES / "alertmanager-truncated.json"), env=ENV)
    assert "warning: 3 alert(s)" in result.stderr and result.code == 0


def test_malformed_payloads(tmp_path: Path) -> None:
    from opsctl.alerts import payloads

    for body, reason in ((b"{", "not JSON"), (b'{"version": "4", "alerts": {}}', "must be a list"),
                         (b'{"hello": 1}', "neither an Alertmanager"),
                         (b'{"version": "4", "alerts": [{"status": "firing", "labels": {}}]}', "alertname"),
                         (b'{"version": "4", "alerts": [{"status": "odd", "labels": {"alertname": "A"}}]}',
                          "firing or resolved"),
                         (b'{"event": {"event_type": "incident.triggered", "data": {"id": "P1"}}}',
                          "no title"),
                         (b"[" * 100_000, "nested too deeply"),
                         (b'{"version": "4", "alerts": [], "truncatedAlerts": 1e400}', "must be a number"),
                         (b'{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"},'
                          b' "startsAt": "2026-13-45T99:00:00Z"}]}', r"startsAt: not an RFC 3339 time")):
        with pytest.raises(payloads.PayloadError, match=reason):
            payloads.parse(body)


def test_unmapped_and_unreadable_exit_2(opsctl: Callable[..., Result], tmp_path: Path) -> None:
    doc = alert_json(opsctl, str(FIXTURES / "bad" / "alertmanager-unbound-alert.json"), code=2)
    assert doc["alerts"][0]["status"] == "unmapped"
    (tmp_path / "p.json").write_bytes(b'{"version": "4", "alerts": {}}')
    result = opsctl("alert", str(tmp_path / "p.json"), env=ENV)
    assert result.code == 2 and "must be a list" in result.stderr and "Traceback" not in result.output


def test_validate_alerts_replays_stored_payloads(opsctl: Callable[..., Result]) -> None:
    ok = opsctl("validate", "--alerts", str(FIXTURES), env=ENV, cwd=REPO)
    assert ok.code == 0, ok.output
    assert "every alert maps to one runbook" in ok.stderr
    assert "warning:" in ok.stderr and "has no label namespace" in ok.stderr  # warnings, not errors
    bad = opsctl("validate", "--alerts", str(FIXTURES / "bad"), env=ENV, cwd=REPO)
    assert bad.code == 2
    assert "no runbook binds alert 'DiskAlmostFull'" in bad.stdout
    assert "missing required parameter 'group'" in bad.stdout
    assert "unsupported Alertmanager webhook version '3'" in bad.stdout
    js = json.loads(opsctl("validate", "--alerts", str(FIXTURES / "bad"), "-o", "json", env=ENV,
                           cwd=REPO).stdout)
    assert len(js["errors"]) == 3


BINDING_ERRORS = """\
id: rb-777
title: bindings with mistakes
severity: P3
summary: s
triggers:
  - {alert: A, params: {database: "{{ labels.database", nope: x}, when: "lables.x == 1"}
  - {alert: A, params: {count: abc}}
  - {alert: B, params: {database: "{{ foo.bar }}"}}
  - {alert: C, colour: red}
  - {alert: D, params: {database: "{{ labels.db | lower | durration }}"}, when: "labels.x is nosuchtest"}
params:
  database: {type: string, default: ""}
  count: {type: integer, default: 1}
diagnose:
  - {id: a, action: core.echo, with: {value: 1}}
"""


def test_binding_errors_are_located(opsctl: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "rb-777-bindings.yaml"
    path.write_text(BINDING_ERRORS)
    result = opsctl("validate", str(path))
    assert result.code == 2
    lines = result.stdout.splitlines()
    expect = [
        f"{path}:6:35: triggers[0].params.database: invalid Jinja template",
        f"{path}:6:57: triggers[0].params.nope: unknown parameter 'nope'",
        f"{path}:6:73: triggers[0].when: unknown name 'lables' (did you mean 'labels'?)",
        f"{path}:7:5: triggers[1]: alert 'A' is already bound by triggers[0] without a 'when'",
        f"{path}:7:32: triggers[1].params.count: parameter 'count': expected an integer",
        f"{path}:8:35: triggers[2].params.database: unknown name 'foo'",
        f"{path}:9:5: triggers[3]: Additional properties are not allowed ('colour' was unexpected)",
        f"{path}:10:35: triggers[4].params.database: unknown filter 'durration' (did you mean 'duration'?)",
        f"{path}:10:81: triggers[4].when: unknown test 'nosuchtest'",
    ]
    for want in expect:
        assert any(line.startswith(want) for line in lines), (want, lines)


RB = """\
id: {id}
title: t
severity: P3
summary: s
triggers:
  - {{alert: PoolAlert, {when}params: {{database: "{{{{ labels.database }}}}"}}}}
params:
  database: {{type: string, default: ""}}
diagnose:
  - {{id: a, action: core.echo, with: {{value: 1}}}}
"""


def test_two_runbooks_claiming_one_alert(opsctl: Callable[..., Result], tmp_path: Path) -> None:
    d = tmp_path / "rbs"
    d.mkdir()
    (d / "rb-801-a.yaml").write_text(RB.format(id="rb-801", when=""))
    (d / "rb-802-b.yaml").write_text(RB.format(id="rb-802", when=""))
    result = opsctl("validate", str(d))
    assert result.code == 2
    assert f"{d / 'rb-802-b.yaml'}:6:5: triggers[0]: alert 'PoolAlert' is also claimed by rb-801" \
        in result.stdout
    # `when`s that overlap pass the static check, but an alert matching both is caught on replay
    (d / "rb-801-a.yaml").write_text(RB.format(id="rb-801", when='when: "labels.env == \'prod\'", '))
    (d / "rb-802-b.yaml").write_text(RB.format(id="rb-802", when='when: "labels.database", '))
    assert opsctl("validate", str(d)).code == 0
    alerts = tmp_path / "alerts"
    alerts.mkdir()
    (alerts / "p.json").write_text(json.dumps({"version": "4", "alerts": [
        {"status": "firing", "labels": {"alertname": "PoolAlert", "env": "prod", "database": "x"}},
        {"status": "firing", "labels": {"alertname": "PoolAlert", "env": "dev", "database": "y"}}]}))
    replay = opsctl("validate", str(d), "--alerts", str(alerts))
    assert replay.code == 2
    assert "alerts[0]: PoolAlert{database=\"x\", env=\"prod\"} (firing): maps to 2 runbooks" in replay.stdout
    assert "alerts[1]" not in replay.stdout


def test_every_shipped_binding_maps_an_alert_with_its_labels() -> None:
    from opsctl.alerts import load_catalogue
    from opsctl.alerts.bindings import labels_used
    from opsctl.alerts.payloads import Alert

    catalogue, errors = load_catalogue([str(REPO / "runbooks")])
    assert errors == []
    assert len(catalogue.runbooks) == len(RUNBOOK_FILES)
    for rb in catalogue.runbooks.values():
        assert rb.bindings, rb.id
        for b in rb.bindings:
            used = labels_used(b)
            assert used, f"{rb.id} {b['alert']}: binds no label"
            own = {k: "v1" for k in used if not (rb.id == "rb-007" and k.startswith("function"))}
            alert = Alert(b["alert"], "firing", {"alertname": b["alert"], **own},
                          {"actuator_url": "http://svc:8080/actuator"}, "2026-11-29T03:00:00.000Z")
            m = catalogue.map(alert)
            assert m.status == "mapped", (rb.id, b["alert"], m.problem)
            assert m.matches[0].runbook == rb.id
            assert m.matches[0].given or m.matches[0].connect


@pytest.mark.postgres
def test_alert_run_diagnoses_and_changes_nothing(opsctl: Callable[..., Result], pg: PgServer,
                                                 pg_env: dict[str, str], tmp_path: Path) -> None:
    pg.open_sessions(16, "checkout-api", in_transaction=True)
    time.sleep(1.1)
    before = sessions(pg)
    payload = json.loads((FIXTURES / "alertmanager-pool-two-databases.json").read_text())
    payload["alerts"] = payload["alerts"][:1]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    # the threshold comes from the environment's params, as for `opsctl run --env shop`
    (tmp_path / "opsctl.yaml").write_text("environments:\n  shop:\n    params:\n"
                                          "      rb-006: {idle_in_transaction_seconds: 1}\n")
    doc = alert_json(opsctl, str(tmp_path / "p.json"), "--run", "--env", "shop", env=pg_env, timeout=180)
    run = doc["alerts"][0]["runs"][0]
    assert run["phase"] == "diagnose" and run["status"] == "ok", run
    assert any("16 sessions idle in transaction" in f["message"] for f in run["findings"])
    assert run["recommended"] == "kill-long-queries"
    assert run["command"] == f"opsctl apply {run['plan_file']}"
    plan = json.loads(Path(run["plan_file"]).read_text())
    assert plan["option"] == "kill-long-queries" and plan["params"]["database"] == "app"
    assert plan["params"]["idle_in_transaction_seconds"] == 1 and plan["environment"]["name"] == "shop"
    assert len(run["plans"][0]["changes"]) == 16
    assert sessions(pg) == before  # planned, never applied
    assert PASSWORDS["ops"] not in json.dumps(doc)
    report = opsctl("report", run["run_id"], env=pg_env)
    rows = [line for line in report.stdout.splitlines() if line.startswith("| ") and ":" in line[:12]]
    assert "alert **DatabaseConnectionPoolCritical** firing" in rows[0]
    assert "runbooks.example/rb-006" in rows[0]
