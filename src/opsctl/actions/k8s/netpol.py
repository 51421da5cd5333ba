"""NetworkPolicy (networking.k8s.io/v1) semantics on plain objects, as an enforcing CNI applies them.

Pure functions over the API's JSON (camelCase, as ``Kube.to_dict`` gives it): which policies
isolate a pod for Ingress / Egress, and whether one connection (a source pod to a destination pod,
or to an IP outside the cluster, on a port and protocol) is allowed by them.  A connection is
allowed when the source's egress allows it (no policy isolates the source for Egress, or one rule
of the isolating policies matches) and, for a destination pod, the destination's ingress allows it.

Rules followed (the Kubernetes documentation's): ``policyTypes`` defaults to Ingress, plus Egress
when the policy has egress rules; an empty ``to`` / ``from`` matches every peer, empty ``ports``
every port; a peer is a ``podSelector`` (pods of the policy's namespace), a ``namespaceSelector``
(every pod of the matching namespaces), both (the matching pods of the matching namespaces), or an
``ipBlock`` (CIDR minus ``except``); a named port is resolved against the destination pod's
container ports; ``endPort`` makes a range.  ipBlocks are matched against pod IPs as well (what
Calico and most CNIs do; Cilium matches pods by identity only, so a path allowed only through an
ipBlock may still be dropped there).  Namespaces carry the ``kubernetes.io/metadata.name`` label
(set by the API server since 1.21).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass
class Endpoint:
    """One side of a connection: a pod (namespace, labels, container ports) or an address outside
    the cluster (``pod`` empty)."""

    ip: str
    pod: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ns_labels: dict[str, str] = field(default_factory=dict)
    ports: list[dict[str, Any]] = field(default_factory=list)  # containerPorts: name, containerPort, protocol

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.pod}" if self.pod else self.ip


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions); ``{}`` matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        present = key in labels
        if (op == "In" and not (present and labels[key] in values)) \
                or (op == "NotIn" and present and labels[key] in values) \
                or (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def policy_types(policy: dict[str, Any]) -> set[str]:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def isolating(policies: list[dict[str, Any]], pod: Endpoint, direction: str) -> list[dict[str, Any]]:
    """The policies of the pod's namespace that select it for ``direction`` (Ingress / Egress)."""
    return [p for p in policies if (p.get("metadata") or {}).get("namespace") == pod.namespace
            and direction in policy_types(p)
            and selector_matches((p.get("spec") or {}).get("podSelector"), pod.labels)]


def _in_block(ip: str, block: dict[str, Any]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        if addr not in ipaddress.ip_network(block.get("cidr", ""), strict=False):
            return False
        return not any(addr in ipaddress.ip_network(x, strict=False) for x in block.get("except") or [])
    except ValueError:
        return False


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer and peer["ipBlock"] is not None:
        return _in_block(other.ip, peer["ipBlock"])
    if not other.pod:  # pod and namespace selectors select pods, never an address outside the cluster
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None:
        ns_ok = other.namespace == policy_ns
    else:
        ns_ok = selector_matches(ns_sel, {**other.ns_labels, NAME_LABEL: other.namespace})
    return ns_ok and (pod_sel is None or selector_matches(pod_sel, other.labels))


def _port_matches(rule_port: dict[str, Any], port: int, protocol: str, dst: Endpoint) -> bool:
    if (rule_port.get("protocol") or "TCP") != protocol:
        return False
    want = rule_port.get("port")
    if want is None:
        return True
    if isinstance(want, str) and not want.isdigit():  # a named port: the destination pod's
        return any(p.get("name") == want and int(p.get("containerPort", 0)) == port
                   and (p.get("protocol") or "TCP") == protocol for p in dst.ports)
    low = int(want)
    return low <= port <= int(rule_port.get("endPort") or low)


def _rule_allows(rule: dict[str, Any], peers_key: str, policy_ns: str, peer: Endpoint, port: int,
                 protocol: str, dst: Endpoint) -> bool:
    peers = rule.get(peers_key) or []
    ports = rule.get("ports") or []
    return (not peers or any(_peer_matches(p, policy_ns, peer) for p in peers)) and \
        (not ports or any(_port_matches(p, port, protocol, dst) for p in ports))


def denied_by(policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int,
              protocol: str = "TCP") -> list[dict[str, Any]]:
    """Why src → dst:port is dropped: one entry per direction that denies it (``direction``,
    ``pod``, the ``policies`` that isolate the pod in that direction, none of whose rules allows the
    connection, and a ``reason`` line); ``[]`` when the connection is allowed."""
    denials = []
    sides = [("Egress", "egress", "to", src, dst)]
    if dst.pod:  # an address outside the cluster has no ingress policy of the cluster's
        sides.append(("Ingress", "ingress", "from", dst, src))
    for direction, rules_key, peers_key, pod, peer in sides:
        if not pod.pod:
            continue
        isolating_policies = isolating(policies, pod, direction)
        if not isolating_policies or any(
                _rule_allows(r, peers_key, pod.namespace, peer, port, protocol, dst)
                for p in isolating_policies for r in (p.get("spec") or {}).get(rules_key) or []):
            continue
        names = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in isolating_policies]
        denials.append({"direction": direction, "pod": pod.label, "policies": names,
                        "reason": f"{rules_key} of {pod.label} denied by NetworkPolicy {', '.join(names)} "
                                  f"(selects it for {direction}, no rule allows {peer.label} on "
                                  f"{port}/{protocol})"})
    return denials
