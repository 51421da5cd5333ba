"""rb-004 (circuit breaker open) rehearsed through the real CLI.

The incident is real on every side: the "payments" downstream runs in a real kube-apiserver, its
pods OOMKilled, not ready and logging errors (through the fake kubelet); the "orders" service is the
breaker app, whose Resilience4j-like breaker follows the downstream's readiness as read from the
apiserver, and which reads its fallback / feature flags from a private Redis.  Every claim about
changes is checked from the servers' own view (resourceVersions, pod uids, Redis keys)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.breaker_app import BreakerApp, Prometheus
from tests.fixtures.core import Result, free_port
from tests.fixtures.k8s import K8sCluster, annotate_pods, deployment, eventually, wait_ready, wait_settled
from tests.timing import budget

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
        """The incident's parameters; a `-p KEY=VALUE` in `extra` replaces the incident's own
        (each parameter may be given once)."""
        params = {"service": "orders", "actuator_url": f"{self.app.url}/actuator", "breaker": "payments",
                  "deployment": "orders", "namespace": self.ns, "downstream_deployment": "payments",
                  "fallback_flag": FALLBACK, "feature_flag": FEATURE}
        rest: list[str] = []
        args = list(extra)
        while args:
            a = args.pop(0)
            if a == "-p" and args:
                key, _, value = args.pop(0).partition("=")
                params[key] = value
            else:
                rest.append(a)
        flags = [x for k, v in params.items() for x in ("-p", f"{k}={v}")]
        return ("run", "rb-004", "-o", "json", *flags, *rest)

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


# ==== defect 5: options that act without their inputs ================================================

@pytest.mark.parametrize(("option", "flag"), [("disable-feature", "feature_flag"),
                                              ("fallback-mode", "fallback_flag")])
def test_a_flag_option_without_its_flag_is_exit_2_before_any_change(
        opsctl: Callable[..., Result], rds: Any, redis_env: dict[str, str], option: str, flag: str) -> None:
    """`--yes --option disable-feature` without -p feature_flag wrote a Redis key literally named
    "UNSET: pass -p feature_flag=KEY" and failed only at verify.  Now: exit 2 before anything
    runs (no diagnosis against the cluster, no key written)."""
    result = opsctl("run", "rb-004", "--yes", "--option", option, "-p", "service=orders",
                    "-p", f"actuator_url=http://127.0.0.1:{free_port()}/actuator",
                    "-p", "downstream_deployment=payments", env=redis_env)
    assert result.code == 2, result.output
    assert f"option {option!r} needs {flag} (-p {flag}=...)" in result.output
    assert rds.client().dbsize() == 0
    assert not list(rds.client().scan_iter("UNSET*"))


# ==== fault matrix (issue 9) ==========================================================================
# Every cell is rehearsed end to end through the CLI against the real servers (the kube-apiserver,
# Redis, the breaker app's HTTP actuator, a real socket that plays the fault), or says why it cannot
# apply.

FAULTS = ("dead", "hung", "slow", "denied_optional", "denied_required", "ordinary_role", "scope",
          "converges_slowly", "does_not_work", "interrupted_resume")
MATRIX: dict[str, tuple[str, str]] = {
    "dead": ("test", "test_matrix_dead_actuator_exits_4_before_any_change"),
    "hung": ("test", "test_matrix_hung_actuator_costs_one_deadline_and_exits_4"),
    "slow": ("test", "test_matrix_slow_actuator_answering_late_is_diagnosed"),
    "denied_optional": ("test", "test_matrix_prometheus_forbidden_is_a_warning_and_the_run_goes_on"),
    "denied_required": ("test", "test_matrix_actuator_forbidden_exits_4_before_any_change"),
    "ordinary_role": ("test", "test_matrix_fallback_mode_as_an_ordinary_redis_user"),
    "scope": ("test", "test_matrix_restart_touches_only_the_downstream_in_the_given_namespace"),
    "converges_slowly": ("test", "test_matrix_fallback_picked_up_late_is_verified_within_the_window"),
    "does_not_work": ("test", "test_matrix_fallback_the_service_ignores_fails_verify_after_the_window"),
    "interrupted_resume": ("test",
                           "test_matrix_interrupted_before_verify_resumes_without_redoing_the_change"),
}
# Not covered here, and why: the ordinary role is rehearsed on the Redis side (the flags); the
# Kubernetes side runs with the apiserver's admin credentials in this suite (RBAC for rollout
# restart is the k8s actions' matrix).  The flag changes are single compare-and-set transactions, so
# the interruption cell cuts the run between the change and its verification.


def test_matrix_every_cell_is_tested_or_explained() -> None:
    assert set(MATRIX) == set(FAULTS)
    for cell, (kind, what) in MATRIX.items():
        assert kind in ("test", "n/a"), cell
        if kind == "test":
            assert callable(globals().get(what)), f"{cell}: no test named {what}"
        else:
            assert len(what) > 20, f"{cell}: say why it cannot apply"


def test_matrix_dead_actuator_exits_4_before_any_change(opsctl: Callable[..., Result],
                                                        incident: Incident) -> None:
    before = incident.snapshot()
    dead = f"http://127.0.0.1:{free_port()}/actuator"
    result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode", "-p", f"actuator_url={dead}"),
                    env=incident.env)
    assert result.code == 4, result.output
    assert "refused" in result.output
    assert incident.snapshot() == before and incident.redis.get(FALLBACK) is None


def test_matrix_hung_actuator_costs_one_deadline_and_exits_4(opsctl: Callable[..., Result],
                                                             incident: Incident, silent_server: Any) -> None:
    before = incident.snapshot()
    hung = f"http://127.0.0.1:{silent_server.port}/actuator"
    t0 = time.monotonic()
    result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode", "-p", f"actuator_url={hung}"),
                    env=incident.env)
    took = time.monotonic() - t0
    assert result.code == 4, result.output
    out = report(result)
    assert out["status"] == "backend_error" and "timed out" in out["message"]
    assert took < budget(60), took  # one HTTP timeout (5 s) per probe, run concurrently; not abandoned steps
    assert incident.snapshot() == before and incident.redis.get(FALLBACK) is None


def test_matrix_slow_actuator_answering_late_is_diagnosed(opsctl: Callable[..., Result],
                                                          incident: Incident) -> None:
    incident.app.response_delay = 3.5  # of the 5 s HTTP timeout
    result = opsctl(*incident.run_args("--dry-run"), env=incident.env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "breakers")["result"]["state"] == "OPEN"
    assert step(out, "health")["result"]["json"]["status"] == "DOWN"


class _Forbidden:
    """An HTTP server that answers 403 to everything (a Prometheus behind an auth proxy)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(403)
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"forbidden")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_matrix_prometheus_forbidden_is_a_warning_and_the_run_goes_on(opsctl: Callable[..., Result],
                                                                     incident: Incident) -> None:
    forbidden = _Forbidden()
    try:
        result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode",
                                           "-p", "prometheus_query=max(circuit_breaker_state)"),
                        env={**incident.env, "PROMETHEUS_URL": forbidden.url})
    finally:
        forbidden.close()
    assert result.code == 0, result.output
    out = report(result)
    metric = step(out, "breaker_metric")
    assert metric["status"] == "failed" and "403" in metric["reason"]
    warning = [f["message"] for f in out["findings"] if f["step"] == "breaker_metric"]
    assert warning and "could not run (optional, the run goes on)" in warning[0]
    assert out["message"] == "verified" and incident.redis.get(FALLBACK) == "true"


def test_matrix_actuator_forbidden_exits_4_before_any_change(opsctl: Callable[..., Result],
                                                             incident: Incident) -> None:
    before = incident.snapshot()
    incident.app.forbidden = True
    result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode"), env=incident.env)
    assert result.code == 4, result.output
    assert "HTTP 403: permission denied" in result.output
    assert incident.snapshot() == before and incident.redis.get(FALLBACK) is None


def test_matrix_fallback_mode_as_an_ordinary_redis_user(opsctl: Callable[..., Result], incident: Incident,
                                                        rds: Any) -> None:
    """The flags are written with the application's own kind of Redis user (no admin commands):
    GET/SET/TYPE/WATCH/MULTI are all it takes."""
    rds.client().acl_setuser("flags", enabled=True, passwords=["+flags-pw-1"], keys=["flags:*"],
                             commands=["+@all", "-@admin", "-@dangerous"], reset=True)
    try:
        env = {**incident.env, "REDIS_URL": f"redis://flags:flags-pw-1@127.0.0.1:{rds.port}/0"}
        result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode"), env=env)
    finally:
        rds.client().acl_deluser("flags")
    assert result.code == 0, result.output
    assert report(result)["message"] == "verified" and incident.redis.get(FALLBACK) == "true"
    assert "flags-pw-1" not in result.output


def test_matrix_restart_touches_only_the_downstream_in_the_given_namespace(
        opsctl: Callable[..., Result], incident: Incident, k8s_cluster: K8sCluster) -> None:
    """A deployment of the same name in another namespace is outside the scope: never planned,
    never restarted."""
    import uuid

    other = f"other-{uuid.uuid4().hex[:6]}"
    incident.core.create_namespace({"metadata": {"name": other}})
    try:
        incident.apps.create_namespaced_deployment(other, deployment("payments", 1))
        wait_ready(incident.apps, other, "payments")
        other_pods = {p.metadata.uid for p in incident.core.list_namespaced_pod(other).items}
        other_gen = incident.apps.read_namespaced_deployment("payments", other).metadata.generation
        result = opsctl(*incident.run_args("--yes", "--option", "restart-downstream"), env=incident.env)
        assert result.code == 0, result.output
        planned = [c["target"] for c in step(report(result), "restart_downstream")["plan"]["changes"]]
        assert planned == [f"deployment {incident.ns}/payments"]
        assert incident.apps.read_namespaced_deployment("payments", other).metadata.generation == other_gen
        assert {p.metadata.uid for p in incident.core.list_namespaced_pod(other).items} == other_pods
    finally:
        incident.core.delete_namespace(other)


def test_matrix_fallback_picked_up_late_is_verified_within_the_window(opsctl: Callable[..., Result],
                                                                      incident: Incident) -> None:
    """The service re-reads its flags every 15 s: health stays DOWN for a while after the flag is
    set.  Verify waits for it (convergence window) instead of failing a fix that worked."""
    incident.app.flag_refresh = 15.0
    result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode"), env=incident.env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert step(out, "health_up")["attempts"] >= 2  # it was still DOWN at the first look


def test_matrix_fallback_the_service_ignores_fails_verify_after_the_window(
        opsctl: Callable[..., Result], incident: Incident) -> None:
    """The service does not read the key the operator gave (a typo in -p fallback_flag): the flag
    is set, health stays DOWN, and verify fails after the window (exit 1), never "verified"."""
    wrong = "flags:orders:payments-fallbak"
    t0 = time.monotonic()
    result = opsctl(*incident.run_args("--yes", "--option", "fallback-mode", "-p", f"fallback_flag={wrong}",
                                       "-p", "verify_window=4s"), env=incident.env)
    assert result.code == 1, result.output
    out = report(result)
    assert out["status"] == "verify_failed"
    assert out["message"].startswith("verification failed: health is DOWN (still so after")
    assert step(out, "health_up")["attempts"] >= 2
    assert incident.redis.get(wrong) == "true" and incident.redis.get(FALLBACK) is None
    assert time.monotonic() - t0 < budget(120)


def test_matrix_interrupted_before_verify_resumes_without_redoing_the_change(
        opsctl: Callable[..., Result], opsctl_env: dict[str, str], incident: Incident) -> None:
    import signal
    import subprocess
    import sys

    from tests.engine.helpers import events, run_logs

    incident.app.flag_refresh = 3600.0  # the service does not see the flag yet: verify waits
    args = incident.run_args("--yes", "--option", "fallback-mode")
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", *args], env={**opsctl_env, **incident.env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            logs = run_logs(opsctl_env)
            if logs and any(e["event"] == "step_start" and e.get("step") == "health_up"
                            for e in events(logs[0])):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + \
            "".join(proc.communicate(timeout=60))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout + stderr
    first = report(Result(130, stdout, stderr))
    assert step(first, "fallback_on")["status"] == "applied"
    first_id = first["run_id"]
    incident.app.flag_refresh = 0.0  # the service picks the flag up now
    result = opsctl(*args, "--resume", first_id, env=incident.env)
    assert result.code == 0, result.output
    resumed = report(result)
    assert step(resumed, "fallback_on")["reused_from"] == first_id
    assert resumed["message"] == "verified" and incident.redis.get(FALLBACK) == "true"
    second = [p for p in run_logs(opsctl_env) if first_id not in p.name][0]
    assert not [e for e in events(second) if e["event"] == "apply_start"]  # the flag was set once
