"""The generated ServiceAccount/Role/RoleBinding on the real kube-apiserver, which authorizes with
RBAC (scripts/k8s-cluster.sh: --authorization-mode RBAC; the tests' own admin token is in
system:masters): runbooks run with the ServiceAccount's token and nothing else; a Role without one
verb makes the run exit 4 naming it, before anything changes."""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.core import Result
from tests.fixtures.k8s import K8sCluster
from tests.runbooks.rb014_incident import Incident as Rb014
from tests.runbooks.rb014_incident import cluster  # noqa: F401 - a fixture
from tests.runbooks.test_rb004 import Incident, incident  # noqa: F401 - a fixture
from tests.runbooks.test_rb006_k8s import App, app, report, step  # noqa: F401 - a fixture

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.redis, pytest.mark.kafka]


def manifests(opsctl: Callable[..., Result], *args: str) -> list[dict[str, Any]]:
    printed = opsctl("permissions", *args, "--for", "kubernetes", "-o", "yaml")
    assert printed.code == 0, printed.output
    return list(yaml.safe_load_all(printed.stdout))


def apply(kube: K8sCluster, docs: list[dict[str, Any]]) -> None:
    """Create (or replace) the manifests as the admin, as `kubectl apply` would."""
    from kubernetes import client, config, utils

    cfg = client.Configuration()
    config.load_kube_config(config_file=kube.kubeconfig, client_configuration=cfg)
    api = client.ApiClient(cfg)
    rbac = client.RbacAuthorizationV1Api(api)
    for doc in docs:
        if doc["kind"] == "Role":
            try:
                rbac.replace_namespaced_role(doc["metadata"]["name"], doc["metadata"]["namespace"], doc)
                continue
            except client.exceptions.ApiException as e:
                if e.status != 404:
                    raise
        utils.create_from_dict(api, doc)


def can(kube: K8sCluster, ns: str, sa: str, verb: str, resource: str) -> bool:
    """The apiserver's own answer (SubjectAccessReview) for the ServiceAccount."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=kube.kubeconfig, client_configuration=cfg)
    name, _, sub = resource.partition("/")
    group = "" if name in ("pods", "events") else "apps"
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{ns}:{sa}",
        groups=["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(namespace=ns, verb=verb, group=group,
                                                        resource=name, subresource=sub or None)))
    got = client.AuthorizationV1Api(client.ApiClient(cfg)).create_subject_access_review(review)
    return bool(got.status.allowed)


def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout}s: {what}"
        time.sleep(0.2)


def token_kubeconfig(kube: K8sCluster, ns: str, sa: str, tmp_path: Path) -> str:
    """A kubeconfig holding only the ServiceAccount's token (its secret, made by the token controller)."""
    core, _, _ = kube.api()
    found: list[Any] = []

    def secret() -> bool:
        refs = core.read_namespaced_service_account(sa, ns).secrets or []
        found[:] = [core.read_namespaced_secret(r.name, ns) for r in refs]
        return any(s.data and s.data.get("token") for s in found)

    until(secret, f"a token for {ns}/{sa}")
    token = base64.b64decode(next(s for s in found if s.data.get("token")).data["token"]).decode()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    conf = {"apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": sa, "context": {"cluster": admin["clusters"][0]["name"], "user": sa}}],
            "current-context": sa}
    path = tmp_path / f"{sa}.kubeconfig"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def test_rb006_restart_app_runs_with_the_generated_role_and_not_without_its_patch_verb(
        opsctl: Callable[..., Result], k8s_cluster: K8sCluster, app: App,  # noqa: F811
        tmp_path: Path) -> None:
    docs = manifests(opsctl, "rb-006", "--option", "restart-app", "-n", app.ns)
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    sa = docs[0]["metadata"]["name"]
    crippled = copy.deepcopy(docs)
    for rule in crippled[1]["rules"]:
        if rule["resources"] == ["deployments"]:
            rule["verbs"].remove("patch")
    assert crippled != docs
    apply(k8s_cluster, crippled)
    env = {**app.env, "KUBECONFIG": token_kubeconfig(k8s_cluster, app.ns, sa, tmp_path)}
    until(lambda: can(k8s_cluster, app.ns, sa, "get", "deployments"), "the Role is in force")
    before = app.snapshot()
    denied = opsctl(*app.run_args("--yes", "--option", "restart-app"), env=env)
    assert denied.code == 4, denied.output
    message = report(denied)["message"]
    assert 'cannot patch resource "deployments" in API group "apps"' in message, message
    assert "forbidden by RBAC" in message and "Traceback" not in denied.output
    assert app.snapshot()["pods"] == before["pods"] and app.leaked() == before["leaked"]  # nothing changed

    apply(k8s_cluster, docs[1:2])  # the Role as generated
    until(lambda: can(k8s_cluster, app.ns, sa, "patch", "deployments"), "the full Role is in force")
    result = opsctl(*app.run_args("--yes", "--option", "restart-app"), env=env)
    assert result.code == 0, result.output
    assert report(result)["message"] == "verified"
    assert "lock file" not in result.output  # the apply lock (a Lease) was taken, not the fallback
    assert app.leaked() == 0 and not app.snapshot()["pods"] & before["pods"]
    assert not can(k8s_cluster, app.ns, sa, "delete", "pods")  # nothing the runbook does not need


def test_rb004_diagnosis_runs_with_the_read_only_role(
        opsctl: Callable[..., Result], k8s_cluster: K8sCluster, incident: Incident,  # noqa: F811
        tmp_path: Path) -> None:
    docs = manifests(opsctl, "rb-004", "--read-only", "-n", incident.ns)
    verbs = {v for rule in docs[1]["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}, verbs
    apply(k8s_cluster, docs)
    sa = docs[0]["metadata"]["name"]
    env = {**incident.env, "KUBECONFIG": token_kubeconfig(k8s_cluster, incident.ns, sa, tmp_path)}
    until(lambda: can(k8s_cluster, incident.ns, sa, "get", "deployments"), "the Role is in force")
    result = opsctl(*incident.run_args("--phase", "diagnose"), env=env)
    assert result.code == 0, result.output
    out = report(result)
    pods = step(out, "downstream_pods")["result"]
    assert pods["oom_killed_count"] == 2 and pods["not_ready_count"] == 2
    assert step(out, "downstream_errors")["result"]["matched_count"] == 4  # pods/log
    assert step(out, "downstream_changes")["result"]["recent_count"] == 2  # replicasets
    assert not [s for s in out["steps"] if s["status"] == "failed"], out["steps"]
    assert not can(k8s_cluster, incident.ns, sa, "patch", "deployments")


def test_rb014_diagnosis_of_a_statefulset_runs_with_the_read_only_role(
        opsctl: Callable[..., Result], k8s_cluster: K8sCluster, cluster: Rb014,  # noqa: F811
        tmp_path: Path) -> None:
    docs = manifests(opsctl, "rb-014", "--read-only", "-n", cluster.ns)
    resources = {r for rule in docs[1]["rules"] for r in rule["resources"]}
    assert {"statefulsets", "deployments", "pods", "pods/log", "events"} <= resources
    apply(k8s_cluster, docs)
    sa = docs[0]["metadata"]["name"]
    env = {**cluster.env, "KUBECONFIG": token_kubeconfig(k8s_cluster, cluster.ns, sa, tmp_path)}
    until(lambda: can(k8s_cluster, cluster.ns, sa, "get", "statefulsets"), "the Role is in force")
    result = opsctl(*cluster.run_args("--phase", "diagnose"), env=env)
    out = report(result)
    assert not [s["id"] for s in out["steps"] if s["status"] == "failed"], result.output
    assert step(out, "kafka")["result"]["kind"] == "statefulset" and step(out, "kafka")["status"] == "ok"
    assert step(out, "kafka_logs")["status"] == "ok"  # pods/log of the statefulset's pods
    assert not can(k8s_cluster, cluster.ns, sa, "patch", "statefulsets")
