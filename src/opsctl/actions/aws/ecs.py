"""ECS: describe a service, scale it, force a new deployment, roll back its task definition."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import SERVICE_ARN, Iam
from opsctl.backends.aws import aws_errors, client, optional_api
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
                    "rollout_state": d.get("rolloutState", ""), "created": str(d.get("createdAt", ""))}
                   for d in s.get("deployments", [])]
    return {"cluster": cluster, "service": service, "status": s.get("status", ""),
            "desired": s.get("desiredCount", 0), "running": s.get("runningCount", 0),
            "pending": s.get("pendingCount", 0), "task_definition": s.get("taskDefinition", ""),
            "deployments": deployments, "deployment_count": len(deployments),
            "events": [e.get("message", "") for e in s.get("events", [])[:5]],
            # a service scaled to 0 runs "all" its tasks but serves nothing
            "healthy": s.get("desiredCount", 0) > 0 and s.get("runningCount", 0) == s.get("desiredCount", 0)
            and len(deployments) <= 1}


def _short(td: str | None) -> str:
    return (td or "").rsplit("/", 1)[-1]


def task_definition(ecs: Any, td: str, given: bool = False) -> dict[str, Any]:
    """Resolve ``family:revision`` or an ARN: its ARN, status and container images (a target that
    does not exist fails here, in the plan, not at apply)."""
    try:
        with aws_errors(f"task definition {td}"):
            got = ecs.describe_task_definition(taskDefinition=td)["taskDefinition"]
    except ActionError as e:
        error = ArgumentError if given else ActionError  # a wrong -p task_definition is bad input
        raise error(f"task definition {td!r} does not exist or cannot be read ({e})") from None
    return {"arn": got["taskDefinitionArn"], "name": _short(got["taskDefinitionArn"]),
            "status": got.get("status", ""),
            "images": [c.get("image", "") for c in got.get("containerDefinitions", [])]}


def deployment_history(ecs: Any, cluster: str, service: str) -> tuple[list[dict[str, Any]], str]:
    """What the service actually ran, newest first: [{task_definition, status, created}], and where
    that came from.  AWS keeps it (ListServiceDeployments + DescribeServiceRevisions); an endpoint
    without those calls gives an empty history (the caller falls back to the live deployments)."""
    with optional_api() as attempt:
        found = ecs.list_service_deployments(cluster=cluster, service=service)["serviceDeployments"]
        found = sorted(found, key=lambda d: str(d.get("createdAt", "")), reverse=True)
        arns = [d["targetServiceRevisionArn"] for d in found if d.get("targetServiceRevisionArn")]
        revs: dict[str, str] = {}
        for i in range(0, len(arns), 20):
            got = ecs.describe_service_revisions(serviceRevisionArns=arns[i:i + 20])
            revs.update({r["serviceRevisionArn"]: r.get("taskDefinition", "")
                         for r in got.get("serviceRevisions", [])})
    if attempt.failure:
        return [], f"no deployment history from the endpoint ({attempt.failure})"
    history = [{"task_definition": revs.get(d.get("targetServiceRevisionArn", ""), ""),
                "status": d.get("status", ""), "created": str(d.get("createdAt", ""))} for d in found]
    return [h for h in history if h["task_definition"]], "ListServiceDeployments"


def previous_task_definition(s: dict[str, Any], history: list[dict[str, Any]]) -> str | None:
    """What the service ran before its current task definition: the old deployment of a rollout in
    progress, else the newest deployment in the history with another task definition that had
    completed.  Never "the family's previous revision": that one may never have run.

    With several rollouts in flight (PRIMARY :3, ACTIVE :2 interrupted by :3, ACTIVE :1 the steady
    one) the target is the ACTIVE deployment whose rollout had completed (else the oldest): :2
    never finished rolling out.  In the history only a SUCCESSFUL deployment counts: a STOPPED one
    was cut short, and the target of a ROLLBACK_SUCCESSFUL one is the revision that failed."""
    current = _short(s["task_definition"])
    older = [d for d in s["deployments"]
             if d["status"] == "ACTIVE" and _short(d["task_definition"]) != current]
    if older:
        done = [d for d in older if d.get("rollout_state") == "COMPLETED"]
        pick = done[0] if done else min(older, key=lambda d: (d.get("created") or "~", -older.index(d)))
        return str(pick["task_definition"])
    for h in history:
        if _short(h["task_definition"]) != current and h["status"] in ("SUCCESSFUL", ""):
            return str(h["task_definition"])
    return None


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
      with: {cluster: web, service: api}
      expect:
        - that: "result.running == result.desired"
          message: "{{ result.running }}/{{ result.desired }} tasks running"
    ```
    """

    name = "aws.ecs.service"
    permissions = (Iam(("ecs:DescribeServices", "ecs:ListServiceDeployments"), SERVICE_ARN),
                   Iam(("ecs:DescribeTaskDefinition", "ecs:DescribeServiceRevisions")))
    backend = "aws"
    summary = "service counts, deployments (rollout state) and last events"
    schema = type_schema(dict(_SERVICE), required=["cluster", "service"])

    def run(self) -> dict[str, Any]:
        ecs = client(self.ctx, "ecs")
        s = describe_service(ecs, self.args["cluster"], self.args["service"])
        history, source = deployment_history(ecs, self.args["cluster"], self.args["service"])
        previous = previous_task_definition(s, history)
        s["images"] = task_definition(ecs, s["task_definition"])["images"] if s["task_definition"] else []
        s["previous_task_definition"] = _short(previous) or None
        s["previous_images"] = task_definition(ecs, previous)["images"] if previous else []
        s["history"] = [{**h, "task_definition": _short(h["task_definition"])} for h in history[:10]]
        s["history_source"] = source
        return s

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['service']}: {result['running']}/{result['desired']} running, "
                f"{result['pending']} pending, {result['deployment_count']} deployment(s), "
                f"{_short(result['task_definition'])} {', '.join(result.get('images', []))}"
                + (f"; ran {result['previous_task_definition']} before"
                   if result.get("previous_task_definition") else ""))


@register
class Scale(_ServiceChange):
    """Set the desired count of an ECS service (blast radius: max_desired).

    ```yaml
    - id: scale
      action: aws.ecs.scale
      with: {cluster: web, service: api, desired: 6, max_desired: 20}
    ```
    """

    name = "aws.ecs.scale"
    permissions = (Iam(("ecs:DescribeServices",), SERVICE_ARN),
                   Iam(("ecs:UpdateService",), SERVICE_ARN, apply=True))
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
      with: {cluster: web, service: api}
    ```
    """

    name = "aws.ecs.force_deployment"
    permissions = (Iam(("ecs:DescribeServices",), SERVICE_ARN),
                   Iam(("ecs:UpdateService",), SERVICE_ARN, apply=True))
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
      with: {cluster: web, service: api}
    ```
    """

    name = "aws.ecs.rollback"
    permissions = (Iam(("ecs:DescribeServices", "ecs:ListServiceDeployments"), SERVICE_ARN),
                   Iam(("ecs:DescribeTaskDefinition", "ecs:DescribeServiceRevisions")),
                   Iam(("ecs:UpdateService",), SERVICE_ARN, apply=True))
    summary = "update-service --task-definition <previous revision>"
    schema = type_schema({**_SERVICE, "task_definition": {"type": ["string", "null"],
                                                          "description": "family:revision or ARN"}},
                         required=["cluster", "service"])

    def plan(self) -> Plan:
        s = self._current()
        ecs = client(self.ctx, "ecs")
        wanted = self.args.get("task_definition")
        if wanted:
            target = task_definition(ecs, wanted, given=True)
            why = "given"
        else:
            history, source = deployment_history(ecs, s["cluster"], s["service"])
            previous = previous_task_definition(s, history)
            if previous is None:
                now = _short(s["task_definition"])
                raise ActionError(f"cannot tell what {s['service']} ran before {now} "
                                  f"({source}; no older deployment): give the revision to roll back to "
                                  "(-p task_definition=family:revision)")
            target = task_definition(ecs, previous)
            why = f"what the service ran before ({source})"
        if target["status"] not in ("ACTIVE", ""):
            raise ActionError(f"task definition {target['name']} is {target['status']}: "
                              "it cannot be deployed")
        current = task_definition(ecs, s["task_definition"])
        data = {"task_definition": s["task_definition"], "target": target["arn"]}
        if target["name"] == current["name"]:
            return Plan(summary=f"{s['service']} already runs {target['name']}", data=data)
        return Plan(summary=f"roll {s['service']} back to {target['name']} ({', '.join(target['images'])})",
                    data=data,
                    changes=[Change(target=f"ecs service {s['cluster']}/{s['service']}", operation="rollback",
                                    before={"task_definition": current["name"], "images": current["images"]},
                                    after={"task_definition": target["name"], "images": target["images"]},
                                    detail=f"target: {why}")])

    def apply(self, plan: Plan) -> dict[str, Any]:
        return self._update(plan, taskDefinition=plan.data["target"])
