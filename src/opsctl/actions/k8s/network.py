"""Kubernetes network read-only actions: a Service and its endpoints, and the network path from a
workload's pods to a Service's pods (or to addresses outside the cluster) as the NetworkPolicies of
both namespaces decide it (``opsctl.actions.k8s.netpol``).

The path is judged on the API objects, from wherever opsctl runs: the policies are what an
enforcing CNI applies to the pods, so a policy that blocks the consumers shows although opsctl's
own host reaches the brokers.  No probe is run inside a pod (``pods/exec`` is often not granted
to an operations identity, and an exec'd probe needs a shell and a tool in the image)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.k8s.common import NS, SELECTOR, K8sAction, selector_of
from opsctl.actions.k8s.netpol import NAME_LABEL, Endpoint, denied_by
from opsctl.actions.needs import Kube
from opsctl.errors import ActionError, BackendError

ADDRESSES: dict[str, Any] = {
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    "description": "host:port list (e.g. the Kafka bootstrap servers)"}


def _addresses(raw: Any) -> list[tuple[str, int]]:
    items = raw if isinstance(raw, list) else str(raw or "").split(",")
    out = []
    for item in items:
        host, _, port = str(item).strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


def _selector_text(selector: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))


def _live(pods: list[Any]) -> list[Any]:
    return [p for p in pods if not p.metadata.deletion_timestamp]


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])) \
        if pod.status else False


def _container_ports(pod: Any) -> list[dict[str, Any]]:
    return [{"name": p.name, "containerPort": p.container_port, "protocol": p.protocol or "TCP"}
            for c in pod.spec.containers for p in (c.ports or [])]


def _target_port(svc_port: Any, pod: Any) -> int | None:
    """The pod port a Service port sends to (a named targetPort resolved in the pod), or None."""
    target = svc_port.target_port if svc_port.target_port is not None else svc_port.port
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for p in _container_ports(pod):
        if p["name"] == target and p["protocol"] == (svc_port.protocol or "TCP"):
            return int(p["containerPort"])
    return None


def _names_service(host: str, name: str, ns: str, cluster_ip: str | None) -> bool:
    """host is the Service's DNS name (name, name.ns, name.ns.svc[.cluster.local]) or its ClusterIP."""
    labels = host.rstrip(".").split(".")
    return host == cluster_ip or (labels[0] == name and (len(labels) == 1 or labels[1] == ns))


@register
class Service(K8sAction):
    """A Service, the pods its selector matches and its endpoints: found, ready / not-ready endpoint
    addresses, whether the selector matches any pod, and ports that do not match (a targetPort the
    selected pods do not declare, a named targetPort no pod has, an address in ``addresses`` that
    names the Service on a port it does not expose).  A Service that does not exist is
    ``found: false``, not an error (the backend may not run in Kubernetes).

    ```yaml
    - id: kafka_service
      action: k8s.service
      with: {name: kafka, namespace: shop, addresses: "{{ steps.brokers.result.unhealthy }}"}
      expect:
        - that: "not result.found or result.ready_endpoints > 0"
          message: "Service kafka has no ready endpoint"
    ```
    """

    name = "k8s.service"
    permissions = (Kube("", ("services",), ("get",)), Kube("", ("endpoints",), ("get",)),
                   Kube("", ("pods",), ("list",)))
    summary = "a Service: selector matches, ready / not-ready endpoints, ports that do not match the pods'"
    schema = type_schema({"name": {"type": "string", "minLength": 1, "description": "Service name"},
                          "namespace": NS, "addresses": ADDRESSES}, required=["name"])

    def run(self) -> dict[str, Any]:
        name, ns = self.args["name"], self.ns
        try:
            svc = self.call(self.kube.core.read_namespaced_service, name, ns, what=f"service {ns}/{name}")
        except ActionError as e:
            if "not found" not in str(e):
                raise
            return {"found": False, "name": name, "namespace": ns, "problems": [], "port_mismatches": [],
                    "pods_selected": 0, "ready_endpoints": 0, "not_ready_endpoints": 0}
        spec = svc.spec
        selector = spec.selector or {}
        pods = _live(self.pods_of(_selector_text(selector))) if selector else []
        try:
            ep = self.call(self.kube.core.read_namespaced_endpoints, name, ns, what=f"endpoints {ns}/{name}")
            subsets = ep.subsets or []
        except ActionError as e:
            if "not found" not in str(e):
                raise
            subsets = []
        ready = sorted({a.ip for s in subsets for a in (s.addresses or [])})
        not_ready = sorted({a.ip for s in subsets for a in (s.not_ready_addresses or [])})
        ports = [{"name": p.name, "port": p.port, "protocol": p.protocol or "TCP",
                  "target_port": p.target_port if p.target_port is not None else p.port}
                 for p in spec.ports or []]
        mismatches = self._port_mismatches(svc, pods)
        for host, port in _addresses(self.args.get("addresses")):
            if _names_service(host, name, ns, spec.cluster_ip) and port not in [p["port"] for p in ports]:
                mismatches.append(f"{host}:{port} names Service {name}, which exposes port(s) "
                                  f"{', '.join(str(p['port']) for p in ports) or 'none'}, not {port}")
        problems = list(mismatches)
        if selector and not pods:
            problems.insert(0, f"selector {_selector_text(selector)} matches no pod in namespace {ns}")
        if not ready:
            problems.insert(0, f"no ready endpoint ({len(not_ready)} not ready)")
        return {"found": True, "name": name, "namespace": ns, "type": spec.type,
                "cluster_ip": spec.cluster_ip, "headless": spec.cluster_ip == "None",
                "selector": _selector_text(selector),
                "publish_not_ready": bool(spec.publish_not_ready_addresses),
                "ports": ports, "pods_selected": len(pods), "pods_ready": sum(_ready(p) for p in pods),
                "selector_matches": bool(pods) or not selector,
                "ready_endpoints": len(ready), "not_ready_endpoints": len(not_ready),
                "endpoint_ips": ready, "not_ready_ips": not_ready,
                "port_mismatches": mismatches, "problems": problems}

    @staticmethod
    def _port_mismatches(svc: Any, pods: list[Any]) -> list[str]:
        out = []
        for sp in svc.spec.ports or []:
            target = sp.target_port if sp.target_port is not None else sp.port
            proto = sp.protocol or "TCP"
            for pod in pods:
                declared = [p for p in _container_ports(pod) if p["protocol"] == proto]
                resolved = _target_port(sp, pod)
                listening = ", ".join(f"{p['containerPort']}" + (f" ({p['name']})" if p["name"] else "")
                                      for p in declared) or "no declared port"
                if resolved is None:
                    out.append(f"Service port {sp.port} targets port name {target!r}, which pod "
                               f"{pod.metadata.name} does not declare (it declares {listening})")
                elif declared and resolved not in [p["containerPort"] for p in declared]:
                    out.append(f"Service port {sp.port} targets {resolved}/{proto}, pod {pod.metadata.name} "
                               f"listens on {listening}")
                else:
                    continue
                break  # one line per Service port: the first pod that disagrees
        return out

    @classmethod
    def summarize(cls, r: Any) -> str:
        if not r["found"]:
            return f"no Service {r['namespace']}/{r['name']}"
        text = (f"Service {r['name']}: {r['ready_endpoints']} ready / {r['not_ready_endpoints']} not ready "
                f"endpoint(s), selector matches {r['pods_selected']} pod(s)")
        return text + (f"; {'; '.join(r['problems'])}" if r["problems"] else "")


@register
class NetworkPath(K8sAction):
    """Whether the NetworkPolicies let a workload's pods reach a Service's pods (each pod port the
    Service targets) or, without one, the given addresses (an ipBlock matter: a backend outside
    Kubernetes): the source pods' egress and the destination pods' ingress, as an enforcing CNI
    applies them.  A connection that is denied is listed with the policies that isolate the pod
    and allow nothing matching it (``blocked``, ``blocking_policies``).

    ```yaml
    - id: network_path
      action: k8s.network_path
      with: {selector: role=kafka-consumer, namespace: shop, service: kafka,
             addresses: "{{ steps.brokers.result.cluster_brokers }}"}
      expect:
        - that: "result.blocked_count == 0"
          message: "{{ result.blocked | join('; ') }}"
    ```
    """

    name = "k8s.network_path"
    permissions = (Kube("apps", ("deployments",), ("list",)), Kube("", ("pods",), ("list",)),
                   Kube("", ("services",), ("get",)),
                   Kube("networking.k8s.io", ("networkpolicies",), ("list",)))
    summary = ("NetworkPolicies judged for a workload's pods to a Service's pods or to addresses: "
               "blocked connections and the policies that block them")
    schema = type_schema({
        "selector": {**SELECTOR, "description": "label selector of the source deployments (their pods "
                                                "are the sources), or of the source pods directly"},
        "namespace": NS,
        "service": {"type": "string", "default": "", "description": "destination Service (its pods, "
                    "on the pod ports it targets); empty or not found: the addresses"},
        "service_namespace": {"type": "string", "default": "", "description": "default: namespace"},
        "addresses": ADDRESSES,
        "max_pods": {"type": "integer", "minimum": 1, "default": 20,
                     "description": "at most this many source and destination pods are judged"}},
        required=["selector"])

    def run(self) -> dict[str, Any]:
        ns = self.ns
        dst_ns = str(self.args.get("service_namespace") or ns)
        limit = int(self.args.get("max_pods", 20))
        labels = _NamespaceLabels(self)
        sources = [self._endpoint(p, labels) for p in self._source_pods()[:limit]
                   if p.status and p.status.pod_ip]
        dests, notes = self._destinations(dst_ns, labels, limit)
        policies = self._policies({ns, dst_ns})
        blocked: list[str] = []
        blocking: list[str] = []
        paths = denied = 0
        for src in sources:
            for dst, port, proto in dests:
                paths += 1
                denials = denied_by(policies, src, dst, port, proto)
                denied += bool(denials)
                for d in denials:
                    blocked.append(f"{src.label} -> {_where(dst, port, proto)}: {d['reason']}")
                    blocking += [n for n in d["policies"] if n not in blocking]
        if labels.unreadable:
            notes.append(f"namespace labels unreadable ({labels.unreadable}): namespaceSelectors judged on "
                         f"the {NAME_LABEL} label only")
        return {"sources": [s.label for s in sources], "destinations": [_where(*d) for d in dests],
                "policies_count": len(policies), "paths": paths, "blocked_count": len(blocked),
                "blocked": blocked[:50], "blocking_policies": blocking,
                "allowed_count": paths - denied, "notes": notes}

    @classmethod
    def summarize(cls, r: Any) -> str:
        text = (f"{len(r['sources'])} source pod(s) x {len(r['destinations'])} destination(s), "
                f"{r['policies_count']} NetworkPolicy(ies): {r['blocked_count']} blocked")
        return text + (f" by {', '.join(r['blocking_policies'])}" if r["blocking_policies"] else "")

    def _source_pods(self) -> list[Any]:
        selector = self.args["selector"]
        deployments = self.call(self.kube.apps.list_namespaced_deployment, self.ns,
                                label_selector=selector).items
        if not deployments:
            return sorted(_live(self.pods_of(selector)), key=lambda p: p.metadata.name)
        pods: dict[str, Any] = {}
        for d in deployments:
            pods.update({p.metadata.name: p for p in _live(self.pods_of(selector_of(d)))})
        return [pods[n] for n in sorted(pods)]

    def _endpoint(self, pod: Any, labels: _NamespaceLabels) -> Endpoint:
        ns = pod.metadata.namespace
        return Endpoint(ip=pod.status.pod_ip, pod=pod.metadata.name, namespace=ns,
                        labels=dict(pod.metadata.labels or {}), ns_labels=labels.get(ns),
                        ports=_container_ports(pod))

    def _destinations(self, ns: str, labels: _NamespaceLabels,
                      limit: int) -> tuple[list[tuple[Endpoint, int, str]], list[str]]:
        name = str(self.args.get("service") or "")
        notes: list[str] = []
        if name:
            try:
                svc = self.call(self.kube.core.read_namespaced_service, name, ns, what=f"service {ns}/{name}")
            except ActionError as e:
                if "not found" not in str(e):
                    raise
                notes.append(f"no Service {ns}/{name}: judged against the addresses")
            else:
                pods = sorted(_live(self.call(self.kube.core.list_namespaced_pod, ns,
                                              label_selector=_selector_text(svc.spec.selector)).items)
                              if svc.spec.selector else [], key=lambda p: p.metadata.name)
                out = [(self._endpoint(p, labels), port, sp.protocol or "TCP")
                       for p in pods[:limit] if p.status and p.status.pod_ip
                       for sp in svc.spec.ports or [] if (port := _target_port(sp, p)) is not None]
                if out:
                    return out, notes
                notes.append(f"Service {ns}/{name} selects no pod with an IP: judged against the addresses")
        return self._address_destinations(notes), notes

    def _address_destinations(self, notes: list[str]) -> list[tuple[Endpoint, int, str]]:
        seen: set[tuple[str, int]] = set()
        out = []
        for host, port in _addresses(self.args.get("addresses")):
            ips = _resolve(host)
            if not ips:
                notes.append(f"{host} does not resolve from here: its path is not judged")
            for ip in ips:
                if (ip, port) not in seen:  # the bootstrap and advertised addresses often coincide
                    seen.add((ip, port))
                    out.append((Endpoint(ip=ip), port, "TCP"))
        return out

    def _policies(self, namespaces: set[str]) -> list[dict[str, Any]]:
        out = []
        for ns in sorted(namespaces):
            found = self.call(self.kube.networking.list_namespaced_network_policy, ns).items
            out += [self.kube.to_dict(p) for p in found]
        return out


class _NamespaceLabels:
    """Namespace labels for namespaceSelectors, read once per namespace; a namespace that cannot be
    read (reading namespaces is a cluster-wide permission an operations Role does not grant) has
    only its name label."""

    def __init__(self, action: K8sAction) -> None:
        self.action = action
        self.cache: dict[str, dict[str, str]] = {}
        self.unreadable = ""

    def get(self, ns: str) -> dict[str, str]:
        if ns not in self.cache:
            try:
                obj = self.action.call(self.action.kube.core.read_namespace, ns, what=f"namespace {ns}")
                self.cache[ns] = dict(obj.metadata.labels or {})
            except (ActionError, BackendError) as e:
                self.unreadable = str(e)[:200]
                self.cache[ns] = {}
        return self.cache[ns]


def _where(dst: Endpoint, port: int, protocol: str) -> str:
    return f"{dst.label} {dst.ip}:{port}/{protocol}" if dst.pod else f"{dst.ip}:{port}/{protocol}"


def _resolve(host: str, timeout: float = 2.0) -> list[str]:
    """The IPv4/IPv6 addresses of host (a literal is itself); [] when it does not resolve in time."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found: list[str] = []

    def lookup() -> None:
        with contextlib.suppress(OSError):
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            found.extend(sorted({str(i[4][0]) for i in infos}))

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    return list(found)
