"""rb-004 (circuit breaker open) rehearsed through the real CLI.

The incident is real on every side: the "payments" downstream runs in a real kube-apiserver, its
pods OOMKilled, not ready and logging errors (through the fake kubelet); the "orders" service is the
breaker app, whose Resilience4j-like breaker follows the downstream's readiness as read from the
apiserver, and which reads its fallback / feature flags from a private Redis.  Every claim about
changes is checked from the servers' own view (resourceVersions, pod uids, Redis keys)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.breaker_app import BreakerApp, Prometheus
from tests.fixtures.core import Result, free_port
from tests.fixtures.k8s import K8sCluster, annotate_pods, deployment, eventually, wait_ready, wait_settled

pytestmark = [pytest.mark.k8s, pytest.mark.redis]
FALLBACK, FEATURE = "flags:orders:payments-fallback", "flags:orders:new-checkout"
FAULT = {"fake-kubelet/ready": "false", "fake-kubelet/restarts": "3",
         "fake-kubelet/last-termination": "OOMKilled",
         "fake-kubelet/logs": "INFO start\nERROR PaymentGatewayTimeout: read timed out\n"
                              "WARN pool exhausted\n"}


@dataclass
class Incident:
    ns: str
    app: BreakerApp
    core: Any
    apps: Any
    env: dict[str, str]
    redis: Any

    def run_args(self, *extra: str) -> tuple[str, ...]:
        return ("run", "rb-004", "-o", "json", "-p", "service=orders",
                "-p", f"actuator_url={self.app.url}/actuator", "-p", "breaker=payments",
                "-p", "deployment=orders", "-p", f"namespace={self.ns}",
                "-p", "downstream_deployment=payments", "-p", f"fallback_flag={FALLBACK}",
                "-p", f"feature_flag={FEATURE}", *extra)

    def snapshot(self) -> dict[str, Any]:
        """What must not change in a dry-run: workload versions, replica counts, pods, Redis keys."""
        wait_settled(self.apps, self.ns)
        items = self.apps.list_namespaced_deployment(self.ns).items
        deps = {d.metadata.name: (d.metadata.resource_version, d.spec.replicas) for d in items}
        # generation moves with spec changes only (status updates move the resourceVersion too)
        specs = {d.metadata.name: (d.metadata.generation, d.spec.replicas) for d in items}
        pods = {p.metadata.uid for p in self.core.list_namespaced_pod(self.ns).items}
        return {"deployments": deps, "specs": specs, "pods": pods, "redis_keys": self.redis.dbsize()}


@pytest.fixture
def incident(k8s_cluster: K8sCluster, k8s_ns: str, rds: Any, redis_env: dict[str, str]) -> Iterator[Incident]:
    core, apps, _ = k8s_cluster.api()
    for name in ("orders", "payments"):
        apps.create_namespaced_deployment(k8s_ns, deployment(name, 2, change_cause=f"{name} v1"))
    for name in ("orders", "payments"):
        wait_ready(apps, k8s_ns, name)
    # the suspect change: payments v2 rolled out a moment ago, and its pods are failing
    apps.patch_namespaced_deployment("payments", k8s_ns, {
        "metadata": {"annotations": {"kubernetes.io/change-cause": "payments v2: new gateway client"}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example/payments:2.0"}]}}}})
    wait_ready(apps, k8s_ns, "payments")
    annotate_pods(core, k8s_ns, "app=payments", FAULT)

    def downstream_ok() -> bool:
        d = apps.read_namespaced_deployment("payments", k8s_ns)
        return (d.status.ready_replicas or 0) == d.spec.replicas

    app = BreakerApp(redis_url=rds.url, fallback_flag=FALLBACK, feature_flag=FEATURE).start()
    app.downstream_ok = downstream_ok
    assert eventually(lambda: app.state == "OPEN"), "the breaker never opened"
    # every payments pod unready, and the controller done writing status: from here on a
    # resourceVersion only moves if somebody (opsctl) changes something
    assert eventually(lambda: not apps.read_namespaced_deployment("payments", k8s_ns).status.ready_replicas)
    redis = rds.client()
    inc = Incident(k8s_ns, app, core, apps, {**redis_env, "KUBECONFIG": k8s_cluster.kubeconfig}, redis)
    yield inc
    redis.close()
    app.stop()


def report(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def step(out: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in out["steps"] if s["id"] == step_id)


def test_dry_run_diagnoses_the_downstream_and_changes_nothing(
        opsctl: Callable[..., Result], incident: Incident, prometheus: Prometheus) -> None:
    prometheus.scrape(incident.app.url)
    query = 'max(circuit_breaker_state{service="orders"})'
    assert eventually(lambda: prometheus.query(query) and prometheus.query(query)[0]["value"][1] == "1")
    before = incident.snapshot()
    result = opsctl(*incident.run_args("--dry-run", "-p", f"prometheus_query={query}"),
                    env={**incident.env, "PROMETHEUS_URL": prometheus.url})
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "breakers")["result"]["state"] == "OPEN"
    assert step(out, "breaker_metric")["result"]["max"] == 1.0  # the seeds' alert metric, from Prometheus
    assert step(out, "health")["result"]["json"]["status"] == "DOWN"
    pods = step(out, "downstream_pods")["result"]
    assert pods["oom_killed_count"] == 2 and pods["not_ready_count"] == 2 and pods["restarts_total"] == 6
    assert step(out, "downstream_errors")["result"]["matched_count"] == 4
    findings = {(f["step"], f["severity"]) for f in out["findings"] if f["phase"] == "diagnose"}
    assert {("breakers", "critical"), ("health", "critical"), ("downstream", "critical"),
            ("breaker_metric", "warning"), ("downstream_pods", "critical"),
            ("downstream_errors", "warning")} <= findings
    restart = step(out, "restart_downstream")
    assert restart["status"] == "planned"
    assert restart["plan"]["changes"][0]["target"] == f"deployment {incident.ns}/payments"
    assert step(out, "fallback_on")["plan"]["changes"][0]["after"] == "true"
    undo = step(out, "rollback_downstream")["plan"]["changes"][0]
    assert "example/payments:2.0" in undo["before"] and "example/app:1.0" in undo["after"]
    changes = step(out, "downstream_changes")
    assert changes["result"]["recent_count"] == 2
    assert any("payments v2" in f["message"] for f in out["findings"] if f["step"] == "downstream_changes")
    assert incident.snapshot() == before  # same resourceVersions, replicas, pods; 0 Redis keys
    assert before["redis_keys"] == 0 and incident.app.state == "OPEN"


def test_yes_restart_downstream_closes_the_breaker(opsctl: Callable[..., Result], incident: Incident) -> None:
    old_pods = {p.metadata.uid for p in incident.core.list_namespaced_pod(incident.ns,
                                                                          label_selector="app=payments").items}
    result = opsctl(*incident.run_args("--yes", "--option", "restart-downstream"), env=incident.env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert step(out, "restart_downstream")["result"]["restarted"] == ["payments"]
    assert step(out, "breaker_closed")["result"]["state"] == "CLOSED"
    assert step(out, "health_up")["result"]["json"]["status"] == "UP"
    live = {p.metadata.uid for p in incident.core.list_namespaced_pod(incident.ns,
                                                                      label_selector="app=payments").items
            if not p.metadata.deletion_timestamp}
    assert live and live.isdisjoint(old_pods)
    assert incident.app.transitions[-2:] == ["HALF_OPEN", "CLOSED"]
    assert incident.redis.dbsize() == 0  # the flags were not touched


def test_yes_fallback_mode_sets_the_flag_and_health_recovers(opsctl: Callable[..., Result],
                                                             incident: Incident) -> None:
    before = incident.snapshot()
    result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode"), env=incident.env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert incident.redis.get(FALLBACK) == "true"
    assert step(out, "health_up")["result"]["json"]["components"]["fallback"]["details"]["active"] is True
    assert step(out, "breaker_closed")["status"] == "skipped"
    assert incident.app.state == "OPEN"  # fallback serves users; the downstream is still broken
    assert incident.snapshot()["deployments"] == before["deployments"]  # nothing done in the cluster


def test_yes_disable_feature(opsctl: Callable[..., Result], incident: Incident) -> None:
    result = opsctl(*incident.run_args("--yes", "--option", "disable-feature"), env=incident.env)
    assert result.code == 0, result.output
    assert report(result)["message"] == "verified"
    assert incident.redis.get(FEATURE) == "false" and incident.redis.get(FALLBACK) is None


def test_wait_recovery_waits_for_half_open_then_closed(opsctl: Callable[..., Result],
                                                       incident: Incident) -> None:
    def recover() -> None:  # the downstream comes back by itself once the run waits for it
        # read 1 is the diagnosis, read 2 the wait step's first look (still OPEN)
        eventually(lambda: incident.app.breaker_reads >= 2, timeout=60)
        annotate_pods(incident.core, incident.ns, "app=payments", {"fake-kubelet/ready": "true"})

    before = incident.snapshot()
    threading.Thread(target=recover, daemon=True).start()
    result = opsctl(*incident.run_args("--yes", "--option", "wait-recovery"), env=incident.env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"].startswith("verified")  # nothing applied: wait-recovery only reads
    assert step(out, "wait_closed")["result"]["waited_s"] > 0  # it was still OPEN at the first look
    assert incident.app.transitions[-3:] == ["OPEN", "HALF_OPEN", "CLOSED"]
    after = incident.snapshot()
    assert after["specs"] == before["specs"] and after["pods"] == before["pods"] and after["redis_keys"] == 0


def test_yes_rollback_downstream_restores_the_previous_revision(opsctl: Callable[..., Result],
                                                               incident: Incident) -> None:
    result = opsctl(*incident.run_args("--yes", "--option", "rollback-downstream"), env=incident.env)
    assert result.code == 0, result.output
    assert report(result)["message"] == "verified"
    dep = incident.apps.read_namespaced_deployment("payments", incident.ns)
    assert dep.spec.template.spec.containers[0].image == "example/app:1.0"
    assert incident.app.state == "CLOSED"


def test_without_terminal_and_yes_refuses(opsctl: Callable[..., Result], incident: Incident) -> None:
    before = incident.snapshot()
    result = opsctl(*incident.run_args("--option", "restart-downstream"), env=incident.env)
    assert result.code == 3, result.output
    assert "--yes" in result.output
    assert incident.snapshot() == before


def test_declined_at_the_prompt_changes_nothing(opsctl_tty: Callable[..., Result],
                                                incident: Incident) -> None:
    before = incident.snapshot()
    args = [a for a in incident.run_args("--option", "restart-downstream") if a not in ("-o", "json")]
    result = opsctl_tty(*args, answer="n\n", env=incident.env)
    assert result.code == 3, result.output
    assert "restart_downstream" in result.output or "Rollout restart" in result.output
    assert incident.snapshot() == before and incident.app.state == "OPEN"


def test_unreachable_backends_exit_4(opsctl: Callable[..., Result], incident: Incident) -> None:
    dead = f"http://127.0.0.1:{free_port()}/actuator"
    result = opsctl(*incident.run_args("--dry-run", "-p", f"actuator_url={dead}"), env=incident.env)
    assert result.code == 4, result.output
    assert "refused" in result.output and "Traceback" not in result.output
    bad = {**incident.env, "KUBECONFIG": "/nonexistent/kubeconfig"}
    result = opsctl(*incident.run_args("--dry-run"), env=bad)
    assert result.code == 4, result.output
    assert "kubeconfig" in result.output and "Traceback" not in result.output


def test_prometheus_unreachable_does_not_block_the_runbook(opsctl: Callable[..., Result],
                                                           incident: Incident) -> None:
    """The Prometheus query is a second opinion on the actuator's state: Prometheus down ended the
    whole P0 runbook with exit 4 before any mitigation could be planned."""
    before = incident.snapshot()
    dead = f"http://127.0.0.1:{free_port()}"
    result = opsctl(*incident.run_args("--dry-run", "-p", "prometheus_query=max(circuit_breaker_state)"),
                    env={**incident.env, "PROMETHEUS_URL": dead})
    assert result.code == 0, result.output
    out = report(result)
    metric = step(out, "breaker_metric")
    assert metric["status"] == "failed" and "refused" in json.dumps(metric), metric
    assert step(out, "breakers")["result"]["state"] == "OPEN"
    assert step(out, "restart_downstream")["status"] == "planned"
    assert incident.snapshot() == before
