"""Kubernetes actions against a real kube-apiserver + controller-manager (and the fake kubelet)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from opsctl.actions.base import ActionContext
from opsctl.actions.k8s.mutate import DeletePod, RolloutRestart, RolloutUndo, Scale, WaitRollout
from opsctl.actions.k8s.mutate_env import SetEnv
from opsctl.actions.k8s.read import Events, Hpa, Logs, Pods, RolloutHistory, Workload, Workloads
from opsctl.config import Environment
from opsctl.errors import ActionError, BackendError
from opsctl.records import Plan
from tests.fixtures.core import free_port
from tests.fixtures.k8s import K8sCluster, annotate_pods, deployment, eventually, statefulset, wait_ready
from tests.timing import budget

pytestmark = pytest.mark.k8s


def ctx_for(kubeconfig: str, deadline: float | None = None) -> ActionContext:
    env = Environment(name="test", backends={"kubernetes": {"kubeconfig": kubeconfig}})
    return ActionContext(environment=env, deadline=deadline)


@pytest.fixture
def kube(k8s_cluster: K8sCluster, k8s_ns: str) -> Any:
    """(core, apps, autoscaling, namespace, run-action helper)."""
    core, apps, autoscaling = k8s_cluster.api()

    def act(cls: Any, **args: Any) -> Any:
        return cls({"namespace": k8s_ns, **args}, ctx_for(k8s_cluster.kubeconfig))

    return core, apps, autoscaling, k8s_ns, act


def test_pods_and_workload_show_injected_faults(kube: Any) -> None:
    core, apps, _, ns, act = kube
    apps.create_namespaced_deployment(ns, deployment("api", 3))
    wait_ready(apps, ns, "api")
    annotate_pods(core, ns, "app=api", {"fake-kubelet/ready": "false", "fake-kubelet/restarts": "4",
                                        "fake-kubelet/last-termination": "OOMKilled"}, n=1)
    r = eventually(lambda: (p := act(Pods, name="api").run())["not_ready_count"] == 1 and p)
    assert r["count"] == 3 and r["ready_count"] == 2
    assert r["oom_killed_count"] == 1 and r["restarts_total"] == 4
    bad = [p for p in r["pods"] if not p["ready"]]
    assert bad[0]["last_termination_reason"] == "OOMKilled"
    w = eventually(lambda: (x := act(Workload, name="api").run())["ready"] == 2 and x)
    assert w["desired"] == 3 and w["unavailable"] == 1 and not w["rollout_complete"]
    assert "ready" in Workload.summarize(w)


def test_workloads_by_selector_counts_not_ready(kube: Any) -> None:
    core, apps, _, ns, act = kube
    for name in ("orders", "billing"):
        apps.create_namespaced_deployment(ns, deployment(name, 1, labels={"app": name, "role": "consumer"}))
        wait_ready(apps, ns, name)
    annotate_pods(core, ns, "app=billing", {"fake-kubelet/ready": "false"})
    r = eventually(lambda: (x := act(Workloads, selector="role=consumer").run())["not_ready_count"] == 1
                   and x)
    assert r["count"] == 2 and r["not_ready"] == ["billing"] and r["desired_total"] == 2


def test_logs_match_pattern_within_bounds(kube: Any) -> None:
    core, apps, _, ns, act = kube
    apps.create_namespaced_deployment(ns, deployment("api", 3))
    wait_ready(apps, ns, "api")
    lines = "\n".join(["INFO ok"] * 5 + ["ERROR payments timeout", "WARN retrying", "ERROR payments timeout"])
    annotate_pods(core, ns, "app=api", {"fake-kubelet/logs": lines})
    r = act(Logs, name="api", pattern="ERROR|WARN").run()
    assert r["pods_read"] == 3 and r["matched_count"] == 9
    assert all("ERROR" in m["line"] or "WARN" in m["line"] for m in r["lines"])
    bounded = act(Logs, name="api", pattern="ERROR", tail_lines=2, max_pods=2, max_matches=1).run()
    # the last two lines of each pod hold one ERROR; two pods read; only one line kept
    assert bounded["pods_read"] == 2 and bounded["matched_count"] == 2 and len(bounded["lines"]) == 1
    assert Logs.validate_args({"name": "api", "pattern": "(unclosed"})



def test_logs_skip_a_pod_whose_node_cannot_serve_them(kube: Any) -> None:
    core, apps, _, ns, act = kube
    apps.create_namespaced_deployment(ns, deployment("api", 1))
    wait_ready(apps, ns, "api")
    annotate_pods(core, ns, "app=api", {"fake-kubelet/logs": "ERROR payments timeout"})
    # a pod bound to a node that does not exist (its kubelet is gone): the API server cannot
    # fetch its logs; the other pods are still searched
    core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod",
                                    "metadata": {"name": "orphan", "labels": {"app": "api"}},
                                    "spec": {"nodeName": "gone-node",
                                             "containers": [{"name": "app", "image": "example/app:1.0"}]}})
    r = act(Logs, name="api", pattern="ERROR").run()
    assert r["pods_read"] == 1 and r["matched_count"] == 1
    assert [u["pod"] for u in r["unreadable"]] == ["orphan"]
    assert "1 pod(s) unreadable" in Logs.summarize(r)

def test_scale_plans_without_changing_then_applies(kube: Any) -> None:
    _, apps, _, ns, act = kube
    apps.create_namespaced_deployment(ns, deployment("api", 2))
    rv = wait_ready(apps, ns, "api").metadata.resource_version
    action = act(Scale, name="api", replicas=4, max_replicas=5)
    plan = action.plan()
    assert [(c.before, c.after) for c in plan.changes] == [(2, 4)]
    obj = apps.read_namespaced_deployment("api", ns)
    assert obj.metadata.resource_version == rv and obj.spec.replicas == 2
    with pytest.raises(ActionError, match="max_replicas=3"):
        act(Scale, name="api", replicas=4, max_replicas=3).plan()
    with pytest.raises(ActionError, match="allow_zero"):
        act(Scale, name="api", replicas=0).plan()
    result = action.apply(Plan.from_dict(plan.as_dict()))
    assert result["rollout"]["rollout_complete"] and result["rollout"]["ready"] == 4
    assert act(Scale, name="api", replicas=4).plan().empty


def test_scale_refuses_a_stale_plan(kube: Any) -> None:
    _, apps, _, ns, act = kube
    apps.create_namespaced_deployment(ns, deployment("api", 2))
    wait_ready(apps, ns, "api")
    action = act(Scale, name="api", replicas=3)
    plan = action.plan()
    apps.patch_namespaced_deployment_scale("api", ns, {"spec": {"replicas": 5}})  # someone else
    with pytest.raises(ActionError, match="changed since the plan"):
        action.apply(plan)
    assert apps.read_namespaced_deployment("api", ns).spec.replicas == 5


def test_set_env_history_and_undo(kube: Any) -> None:
    _, apps, _, ns, act = kube
    apps.create_namespaced_deployment(ns, deployment("api", 2, env={"DB_POOL_SIZE": "10"}))
    wait_ready(apps, ns, "api")
    with pytest.raises(ActionError, match="no revision before"):
        act(RolloutUndo, name="api").plan()
    with pytest.raises(ActionError, match="below min_value 1"):
        act(SetEnv, name="api", var="DB_POOL_SIZE", value=0, min_value=1, max_value=50).plan()
    with pytest.raises(ActionError, match="above max_value 50"):
        act(SetEnv, name="api", var="DB_POOL_SIZE", value=80, min_value=1, max_value=50).plan()
    action = act(SetEnv, name="api", var="DB_POOL_SIZE", value=40, min_value=1, max_value=50)
    plan = action.plan()
    assert (plan.changes[0].before, plan.changes[0].after) == ("DB_POOL_SIZE=10", "DB_POOL_SIZE=40")
    assert action.apply(plan)["rollout"]["rollout_complete"]
    env = apps.read_namespaced_deployment("api", ns).spec.template.spec.containers[0].env
    assert [(e.name, e.value) for e in env] == [("DB_POOL_SIZE", "40")]
    hist = act(RolloutHistory, name="api", window=600).run()
    assert hist["current_revision"] == 2 and hist["recent_count"] == 2
    assert [r["revision"] for r in hist["revisions"]] == [2, 1]
    undo = act(RolloutUndo, name="api")
    uplan = undo.plan()
    assert "revision 2" in uplan.changes[0].before and "revision 1" in uplan.changes[0].after
    assert undo.apply(uplan)["rollout"]["rollout_complete"]
    env = apps.read_namespaced_deployment("api", ns).spec.template.spec.containers[0].env
    assert [(e.name, e.value) for e in env] == [("DB_POOL_SIZE", "10")]


def test_rollout_restart_replaces_unready_statefulset_pods(kube: Any) -> None:
    core, apps, _, ns, act = kube
    apps.create_namespaced_stateful_set(ns, statefulset("kafka", 2))
    wait_ready(apps, ns, "kafka", "statefulset")
    annotate_pods(core, ns, "app=kafka", {"fake-kubelet/ready": "false"})
    assert eventually(lambda: act(Pods, kind="statefulset", name="kafka").run()["not_ready_count"] == 2)
    # the plan reads the statefulset's status, which its controller updates after the pods' (a
    # loaded machine once planned on "1/2 ready")
    assert eventually(lambda: not apps.read_namespaced_stateful_set("kafka", ns).status.ready_replicas)
    before = {p.metadata.uid for p in core.list_namespaced_pod(ns, label_selector="app=kafka").items}
    action = act(RolloutRestart, kind="statefulset", name="kafka", wait_timeout=30)
    plan = action.plan()
    assert plan.changes[0].target == f"statefulset {ns}/kafka" and "0/2 ready" in plan.changes[0].before
    assert not plan.warnings  # Parallel: the restart replaces unready pods too
    result = action.apply(plan)
    assert result["restarted"] == ["kafka"]
    pods = core.list_namespaced_pod(ns, label_selector="app=kafka").items
    live = [p for p in pods if not p.metadata.deletion_timestamp]
    assert {p.metadata.uid for p in live}.isdisjoint(before)
    assert act(Pods, kind="statefulset", name="kafka").run()["ready_count"] == 2


def test_restart_warns_about_a_stalled_ordered_statefulset(kube: Any) -> None:
    core, apps, _, ns, act = kube
    apps.create_namespaced_stateful_set(ns, statefulset("zk", 1, parallel=False))
    wait_ready(apps, ns, "zk", "statefulset")
    annotate_pods(core, ns, "app=zk", {"fake-kubelet/ready": "false"})
    assert eventually(lambda: act(Workload, kind="statefulset", name="zk").run()["ready"] == 0)
    plan = act(RolloutRestart, kind="statefulset", name="zk").plan()
    assert "OrderedReady" in plan.warnings[0] and "k8s.delete_pod" in plan.warnings[0]


def test_restart_by_selector_respects_max_targets(kube: Any) -> None:
    _, apps, _, ns, act = kube
    for name in ("a", "b", "c"):
        apps.create_namespaced_deployment(ns, deployment(name, 1, labels={"app": name, "role": "consumer"}))
    with pytest.raises(ActionError, match="above max_targets=2"):
        act(RolloutRestart, selector="role=consumer", max_targets=2).plan()
    with pytest.raises(ActionError, match="no deployment"):
        act(RolloutRestart, selector="role=nothing").plan()
    assert RolloutRestart.validate_args({})


def test_delete_pod_refuses_bare_pods_and_deletes_owned(kube: Any) -> None:
    core, apps, _, ns, act = kube
    core.create_namespaced_pod(ns, {"metadata": {"name": "bare"},
                                    "spec": {"containers": [{"name": "c", "image": "x"}]}})
    with pytest.raises(ActionError, match="no controller"):
        act(DeletePod, pod="bare").plan()
    apps.create_namespaced_deployment(ns, deployment("api", 1))
    wait_ready(apps, ns, "api")
    pod = core.list_namespaced_pod(ns, label_selector="app=api").items[0].metadata.name
    action = act(DeletePod, pod=pod)
    assert action.apply(action.plan()) == {"deleted": pod}
    assert eventually(lambda: pod not in {p.metadata.name for p in
                                          core.list_namespaced_pod(ns, label_selector="app=api").items})
    wait_ready(apps, ns, "api")


def test_events_and_hpa(kube: Any) -> None:
    core, apps, autoscaling, ns, act = kube
    apps.create_namespaced_deployment(ns, deployment("api", 1))
    wait_ready(apps, ns, "api")
    assert act(Hpa, name="api").run() == {"found": False, "name": None, "at_max": False}
    autoscaling.create_namespaced_horizontal_pod_autoscaler(ns, {
        "metadata": {"name": "api"}, "spec": {"minReplicas": 1, "maxReplicas": 4,
                                              "targetCPUUtilizationPercentage": 70,
                                              "scaleTargetRef": {"apiVersion": "apps/v1",
                                                                 "kind": "Deployment", "name": "api"}}})
    h = act(Hpa, name="api").run()
    assert h["found"] and h["max_replicas"] == 4 and h["target_cpu_pct"] == 70
    core.create_namespaced_event(ns, {
        "metadata": {"name": "api.oom"}, "type": "Warning", "reason": "BackOff", "message": "restarting",
        "involvedObject": {"kind": "Pod", "name": "api-xyz", "namespace": ns},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 3})
    e = act(Events, name="api").run()
    assert e["warning_count"] == 1 and e["count"] >= 2
    assert any(ev["reason"] == "ScalingReplicaSet" for ev in e["events"])


def test_wait_rollout_times_out_on_a_stuck_rollout(kube: Any) -> None:
    _, apps, _, ns, act = kube
    stuck = deployment("api", 1)
    stuck["spec"]["template"]["metadata"]["annotations"] = {"fake-kubelet/ready": "false"}
    apps.create_namespaced_deployment(ns, stuck)
    start = time.monotonic()
    with pytest.raises(ActionError, match="not complete after 2s: 0/1 ready"):
        act(WaitRollout, name="api", timeout=2).run()
    assert time.monotonic() - start < budget(6)


def test_missing_workload_is_an_action_error(kube: Any) -> None:
    *_, act = kube
    with pytest.raises(ActionError, match="deployment .*/nope not found"):
        act(Workload, name="nope").run()


def test_unreachable_api_server_is_a_backend_error(tmp_path: Any, k8s_cluster: K8sCluster) -> None:
    bad = tmp_path / "kubeconfig"
    text = Path(k8s_cluster.kubeconfig).read_text()
    port = text.split("https://127.0.0.1:")[1].split('"')[0]
    bad.write_text(text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"))
    start = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach the API server .*connection refused") as e:
        Workload({"name": "x"}, ctx_for(str(bad))).run()
    assert time.monotonic() - start < budget(10) and "Traceback" not in str(e.value)
    with pytest.raises(BackendError, match="does not exist"):
        Workload({"name": "x"}, ctx_for(str(tmp_path / "missing"))).run()


def test_malformed_kubeconfig_is_a_backend_error_without_its_token(tmp_path: Any,
                                                                   k8s_cluster: K8sCluster) -> None:
    text = Path(k8s_cluster.kubeconfig).read_text()
    broken = tmp_path / "kubeconfig"
    broken.write_text(text.replace("token: ", "token: {{secret-token-xyz: ", 1))
    with pytest.raises(BackendError, match="is not valid YAML at line") as e:
        Workload({"name": "x"}, ctx_for(str(broken))).run()
    assert "secret-token-xyz" not in str(e.value)
    with pytest.raises(BackendError, match="cannot read kubeconfig"):
        Workload({"name": "x"}, ctx_for(str(tmp_path))).run()  # a directory
