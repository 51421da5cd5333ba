"""NetworkPolicy semantics (opsctl.actions.k8s.netpol) on the API's own JSON shapes: what the
rb-014 network-path check relies on beyond what the real-apiserver rehearsal covers (ipBlock
except, named ports, endPort, namespaceSelector, policyTypes defaulting, ingress vs egress)."""

from __future__ import annotations

from typing import Any

from opsctl.actions.k8s.netpol import Endpoint, denied_by, policy_types, selector_matches

CONSUMER = Endpoint(ip="10.244.1.5", pod="orders-1", namespace="shop", labels={"app": "orders"},
                    ns_labels={"team": "shop"})
BROKER = Endpoint(ip="10.244.2.7", pod="kafka-0", namespace="data", labels={"app": "kafka"},
                  ns_labels={"team": "data"}, ports=[{"name": "client", "containerPort": 9092,
                                                      "protocol": "TCP"}])
OUTSIDE = Endpoint(ip="192.0.2.10")


def policy(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def names(denials: list[dict[str, Any]]) -> list[str]:
    return [n for d in denials for n in d["policies"]]


def test_no_policy_allows_everything() -> None:
    assert denied_by([], CONSUMER, BROKER, 9092) == []


def test_default_deny_egress_names_the_policy_and_the_direction() -> None:
    deny = policy("deny-all-egress", "shop", {"podSelector": {}, "policyTypes": ["Egress"]})
    out = denied_by([deny], CONSUMER, BROKER, 9092)
    assert names(out) == ["shop/deny-all-egress"] and out[0]["direction"] == "Egress"
    assert "shop/orders-1" in out[0]["reason"] and "9092/TCP" in out[0]["reason"]


def test_an_allowing_rule_in_another_policy_opens_the_path() -> None:
    deny = policy("deny", "shop", {"podSelector": {}, "policyTypes": ["Egress"]})
    allow = policy("to-kafka", "shop", {"podSelector": {"matchLabels": {"app": "orders"}}, "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"team": "data"}},
                 "podSelector": {"matchLabels": {"app": "kafka"}}}], "ports": [{"port": "client"}]}]})
    assert policy_types(allow) == {"Ingress", "Egress"}  # egress rules: Egress too, by default
    assert denied_by([deny, allow], CONSUMER, BROKER, 9092) == []
    assert names(denied_by([deny, allow], CONSUMER, BROKER, 9093)) == ["shop/deny", "shop/to-kafka"]


def test_pod_selector_alone_means_the_policys_own_namespace() -> None:
    allow = policy("same-ns", "shop", {"podSelector": {}, "policyTypes": ["Egress"],
                                       "egress": [{"to": [{"podSelector": {}}]}]})
    assert names(denied_by([allow], CONSUMER, BROKER, 9092)) == ["shop/same-ns"]  # kafka is in data


def test_broker_ingress_from_other_pods_only() -> None:
    ingress = policy("only-billing", "data", {"podSelector": {"matchLabels": {"app": "kafka"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}]},
                   "podSelector": {"matchLabels": {"app": "billing"}}}]}]})
    out = denied_by([ingress], CONSUMER, BROKER, 9092)
    assert names(out) == ["data/only-billing"] and out[0]["direction"] == "Ingress"
    billing = Endpoint(ip="10.244.1.9", pod="billing-1", namespace="shop", labels={"app": "billing"})
    assert denied_by([ingress], billing, BROKER, 9092) == []


def test_ip_block_except_and_port_ranges_for_a_broker_outside_the_cluster() -> None:
    egress = policy("egress-private", "shop", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.8/29"]}}],
         "ports": [{"port": 9000, "endPort": 9100}]}]})
    assert names(denied_by([egress], CONSUMER, OUTSIDE, 9092)) == ["shop/egress-private"]  # in except
    other = Endpoint(ip="192.0.2.20")
    assert denied_by([egress], CONSUMER, other, 9092) == []
    assert names(denied_by([egress], CONSUMER, other, 9200)) == ["shop/egress-private"]  # past endPort
    # a named port never matches an address outside the cluster (it has no container ports)
    named = policy("named", "shop", {"podSelector": {}, "policyTypes": ["Egress"],
                                     "egress": [{"ports": [{"port": "client"}]}]})
    assert names(denied_by([named], CONSUMER, other, 9092)) == ["shop/named"]


def test_selectors_and_protocols() -> None:
    assert selector_matches({}, {"a": "b"}) and selector_matches(None, {})
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "b"})
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]},
                            {"a": "b"})
    udp_only = policy("udp", "shop", {"podSelector": {}, "policyTypes": ["Egress"],
                                      "egress": [{"ports": [{"protocol": "UDP", "port": 9092}]}]})
    assert names(denied_by([udp_only], CONSUMER, BROKER, 9092)) == ["shop/udp"]
    assert denied_by([udp_only], CONSUMER, BROKER, 9092, "UDP") == []
    # a policy of another namespace never isolates the pod
    elsewhere = policy("deny", "other", {"podSelector": {}, "policyTypes": ["Egress", "Ingress"]})
    assert denied_by([elsewhere], CONSUMER, BROKER, 9092) == []
