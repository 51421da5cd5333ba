"""The exported manifests on the real kube-apiserver (RBAC on), and opsctl inside a "pod": the
in-cluster configuration (service account token and CA at the standard path, KUBERNETES_SERVICE_HOST
and _PORT) against the same server."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from opsctl import catalog
from opsctl.export import job
from opsctl.export.naming import service_account_name
from tests.export.test_export import SHIPPED, required_params
from tests.fixtures.k8s import K8sCluster, deployment
from tests.timing import budget

pytestmark = pytest.mark.k8s
IMAGE = "registry.example.com/opsctl:0.1.0"
# Kubernetes 1.20 drops this field while its TTLAfterFinished feature gate (alpha) is off
DROPPED_BY_1_20 = {("spec", "ttlSecondsAfterFinished"),
                   ("spec", "jobTemplate", "spec", "ttlSecondsAfterFinished")}
PATHS = {"ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
         "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
         "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
         "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
         "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
         "CronJob": "/apis/batch/v1beta1/namespaces/{ns}/cronjobs",
         "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
         "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"}


def _api(cluster: K8sCluster) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


class HttpError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:4000]}")
        self.status = status


def _call(api: Any, method: str, path: str, body: Any = None, dry_run: bool = False,
          query: list[tuple[str, str]] | None = None) -> Any:
    """One REST call with the client's credentials (any kind, any API version, e.g. batch/v1beta1
    which the generated client no longer has)."""
    query = [*(query or []), *([("dryRun", "All")] if dry_run else [])]
    m, url, headers, data, _ = api.param_serialize(
        method=method, resource_path=path, query_params=query, body=body,
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        auth_settings=["BearerToken"])
    resp = api.call_api(m, url, header_params=headers, body=data)
    resp.read()
    text = resp.data.decode() if isinstance(resp.data, bytes) else str(resp.data)
    if not 200 <= resp.status < 300:
        raise HttpError(resp.status, text)
    return json.loads(text)


def _missing(sent: Any, got: Any, path: tuple[str, ...] = ()) -> list[str]:
    """What of the manifest the server did not keep (it prunes fields it does not know)."""
    if any(path[-len(d):] == d for d in DROPPED_BY_1_20):
        return []
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [".".join(path)]
        return [m for k, v in sent.items() for m in _missing(v, got.get(k), (*path, k))]
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return [".".join(path)]
        return [m for i, (a, b) in enumerate(zip(sent, got, strict=True))
                for m in _missing(a, b, (*path, str(i)))]
    return [] if sent == got else [f"{'.'.join(path)}: sent {sent!r}, kept {got!r}"]


def _create_twice(api: Any, ns: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Server-side dry run (admission and validation, nothing stored), then the real create."""
    path = PATHS[doc["kind"]].format(ns=ns)
    checked = _call(api, "POST", path, doc, dry_run=True)
    assert _missing(doc, checked, ()) == [], doc["kind"]
    with pytest.raises(HttpError) as gone:  # the dry run stored nothing
        _call(api, "GET", f"{path}/{doc['metadata']['name']}")
    assert gone.value.status == 404
    created = _call(api, "POST", path, doc)
    assert _missing(doc, created, ()) == [], doc["kind"]
    return created


def test_job_cronjob_and_their_service_accounts_are_accepted(k8s_cluster: K8sCluster, k8s_ns: str) -> None:
    api = _api(k8s_cluster)
    rb = catalog.load("rb-006")
    s = job.PodSettings(image=IMAGE, namespace=k8s_ns, run_id=job.run_id_for(rb.id))
    docs: list[dict[str, Any]] = []
    try:  # the permission manifests, once they exist (opsctl permissions, another change)
        from opsctl.export import permissions  # type: ignore[attr-defined]

        docs += permissions.kubernetes_manifests(rb, namespace=k8s_ns)
        docs += permissions.kubernetes_manifests(rb, read_only=True, namespace=k8s_ns)
    except ImportError:
        docs += [{"apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": {"name": service_account_name(rb.id, read_only=ro), "namespace": k8s_ns}}
                 for ro in (False, True)]
    diagnose = job.job_spec(rb, rb.id, {"database": "app"}, option=None, dry_run=False, plan_doc=None)
    docs += job.job(rb, diagnose, s)
    plan = {"format": "opsctl-plan/1", "digest": "sha256:" + "0123456789abcdef" * 4, "runbook": {"id": rb.id}}
    applying = job.job_spec(rb, rb.id, {}, option=None, dry_run=False, plan_doc=plan)
    docs += job.job(rb, applying, job.PodSettings(image=IMAGE, namespace=k8s_ns,
                                                   run_id=job.run_id_for(rb.id)))
    cron = job.job_spec(rb, rb.id, {}, option=None, dry_run=True, plan_doc=None)
    docs.append(job.cronjob(rb, cron, job.PodSettings(image=IMAGE, namespace=k8s_ns), "*/15 * * * *",
                            api_version="batch/v1beta1"))
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Job") == 2 and "CronJob" in kinds and "ConfigMap" in kinds
    for doc in docs:
        _create_twice(api, k8s_ns, doc)
    # every shipped runbook's --dry-run Job (its parameters, its deadline) passes the validation
    for rb_id in SHIPPED:
        other = catalog.load(rb_id)
        spec = job.job_spec(other, other.id, required_params(other), option=None, dry_run=True, plan_doc=None)
        (manifest,) = job.job(other, spec, job.PodSettings(image=IMAGE, namespace=k8s_ns,
                                                           run_id=job.run_id_for(other.id)))
        checked = _call(api, "POST", PATHS["Job"].format(ns=k8s_ns), manifest, dry_run=True)
        assert _missing(manifest, checked) == [], rb_id
    # the Job controller takes the Job: a pod of the right service account, never restarted
    deadline = time.monotonic() + budget(60)
    pods: list[Any] = []
    while time.monotonic() < deadline and not pods:
        pods = _call(api, "GET", f"/api/v1/namespaces/{k8s_ns}/pods",
                     query=[("labelSelector", f"opsctl.dev/run-id={s.run_id}")])["items"]
        time.sleep(0.2)
    assert pods, "the Job controller made no pod"
    assert pods[0]["spec"]["serviceAccountName"] == "opsctl-rb-006-read"
    assert pods[0]["spec"]["restartPolicy"] == "Never"


# ---- opsctl in a pod ----------------------------------------------------------------------------

RUNBOOK = """\
id: rb-901
title: In-cluster read
severity: P3
summary: reads one deployment with whatever identity the pod has.
params:
  namespace: {type: string, required: true}
diagnose:
  - id: web
    action: k8s.workload
    with: {name: web, namespace: "{{ params.namespace }}"}
  - id: elsewhere
    action: k8s.workload
    with: {name: web, namespace: default}
"""


def _service_account_token(api: Any, ns: str, name: str) -> tuple[str, str]:
    """The token and CA the token controller gives a ServiceAccount (what a pod gets mounted)."""
    deadline = time.monotonic() + budget(30)
    while time.monotonic() < deadline:
        sa = _call(api, "GET", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}")
        for ref in sa.get("secrets") or []:
            secret = _call(api, "GET", f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
            data = secret.get("data") or {}
            if "token" in data and "ca.crt" in data:
                return base64.b64decode(data["token"]).decode(), base64.b64decode(data["ca.crt"]).decode()
        time.sleep(0.2)
    raise AssertionError(f"no token for service account {name}")


def _in_a_pod(tmp_path: Path, env: dict[str, str], token: str, ca: str, host: str, port: str,
              args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run opsctl in a private mount namespace whose /run holds the service account files at the
    path the kubelet mounts them, with the variables the kubelet sets; ~/.kube/config holds the
    admin's kubeconfig, which must not be used."""
    sa = tmp_path / "sa"
    sa.mkdir(exist_ok=True)
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_text(ca)
    (sa / "namespace").write_text("default")
    script = ("mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && "
              f"cp {sa}/token {sa}/ca.crt {sa}/namespace /run/secrets/kubernetes.io/serviceaccount/ && "
              f"exec {sys.executable} -m opsctl \"$@\"")
    pod_env = {k: v for k, v in env.items() if k != "KUBECONFIG"}
    pod_env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port, "HOME": str(tmp_path)})
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "opsctl", *args],
                          env=pod_env, cwd=tmp_path, capture_output=True, text=True, timeout=budget(120))


def test_opsctl_in_a_pod_uses_the_pods_service_account(k8s_cluster: K8sCluster, k8s_ns: str,
                                                       opsctl_env: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here (unshare -m): the service account path cannot be laid out")
    api = _api(k8s_cluster)
    core, apps, _ = k8s_cluster.api()
    apps.create_namespaced_deployment(k8s_ns, deployment("web", replicas=1))
    core.create_namespaced_service_account(k8s_ns, {"metadata": {"name": "runner"}})
    _call(api, "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{k8s_ns}/roles",
          {"metadata": {"name": "read-deployments"},
           "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}]})
    _call(api, "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{k8s_ns}/rolebindings",
          {"metadata": {"name": "runner"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-deployments"},
           "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": k8s_ns}]})
    token, ca = _service_account_token(api, k8s_ns, "runner")
    (tmp_path / ".kube").mkdir()
    shutil.copy(k8s_cluster.kubeconfig, tmp_path / ".kube" / "config")  # admin: must not be used
    (tmp_path / "rb-901.yaml").write_text(RUNBOOK)
    kubeconfig = yaml.safe_load(Path(k8s_cluster.kubeconfig).read_text())
    server = urlsplit(kubeconfig["clusters"][0]["cluster"]["server"])
    host, port = server.hostname or "127.0.0.1", str(server.port)

    r = _in_a_pod(tmp_path, opsctl_env, token, ca, host, port,
                  ["run", "rb-901.yaml", "-p", f"namespace={k8s_ns}", "-o", "json", "--no-log"])
    steps = {s["id"]: s for s in json.loads(r.stdout)["steps"]}
    web = steps["web"]
    assert (web["status"], web["result"]["name"], web["result"]["namespace"]) == ("ok", "web", k8s_ns), \
        r.stderr
    # a namespace the Role does not cover: RBAC refuses the pod's service account (the admin's
    # ~/.kube/config would have been allowed): exit 4 naming who and what, no traceback
    assert r.returncode == 4, r.stdout + r.stderr
    refused = steps["elsewhere"]
    assert refused["status"] == "failed" and "forbidden" in refused["reason"].lower()
    assert f"system:serviceaccount:{k8s_ns}:runner" in refused["reason"]
    assert "Traceback" not in r.stdout + r.stderr

