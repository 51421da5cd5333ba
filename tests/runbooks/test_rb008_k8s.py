"""rb-008 (Kafka consumer lag), Kubernetes options: scale-consumers, restart-consumers.

The consumers are a real deployment in a real kube-apiserver; while it has a Ready pod, a real
consumer-group member consumes the topic on a real broker (tests/k8s/sim.py).  Lag builds up while
the deployment is scaled to 0 or its pods are stuck, and drains only through what opsctl does."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.core import Result
from tests.fixtures.k8s import K8sCluster, annotate_pods, deployment, eventually, wait_ready, wait_settled
from tests.k8s.sim import PodConsumers

pytestmark = [pytest.mark.k8s, pytest.mark.kafka]
PARTITIONS, PER_PARTITION = 3, 100
STUCK = {"fake-kubelet/ready": "false",
         "fake-kubelet/logs": "WARN [Consumer clientId=order-1] Disconnected from node 0\n"}


@dataclass
class Lag:
    ns: str
    core: Any
    apps: Any
    broker: Any
    topic: str
    group: str
    env: dict[str, str]

    def run_args(self, *extra: str) -> tuple[str, ...]:
        return ("run", "rb-008", "-o", "json", "-p", f"group={self.group}", "-p", f"topic={self.topic}",
                "-p", "lag_threshold=60", "-p", "trend_interval=1s", "-p", "deployment=order-service",
                "-p", f"namespace={self.ns}", *extra)

    def snapshot(self) -> dict[str, Any]:
        wait_settled(self.apps, self.ns)
        d = self.apps.read_namespaced_deployment("order-service", self.ns)
        return {"rv": d.metadata.resource_version, "replicas": d.spec.replicas,
                "pods": {p.metadata.uid for p in self.core.list_namespaced_pod(self.ns).items},
                "committed": self.broker.committed(self.group, self.topic)}


def _ready_pods(apps: Any, ns: str) -> int:
    return apps.read_namespaced_deployment("order-service", ns).status.ready_replicas or 0


@pytest.fixture
def make_lag(k8s_cluster: K8sCluster, k8s_ns: str, noida_broker: Any) -> Iterator[Callable[[str], Lag]]:
    """Build the incident ("scaled_to_zero" or "stuck"), then start the pod-backed consumer."""
    from tests.fixtures.kafka import unique

    core, apps, _ = k8s_cluster.api()
    started: list[PodConsumers] = []

    def make(fault: str) -> Lag:
        topic, group = noida_broker.create_topic(unique("orders"), PARTITIONS), unique("order-service-group")
        for p in range(PARTITIONS):
            noida_broker.produce(topic, PER_PARTITION, partition=p)
        replicas = 0 if fault == "scaled_to_zero" else 1
        apps.create_namespaced_deployment(k8s_ns, deployment("order-service", replicas))
        wait_ready(apps, k8s_ns, "order-service")
        if fault == "stuck":  # running but not consuming (not ready, disconnected); "healthy": no fault
            annotate_pods(core, k8s_ns, "app=order-service", STUCK)
            assert eventually(lambda: _ready_pods(apps, k8s_ns) == 0)
        assert noida_broker.consume_with_group(topic, group, 10) == 10  # a committed position: lag 290
        started.append(PodConsumers(noida_broker.bootstrap, topic, group,
                                    lambda: _ready_pods(apps, k8s_ns) > 0))
        return Lag(k8s_ns, core, apps, noida_broker, topic, group,
                   dict(noida_broker.env) | {"KUBECONFIG": k8s_cluster.kubeconfig})

    yield make
    for c in started:
        c.close()


@pytest.fixture
def scaled_to_zero(make_lag: Callable[[str], Lag]) -> Lag:
    """Fault: the consumers were scaled to 0."""
    return make_lag("scaled_to_zero")


@pytest.fixture
def stuck(make_lag: Callable[[str], Lag]) -> Lag:
    """Fault: the consumer pods run but are stuck."""
    return make_lag("stuck")


def report(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def step(out: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in out["steps"] if s["id"] == step_id)


def test_dry_run_plans_scale_to_the_partition_count(opsctl: Callable[..., Result],
                                                    scaled_to_zero: Lag) -> None:
    lag = scaled_to_zero
    before = lag.snapshot()
    result = opsctl(*lag.run_args("--dry-run"), env=lag.env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "lag")["result"]["total_lag"] == PARTITIONS * PER_PARTITION - 10
    scale = step(out, "scale_consumers")["plan"]["changes"][0]
    assert (scale["before"], scale["after"]) == (0, PARTITIONS)
    restart = step(out, "restart_consumers")["plan"]["changes"][0]
    assert restart["target"] == f"deployment {lag.ns}/order-service"
    assert lag.snapshot() == before  # resourceVersion, replicas, pods, committed offsets


def test_yes_scale_consumers_drains_the_lag(opsctl: Callable[..., Result], scaled_to_zero: Lag) -> None:
    lag = scaled_to_zero
    result = opsctl(*lag.run_args("--yes", "--option", "scale-consumers"), env=lag.env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert lag.apps.read_namespaced_deployment("order-service", lag.ns).spec.replicas == PARTITIONS
    assert step(out, "lag_after")["result"]["max_partition_lag"] < 60


def test_yes_restart_consumers_unsticks_them(opsctl: Callable[..., Result], stuck: Lag) -> None:
    old = stuck.snapshot()["pods"]
    result = opsctl(*stuck.run_args("--yes"), env=stuck.env)  # the recommended option
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified" and out["option"] == ["restart-consumers"]
    assert stuck.snapshot()["pods"].isdisjoint(old)


def test_without_terminal_and_yes_refuses(opsctl: Callable[..., Result], scaled_to_zero: Lag) -> None:
    before = scaled_to_zero.snapshot()
    result = opsctl(*scaled_to_zero.run_args("--option", "scale-consumers"), env=scaled_to_zero.env)
    assert result.code == 3, result.output
    assert scaled_to_zero.snapshot() == before


def test_unreachable_kubernetes_exits_4(opsctl: Callable[..., Result], scaled_to_zero: Lag) -> None:
    bad = {**scaled_to_zero.env, "KUBECONFIG": "/nonexistent/kubeconfig"}
    result = opsctl(*scaled_to_zero.run_args("--dry-run", "--option", "scale-consumers"), env=bad)
    assert result.code == 4, result.output
    assert "kubeconfig /nonexistent/kubeconfig does not exist" in result.output
    assert "Traceback" not in result.output


def test_scale_consumers_is_bounded_by_max_consumers(opsctl: Callable[..., Result],
                                                     scaled_to_zero: Lag) -> None:
    """max_replicas was the partition count itself: a 200-partition topic planned 200 replicas
    with no blast radius at all.  Now at most max_consumers, shown in the plan."""
    lag = scaled_to_zero
    before = lag.snapshot()
    result = opsctl(*lag.run_args("--dry-run", "-p", "max_consumers=2"), env=lag.env)
    assert result.code == 0, result.output
    scale = step(report(result), "scale_consumers")["plan"]["changes"][0]
    assert (scale["before"], scale["after"]) == (0, 2)
    assert lag.snapshot() == before
    result = opsctl(*lag.run_args("--yes", "--option", "scale-consumers", "-p", "max_consumers=2"),
                    env=lag.env)
    assert step(report(result), "scale_consumers")["result"]["after"] == 2, result.output
    assert lag.apps.read_namespaced_deployment("order-service", lag.ns).spec.replicas == 2


@pytest.mark.parametrize("option", ["scale-consumers", "restart-consumers"])
def test_a_kubernetes_option_without_a_deployment_is_bad_input(opsctl: Callable[..., Result],
                                                               scaled_to_zero: Lag, option: str) -> None:
    """The option's step was skipped (when: deployment != '') and verify judged an untouched lag.
    Now the option's `requires`: exit 2 before the run starts, naming the missing input."""
    lag = scaled_to_zero
    before = lag.snapshot()
    args = list(lag.run_args("--yes", "--option", option))
    i = args.index("deployment=order-service")
    del args[i - 1:i + 1]
    result = opsctl(*args, env=lag.env)
    assert result.code == 2, result.output
    assert f"option {option!r} needs deployment (-p deployment=...)" in result.output
    assert lag.snapshot() == before


def test_restart_consumers_never_restarts_healthy_consumers(opsctl: Callable[..., Result],
                                                            make_lag: Callable[[str], Lag]) -> None:
    """Only the guilty are touched: consumers that are ready, in the group and keeping up are not
    restarted even when restart-consumers is chosen explicitly with --yes."""
    lag = make_lag("healthy")
    assert eventually(lambda: sum(lag.broker.committed(lag.group, lag.topic).values())
                      == PARTITIONS * PER_PARTITION, timeout=60), "the consumer never caught up"
    before = lag.snapshot()
    result = opsctl(*lag.run_args("--yes", "--option", "restart-consumers"), env=lag.env)
    assert result.code == 1, result.output
    out = report(result)
    guard = step(out, "consumers_guilty")
    assert guard["status"] == "failed" and "its consumers are healthy" in guard["reason"]
    assert step(out, "restart_consumers")["status"] != "applied"
    after = lag.snapshot()
    assert (after["rv"], after["pods"]) == (before["rv"], before["pods"])
