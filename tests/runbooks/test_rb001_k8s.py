"""rb-001's sweep of Kubernetes workloads against the real kube-apiserver (fake kubelet pods whose
readiness the test sets): a workload with no ready replica is a P0, one short of replicas a P1."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.fixtures.core import Result
from tests.fixtures.k8s import K8sCluster, annotate_pods, deployment, eventually, statefulset, wait_ready

pytestmark = pytest.mark.k8s


def test_sweep_finds_workloads_not_ready(opsctl: Callable[..., Result], k8s_cluster: K8sCluster,
                                         k8s_ns: str) -> None:
    core, apps, _ = k8s_cluster.api()
    apps.create_namespaced_deployment(k8s_ns, deployment("api", 2))
    apps.create_namespaced_deployment(k8s_ns, deployment("worker", 2))
    apps.create_namespaced_stateful_set(k8s_ns, statefulset("kafka", 2))
    for name, kind in (("api", "deployment"), ("worker", "deployment"), ("kafka", "statefulset")):
        wait_ready(apps, k8s_ns, name, kind)
    annotate_pods(core, k8s_ns, "app=worker", {"fake-kubelet/ready": "false"})  # all of them
    annotate_pods(core, k8s_ns, "app=kafka", {"fake-kubelet/ready": "false"}, n=1)
    def settled() -> bool:
        worker = apps.read_namespaced_deployment("worker", k8s_ns).status.ready_replicas or 0
        return worker == 0 and apps.read_namespaced_stateful_set("kafka", k8s_ns).status.ready_replicas == 1

    assert eventually(settled, timeout=30)
    env = {"KUBECONFIG": k8s_cluster.kubeconfig, "DATABASE_URL": "", "REDIS_URL": "", "AWS_REGION": "",
           "AWS_DEFAULT_REGION": "", "AWS_ACCESS_KEY_ID": "", "AWS_ENDPOINT_URL": "", "AWS_PROFILE": ""}
    result = opsctl("run", "rb-001", "--dry-run", "-o", "json", "-p", f"namespaces={k8s_ns}", env=env)
    assert result.code == 0, result.output
    sweep = next(s for s in json.loads(result.stdout)["steps"] if s["id"] == "sweep")["result"]
    assert sweep["skipped"].keys() == {"http", "postgres", "redis", "kafka", "aws"}, sweep["skipped"]
    assert sweep["severity"] == "P0", sweep
    assert sweep["p0"] == [f"deployment {k8s_ns}/worker: 0/2 replicas ready"], sweep["p0"]
    assert sweep["p1"] == [f"{k8s_ns}/kafka: 1/2 replicas ready"], sweep["p1"]  # api is fine
    assert sweep["title"] == f"{k8s_ns}/worker down, {k8s_ns}/kafka degraded"
