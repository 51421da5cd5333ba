"""A small kwok-like fake kubelet for the tests (there is no real kubelet or scheduler here).

It registers a Ready Node, binds Pending pods to it, marks them Running, finishes graceful deletions,
and serves container logs over HTTPS so ``read_namespaced_pod_log`` works through the real
kube-apiserver's kubelet proxy.  Tests inject faults with pod annotations, which a real cluster shows
as status and logs:

* ``fake-kubelet/ready: "false"``         -> the pod is Running but not Ready;
* ``fake-kubelet/restarts: "4"``          -> restartCount of every container;
* ``fake-kubelet/last-termination: OOMKilled`` -> lastState.terminated.reason;
* ``fake-kubelet/logs: "line\\nline"``    -> the container log (default: three INFO lines).

Usage: ``KUBECONFIG=... FAKE_KUBELET_PORT=10250 python fake_kubelet.py PKI_DIR`` (PKI_DIR holds the
api.crt/api.key written by scripts/k8s-cluster.sh, reused as the kubelet serving certificate).
"""

from __future__ import annotations

import datetime
import http.server
import os
import ssl
import sys
import threading
import time
import urllib.parse
from typing import Any

from kubernetes import client, config

NODE = os.environ.get("FAKE_NODE", "fake-node-1")
PORT = int(os.environ.get("FAKE_KUBELET_PORT", "10250"))
INTERVAL = float(os.environ.get("FAKE_KUBELET_INTERVAL", "0.3"))
ANN = "fake-kubelet/"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_log(core: client.CoreV1Api, ns: str, name: str, container: str) -> str:
    try:
        pod = core.read_namespaced_pod(name, ns)
    except client.ApiException:
        return ""
    custom = (pod.metadata.annotations or {}).get(ANN + "logs")
    if custom is not None:
        return custom if custom.endswith("\n") or not custom else custom + "\n"
    return "".join(f"{now()} INFO fake log line {i} from {ns}/{name}/{container}\n" for i in range(3))


class LogHandler(http.server.BaseHTTPRequestHandler):
    core: client.CoreV1Api

    def do_GET(self) -> None:  # /containerLogs/{ns}/{pod}/{container}?tailLines=&limitBytes=
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_response(404)
            self.end_headers()
            return
        qs = urllib.parse.parse_qs(query)
        lines = pod_log(self.core, parts[1], parts[2], parts[3]).splitlines(keepends=True)
        if "tailLines" in qs:
            lines = lines[-int(qs["tailLines"][0]):]
        body = "".join(lines).encode()
        if "limitBytes" in qs:
            body = body[: int(qs["limitBytes"][0])]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve_logs(core: client.CoreV1Api, pki: str) -> None:
    LogHandler.core = core
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), LogHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(pki, "api.crt"), os.path.join(pki, "api.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def node_conditions() -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake",
             "lastHeartbeatTime": now(), "lastTransitionTime": now()}]


def register_node(core: client.CoreV1Api) -> None:
    try:
        core.create_node({"apiVersion": "v1", "kind": "Node",
                          "metadata": {"name": NODE, "labels": {"type": "fake"}}})
    except client.ApiException as e:
        if e.status != 409:
            raise
    core.patch_node_status(NODE, {"status": {
        "conditions": node_conditions(),
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": PORT}},
        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"},
        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"}}})


def pod_ip(p: client.V1Pod) -> str:
    """A pod IP of its own (from its uid, in 10.244.0.0/16), as a CNI would assign: Endpoints and
    NetworkPolicy ipBlocks see distinct pods."""
    n = int(p.metadata.uid.replace("-", "")[:8], 16) % (254 * 254)
    return f"10.244.{n // 254 + 1}.{n % 254 + 1}"


def desired_status(p: client.V1Pod, started: str) -> dict[str, Any]:
    ann = p.metadata.annotations or {}
    ready = ann.get(ANN + "ready", "true").lower() != "false"
    restarts = int(ann.get(ANN + "restarts", "0"))
    reason = ann.get(ANN + "last-termination")
    last = ({"terminated": {"reason": reason, "exitCode": 137 if reason == "OOMKilled" else 1,
                            "startedAt": started, "finishedAt": started}} if reason else {})
    cs = [{"name": c.name, "image": c.image, "imageID": "fake://" + c.image, "ready": ready,
           "started": True, "restartCount": restarts, "lastState": last,
           "containerID": f"fake://{p.metadata.uid}-{c.name}",
           "state": {"running": {"startedAt": started}}} for c in p.spec.containers]
    flag = "True" if ready else "False"
    conds = [{"type": ty, "status": st, "lastTransitionTime": started}
             for ty, st in (("Initialized", "True"), ("Ready", flag), ("ContainersReady", flag),
                            ("PodScheduled", "True"))]
    return {"phase": "Running", "hostIP": "127.0.0.1", "podIP": pod_ip(p), "podIPs": [{"ip": pod_ip(p)}],
            "startTime": started,
            "conditions": conds, "containerStatuses": cs}


def sync_pod(core: client.CoreV1Api, p: client.V1Pod, seen: dict[str, tuple[Any, ...]]) -> None:
    ns, name = p.metadata.namespace, p.metadata.name
    if p.metadata.deletion_timestamp:
        # no container runtime to wait for: finish the graceful delete at once
        core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        return
    if not p.spec.node_name:
        core.create_namespaced_pod_binding(name, ns, client.V1Binding(
            metadata=client.V1ObjectMeta(name=name),
            target=client.V1ObjectReference(kind="Node", name=NODE)), _preload_content=False)
    ann = p.metadata.annotations or {}
    signature = tuple(ann.get(ANN + k) for k in ("ready", "restarts", "last-termination"))
    running = p.status is not None and p.status.phase == "Running"
    if running and seen.get(p.metadata.uid) == signature:
        return
    started = p.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") if running and p.status.start_time else now()
    core.patch_namespaced_pod_status(name, ns, {"status": desired_status(p, started)})
    seen[p.metadata.uid] = signature


def main() -> None:
    config.load_kube_config()
    core = client.CoreV1Api()
    threading.Thread(target=serve_logs, args=(core, sys.argv[1]), daemon=True).start()
    register_node(core)
    print("fake kubelet ready", flush=True)
    seen: dict[str, tuple[Any, ...]] = {}
    last_heartbeat = 0.0
    parent = os.getppid()
    while os.getppid() == parent:  # reparented: the test run that started us is gone
        try:
            pods = core.list_pod_for_all_namespaces().items
        except (client.ApiException, OSError) as e:  # apiserver busy or going away: next round
            print(f"list pods: {e}", flush=True)
            pods = []
        for p in pods:
            try:
                sync_pod(core, p, seen)
            except client.ApiException as e:
                # vanished, conflict, namespace terminating...: a real kubelet retries, so do we
                if e.status not in (404, 409):
                    print(f"sync {p.metadata.namespace}/{p.metadata.name}: {e.status} {e.reason}", flush=True)
        if time.monotonic() - last_heartbeat > 10:
            core.patch_node_status(NODE, {"status": {"conditions": node_conditions()}})
            last_heartbeat = time.monotonic()
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
