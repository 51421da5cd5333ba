"""rb-014 (Kafka connectivity failure) rehearsed through the real CLI.

Real pieces: a kube-apiserver holding the "kafka" statefulset and the consumer deployments (pods
played by the fake kubelet), a real Kafka-protocol broker (noida-db) with a real consumer group.
The Kubernetes service in front of the brokers is a TCP proxy that, like a Service with no ready
endpoints, refuses connections while the statefulset's pods are not ready; the consumers are a real
KafkaConsumer that is connected (a group member) only while the consumer pods are ready and the
brokers reachable.  Faults are injected through pod state, and healed only by what opsctl does."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from opsctl.testing.kafka import DelayProxy
from opsctl.testing.proxy import TcpProxy
from tests.fixtures.core import Result, free_port
from tests.fixtures.k8s import (
    K8sCluster,
    annotate_pods,
    deployment,
    eventually,
    statefulset,
    wait_ready,
    wait_settled,
)
from tests.k8s.sim import PodConsumers
from tests.timing import budget

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]
CONSUMERS = ("order-service", "billing-service")
BROKEN = {"fake-kubelet/ready": "false", "fake-kubelet/logs":
          "INFO starting\nERROR [KafkaServer id=0] Fatal error during startup\nWARN session expired\n"}
DISCONNECTED = {"fake-kubelet/ready": "false", "fake-kubelet/logs":
                "WARN [Consumer clientId=order-1] Disconnected from node 0\n"
                "ERROR Connection to node -1 refused\n"}


class ServiceProxy:
    """host:port of the 'kafka' Service: the kit's proxy to the broker, accepting while healthy(),
    refusing (and dropping its connections) otherwise."""

    def __init__(self, target: str, healthy: Callable[[], bool]) -> None:
        host, port = target.rsplit(":", 1)
        self.proxy = TcpProxy(int(port), target_host=host)
        self.proxy.refuse()
        self.address = self.proxy.address
        self.stop = threading.Event()
        threading.Thread(target=self._follow, args=(healthy,), daemon=True).start()

    @property
    def up(self) -> bool:
        return self.proxy.accepting

    def _follow(self, healthy: Callable[[], bool]) -> None:
        while not self.stop.wait(0.1):
            try:
                ok = healthy()
            except Exception:  # noqa: BLE001 - the apiserver going away at the end of the session
                ok = False
            if ok != self.up:
                (self.proxy.accept if ok else self.proxy.refuse)()
        self.proxy.close()


@dataclass
class Incident:
    ns: str
    core: Any
    apps: Any
    proxy: ServiceProxy
    group: str
    env: dict[str, str]

    def run_args(self, *extra: str) -> tuple[str, ...]:
        return ("run", "rb-014", "-o", "json", "-p", f"group={self.group}", "-p", f"namespace={self.ns}",
                "-p", "consumer_selector=role=kafka-consumer", "-p", "trend_interval=2s", *extra)

    def snapshot(self) -> dict[str, Any]:
        wait_settled(self.apps, self.ns)
        sts = self.apps.read_namespaced_stateful_set("kafka", self.ns)
        deps = {d.metadata.name: (d.metadata.resource_version, d.spec.replicas)
                for d in self.apps.list_namespaced_deployment(self.ns).items}
        return {"kafka": (sts.metadata.resource_version, sts.spec.replicas), "deployments": deps,
                "pods": {p.metadata.uid for p in self.core.list_namespaced_pod(self.ns).items}}

    def members(self) -> int:
        from opsctl.backends.kafka import make_admin, settings

        admin = make_admin(settings({"bootstrap_servers": self.proxy.address}))
        try:
            return len(admin.describe_groups([self.group])[self.group].get("members") or [])
        finally:
            admin.close()


def _ready(apps: Any, ns: str, kind: str, name: str) -> bool:
    read = apps.read_namespaced_stateful_set if kind == "statefulset" else apps.read_namespaced_deployment
    obj = read(name, ns)
    return (obj.status.ready_replicas or 0) == obj.spec.replicas


@pytest.fixture
def cluster(k8s_cluster: K8sCluster, k8s_ns: str, noida_broker: Any) -> Iterator[Incident]:
    from tests.fixtures.kafka import unique

    core, apps, _ = k8s_cluster.api()
    brokers = statefulset("kafka", 1)
    brokers["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "client",
                                                                       "containerPort": 9092}]
    apps.create_namespaced_stateful_set(k8s_ns, brokers)
    core.create_namespaced_service(k8s_ns, {"metadata": {"name": "kafka"}, "spec": {
        "selector": {"app": "kafka"}, "ports": [{"name": "client", "port": 9092, "targetPort": 9092}]}})
    for name in CONSUMERS:
        apps.create_namespaced_deployment(k8s_ns, deployment(name, 1, labels={"app": name,
                                                                               "role": "kafka-consumer"}))
    wait_ready(apps, k8s_ns, "kafka", "statefulset")
    for name in CONSUMERS:
        wait_ready(apps, k8s_ns, name)
    assert eventually(lambda: endpoints(core, k8s_ns) == (1, 0)), "the kafka Service never got its endpoint"
    proxy = ServiceProxy(noida_broker.bootstrap, lambda: _ready(apps, k8s_ns, "statefulset", "kafka"))
    topic, group = unique("orders"), unique("order-service-group")
    noida_broker.create_topic(topic, 2)
    noida_broker.produce(topic, 20)
    consumers = PodConsumers(proxy.address, topic, group, lambda: proxy.up and all(
        _ready(apps, k8s_ns, "deployment", n) for n in CONSUMERS))
    inc = Incident(k8s_ns, core, apps, proxy, group,
                   {"KUBECONFIG": k8s_cluster.kubeconfig, "KAFKA_BOOTSTRAP_SERVERS": proxy.address})
    try:
        assert eventually(lambda: inc.members() == 1, timeout=30), "the consumer never joined its group"
        # a group that has been consuming has committed offsets before the incident
        assert eventually(lambda: bool(noida_broker.committed(group, topic)), timeout=30), \
            "the consumer never committed"
        yield inc
    finally:
        consumers.close()
        proxy.stop.set()


def endpoints(core: Any, ns: str) -> tuple[int, int]:
    """(ready, not ready) addresses of the kafka Service's Endpoints, as the endpoints controller
    keeps them."""
    subsets = core.read_namespaced_endpoints("kafka", ns).subsets or []
    return (sum(len(s.addresses or []) for s in subsets),
            sum(len(s.not_ready_addresses or []) for s in subsets))


def network_policy(core: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
    from kubernetes import client

    client.NetworkingV1Api(core.api_client).create_namespaced_network_policy(
        ns, {"metadata": {"name": name}, "spec": spec})


def report(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def step(out: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in out["steps"] if s["id"] == step_id)


@pytest.fixture
def brokers_down(cluster: Incident) -> Incident:
    annotate_pods(cluster.core, cluster.ns, "app=kafka", BROKEN)
    assert eventually(lambda: not cluster.proxy.up), "the kafka service never went down"
    assert eventually(lambda: endpoints(cluster.core, cluster.ns) == (0, 1)), "the endpoint stayed ready"
    return cluster


@pytest.fixture
def consumers_stuck(cluster: Incident) -> Incident:
    for name in CONSUMERS:
        annotate_pods(cluster.core, cluster.ns, f"app={name}", DISCONNECTED)
    assert eventually(lambda: cluster.members() == 0, timeout=30), "the consumer never left the group"
    return cluster


def test_dry_run_finds_the_brokers_down_and_changes_nothing(opsctl: Callable[..., Result],
                                                           brokers_down: Incident) -> None:
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
                                                brokers_down: Incident) -> None:
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
                                                 consumers_stuck: Incident) -> None:
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


def test_without_terminal_and_yes_refuses(opsctl: Callable[..., Result], brokers_down: Incident) -> None:
    before = brokers_down.snapshot()
    result = opsctl(*brokers_down.run_args("--option", "restart-kafka"), env=brokers_down.env)
    assert result.code == 3, result.output
    assert brokers_down.snapshot() == before and not brokers_down.proxy.up


def test_unreachable_kubernetes_exits_4(opsctl: Callable[..., Result], cluster: Incident) -> None:
    bad = {**cluster.env, "KUBECONFIG": "/nonexistent/kubeconfig"}
    result = opsctl(*cluster.run_args("--dry-run"), env=bad)
    assert result.code == 4, result.output
    assert "kubeconfig" in result.output and "Traceback" not in result.output


def test_brokers_still_unreachable_fails_verify_without_polling_the_group(opsctl: Callable[..., Result],
                                                                        cluster: Incident) -> None:
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
                                                                        cluster: Incident) -> None:
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
        opsctl: Callable[..., Result], cluster: Incident, silent_server: Any) -> None:
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
                                                                 consumers_stuck: Incident,
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


def test_a_slow_broker_is_a_warning_not_an_outage(opsctl: Callable[..., Result], cluster: Incident) -> None:
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


def test_kafka_outside_kubernetes_is_a_finding_not_a_failure(opsctl: Callable[..., Result],
                                                             cluster: Incident) -> None:
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
                                                                       consumers_stuck: Incident) -> None:
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
                                                                         cluster: Incident) -> None:
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
                                                                 consumers_stuck: Incident) -> None:
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
                                                               cluster: Incident) -> None:
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


FAULT_MATRIX: dict[str, tuple[str, Any]] = {
    "dead": ("a closed port is a critical finding naming it; verify fails after recovery_timeout without "
             "polling the group; a dead broker beside a live one still lets the group be diagnosed", [
        "test_dry_run_finds_the_brokers_down_and_changes_nothing",
        "test_brokers_still_unreachable_fails_verify_without_polling_the_group",
        "test_one_dead_broker_in_the_bootstrap_list_still_diagnoses_the_group"]),
    "hung": ("accepts TCP, never answers: critical finding naming it, restart-consumers neither "
             "recommended nor allowed, verify costs recovery_timeout once (defects 1 and 7)", [
        "test_hung_broker_is_critical_and_restarting_consumers_is_never_chosen",
        "test_hung_broker_beside_a_live_one_refuses_restart_consumers"]),
    "slow": ("answers after most of the probe deadline: a warning naming it, not an outage", [
        "test_a_slow_broker_is_a_warning_not_an_outage"]),
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
        "test_restart_consumers_touches_only_the_deployments_in_scope",
        "test_restart_consumers_restarts_only_the_disconnected_ones",
        "test_kafka_outside_kubernetes_is_a_finding_not_a_failure"]),
    "converges_slowly": ("the group's members rejoin some seconds after the restart: verify waits for "
                         "them (within recovery_timeout) and passes", [
        "test_yes_restart_kafka_reconnects_the_group", "test_yes_restart_consumers_rejoins_the_group"]),
    "does_not_work": ("the restart does not bring the brokers back: exit 1 after recovery_timeout", [
        "test_brokers_still_unreachable_fails_verify_without_polling_the_group",
        "test_hung_broker_is_critical_and_restarting_consumers_is_never_chosen"]),
    "network_policy_blocks": ("a NetworkPolicy that drops the consumers' pods' path to the brokers "
                              "(their egress, the brokers' ingress, an ipBlock for brokers outside "
                              "Kubernetes) is a critical finding naming it, although opsctl's own "
                              "host reaches the brokers; restart-consumers is then not recommended", [
        "test_network_policies_blocking_the_consumers_are_critical_and_named",
        "test_kafka_outside_kubernetes_is_a_finding_not_a_failure"]),
    "service_without_endpoints": ("the Kafka Service has no ready endpoint (broker pods not ready): "
                                  "critical finding with the not-ready count", [
        "test_dry_run_finds_the_brokers_down_and_changes_nothing"]),
    "service_selector_or_port_mismatch": ("a Service selector that matches no pod, or a targetPort the "
                                          "brokers do not listen on (endpoints ready, connections fail): "
                                          "critical findings saying which", [
        "test_a_kafka_service_whose_selector_or_port_does_not_match_the_brokers"]),
    "kafka_outside_kubernetes": ("no statefulset, no Service: warnings, exit 0, the protocol checks judge "
                                 "the brokers and the path is judged against their addresses", [
        "test_kafka_outside_kubernetes_is_a_finding_not_a_failure"]),
    "interrupted_resume": ("n/a", "rb-014's mutations are rollout restarts: one PATCH of a pod-template "
                           "annotation per workload, then a wait; nothing is counted or moved, and "
                           "an interrupted wait is the k8s actions' concern (not rehearsed here)"),
}


def test_fault_matrix_every_cell_is_tested_or_explained() -> None:
    import sys

    from tests.fixtures.kafka import check_fault_matrix

    check_fault_matrix(FAULT_MATRIX, sys.modules[__name__])
