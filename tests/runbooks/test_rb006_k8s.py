"""rb-006 (database pool exhausted), Kubernetes options: raise-pool, restart-app, scale-app.

The application is a real deployment in a real kube-apiserver whose pods (fake kubelet) each hold
real PostgreSQL connections (tests/k8s/sim.py): the pods present at the incident leaked theirs (idle
in transaction), new pods do not.  So a restart or a pool change (which rolls the pods) really ends
the leak, as seen from pg_stat_activity, and scaling up adds healthy pods next to the leaking ones."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.core import Result
from tests.fixtures.k8s import K8sCluster, deployment, wait_ready, wait_settled
from tests.k8s.sim import PodSessions

pytestmark = [pytest.mark.k8s, pytest.mark.postgres]
PER_POD = 4  # 2 pods x 4 = 8 leaked sessions; a rolling update peaks at 3 pods (12 < max_connections 20)


@dataclass
class App:
    ns: str
    core: Any
    apps: Any
    pg: Any
    sessions: PodSessions
    env: dict[str, str]

    def run_args(self, *extra: str) -> tuple[str, ...]:
        return ("run", "rb-006", "-o", "json", "-p", "idle_in_transaction_seconds=1",
                "-p", "application_name=checkout-*", "-p", "deployment=checkout-api",
                "-p", f"namespace={self.ns}", *extra)

    def snapshot(self) -> dict[str, Any]:
        wait_settled(self.apps, self.ns)
        d = self.apps.read_namespaced_deployment("checkout-api", self.ns)
        return {"rv": d.metadata.resource_version, "replicas": d.spec.replicas,
                "env": [(e.name, e.value) for e in d.spec.template.spec.containers[0].env],
                "pods": {p.metadata.uid for p in self.core.list_namespaced_pod(self.ns).items},
                "leaked": self.leaked()}

    def leaked(self) -> int:
        return self.pg.count("application_name = 'checkout-api' AND state = 'idle in transaction'")


@pytest.fixture
def app(k8s_cluster: K8sCluster, k8s_ns: str, pg: Any, pg_env: dict[str, str]) -> Iterator[App]:
    core, apps, _ = k8s_cluster.api()
    apps.create_namespaced_deployment(k8s_ns, deployment("checkout-api", 2, env={"DB_POOL_SIZE": "4"}))
    wait_ready(apps, k8s_ns, "checkout-api")
    sessions = PodSessions(pg, core, k8s_ns, "app=checkout-api", per_pod=PER_POD,
                           application_name="checkout-api")
    try:
        sessions.wait_settled(2)
        sessions.leak_all()
        time.sleep(1.1)  # over idle_in_transaction_seconds=1
        inc = App(k8s_ns, core, apps, pg, sessions, {**pg_env, "KUBECONFIG": k8s_cluster.kubeconfig})
        assert inc.leaked() == 2 * PER_POD
        yield inc
    finally:
        sessions.close()


def report(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def step(out: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in out["steps"] if s["id"] == step_id)


def test_dry_run_plans_the_kubernetes_options_and_changes_nothing(opsctl: Callable[..., Result],
                                                                  app: App) -> None:
    before = app.snapshot()
    result = opsctl(*app.run_args("--dry-run", "-p", "new_pool_size=8", "-p", "app_replicas=3"), env=app.env)
    assert result.code == 0, result.output
    out = report(result)
    assert step(out, "app")["result"]["ready"] == 2
    pool = step(out, "raise_pool")["plan"]["changes"][0]
    assert (pool["before"], pool["after"]) == ("DB_POOL_SIZE=4", "DB_POOL_SIZE=8")
    assert step(out, "restart_app")["plan"]["changes"][0]["target"] == f"deployment {app.ns}/checkout-api"
    scale = step(out, "scale_app")["plan"]["changes"][0]
    assert (scale["before"], scale["after"]) == (2, 3)
    assert app.snapshot() == before  # resourceVersion, replicas, env, pods, leaked sessions


def test_yes_restart_app_ends_the_leak(opsctl: Callable[..., Result], app: App) -> None:
    before = app.snapshot()
    result = opsctl(*app.run_args("--yes", "--option", "restart-app"), env=app.env)
    assert result.code == 0, result.output
    out = report(result)
    assert out["message"] == "verified"
    assert step(out, "restart_app")["result"]["restarted"] == ["checkout-api"]
    after = app.snapshot()
    assert after["leaked"] == 0 and after["pods"].isdisjoint(before["pods"])
    assert app.pg.count("application_name = 'checkout-api'") == 2 * PER_POD  # the new pods' pools


def test_yes_raise_pool_patches_the_env_var(opsctl: Callable[..., Result], app: App) -> None:
    result = opsctl(*app.run_args("--yes", "--option", "raise-pool", "-p", "new_pool_size=8"), env=app.env)
    assert result.code == 0, result.output
    assert report(result)["message"] == "verified"
    assert ("DB_POOL_SIZE", "8") in app.snapshot()["env"] and app.leaked() == 0


def test_raise_pool_refuses_a_pool_over_the_limit(opsctl: Callable[..., Result], app: App) -> None:
    before = app.snapshot()
    # a dry-run reports the refusal as a critical finding, and exits 1 as the real run would ...
    result = opsctl(*app.run_args("--dry-run", "--option", "raise-pool", "-p", "new_pool_size=500"),
                    env=app.env)
    assert result.code == 1, result.output
    assert "would refuse: refusing DB_POOL_SIZE=500: above max_value" in result.output
    assert "max_pool_size 100" in result.output
    # new_pool_size is one of the option's inputs (`requires`): exit 2 before anything runs
    result = opsctl(*app.run_args("--dry-run", "--option", "raise-pool"), env=app.env)
    assert result.code == 2 and "option 'raise-pool' needs new_pool_size" in result.output, result.output
    # ... and a real run fails on it before changing anything
    result = opsctl(*app.run_args("--yes", "--option", "raise-pool", "-p", "new_pool_size=500"),
                    env=app.env)
    assert result.code == 1 and "above max_value" in result.output, result.output
    assert app.snapshot() == before


def test_yes_scale_app_adds_pods_but_does_not_fix_a_leak(opsctl: Callable[..., Result], app: App) -> None:
    result = opsctl(*app.run_args("--yes", "--option", "scale-app", "-p", "app_replicas=3"), env=app.env)
    assert step(report(result), "scale_app")["result"]["after"] == 3
    assert app.apps.read_namespaced_deployment("checkout-api", app.ns).spec.replicas == 3
    # the leaking pods are still there: verify says so, and the run fails
    assert result.code == 1 and app.leaked() == 2 * PER_POD
    out = report(result)
    assert "sessions_after" in out["message"]  # after its whole convergence window
    assert "8 offending sessions left" in [f["message"] for f in out["findings"]
                                           if f["step"] == "sessions_after" and f["severity"] == "critical"]


def test_without_terminal_and_yes_refuses(opsctl: Callable[..., Result], app: App) -> None:
    before = app.snapshot()
    result = opsctl(*app.run_args("--option", "restart-app"), env=app.env)
    assert result.code == 3, result.output
    assert app.snapshot() == before


def test_unreachable_kubernetes_exits_4(opsctl: Callable[..., Result], app: App) -> None:
    before = app.snapshot()
    bad = {**app.env, "KUBECONFIG": "/nonexistent/kubeconfig"}
    result = opsctl(*app.run_args("--dry-run", "--option", "restart-app"), env=bad)
    assert result.code == 4, result.output
    assert "kubeconfig /nonexistent/kubeconfig does not exist" in result.output
    assert "Traceback" not in result.output and app.snapshot() == before


def test_scale_app_on_a_deployment_scaled_to_zero_starts_one_pod(opsctl: Callable[..., Result],
                                                                 app: App) -> None:
    """Doubling 0 replicas planned 0 -> 0, which k8s.scale refused as 'refusing to scale to 0
    replicas (set allow_zero...)': misleading, nobody asked to stop anything."""
    app.apps.create_namespaced_deployment(app.ns, deployment("checkout-worker", 0))
    args = [a if a != "deployment=checkout-api" else "deployment=checkout-worker" for a in app.run_args()]
    result = opsctl(*args, "--dry-run", env=app.env)
    assert result.code == 0, result.output
    scale = step(report(result), "scale_app")
    assert scale["status"] == "planned", scale
    assert (scale["plan"]["changes"][0]["before"], scale["plan"]["changes"][0]["after"]) == (0, 1)
    assert app.apps.read_namespaced_deployment("checkout-worker", app.ns).spec.replicas == 0
    result = opsctl(*args, "--yes", "--option", "scale-app", env=app.env)
    assert step(report(result), "scale_app")["status"] == "applied", result.output
    assert "allow_zero" not in result.output
    assert app.apps.read_namespaced_deployment("checkout-worker", app.ns).spec.replicas == 1


def test_scale_app_chosen_without_a_deployment_is_bad_input(opsctl: Callable[..., Result], app: App) -> None:
    """restart-app and raise-pool said exit 2; scale-app was skipped and the run 'verified'."""
    before = app.snapshot()
    args = list(app.run_args())
    i = args.index("deployment=checkout-api")
    del args[i - 1:i + 1]
    result = opsctl(*args, "--yes", "--option", "scale-app", env=app.env)
    assert result.code == 2, result.output
    assert "option 'scale-app' needs deployment (-p deployment=...)" in result.output  # its `requires`
    assert app.snapshot() == before


def test_raise_pool_refuses_a_pool_that_does_not_fit_max_connections(opsctl: Callable[..., Result],
                                                                     app: App) -> None:
    """Defect 5: the option promises "pool size x replicas must fit max_connections" and planned
    20 x 2 against max_connections 20.  The plan now checks it and says why it refuses; a
    pool that fits (8 x 2 = 16 of 19 usable slots) is planned."""
    before = app.snapshot()
    dry = opsctl(*app.run_args("--dry-run", "--option", "raise-pool", "-p", "new_pool_size=20"), env=app.env)
    assert dry.code == 1, dry.output  # the rehearsal's verdict is the real run's
    refusal = [f["message"] for f in report(dry)["findings"] if f["step"] == "raise_pool"]
    assert refusal and "pool x replicas must fit max_connections: 2 replica(s) x 20 = 40 connections " \
                       "for 19 usable slots (max_connections 20 - 1 reserved - 0 held by applications " \
                       "other than checkout-*)" in refusal[0], refusal
    result = opsctl(*app.run_args("--yes", "--option", "raise-pool", "-p", "new_pool_size=20"), env=app.env)
    assert result.code == 1, result.output
    assert "refusing DB_POOL_SIZE=20: above max_value 9" in report(result)["message"]
    assert app.snapshot() == before  # nothing changed
    fits = opsctl(*app.run_args("--dry-run", "--option", "raise-pool", "-p", "new_pool_size=8"), env=app.env)
    assert step(report(fits), "raise_pool")["status"] == "planned", fits.output
