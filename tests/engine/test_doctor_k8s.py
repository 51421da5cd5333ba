"""`opsctl doctor` against the real kube-apiserver (RBAC on): the admin's kubeconfig, a
ServiceAccount whose Role lacks one verb the diagnoses need, and a revoked token."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.core import Result
from tests.fixtures.k8s import K8sCluster
from tests.timing import budget

READS = {"": ["pods", "events", "services", "endpoints"],
         "apps": ["deployments", "statefulsets", "replicasets", "controllerrevisions"],
         "autoscaling": ["horizontalpodautoscalers"], "networking.k8s.io": ["networkpolicies"]}


def _sa_token(cluster: K8sCluster, ns: str, name: str, drop: str) -> str:
    """A ServiceAccount bound to a Role with list on what the diagnoses read, but ``drop``."""
    from kubernetes import client

    core, _, _ = cluster.api()
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    rules = [{"apiGroups": [group], "resources": [r for r in res if r != drop], "verbs": ["get", "list"]}
             for group, res in READS.items()]
    rbac.create_namespaced_role(ns, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]})
    deadline = time.monotonic() + 30  # the token controller writes the SA's token secret
    while time.monotonic() < deadline:
        secrets = core.read_namespaced_service_account(name, ns).secrets or []
        if secrets:
            data = core.read_namespaced_secret(secrets[0].name, ns).data or {}
            if data.get("token"):
                return base64.b64decode(data["token"]).decode()
        time.sleep(0.1)
    raise TimeoutError("no token for the ServiceAccount")


def _kubeconfig(cluster: K8sCluster, path: Path, token: str) -> str:
    text = Path(cluster.kubeconfig).read_text()
    start = text.index("users:")
    end = text.index("\n", start)
    path.write_text(text[:start] + f"users: [{{name: admin, user: {{token: {token}}}}}]" + text[end:])
    return str(path)


def _doctor(opsctl: Callable[..., Result], *args: str, env: dict[str, str]) -> Result:
    # the default deadline (5 s), stretched by the load of this shared machine
    return opsctl("doctor", "--timeout", str(round(budget(5.0), 1)), "-o", "json", *args, env=env)


def _row(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return next(r for r in json.loads(result.stdout)["backends"] if r["backend"] == "kubernetes")


def test_kubernetes_rbac_gap_and_revoked_token(opsctl: Callable[..., Result], k8s_cluster: K8sCluster,
                                               k8s_ns: str, tmp_path: Path) -> None:
    (tmp_path / "opsctl.yaml").write_text(
        f"environments:\n  k8s:\n    settings: {{namespace: {k8s_ns}}}\n"
        f"    kubernetes: {{kubeconfig: {k8s_cluster.kubeconfig}}}\n")
    env = {"HOME": str(tmp_path / "home")}
    result = _doctor(opsctl, "--env", "k8s", env=env)
    row = _row(result)
    assert result.code == 0 and row["status"] == "ok", result.output
    assert row["version"].startswith("Kubernetes v1.") and k8s_ns in row["identity"]

    token = _sa_token(k8s_cluster, k8s_ns, "doctor-ro", drop="events")
    config = _kubeconfig(k8s_cluster, tmp_path / "sa-kubeconfig", token)
    (tmp_path / "opsctl.yaml").write_text(
        f"environments:\n  sa:\n    settings: {{namespace: {k8s_ns}}}\n"
        f"    kubernetes: {{kubeconfig: {config}}}\n")
    result = _doctor(opsctl, "--env", "sa", env=env)
    row = _row(result)
    assert result.code == 1 and row["status"] == "permission_gap", result.output  # not a crash, not 4
    assert [m.split(" in ")[0] for m in row["missing"]] == ["list events"], row

    # no --env: the default environment of the standard variables (KUBECONFIG)
    revoked = _kubeconfig(k8s_cluster, tmp_path / "bad-kubeconfig", "revoked-token-value")
    result = _doctor(opsctl, env={**env, "KUBECONFIG": revoked})
    row = _row(result)
    assert result.code == 4 and row["status"] == "denied", result.output
    assert "revoked-token-value" not in result.output and token not in result.output
