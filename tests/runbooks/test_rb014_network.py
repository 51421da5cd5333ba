"""rb-014 rehearsed against the path to the brokers (NetworkPolicies, the Service, Kafka outside
Kubernetes) and the scope of restart-consumers (the incident: tests/runbooks/rb014_incident.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fixtures.core import Result
from tests.fixtures.k8s import annotate_pods, deployment, eventually, wait_ready
from tests.runbooks.rb014_incident import (  # noqa: F401 - cluster, consumers_stuck: fixtures
    CONSUMERS,
    DISCONNECTED,
    Incident,
    cluster,
    consumers_stuck,
    endpoints,
    network_policy,
    report,
    step,
)

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]


def test_kafka_outside_kubernetes_is_a_finding_not_a_failure(opsctl: Callable[..., Result],
                                                             cluster: Incident) -> None:  # noqa: F811
    """Issue 14: no Kafka statefulset or Service (the brokers run elsewhere): exit 1 before; now
    findings, and the consumers' path is judged against the brokers' addresses: an egress policy
    that lets the consumers reach the cluster's own range only blocks them (ipBlock)."""
    inc = cluster
    network_policy(inc.core, inc.ns, "consumers-egress-in-cluster", {
        "podSelector": {"matchLabels": {"role": "kafka-consumer"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["127.0.0.0/8"]}}]}]})
    result = opsctl(*inc.run_args("--dry-run", "-p", "statefulset=kafka-not-here", "-p",
                                  "service=kafka-not-here"), env=inc.env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "kafka")["status"] == "skipped"
    warned = {f["step"]: f["message"] for f in out["findings"] if f["severity"] == "warning"}
    assert "no statefulset kafka-not-here" in warned["kafka_in_k8s"]
    assert "no Service kafka-not-here" in warned["kafka_service"]
    assert step(out, "brokers")["result"]["healthy_count"] == 1  # the protocol checks still judge
    assert step(out, "group")["result"]["member_count"] == 1
    path = step(out, "network_path")["result"]
    assert path["destinations"] and all(d.startswith("127.0.0.1:") for d in path["destinations"])
    assert path["blocking_policies"] == [f"{inc.ns}/consumers-egress-in-cluster"]
    assert path["blocked_count"] == path["paths"] == 2 * len(path["destinations"])
    critical = [f["message"] for f in out["findings"] if f["step"] == "network_path"
                and f["severity"] == "critical"]
    assert critical and f"NetworkPolicy {inc.ns}/consumers-egress-in-cluster blocks" in critical[0]
    skipped = opsctl(*inc.run_args("--dry-run", "-p", "statefulset=", "-p", "service="), env=inc.env)
    assert skipped.code == 0, skipped.output
    out = report(skipped)
    assert step(out, "kafka")["status"] == "skipped" and step(out, "kafka_in_k8s")["status"] == "skipped"
    assert step(out, "kafka_service")["status"] == "skipped"
    blocking = step(out, "network_path")["result"]["blocking_policies"]
    assert blocking == [f"{inc.ns}/consumers-egress-in-cluster"]


def test_network_policies_blocking_the_consumers_are_critical_and_named(opsctl: Callable[..., Result],
                                                                       consumers_stuck: Incident) -> None:  # noqa: F811
    """opsctl's own host reaches the brokers, the consumers' pods do not: order-service's egress
    allows DNS only, the brokers' ingress admits order-service only (so billing-service is
    refused).  Both policies are named, and restart-consumers (which cannot get through a policy)
    is no longer recommended although the consumers are disconnected."""
    inc = consumers_stuck
    network_policy(inc.core, inc.ns, "orders-egress-dns-only", {
        "podSelector": {"matchLabels": {"app": "order-service"}}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]})
    network_policy(inc.core, inc.ns, "kafka-from-orders-only", {
        "podSelector": {"matchLabels": {"app": "kafka"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "order-service"}}}],
                     "ports": [{"port": "client"}]}]})
    result = opsctl(*inc.run_args("--dry-run"), env=inc.env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "brokers")["result"]["healthy_count"] == 1  # from opsctl's host: fine
    path = step(out, "network_path")["result"]
    assert sorted(path["blocking_policies"]) == sorted(f"{inc.ns}/{n}" for n in
                                                       ("orders-egress-dns-only", "kafka-from-orders-only"))
    assert path["paths"] == 2 and path["blocked_count"] == 2 and path["allowed_count"] == 0
    by_source = {b.split(" -> ")[0].rsplit("-", 2)[0]: b for b in path["blocked"]}
    assert f"egress of {inc.ns}/order-service" in by_source[f"{inc.ns}/order-service"]
    assert "orders-egress-dns-only" in by_source[f"{inc.ns}/order-service"]
    assert "ingress of " in by_source[f"{inc.ns}/billing-service"] and ":9092/TCP" in by_source[
        f"{inc.ns}/billing-service"]
    assert "kafka-from-orders-only" in by_source[f"{inc.ns}/billing-service"]
    critical = [f["message"] for f in out["findings"] if f["step"] == "network_path"
                and f["severity"] == "critical"]
    assert critical and "kafka-from-orders-only" in critical[0] and "orders-egress-dns-only" in critical[0]
    assert "restart-consumers" not in out["recommended"]


def test_a_kafka_service_whose_selector_or_port_does_not_match_the_brokers(opsctl: Callable[..., Result],
                                                                         cluster: Incident) -> None:  # noqa: F811
    """The Service selects app=kafka-broker (the pods are app=kafka): no backend; then it targets
    9093 while the brokers listen on 9092: its endpoint is 'ready' and every connection still fails."""
    inc = cluster
    inc.core.patch_namespaced_service("kafka", inc.ns, {"spec": {"selector": {"app": "kafka-broker"}}})
    assert eventually(lambda: endpoints(inc.core, inc.ns) == (0, 0)), "the endpoint never went"
    result = opsctl(*inc.run_args("--dry-run"), env=inc.env)
    assert result.code == 0, result.output
    out = report(result)
    service = step(out, "kafka_service")["result"]
    assert service["selector"] == "app=kafka-broker" and service["pods_selected"] == 0
    critical = {f["message"] for f in out["findings"] if f["step"] == "kafka_service"
                and f["severity"] == "critical"}
    assert critical == {f"Service kafka: its selector app=kafka-broker matches no pod in namespace {inc.ns}: "
                        "the Service has no backend (compare with the broker pods' labels)"}
    inc.core.patch_namespaced_service("kafka", inc.ns, {"spec": {
        "selector": {"app": "kafka"}, "ports": [{"name": "client", "port": 9092, "targetPort": 9093}]}})
    assert eventually(lambda: endpoints(inc.core, inc.ns) == (1, 0)), "the endpoint never came back"
    out = report(opsctl(*inc.run_args("--dry-run"), env=inc.env))
    service = step(out, "kafka_service")["result"]
    assert service["ready_endpoints"] == 1 and len(service["port_mismatches"]) == 1
    assert "targets 9093/TCP" in service["port_mismatches"][0] and "listens on 9092 (client)" in \
        service["port_mismatches"][0]
    critical = [f["message"] for f in out["findings"] if f["step"] == "kafka_service"
                and f["severity"] == "critical"]
    assert len(critical) == 1 and "ports do not match the brokers'" in critical[0]


def test_restart_consumers_touches_only_the_deployments_in_scope(opsctl: Callable[..., Result],
                                                                 consumers_stuck: Incident) -> None:  # noqa: F811
    """A deployment of the namespace outside consumer_selector is never a target."""
    inc = consumers_stuck
    inc.apps.create_namespaced_deployment(inc.ns, deployment("web", 1, labels={"app": "web",
                                                                               "role": "frontend"}))
    wait_ready(inc.apps, inc.ns, "web")
    web_before = inc.snapshot()["deployments"]["web"]
    result = opsctl(*inc.run_args("--yes"), env=inc.env)
    assert result.code == 0, result.output
    out = report(result)
    targets = [c["target"] for c in step(out, "restart_consumers")["plan"]["changes"]]
    assert sorted(targets) == sorted(f"deployment {inc.ns}/{n}" for n in CONSUMERS)
    assert sorted(step(out, "restart_consumers")["result"]["restarted"]) == sorted(CONSUMERS)
    assert inc.snapshot()["deployments"]["web"] == web_before


def test_restart_consumers_restarts_only_the_disconnected_ones(opsctl: Callable[..., Result],
                                                               cluster: Incident) -> None:  # noqa: F811
    """Only order-service is disconnected (its pods not ready, the group lost its member):
    restart-consumers restarts it alone; billing-service, ready, matches consumer_selector too and
    is left alone, the plan saying why (it used to roll every deployment of the selector)."""
    inc = cluster
    annotate_pods(inc.core, inc.ns, "app=order-service", DISCONNECTED)
    assert eventually(lambda: inc.members() == 0, timeout=30), "the consumer never left the group"
    billing_before = inc.snapshot()["deployments"]["billing-service"]
    result = opsctl(*inc.run_args("--yes", "--option", "restart-consumers", "-p", "recovery_timeout=60s"),
                    env=inc.env)
    assert result.code == 0, result.output
    out = report(result)
    restart = step(out, "restart_consumers")
    assert [c["target"] for c in restart["plan"]["changes"]] == [f"deployment {inc.ns}/order-service"]
    assert restart["plan"]["warnings"][0].startswith("deployment billing-service excluded (1/1 ready): "
                                                     "its pods are ready: not proven disconnected")
    assert restart["result"]["restarted"] == ["order-service"]
    assert out["message"] == "verified" and inc.members() == 1
    assert inc.snapshot()["deployments"]["billing-service"] == billing_before  # never touched
