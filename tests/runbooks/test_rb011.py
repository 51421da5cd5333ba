"""rb-011 (ECS service recovery) rehearsed through the real CLI against moto in server mode.

moto never starts ECS tasks: a new service reports 0 running (our fault), and only an update of
desiredCount makes running == desired.  So `scale` is rehearsed end to end with verify; the other two
options are rehearsed up to the change they make (``--phase mitigate``), see docs/backends/aws.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.aws import Moto, make_ecs_service
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.aws
RUNBOOK = str(REPO / "runbooks" / "rb-011-ecs-service-recovery.yaml")
P = ["-p", "cluster=plooral-cluster", "-p", "service=plooral-api"]


def step(result: Result, step_id: str) -> dict[str, Any]:
    return next(s for s in json.loads(result.stdout)["steps"] if s["id"] == step_id)


def service(moto: Moto) -> dict[str, Any]:
    return moto.client("ecs").describe_services(cluster="plooral-cluster",
                                                services=["plooral-api"])["services"][0]


def test_dry_run_plans_every_option_and_changes_nothing(opsctl: Callable[..., Result],
                                                        moto: Moto) -> None:
    arns = make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    before = service(moto)
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, "-p", "desired=5", env=moto.env)
    assert result.code == 0, result.output
    diag = step(result, "service")
    assert (diag["result"]["desired"], diag["result"]["running"]) == (3, 0)
    assert any("0/3 tasks running" in f["message"] for f in diag["findings"])
    assert step(result, "scale")["plan"]["changes"][0]["after"] == 5
    assert step(result, "rollback")["plan"]["changes"][0]["after"] == "plooral-api:1"
    assert step(result, "restart")["plan"]["changes"][0]["operation"] == "force-new-deployment"
    after = service(moto)
    assert (after["desiredCount"], after["taskDefinition"]) == (3, arns[1])
    assert after["deployments"][0]["id"] == before["deployments"][0]["id"]


def test_scale_with_yes_and_verify_passes(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "scale", "-p", "desired=4",
                    env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "steady")["status"] == "ok"
    s = service(moto)
    assert (s["desiredCount"], s["runningCount"]) == (4, 4)


def test_scale_above_max_desired_is_refused(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, "--yes", *P, "--option", "scale", "-p", "desired=50", env=moto.env)
    assert result.code == 1, result.output
    assert "desired=50 is above max_desired=20" in result.output
    assert service(moto)["desiredCount"] == 3


def test_rollback_points_the_service_at_the_previous_revision(opsctl: Callable[..., Result],
                                                              moto: Moto) -> None:
    arns = make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "--phase", "mitigate", *P,
                    "--option", "rollback-task-definition", env=moto.env)
    assert result.code == 0, result.output
    assert service(moto)["taskDefinition"] == arns[0]


def test_force_new_deployment_starts_a_new_deployment(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    before = service(moto)["deployments"][0]["id"]
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "--phase", "mitigate", *P,
                    "--option", "force-new-deployment", env=moto.env)
    assert result.code == 0, result.output
    assert service(moto)["deployments"][0]["id"] != before


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=3)
    result = opsctl("run", RUNBOOK, *P, "--option", "scale", "-p", "desired=4", env=moto.env)
    assert result.code == 3, result.output
    assert service(moto)["desiredCount"] == 3


def test_missing_service_is_named_not_found(opsctl: Callable[..., Result], moto: Moto) -> None:
    make_ecs_service(moto, "qa-cluster", "real-svc")
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "cluster=qa-cluster", "-p", "service=ghost-svc",
                    env=moto.env)
    assert result.code == 1
    assert "ECS service qa-cluster/ghost-svc not found (MISSING)" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_rollback_without_an_older_revision_changes_nothing(opsctl: Callable[..., Result],
                                                            moto: Moto) -> None:
    ecs = moto.client("ecs")
    ecs.create_cluster(clusterName="solo-cluster")
    ecs.register_task_definition(family="solo", containerDefinitions=[
        {"name": "api", "image": "plooral/api:1.0", "memory": 512}])
    ecs.create_service(cluster="solo-cluster", serviceName="solo", taskDefinition="solo:1", desiredCount=2)
    result = opsctl("run", RUNBOOK, "--yes", "--option", "rollback-task-definition",
                    "-p", "cluster=solo-cluster", "-p", "service=solo", env=moto.env)
    assert result.code == 1
    assert "no ACTIVE revision of solo older than 1" in " ".join(result.output.split())
    svc = ecs.describe_services(cluster="solo-cluster", services=["solo"])["services"][0]
    assert svc["taskDefinition"].endswith(":1") and svc["desiredCount"] == 2


def test_service_scaled_to_zero_is_a_critical_finding(opsctl: Callable[..., Result], moto: Moto) -> None:
    # 0 running of 0 desired used to diagnose as healthy: an outage with no finding at all
    make_ecs_service(moto, "plooral-cluster", "plooral-api", desired=0)
    dry = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", *P, env=moto.env)
    assert dry.code == 0, dry.output
    diag = step(dry, "service")
    assert diag["result"]["healthy"] is False
    assert any(f["severity"] == "critical" and "wants 0 tasks" in f["message"] for f in diag["findings"])
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", *P, "--option", "scale", "-p", "desired=2",
                    env=moto.env)
    assert result.code == 0, result.output
    assert (service(moto)["desiredCount"], service(moto)["runningCount"]) == (2, 2)
