"""rb-014 rehearsed against broker faults: dead, hung, slow brokers (the incident:
tests/runbooks/rb014_incident.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from opsctl.testing.kafka import DelayProxy
from tests.fixtures.core import Result, free_port
from tests.runbooks.rb014_incident import (  # noqa: F401 - cluster, consumers_stuck: fixtures
    Incident,
    cluster,
    consumers_stuck,
    report,
    step,
)
from tests.timing import budget

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]


def test_brokers_still_unreachable_fails_verify_without_polling_the_group(opsctl: Callable[..., Result],
                                                                        cluster: Incident) -> None:  # noqa: F811
    # the brokers' address is dead for a reason a restart does not cure (network, DNS): verify
    # must fail after recovery_timeout, not poll the group for five more minutes
    import time

    env = {**cluster.env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    start = time.monotonic()
    result = opsctl(*cluster.run_args("--yes", "--option", "restart-kafka", "-p", "recovery_timeout=3s"),
                    env=env)
    assert result.code == 1, result.output
    assert time.monotonic() - start < budget(60)
    out = report(result)
    assert step(out, "restart_kafka")["status"] == "applied"
    assert step(out, "brokers_after")["result"]["unreachable_count"] == 1
    assert step(out, "members_after")["status"] == "skipped"
    sts = cluster.apps.read_namespaced_stateful_set("kafka", cluster.ns)
    assert "kubectl.kubernetes.io/restartedAt" in (sts.spec.template.metadata.annotations or {})


def test_one_dead_broker_in_the_bootstrap_list_still_diagnoses_the_group(opsctl: Callable[..., Result],
                                                                        cluster: Incident) -> None:  # noqa: F811
    """One of two bootstrap servers is dead, the other answers: the group step was skipped (it ran
    only with every broker reachable) although a client bootstraps from the live one."""
    dead = f"127.0.0.1:{free_port()}"
    env = {**cluster.env, "KAFKA_BOOTSTRAP_SERVERS": f"{dead},{cluster.proxy.address}"}
    result = opsctl(*cluster.run_args("--dry-run"), env=env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "brokers")["result"]["unreachable"] == [dead]
    group = step(out, "group")
    assert group["status"] == "ok", group
    assert group["result"]["member_count"] == 1


# ---- issue 9: a hung broker (accepts TCP, never answers), a slow one, Kafka outside Kubernetes --------

def test_hung_broker_is_critical_and_restarting_consumers_is_never_chosen(
        opsctl: Callable[..., Result], cluster: Incident, silent_server: Any) -> None:  # noqa: F811
    """Defect 1: the only broker accepts TCP and never answers.  TCP-level checks called it up and
    --yes rolled two healthy consumer deployments.  Defect 7: verify then polled the group 61 times
    for 3 min 51 s despite recovery_timeout=20s; now verify costs recovery_timeout, once."""
    import time

    hung = f"127.0.0.1:{silent_server.port}"
    env = {**cluster.env, "KAFKA_BOOTSTRAP_SERVERS": hung}
    before = cluster.snapshot()["deployments"]
    started = time.monotonic()
    result = opsctl(*cluster.run_args("--yes", "-p", "recovery_timeout=5s", "-p", "broker_timeout=2s"),
                    env=env)
    took = time.monotonic() - started
    assert result.code == 1, result.output
    out = report(result)
    brokers = step(out, "brokers")["result"]
    assert brokers["hung"] == [hung] and brokers["unhealthy_count"] == 1
    critical = [f["message"] for f in out["findings"]
                if f["step"] == "brokers" and f["severity"] == "critical"]
    assert critical and hung in critical[0] and "did not answer ApiVersions" in critical[0]
    assert out["option"] == ["restart-kafka"]  # the recommendation: the brokers, never the consumers
    assert step(out, "restart_consumers")["status"] == "skipped"
    assert cluster.snapshot()["deployments"] == before  # no consumer deployment touched
    after = step(out, "brokers_after")
    # the window is recovery_timeout, each probe bounded by broker_timeout: 5 s + one 2 s probe
    assert after["result"]["hung"] == [hung] and after["attempts"] >= 2 and after["duration"] < budget(10)
    assert step(out, "members_after")["status"] == "skipped" and step(out, "group")["status"] == "skipped"
    assert took < budget(120)  # the whole run, rollout included; was 3 min 51 s of verify


def test_hung_broker_beside_a_live_one_refuses_restart_consumers(opsctl: Callable[..., Result],
                                                                 consumers_stuck: Incident,  # noqa: F811
                                                                 silent_server: Any) -> None:
    """The consumers are disconnected AND a broker hangs: restart-consumers is not recommended, and
    chosen explicitly it is refused before anything changes (the cluster is not healthy)."""
    inc = consumers_stuck
    hung = f"127.0.0.1:{silent_server.port}"
    env = {**inc.env, "KAFKA_BOOTSTRAP_SERVERS": f"{inc.proxy.address},{hung}"}
    before = inc.snapshot()
    dry = opsctl(*inc.run_args("--dry-run", "-p", "broker_timeout=2s"), env=env)
    assert dry.code == 0, dry.output
    out = report(dry)
    assert step(out, "brokers")["result"]["hung"] == [hung]
    assert step(out, "brokers")["result"]["healthy_count"] == 1
    group = step(out, "group")  # bootstrapped from the broker that answers, not the hung one
    assert group["status"] == "ok" and group["result"]["member_count"] == 0, group
    forced = opsctl(*inc.run_args("--yes", "--option", "restart-consumers", "-p", "broker_timeout=2s"),
                    env=env)
    assert forced.code == 1, forced.output
    guard = step(report(forced), "cluster_healthy")
    assert guard["status"] == "failed" and "not healthy" in guard["reason"] and hung in guard["reason"]
    assert step(report(forced), "restart_consumers")["status"] != "applied"
    assert inc.snapshot() == before


def test_a_slow_broker_is_a_warning_not_an_outage(opsctl: Callable[..., Result], cluster: Incident) -> None:  # noqa: F811
    slow = DelayProxy(cluster.proxy.address, 0.7)  # ~1.4 s of a 2 s deadline
    try:
        env = {**cluster.env, "KAFKA_BOOTSTRAP_SERVERS": slow.address}
        result = opsctl(*cluster.run_args("--dry-run", "-p", "broker_timeout=2s"), env=env)
    finally:
        slow.close()
    assert result.code == 0, result.output
    out = report(result)
    brokers = step(out, "brokers")["result"]
    assert brokers["slow"] == [slow.address] and brokers["unhealthy_count"] == 0
    severities = {f["severity"] for f in out["findings"] if f["step"] == "brokers"}
    assert "warning" in severities and "critical" not in severities
