"""The Kubernetes read-only guard against the real kube-apiserver: every read-only action and plan()
works through the guarded API client (get/list/watch only); a mutating call from read-only code is
refused before it is sent; apply()'s client in the same run is another object that writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opsctl.actions import load_all
from opsctl.actions.base import ActionContext
from opsctl.actions.k8s.common import K8sAction
from opsctl.backends.kubernetes import kube_for
from opsctl.config import Environment
from opsctl.errors import ActionError, ReadOnlyViolation
from opsctl.records import Plan
from tests.fixtures.k8s import K8sCluster, deployment, eventually, wait_ready, wait_settled
from tests.guards.helpers import assert_covers, extra_actions, record, run_engine

pytestmark = pytest.mark.k8s

READ_ONLY: dict[str, dict[str, Any]] = {
    "k8s.events": {"name": "api"},
    "k8s.hpa": {"name": "api"},
    "k8s.logs": {"name": "api"},
    "k8s.network_path": {"selector": "app=api", "addresses": "10.0.0.1:9092"},
    "k8s.pods": {"name": "api"},
    "k8s.rollout_history": {"name": "api"},
    "k8s.service": {"name": "api"},
    "k8s.wait_rollout": {"name": "api"},
    "k8s.workload": {"name": "api"},
    "k8s.workloads": {"selector": "app=api"},
}
PLANS: dict[str, dict[str, Any]] = {
    "k8s.delete_pod": {"pod": "{pod}"},
    "k8s.rollout_restart": {"name": "api"},
    "k8s.rollout_undo": {"name": "api"},
    "k8s.scale": {"name": "api", "replicas": 3},
    "k8s.set_env": {"name": "api", "var": "MODE", "value": "safe"},
}


def test_the_tables_cover_every_registered_kubernetes_action() -> None:
    assert_covers(READ_ONLY, "kubernetes", read_only=True)
    assert_covers(PLANS, "kubernetes", read_only=False)


@pytest.fixture
def world(k8s_cluster: K8sCluster, k8s_ns: str) -> dict[str, Any]:
    core, apps, autoscaling = k8s_cluster.api()
    apps.create_namespaced_deployment(k8s_ns, deployment("api", 2, env={"MODE": "normal"}))
    wait_ready(apps, k8s_ns, "api")
    apps.patch_namespaced_deployment("api", k8s_ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example/app:1.1"}]}}}})  # a second revision to undo
    wait_ready(apps, k8s_ns, "api")
    autoscaling.create_namespaced_horizontal_pod_autoscaler(k8s_ns, {
        "metadata": {"name": "api"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                 "minReplicas": 1, "maxReplicas": 4}})
    # the old revision's pod goes away: wait, so that a change seen later is somebody's doing
    assert eventually(lambda: len(core.list_namespaced_pod(k8s_ns).items) == 2, timeout=60)
    wait_settled(apps, k8s_ns)
    pod = core.list_namespaced_pod(k8s_ns, label_selector="app=api").items[0].metadata.name
    return {"ns": k8s_ns, "pod": pod, "apps": apps, "core": core, "kubeconfig": k8s_cluster.kubeconfig}


def _ctx(world: dict[str, Any], read_only: bool = True,
         clients: dict[str, Any] | None = None) -> ActionContext:
    env = Environment(name="t", backends={"kubernetes": {"kubeconfig": world["kubeconfig"]}})
    return ActionContext(environment=env, read_only=read_only, clients=clients)


def _state(world: dict[str, Any]) -> tuple[Any, ...]:
    d = world["apps"].read_namespaced_deployment("api", world["ns"])
    pods = sorted(p.metadata.name for p in world["core"].list_namespaced_pod(world["ns"]).items)
    return d.metadata.generation, d.spec.replicas, pods


def _args(table: dict[str, Any], world: dict[str, Any]) -> dict[str, Any]:
    return {"namespace": world["ns"], **{k: v.format(**world) if isinstance(v, str) else v
                                         for k, v in table.items()}}


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_every_read_only_action_works_under_the_guard(name: str, world: dict[str, Any]) -> None:
    before = _state(world)
    ctx = _ctx(world)
    result = load_all()[name](_args(READ_ONLY[name], world), ctx).run()
    assert isinstance(result, dict) and result
    assert type(kube_for(ctx).api_client).__name__ == "ReadOnlyApiClient"
    assert _state(world) == before


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_plan_works_under_the_guard(name: str, world: dict[str, Any]) -> None:
    before = _state(world)
    plan = load_all()[name](_args(PLANS[name], world), _ctx(world)).plan()
    assert isinstance(plan, Plan) and plan.changes
    assert _state(world) == before


def test_the_guarded_client_refuses_every_verb_but_get_list_watch(world: dict[str, Any]) -> None:
    before, ns = _state(world), world["ns"]
    clients: dict[str, Any] = {}
    kube = kube_for(_ctx(world, clients=clients))
    for call, verb in [
        (lambda: kube.apps.patch_namespaced_deployment_scale("api", ns, {"spec": {"replicas": 0}}), "PATCH"),
        (lambda: kube.apps.delete_namespaced_deployment("api", ns), "DELETE"),
        (lambda: kube.core.delete_namespaced_pod(world["pod"], ns), "DELETE"),
        (lambda: kube.core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}}), "POST"),
        (lambda: kube.apps.replace_namespaced_deployment(
            "api", ns, world["apps"].read_namespaced_deployment("api", ns)), "PUT"),
        (lambda: kube.core.create_namespaced_pod_eviction(
            world["pod"], ns, {"metadata": {"name": world["pod"]}}), "POST"),
    ]:
        with pytest.raises(ReadOnlyViolation, match=f"read-only guard: kubernetes refused {verb} /api"):
            call()
    with pytest.raises(ReadOnlyViolation, match="connect subresources"):
        kube.core.connect_get_namespaced_pod_exec(world["pod"], ns, command=["sh"])
    assert _state(world) == before
    # apply()'s client in the same run is another object, and it writes
    writable = kube_for(_ctx(world, read_only=False, clients=clients))
    assert writable is not kube
    writable.call(writable.apps.patch_namespaced_deployment_scale, "api", ns, {"spec": {"replicas": 3}})
    assert _state(world)[1] == 3


class ScaleFromRun(K8sAction):
    name = "guardtest.k8s_scale"
    summary = "test"

    def run(self) -> Any:
        ns = self.ctx.environment.settings["namespace"]
        self.call(self.kube.apps.patch_namespaced_deployment_scale, "api", ns, {"spec": {"replicas": 0}})
        return {"scaled": 0}


def test_a_read_only_step_that_scales_fails_and_nothing_changes(world: dict[str, Any], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rb = tmp_path / "rb-990-k8s.yaml"
    rb.write_text("id: rb-990\ntitle: t\nseverity: P4\nsummary: t\ndiagnose:\n"
                  "  - id: bad\n    action: guardtest.k8s_scale\n")
    (tmp_path / "opsctl.yaml").write_text(json.dumps({"default_environment": "t", "environments": {"t": {
        "settings": {"namespace": world["ns"]}, "kubernetes": {"kubeconfig": world["kubeconfig"]}}}}))
    monkeypatch.chdir(tmp_path)
    before = _state(world)
    with extra_actions(ScaleFromRun):
        outcome = run_engine(rb, monkeypatch, tmp_path / "state")
    bad = record(outcome, "bad")
    assert (outcome.exit_code, bad.status) == (1, "failed")
    assert "read-only guard: kubernetes refused PATCH /apis/apps/v1/namespaces/" in bad.reason
    assert _state(world) == before


def test_a_server_side_dry_run_passes_the_guard_and_persists_nothing(world: dict[str, Any]) -> None:
    before, ns = _state(world), world["ns"]
    kube = kube_for(_ctx(world))
    got = kube.call(kube.apps.patch_namespaced_deployment_scale, "api", ns, {"spec": {"replicas": 5}},
                    dry_run="All")
    assert got.spec.replicas == 5  # what the server would do...
    assert _state(world) == before  # ...and did not


def test_a_plan_is_validated_by_the_api_server_before_the_prompt(world: dict[str, Any]) -> None:
    before = _state(world)
    with pytest.raises(ActionError, match="the API server refuses this change \\(server-side dry run\\).*"
                                          "422.*valid environment variable name"):
        # the API server's own validation (the runbook schema, bypassed here, also refuses this name)
        args = _args({"name": "api", "var": "1-bad", "value": "x"}, world)
        load_all()["k8s.set_env"](args, _ctx(world)).plan()
    assert _state(world) == before
