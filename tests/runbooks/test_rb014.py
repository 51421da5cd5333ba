"""rb-014 (Kafka connectivity failure) rehearsed through the real CLI: the incident's two faults
(brokers down, consumers disconnected), the refusals, the fault matrix.  The incident itself is
tests/runbooks/rb014_incident.py; the broker faults are test_rb014_brokers.py, the network and scope
rehearsals test_rb014_network.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.core import Result
from tests.runbooks.rb014_incident import (  # noqa: F401 - cluster, brokers_down, consumers_stuck: fixtures
    CONSUMERS,
    Incident,
    brokers_down,
    cluster,
    consumers_stuck,
    report,
    step,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]


def test_dry_run_finds_the_brokers_down_and_changes_nothing(opsctl: Callable[..., Result],
                                                           brokers_down: Incident) -> None:  # noqa: F811
    inc = brokers_down
    before = inc.snapshot()
    result = opsctl(*inc.run_args("--dry-run"), env=inc.env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "brokers")["result"]["unreachable"] == [inc.proxy.address]
    assert step(out, "kafka")["result"]["ready"] == 0
    assert step(out, "kafka_logs")["result"]["matched_count"] == 2
    assert step(out, "group")["status"] == "skipped"  # no Kafka client while the brokers are down
    service = step(out, "kafka_service")["result"]
    assert (service["ready_endpoints"], service["not_ready_endpoints"], service["pods_selected"]) == (0, 1, 1)
    findings = {(f["step"], f["severity"]) for f in out["findings"] if f["phase"] == "diagnose"}
    assert {("brokers", "critical"), ("kafka", "critical"), ("kafka_logs", "warning"),
            ("kafka_service", "critical")} <= findings
    assert any("Service kafka has no ready endpoint (1 not ready)" in f["message"] for f in out["findings"])
    plan = step(out, "restart_kafka")["plan"]
    assert plan["changes"][0]["target"] == f"statefulset {inc.ns}/kafka"
    # the consumers are ready (the brokers are what is down): not one is proven disconnected
    consumers = step(out, "restart_consumers")
    assert consumers["status"] == "noop" and consumers["plan"]["changes"] == []
    assert sorted(consumers["plan"]["data"]["excluded"]) == sorted(
        f"deployment {n} excluded (1/1 ready): its pods are ready: not proven disconnected, a restart "
        "would only cost a rebalance" for n in CONSUMERS)
    assert step(out, "members_after")["status"] == "skipped"
    assert inc.snapshot() == before and not inc.proxy.up


def test_yes_restart_kafka_reconnects_the_group(opsctl: Callable[..., Result],
                                                brokers_down: Incident) -> None:  # noqa: F811
    inc = brokers_down
    old = {p.metadata.uid for p in inc.core.list_namespaced_pod(inc.ns, label_selector="app=kafka").items}
    result = opsctl(*inc.run_args("--yes"), env=inc.env)  # no --option: the recommended one
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified" and out["option"] == ["restart-kafka"]
    assert step(out, "restart_kafka")["result"]["restarted"] == ["kafka"]
    assert step(out, "brokers_after")["result"]["unreachable_count"] == 0
    assert step(out, "members_after")["result"]["member_count"] == 1
    new = {p.metadata.uid for p in inc.core.list_namespaced_pod(inc.ns, label_selector="app=kafka").items
           if not p.metadata.deletion_timestamp}
    assert new and new.isdisjoint(old) and inc.members() == 1


def test_yes_restart_consumers_rejoins_the_group(opsctl: Callable[..., Result],
                                                 consumers_stuck: Incident) -> None:  # noqa: F811
    inc = consumers_stuck
    kafka_before = inc.snapshot()["kafka"]
    result = opsctl(*inc.run_args("--yes"), env=inc.env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified" and out["option"] == ["restart-consumers"]
    assert sorted(step(out, "restart_consumers")["result"]["restarted"]) == sorted(CONSUMERS)
    assert step(out, "group")["result"]["member_count"] == 0  # diagnosed: connected brokers, no members
    assert step(out, "members_after")["result"]["member_count"] == 1
    assert inc.snapshot()["kafka"] == kafka_before  # the brokers were left alone


def test_without_terminal_and_yes_refuses(opsctl: Callable[..., Result], brokers_down: Incident) -> None:  # noqa: F811
    before = brokers_down.snapshot()
    result = opsctl(*brokers_down.run_args("--option", "restart-kafka"), env=brokers_down.env)
    assert result.code == 3, result.output
    assert brokers_down.snapshot() == before and not brokers_down.proxy.up


def test_unreachable_kubernetes_exits_4(opsctl: Callable[..., Result], cluster: Incident) -> None:  # noqa: F811
    bad = {**cluster.env, "KUBECONFIG": "/nonexistent/kubeconfig"}
    result = opsctl(*cluster.run_args("--dry-run"), env=bad)
    assert result.code == 4, result.output
    assert "kubeconfig" in result.output and "Traceback" not in result.output


FAULT_MATRIX: dict[str, tuple[str, Any]] = {
    "dead": ("a closed port is a critical finding naming it; verify fails after recovery_timeout without "
             "polling the group; a dead broker beside a live one still lets the group be diagnosed", [
        "test_dry_run_finds_the_brokers_down_and_changes_nothing",
        "test_rb014_brokers.py::test_brokers_still_unreachable_fails_verify_without_polling_the_group",
        "test_rb014_brokers.py::test_one_dead_broker_in_the_bootstrap_list_still_diagnoses_the_group"]),
    "hung": ("accepts TCP, never answers: critical finding naming it, restart-consumers neither "
             "recommended nor allowed, verify costs recovery_timeout once (defects 1 and 7)", [
        "test_rb014_brokers.py::test_hung_broker_is_critical_and_restarting_consumers_is_never_chosen",
        "test_rb014_brokers.py::test_hung_broker_beside_a_live_one_refuses_restart_consumers"]),
    "slow": ("answers after most of the probe deadline: a warning naming it, not an outage", [
        "test_rb014_brokers.py::test_a_slow_broker_is_a_warning_not_an_outage"]),
    "permission_denied_optional": ("n/a", "neither broker of the suite (noida-db 0.2.3, Tansu 0.6.0) "
                                   "enforces ACLs; the probes (ApiVersions, Metadata) need no ACL in "
                                   "Kafka either, and the group lookup already continues on error"),
    "permission_denied_required": ("n/a", "no authorizer in noida-db / Tansu to inject it for real; "
                                   "kafka-python's AuthorizationError maps to exit 4 (translate_errors); "
                                   "Kubernetes RBAC denials belong to the k8s action tests"),
    "ordinary_role": ("n/a", "Kafka has no superuser role to fall back from, and the suite's brokers "
                      "grant every principal everything; the Kubernetes identity is the kubeconfig's"),
    "scope": ("restart-consumers restarts only consumer_selector's deployments in the namespace, and "
              "of those only the ones proven disconnected (the plan lists the others); a "
              "statefulset that is not there is a finding and is never a target (Kafka outside "
              "Kubernetes)", [
        "test_rb014_network.py::test_restart_consumers_touches_only_the_deployments_in_scope",
        "test_rb014_network.py::test_restart_consumers_restarts_only_the_disconnected_ones",
        "test_rb014_network.py::test_kafka_outside_kubernetes_is_a_finding_not_a_failure"]),
    "converges_slowly": ("the group's members rejoin some seconds after the restart: verify waits for "
                         "them (within recovery_timeout) and passes", [
        "test_yes_restart_kafka_reconnects_the_group", "test_yes_restart_consumers_rejoins_the_group"]),
    "does_not_work": ("the restart does not bring the brokers back: exit 1 after recovery_timeout", [
        "test_rb014_brokers.py::test_brokers_still_unreachable_fails_verify_without_polling_the_group",
        "test_rb014_brokers.py::test_hung_broker_is_critical_and_restarting_consumers_is_never_chosen"]),
    "network_policy_blocks": ("a NetworkPolicy that drops the consumers' pods' path to the brokers "
                              "(their egress, the brokers' ingress, an ipBlock for brokers outside "
                              "Kubernetes) is a critical finding naming it, although opsctl's own "
                              "host reaches the brokers; restart-consumers is then not recommended", [
        "test_rb014_network.py::test_network_policies_blocking_the_consumers_are_critical_and_named",
        "test_rb014_network.py::test_kafka_outside_kubernetes_is_a_finding_not_a_failure"]),
    "service_without_endpoints": ("the Kafka Service has no ready endpoint (broker pods not ready): "
                                  "critical finding with the not-ready count", [
        "test_dry_run_finds_the_brokers_down_and_changes_nothing"]),
    "service_selector_or_port_mismatch": ("a Service selector that matches no pod, or a targetPort the "
                                          "brokers do not listen on (endpoints ready, connections fail): "
                                          "critical findings saying which", [
        "test_rb014_network.py::test_a_kafka_service_whose_selector_or_port_does_not_match_the_brokers"]),
    "kafka_outside_kubernetes": ("no statefulset, no Service: warnings, exit 0, the protocol checks judge "
                                 "the brokers and the path is judged against their addresses", [
        "test_rb014_network.py::test_kafka_outside_kubernetes_is_a_finding_not_a_failure"]),
    "interrupted_resume": ("n/a", "rb-014's mutations are rollout restarts: one PATCH of a pod-template "
                           "annotation per workload, then a wait; nothing is counted or moved, and "
                           "an interrupted wait is the k8s actions' concern (not rehearsed here)"),
}


def test_fault_matrix_every_cell_is_tested_or_explained() -> None:
    import sys

    from tests.fixtures.kafka import check_fault_matrix

    check_fault_matrix(FAULT_MATRIX, sys.modules[__name__])
