"""Lambda: function configuration and aliases, alias rollback, reserved concurrency, SQS triggers."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.backends.aws import aws_errors, client
from opsctl.errors import ActionError
from opsctl.records import Change, Plan

_FUNCTION = {"type": "string", "minLength": 1, "description": "function name or ARN"}


def _versions(lam: Any, function: str) -> list[int]:
    with aws_errors(f"versions of {function}"):
        pages = lam.get_paginator("list_versions_by_function").paginate(FunctionName=function)
        return sorted(int(v["Version"]) for page in pages for v in page["Versions"]
                      if v["Version"] != "$LATEST")


def _alias_version(lam: Any, function: str, alias: str) -> str:
    with aws_errors(f"alias {function}:{alias}"):
        return str(lam.get_alias(FunctionName=function, Name=alias)["FunctionVersion"])


@register
class Function(Action):
    """Configuration, published versions, aliases and reserved concurrency of a Lambda function.

    ```yaml
    - id: worker
      action: aws.lambda.function
      with: {function: plooral-worker, alias: LIVE}
    ```
    """

    name = "aws.lambda.function"
    backend = "aws"
    summary = "state, runtime, versions, aliases (alias -> version), reserved concurrency"
    schema = type_schema({"function": _FUNCTION, "alias": {"type": "string"}}, required=["function"])

    def run(self) -> dict[str, Any]:
        lam, fn = client(self.ctx, "lambda"), self.args["function"]
        with aws_errors(f"Lambda function {fn}"):
            got = lam.get_function(FunctionName=fn)
            cfg = got["Configuration"]
            aliases = [a for page in lam.get_paginator("list_aliases").paginate(FunctionName=fn)
                       for a in page["Aliases"]]
            # get_function's Concurrency is not filled in everywhere (moto): ask for it directly
            reserved = lam.get_function_concurrency(FunctionName=fn).get("ReservedConcurrentExecutions")
        versions = _versions(lam, fn)
        by_name = {a["Name"]: a["FunctionVersion"] for a in aliases}
        # a missing alias is a finding (alias_found false), not a failure: the trigger can still be
        # paused on a function invoked without an alias
        alias = self.args.get("alias")
        return {"function": cfg["FunctionName"], "runtime": cfg.get("Runtime"),
                "state": cfg.get("State", ""), "last_update_status": cfg.get("LastUpdateStatus", ""),
                "timeout": cfg.get("Timeout"), "memory": cfg.get("MemorySize"),
                "reserved_concurrency": reserved,
                "versions": versions, "latest_version": versions[-1] if versions else None,
                "aliases": by_name, "alias_version": by_name.get(alias) if alias else None,
                "alias_found": bool(alias) and alias in by_name}

    @classmethod
    def summarize(cls, result: Any) -> str:
        aliases = ", ".join(f"{k} -> {v}" for k, v in result["aliases"].items()) or "no alias"
        return (f"{result['function']} {result['state']} ({result['runtime']}), versions "
                f"{result['versions'][-3:]}, {aliases}, reserved {result['reserved_concurrency']}")


@register
class RollbackAlias(Action):
    """Point an alias back to an earlier published version (default: the one before its current).

    ```yaml
    - id: rollback
      action: aws.lambda.rollback_alias
      with: {function: plooral-worker, alias: LIVE}
    ```
    """

    name = "aws.lambda.rollback_alias"
    backend = "aws"
    read_only = False
    summary = "update_alias to a previous published version"
    schema = type_schema({"function": _FUNCTION, "alias": {"type": "string", "minLength": 1},
                          "version": {"type": ["string", "integer", "null"]}},
                         required=["function", "alias"])

    def plan(self) -> Plan:
        lam, fn, alias = client(self.ctx, "lambda"), self.args["function"], self.args["alias"]
        current = _alias_version(lam, fn, alias)
        versions = _versions(lam, fn)
        wanted = self.args.get("version")
        if wanted in (None, ""):
            older = [v for v in versions if current.isdigit() and v < int(current)]
            if not older:
                raise ActionError(f"{fn}:{alias} is on version {current}: no earlier published "
                                  "version to roll back to")
            target = str(older[-1])
        elif not str(wanted).isdigit() or int(wanted) not in versions:
            raise ActionError(f"{fn} has no published version {wanted} (versions: {versions})")
        else:
            target = str(wanted)
        data = {"current": current, "target": target}
        if target == current:
            return Plan(summary=f"{fn}:{alias} already on version {target}", data=data)
        return Plan(summary=f"{fn}:{alias} version {current} -> {target}", data=data,
                    changes=[Change(target=f"lambda alias {fn}:{alias}", operation="update-alias",
                                    before=current, after=target)])

    def apply(self, plan: Plan) -> dict[str, Any]:
        lam, fn, alias = client(self.ctx, "lambda"), self.args["function"], self.args["alias"]
        now = _alias_version(lam, fn, alias)
        if now != plan.data["current"]:
            raise ActionError(f"{fn}:{alias} moved to {now} since the plan: plan again")
        with aws_errors(f"update alias {fn}:{alias}"):
            lam.update_alias(FunctionName=fn, Name=alias, FunctionVersion=plan.data["target"])
        return {"previous_version": now, "version": _alias_version(lam, fn, alias)}


@register
class Concurrency(Action):
    """Set (or remove, with null) the reserved concurrency of a function; 0 stops all invocations.

    ```yaml
    - id: throttle
      action: aws.lambda.concurrency
      with: {function: plooral-worker, reserved: 0}
    ```
    """

    name = "aws.lambda.concurrency"
    backend = "aws"
    read_only = False
    summary = "put/delete function concurrency"
    schema = type_schema({"function": _FUNCTION, "reserved": {"type": ["integer", "null"], "minimum": 0}},
                         required=["function", "reserved"])

    def plan(self) -> Plan:
        lam, fn = client(self.ctx, "lambda"), self.args["function"]
        with aws_errors(f"concurrency of {fn}"):
            before = lam.get_function_concurrency(FunctionName=fn).get("ReservedConcurrentExecutions")
        after = self.args["reserved"]
        if before == after:
            return Plan(summary=f"{fn} reserved concurrency already {after}")
        return Plan(summary=f"{fn} reserved concurrency {before} -> {after}",
                    changes=[Change(target=f"lambda {fn}", operation="reserved-concurrency",
                                    before=before, after=after,
                                    detail="0 stops every invocation" if after == 0 else "")])

    def apply(self, plan: Plan) -> dict[str, Any]:
        lam, fn, reserved = client(self.ctx, "lambda"), self.args["function"], self.args["reserved"]
        with aws_errors(f"set concurrency of {fn}"):
            if reserved is None:
                lam.delete_function_concurrency(FunctionName=fn)
            else:
                lam.put_function_concurrency(FunctionName=fn, ReservedConcurrentExecutions=reserved)
        return {"reserved_concurrency": reserved}


@register
class Trigger(Action):
    """Enable or disable the event source mappings (SQS triggers) of a function, e.g. to pause a
    worker that is poisoning its queue; ``queue`` restricts to the mappings reading that queue.

    ```yaml
    - id: pause
      action: aws.lambda.trigger
      with: {function: plooral-worker, queue: plooral-queue, enabled: false}
    ```
    """

    name = "aws.lambda.trigger"
    backend = "aws"
    read_only = False
    summary = "enable/disable event source mappings (blast radius: max_targets)"
    schema = type_schema({"function": _FUNCTION, "queue": {"type": "string"},
                          "enabled": {"type": "boolean"},
                          "max_targets": {"type": "integer", "minimum": 1, "default": 5}},
                         required=["function", "enabled"])

    def _mappings(self) -> list[dict[str, Any]]:
        lam, kwargs = client(self.ctx, "lambda"), {"FunctionName": self.args["function"]}
        if self.args.get("queue"):
            from opsctl.actions.aws.sqs import queue_url

            sqs = client(self.ctx, "sqs")
            url = queue_url(sqs, self.args["queue"])
            with aws_errors(f"SQS queue {url}"):
                kwargs["EventSourceArn"] = sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        with aws_errors(f"event source mappings of {self.args['function']}"):
            pages = lam.get_paginator("list_event_source_mappings").paginate(**kwargs)
            return [m for page in pages for m in page["EventSourceMappings"]]

    def plan(self) -> Plan:
        want = self.args["enabled"]
        found = self._mappings()
        if not found:
            raise ActionError(f"{self.args['function']} has no event source mapping"
                              + (f" on {self.args['queue']}" if self.args.get("queue") else ""))
        todo = [m for m in found if (m.get("State") in ("Enabled", "Enabling")) != want]
        if len(todo) > self.args.get("max_targets", 5):
            raise ActionError(f"{len(todo)} mappings to change, above max_targets="
                              f"{self.args.get('max_targets', 5)}")
        verb = "enable" if want else "disable"
        return Plan(summary=f"{verb} {len(todo)} trigger(s) of {self.args['function']}",
                    data={"uuids": [m["UUID"] for m in todo]},
                    changes=[Change(target=f"event source {m['EventSourceArn'].rsplit(':', 1)[-1]} "
                                           f"({m['UUID'][:8]})", operation=verb,
                                    before=m.get("State"), after="Enabled" if want else "Disabled")
                             for m in todo])

    def apply(self, plan: Plan) -> dict[str, Any]:
        lam, states = client(self.ctx, "lambda"), {}
        for uuid in plan.data["uuids"]:
            self.ctx.check_cancelled()
            with aws_errors(f"update event source mapping {uuid}"):
                got = lam.update_event_source_mapping(UUID=uuid, Enabled=self.args["enabled"])
            states[uuid] = got.get("State")
        return {"changed": len(states), "states": states}
