"""RDS, ECS and Lambda actions called directly against moto in server mode."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from opsctl.actions.aws.ecs import Rollback, Scale, Service
from opsctl.actions.aws.lambda_ import Concurrency, Function, RollbackAlias, Trigger
from opsctl.actions.aws.rds import Describe, Failover
from opsctl.actions.base import ActionContext
from opsctl.errors import ActionError, Cancelled
from tests.fixtures.aws import Moto, make_aurora, make_ecs_service, make_queue_with_dlq, make_worker
from tests.timing import budget

pytestmark = pytest.mark.aws


def test_failover_plan_then_apply_changes_the_writer(moto: Moto, aws_ctx: ActionContext) -> None:
    ids = make_aurora(moto, "db", members=3)
    action = Failover({"cluster": "db"}, aws_ctx)
    plan = action.plan()
    # the healthy reader opsctl names is asked for explicitly (Aurora's own pick could be a stopped one)
    assert (plan.data["writer"], plan.data["target"], plan.data["explicit"]) == (ids[0], ids[1], True)
    got = action.apply(plan)
    assert got["previous_writer"] == ids[0] and got["writer"] != ids[0]
    assert Describe({"cluster": "db"}, aws_ctx).run()["writer"] == got["writer"]


def test_failover_refuses_when_the_writer_moved_since_the_plan(moto: Moto, aws_ctx: ActionContext) -> None:
    ids = make_aurora(moto, "db", members=3)
    action = Failover({"cluster": "db", "target_instance": ids[1]}, aws_ctx)
    plan = action.plan()
    moto.client("rds").failover_db_cluster(DBClusterIdentifier="db", TargetDBInstanceIdentifier=ids[2])
    with pytest.raises(ActionError, match="changed since the plan"):
        action.apply(plan)
    assert Describe({"cluster": "db"}, aws_ctx).run()["writer"] == ids[2]


def test_failover_of_a_single_instance_cluster_is_refused(moto: Moto, aws_ctx: ActionContext) -> None:
    make_aurora(moto, "solo", members=1)
    with pytest.raises(ActionError, match="no reader to fail over to"):
        Failover({"cluster": "solo"}, aws_ctx).plan()


def test_failover_of_a_single_az_instance_is_refused(moto: Moto, aws_ctx: ActionContext) -> None:
    moto.client("rds").create_db_instance(DBInstanceIdentifier="single", Engine="postgres",
                                          DBInstanceClass="db.t3.micro", MasterUsername="ops",
                                          MasterUserPassword="not-a-secret-1", AllocatedStorage=20)
    with pytest.raises(ActionError, match="not Multi-AZ"):
        Failover({"instance": "single"}, aws_ctx).plan()


def test_wait_stops_on_cancel(moto: Moto, aws_ctx: ActionContext) -> None:
    ids = make_aurora(moto, "db", members=2)
    cancel = threading.Event()
    ctx = ActionContext(environment=aws_ctx.environment, cancelled=cancel)
    # waiting for the writer to move away from ids[0], which never happens without a failover
    data = {"kind": "cluster", "id": "db", "writer": ids[0], "target": ids[1], "explicit": True}
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        Failover({"cluster": "db", "wait_timeout": 60}, ctx)._wait(moto.client("rds"), data)
    assert time.monotonic() - started < budget(3)


def test_wait_times_out_with_a_clear_message(moto: Moto, aws_ctx: ActionContext) -> None:
    ids = make_aurora(moto, "db", members=2)
    data = {"kind": "cluster", "id": "db", "writer": ids[0], "target": ids[1], "explicit": True}
    with pytest.raises(ActionError, match="not available with a new writer after 1s"):
        Failover({"cluster": "db", "wait_timeout": 1}, aws_ctx)._wait(moto.client("rds"), data)


def test_rds_validate_args_wants_exactly_one_target() -> None:
    assert Describe.validate_args({"cluster": "a", "instance": "b"})
    assert Describe.validate_args({})
    assert not Describe.validate_args({"cluster": "a"})
    assert not Describe.validate_args({"cluster": "{{ params.cluster }}", "instance": "{{ params.i }}"})


def test_ecs_scale_and_rollback(moto: Moto, aws_ctx: ActionContext) -> None:
    arns = make_ecs_service(moto, "c", "api", desired=2)
    assert Service({"cluster": "c", "service": "api"}, aws_ctx).run()["healthy"] is False
    with pytest.raises(ActionError, match="desired=0 would stop the service"):
        Scale({"cluster": "c", "service": "api", "desired": 0}, aws_ctx).plan()
    assert Scale({"cluster": "c", "service": "api", "desired": 2}, aws_ctx).plan().empty
    scale = Scale({"cluster": "c", "service": "api", "desired": 3}, aws_ctx)
    assert scale.apply(scale.plan())["desired"] == 3
    rollback = Rollback({"cluster": "c", "service": "api"}, aws_ctx)
    plan = rollback.plan()
    assert plan.data["target"] == arns[0]
    assert rollback.apply(plan)["task_definition"] == arns[0]
    # what the service ran before is now revision 2 (history), not "an older revision of the family"
    assert Rollback({"cluster": "c", "service": "api"}, aws_ctx).plan().data["target"] == arns[1]


def test_ecs_unknown_service(moto: Moto, aws_ctx: ActionContext) -> None:
    moto.client("ecs").create_cluster(clusterName="c")
    with pytest.raises(ActionError, match=r"c/ghost not found \(MISSING\)"):
        Service({"cluster": "c", "service": "ghost"}, aws_ctx).run()


def test_lambda_function_alias_rollback_and_concurrency(moto: Moto, aws_ctx: ActionContext) -> None:
    make_worker(moto, "w", versions=3)
    got = Function({"function": "w", "alias": "LIVE"}, aws_ctx).run()
    assert (got["versions"], got["alias_version"]) == ([1, 2, 3], "3")
    with pytest.raises(ActionError, match="no published version 9"):
        RollbackAlias({"function": "w", "alias": "LIVE", "version": "9"}, aws_ctx).plan()
    rollback = RollbackAlias({"function": "w", "alias": "LIVE"}, aws_ctx)
    assert rollback.apply(rollback.plan()) == {"previous_version": "3", "previous_weights": {},
                                               "version": "2", "weights": {}, "reaches": ["2"]}
    throttle = Concurrency({"function": "w", "reserved": 0}, aws_ctx)
    assert throttle.plan().changes[0].after == 0
    throttle.apply(throttle.plan())
    assert Function({"function": "w"}, aws_ctx).run()["reserved_concurrency"] == 0


def test_lambda_trigger_disable_is_idempotent(moto: Moto, aws_ctx: ActionContext) -> None:
    queue, _ = make_queue_with_dlq(moto, "jobs")
    make_worker(moto, "w")
    arn = moto.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    moto.client("lambda").create_event_source_mapping(FunctionName="w",
                                                      EventSourceArn=arn["Attributes"]["QueueArn"])
    pause = Trigger({"function": "w", "queue": "jobs", "enabled": False}, aws_ctx)
    assert pause.apply(pause.plan())["changed"] == 1
    assert Trigger({"function": "w", "queue": "jobs", "enabled": False}, aws_ctx).plan().empty
    moto.client("sqs").create_queue(QueueName="other")
    with pytest.raises(ActionError, match="has no event source mapping on other"):
        Trigger({"function": "w", "queue": "other", "enabled": False}, aws_ctx).plan()


def _dep(td: str, status: str, rollout: str = "", created: str = "") -> dict[str, Any]:
    return {"task_definition": f"arn:aws:ecs:eu-west-1:123456789012:task-definition/{td}",
            "status": status, "rollout_state": rollout, "created": created}


def test_rollback_target_with_three_deployments_is_the_one_that_completed() -> None:
    """QA (issue 9 #11 with three deployments): :1 steady, :2's rollout interrupted by :3.  The
    target was the first ACTIVE deployment listed (:2, never fully deployed); it is the one whose
    rollout had completed, else the oldest."""
    from opsctl.actions.aws.ecs import previous_task_definition

    current = "arn:aws:ecs:eu-west-1:123456789012:task-definition/api:3"
    live = [_dep("api:3", "PRIMARY", "IN_PROGRESS", "2026-11-30 03:00:00+00:00"),
            _dep("api:2", "ACTIVE", "IN_PROGRESS", "2026-11-30 02:00:00+00:00"),
            _dep("api:1", "ACTIVE", "COMPLETED", "2026-11-30 01:00:00+00:00")]
    s = {"task_definition": current, "deployments": live}
    assert previous_task_definition(s, []).endswith("/api:1")
    for d in live:  # no rollout state (an older API): the oldest deployment
        d["rollout_state"] = ""
    assert previous_task_definition(s, []).endswith("/api:1")
    for d in live:  # no creation time either: AWS lists the newest first
        d["created"] = ""
    assert previous_task_definition(s, []).endswith("/api:1")


def test_rollback_target_from_history_skips_stopped_and_rolled_back_deployments() -> None:
    """A STOPPED deployment was cut short; the target of a ROLLBACK_SUCCESSFUL one is the revision
    that failed (the service went back to its source).  Neither is what the service ran."""
    from opsctl.actions.aws.ecs import previous_task_definition

    current = "arn:aws:ecs:eu-west-1:123456789012:task-definition/api:4"
    s = {"task_definition": current, "deployments": [_dep("api:4", "PRIMARY", "COMPLETED")]}
    history = [_dep("api:4", "SUCCESSFUL"), _dep("api:3", "ROLLBACK_SUCCESSFUL"),
               _dep("api:2", "STOPPED"), _dep("api:1", "SUCCESSFUL")]
    assert previous_task_definition(s, history).endswith("/api:1")
