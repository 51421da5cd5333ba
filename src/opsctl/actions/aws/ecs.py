"""ECS: describe a service, scale it, force a new deployment, roll back its task definition."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.backends.aws import aws_errors, client
from opsctl.errors import ActionError, ArgumentError
from opsctl.records import Change, Plan

_SERVICE = {"cluster": {"type": "string", "minLength": 1}, "service": {"type": "string", "minLength": 1}}


def describe_service(ecs: Any, cluster: str, service: str) -> dict[str, Any]:
    with aws_errors(f"ECS service {cluster}/{service}"):
        found = ecs.describe_services(cluster=cluster, services=[service])
    if not found.get("services"):
        reason = (found.get("failures") or [{}])[0].get("reason", "not found")
        raise ActionError(f"ECS service {cluster}/{service} not found ({reason})" if reason == "MISSING"
                          else f"ECS service {cluster}/{service}: {reason}")
    s = found["services"][0]
    deployments = [{"id": d.get("id"), "status": d.get("status"), "task_definition": d.get("taskDefinition"),
                    "desired": d.get("desiredCount", 0), "running": d.get("runningCount", 0),
                    "pending": d.get("pendingCount", 0), "failed_tasks": d.get("failedTasks", 0),
                    "rollout_state": d.get("rolloutState", "")} for d in s.get("deployments", [])]
    return {"cluster": cluster, "service": service, "status": s.get("status", ""),
            "desired": s.get("desiredCount", 0), "running": s.get("runningCount", 0),
            "pending": s.get("pendingCount", 0), "task_definition": s.get("taskDefinition", ""),
            "deployments": deployments, "deployment_count": len(deployments),
            "events": [e.get("message", "") for e in s.get("events", [])[:5]],
            # a service scaled to 0 runs "all" its tasks but serves nothing
            "healthy": s.get("desiredCount", 0) > 0 and s.get("runningCount", 0) == s.get("desiredCount", 0)
            and len(deployments) <= 1}


def previous_task_definition(ecs: Any, current: str) -> str:
    """The ACTIVE revision of the same family just before ``current``."""
    family, revision = current.rsplit("/", 1)[-1].rsplit(":", 1)
    with aws_errors(f"task definitions of {family}"):
        pages = ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family, status="ACTIVE")
        arns = [a for page in pages for a in page.get("taskDefinitionArns", [])
                if a.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family]
    older = sorted((int(a.rsplit(":", 1)[1]), a) for a in arns if int(a.rsplit(":", 1)[1]) < int(revision))
    if not older:
        raise ActionError(f"no ACTIVE revision of {family} older than {revision}: give task_definition")
    return older[-1][1]


class _ServiceChange(Action):
    backend = "aws"
    read_only = False

    def _current(self) -> dict[str, Any]:
        return describe_service(client(self.ctx, "ecs"), self.args["cluster"], self.args["service"])

    def _update(self, plan: Plan, **kwargs: Any) -> dict[str, Any]:
        ecs = client(self.ctx, "ecs")
        now = self._current()
        if now["task_definition"] != plan.data["task_definition"]:
            raise ActionError(f"{self.args['service']} task definition changed since the plan "
                              f"({plan.data['task_definition']} -> {now['task_definition']}): plan again")
        with aws_errors(f"update ECS service {self.args['cluster']}/{self.args['service']}"):
            ecs.update_service(cluster=self.args["cluster"], service=self.args["service"], **kwargs)
        after = self._current()
        return {k: after[k] for k in ("desired", "running", "pending", "task_definition",
                                      "deployment_count")}


@register
class Service(Action):
    """Desired / running / pending counts, deployments and recent events of an ECS service.

    ```yaml
    - id: service
      action: aws.ecs.service
      with: {cluster: plooral-cluster, service: plooral-api-service}
      expect:
        - that: "result.running == result.desired"
          message: "{{ result.running }}/{{ result.desired }} tasks running"
    ```
    """

    name = "aws.ecs.service"
    backend = "aws"
    summary = "service counts, deployments (rollout state) and last events"
    schema = type_schema(dict(_SERVICE), required=["cluster", "service"])

    def run(self) -> dict[str, Any]:
        return describe_service(client(self.ctx, "ecs"), self.args["cluster"], self.args["service"])

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['service']}: {result['running']}/{result['desired']} running, "
                f"{result['pending']} pending, {result['deployment_count']} deployment(s), "
                f"{result['task_definition'].rsplit('/', 1)[-1]}")


@register
class Scale(_ServiceChange):
    """Set the desired count of an ECS service (blast radius: max_desired).

    ```yaml
    - id: scale
      action: aws.ecs.scale
      with: {cluster: plooral-cluster, service: plooral-api-service, desired: 6, max_desired: 20}
    ```
    """

    name = "aws.ecs.scale"
    summary = "update desiredCount (refused above max_desired)"
    schema = type_schema({**_SERVICE, "desired": {"type": "integer", "minimum": 0},
                          "max_desired": {"type": "integer", "minimum": 1, "default": 50},
                          "allow_zero": {"type": "boolean", "default": False,
                                         "description": "permit desired: 0 (stops the service)"}},
                         required=["cluster", "service", "desired"])

    def plan(self) -> Plan:
        s = self._current()
        want, cap = self.args["desired"], self.args.get("max_desired", 50)
        if want > cap:
            raise ActionError(f"desired={want} is above max_desired={cap}")
        if want == 0 and not self.args.get("allow_zero"):
            raise ArgumentError("desired=0 would stop the service: give the new count (-p desired=N) "
                              "or set allow_zero: true")
        data = {"task_definition": s["task_definition"]}
        if want == s["desired"]:
            return Plan(summary=f"{s['service']} already wants {want} tasks", data=data)
        return Plan(summary=f"scale {s['service']} {s['desired']} -> {want}", data=data,
                    changes=[Change(target=f"ecs service {s['cluster']}/{s['service']}",
                                    operation="scale", before=s["desired"], after=want)])

    def apply(self, plan: Plan) -> dict[str, Any]:
        return self._update(plan, desiredCount=self.args["desired"])


@register
class ForceDeployment(_ServiceChange):
    """Restart every task of an ECS service with the same task definition (force new deployment).

    ```yaml
    - id: restart
      action: aws.ecs.force_deployment
      with: {cluster: plooral-cluster, service: plooral-api-service}
    ```
    """

    name = "aws.ecs.force_deployment"
    summary = "update-service --force-new-deployment"
    schema = type_schema(dict(_SERVICE), required=["cluster", "service"])

    def plan(self) -> Plan:
        s = self._current()
        return Plan(summary=f"force a new deployment of {s['service']}",
                    data={"task_definition": s["task_definition"]},
                    changes=[Change(target=f"ecs service {s['cluster']}/{s['service']}",
                                    operation="force-new-deployment", before=s["running"],
                                    after=s["desired"], detail="running -> desired, tasks replaced")])

    def apply(self, plan: Plan) -> dict[str, Any]:
        return self._update(plan, forceNewDeployment=True)


@register
class Rollback(_ServiceChange):
    """Point an ECS service back at an earlier task definition (default: the previous revision).

    ```yaml
    - id: rollback
      action: aws.ecs.rollback
      with: {cluster: plooral-cluster, service: plooral-api-service}
    ```
    """

    name = "aws.ecs.rollback"
    summary = "update-service --task-definition <previous revision>"
    schema = type_schema({**_SERVICE, "task_definition": {"type": ["string", "null"],
                                                          "description": "family:revision or ARN"}},
                         required=["cluster", "service"])

    def plan(self) -> Plan:
        s = self._current()
        target = self.args.get("task_definition") or previous_task_definition(
            client(self.ctx, "ecs"), s["task_definition"])
        data = {"task_definition": s["task_definition"], "target": target}
        if target.rsplit("/", 1)[-1] == s["task_definition"].rsplit("/", 1)[-1]:
            return Plan(summary=f"{s['service']} already runs {target}", data=data)
        return Plan(summary=f"roll {s['service']} back to {target.rsplit('/', 1)[-1]}", data=data,
                    changes=[Change(target=f"ecs service {s['cluster']}/{s['service']}",
                                    operation="rollback", before=s["task_definition"].rsplit("/", 1)[-1],
                                    after=target.rsplit("/", 1)[-1])])

    def apply(self, plan: Plan) -> dict[str, Any]:
        return self._update(plan, taskDefinition=plan.data["target"])
