"""rb-014 (Kafka connectivity failure): the incident the rehearsals of test_rb014*.py share.

Real pieces: a kube-apiserver holding the "kafka" statefulset and the consumer deployments (pods
played by the fake kubelet), a real Kafka-protocol broker (noida-db) with a real consumer group.
The Kubernetes service in front of the brokers is a TCP proxy that, like a Service with no ready
endpoints, refuses connections while the statefulset's pods are not ready; the consumers are a real
KafkaConsumer that is connected (a group member) only while the consumer pods are ready and the
brokers reachable.  Faults are injected through pod state, and healed only by what opsctl does.

The rehearsals are three modules (each incident is its own namespace and consumer group) so that
xdist's --dist loadfile runs them on three workers at once instead of ~16 incidents in a row."""


from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from opsctl.testing.proxy import TcpProxy
from tests.fixtures.core import Result
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
