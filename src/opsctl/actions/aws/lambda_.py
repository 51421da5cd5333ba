"""Lambda: function configuration and aliases, alias rollback, reserved concurrency, SQS triggers."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import FUNCTION_ARN, QUEUE_ARN, Iam
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
    return str(alias_routing(lam, function, alias)["version"])


def _weights(a: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in
            ((a.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}).items() if float(v) > 0}


def alias_routing(lam: Any, function: str, alias: str) -> dict[str, Any]:
    """Where an alias sends invocations: its version, the weighted extra versions (a canary),
    and every version it can run."""
    with aws_errors(f"alias {function}:{alias}"):
        a = lam.get_alias(FunctionName=function, Name=alias)
    weights = _weights(a)
    return {"version": str(a["FunctionVersion"]), "weights": weights,
            "reaches": sorted({str(a["FunctionVersion"]), *weights}, key=_vkey)}


def _vkey(v: str) -> tuple[int, str]:
    return (int(v), "") if v.isdigit() else (1 << 30, v)


def canary_split(primary: str, weights: dict[str, float]) -> tuple[str, list[str]]:
    """(the version to keep, the suspects) of an alias with weighted routing: the newest version it
    reaches is the one being rolled out, whichever side of the routing it is on (``LIVE`` -> 2 with
    10 % to 3, and ``LIVE`` -> 3 with 10 % left on 2 during a shift, both keep 2); the version kept
    is the newest of the others."""
    reaches = sorted({primary, *weights}, key=_vkey)
    return reaches[-2], [reaches[-1]]


def _routing_text(version: str, weights: dict[str, float]) -> str:
    if not weights:
        return f"version {version} (100 %)"
    rest = 1.0 - sum(weights.values())
    extra = ", ".join(f"version {v} ({w:.0%})" for v, w in sorted(weights.items()))
    return f"version {version} ({rest:.0%}), {extra}"


@register
class Function(Action):
    """Configuration, published versions, aliases and reserved concurrency of a Lambda function.

    ```yaml
    - id: worker
      action: aws.lambda.function
      with: {function: jobs-worker, alias: LIVE}
    ```
    """

    name = "aws.lambda.function"
    permissions = (Iam(("lambda:GetFunction", "lambda:ListAliases", "lambda:GetFunctionConcurrency",
                        "lambda:ListVersionsByFunction"), FUNCTION_ARN),)
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
        found = next((a for a in aliases if a["Name"] == alias), None) if alias else None
        weights = _weights(found) if found else {}
        primary = str(found["FunctionVersion"]) if found else None
        return {"alias_weights": weights,
                "alias_reaches": sorted({primary, *weights}, key=_vkey) if primary else [],
                "alias_routing": _routing_text(primary, weights) if primary else None,
                # the versions a rollback must take traffic away from: the newest version a canary
                # reaches (whichever side of the routing it is on), else the alias's version
                "alias_suspects": canary_split(primary, weights)[1] if primary and weights
                else ([primary] if primary else []),
                "function": cfg["FunctionName"], "runtime": cfg.get("Runtime"),
                "state": cfg.get("State", ""), "last_update_status": cfg.get("LastUpdateStatus", ""),
                "timeout": cfg.get("Timeout"), "memory": cfg.get("MemorySize"),
                "reserved_concurrency": reserved,
                "versions": versions, "latest_version": versions[-1] if versions else None,
                "aliases": by_name, "alias_version": by_name.get(alias) if alias else None,
                "alias_found": bool(alias) and alias in by_name}

    @classmethod
    def summarize(cls, result: Any) -> str:
        aliases = ", ".join(f"{k} -> {v}" for k, v in result["aliases"].items()) or "no alias"
        if result.get("alias_weights"):
            aliases += f" (routing: {result['alias_routing']})"
        return (f"{result['function']} {result['state']} ({result['runtime']}), versions "
                f"{result['versions'][-3:]}, {aliases}, reserved {result['reserved_concurrency']}")


@register
class RollbackAlias(Action):
    """Take every path to the bad version(s) away from an alias: point it at a good published
    version and remove its weighted routing (a canary sending 10 % to the bad version is a path).

    Default target: with a canary (``LIVE`` -> 2, 10 % to 3, or a shift in progress ``LIVE`` -> 3
    with 10 % left on 2), the newest version reached (3) is the suspect and the newest of the
    others (2) is kept; without one, the version before the alias's.  With
    ``queue``, the plan checks that the queue's triggers of this function invoke the alias: a
    trigger that invokes the function unqualified ($LATEST) or a pinned version runs the same
    code whatever the alias points at, so the rollback is refused (pause the trigger instead).

    ```yaml
    - id: rollback
      action: aws.lambda.rollback_alias
      with: {function: jobs-worker, alias: LIVE, queue: jobs-queue}
    ```
    """

    name = "aws.lambda.rollback_alias"
    permissions = (Iam(("lambda:GetAlias", "lambda:ListVersionsByFunction"), FUNCTION_ARN),
                   Iam(("lambda:ListEventSourceMappings",), when="queue"),
                   Iam(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), QUEUE_ARN, when="queue"),
                   Iam(("lambda:UpdateAlias",), FUNCTION_ARN, apply=True))
    backend = "aws"
    read_only = False
    summary = "update_alias to a good version, weighted routing removed"
    schema = type_schema({"function": _FUNCTION, "alias": {"type": "string", "minLength": 1},
                          "version": {"type": ["string", "integer", "null"]},
                          "queue": {"type": ["string", "null"],
                                    "description": "the queue whose trigger must run the alias"}},
                         required=["function", "alias"])

    def plan(self) -> Plan:
        lam, fn, alias = client(self.ctx, "lambda"), self.args["function"], self.args["alias"]
        now = alias_routing(lam, fn, alias)
        current, weights = now["version"], now["weights"]
        versions = _versions(lam, fn)
        wanted = self.args.get("version")
        if wanted in (None, ""):
            if weights:  # keep the newest version but the one being rolled out, drop the rest
                target = canary_split(current, weights)[0]
            else:
                older = [v for v in versions if current.isdigit() and v < int(current)]
                if not older:
                    raise ActionError(f"{fn}:{alias} is on version {current}: no earlier published "
                                      "version to roll back to")
                target = str(older[-1])
        elif not str(wanted).isdigit() or int(wanted) not in versions:
            raise ActionError(f"{fn} has no published version {wanted} (versions: {versions})")
        else:
            target = str(wanted)
        dropped = [v for v in now["reaches"] if v != target]
        warnings = self._check_triggers(fn, alias, dropped)
        data = {"current": current, "weights": weights, "target": target, "dropped": dropped}
        if not dropped:
            return Plan(summary=f"{fn}:{alias} already runs only version {target}", data=data,
                        warnings=warnings)
        paths = ", ".join(f"version {v}" + (f" ({weights[v]:.0%} weighted routing)" if v in weights
                                            else " (the alias's version)") for v in dropped)
        return Plan(summary=f"{fn}:{alias}: {_routing_text(current, weights)} -> version {target} (100 %)",
                    data=data, warnings=warnings,
                    changes=[Change(target=f"lambda alias {fn}:{alias}", operation="update-alias",
                                    before={"version": current, "routing": weights},
                                    after={"version": target, "routing": {}},
                                    detail=f"removes every path to {paths}")])

    def _check_triggers(self, fn: str, alias: str, dropped: list[str]) -> list[str]:
        queue = self.args.get("queue")
        if not queue:
            return []
        from opsctl.actions.aws.triggers import ENABLED, bypassing, list_mappings

        mine = list_mappings(self.ctx, queue=queue, function=fn)
        if not [m for m in mine if m["state"] in ENABLED]:
            return [f"no enabled trigger of {fn} reads {queue}: the alias rollback only changes direct "
                    "invocations of the alias"]
        around = bypassing(mine, alias)
        if around:
            runs = "; ".join(f"{m['invokes']} ({m['uuid'][:8]})" for m in around)
            raise ActionError(
                f"the trigger of {queue} invokes {runs}, not {fn}:{alias}: moving the alias changes "
                f"nothing the worker runs (it keeps running the code of version(s) "
                f"{', '.join(dropped) or '?'} or $LATEST). Pause the trigger (--option pause-trigger), "
                "or point the trigger at the alias first")
        return []

    def apply(self, plan: Plan) -> dict[str, Any]:
        lam, fn, alias = client(self.ctx, "lambda"), self.args["function"], self.args["alias"]
        now = alias_routing(lam, fn, alias)
        if (now["version"], now["weights"]) != (plan.data["current"], plan.data.get("weights", {})):
            routing = _routing_text(now["version"], now["weights"])
            raise ActionError(f"{fn}:{alias} changed since the plan ({routing}): plan again")
        with aws_errors(f"update alias {fn}:{alias}"):
            lam.update_alias(FunctionName=fn, Name=alias, FunctionVersion=plan.data["target"],
                             RoutingConfig={"AdditionalVersionWeights": {}})
        after = alias_routing(lam, fn, alias)
        return {"previous_version": now["version"], "previous_weights": now["weights"],
                "version": after["version"], "weights": after["weights"], "reaches": after["reaches"]}


@register
class Concurrency(Action):
    """Set (or remove, with null) the reserved concurrency of a function; 0 stops all invocations.

    ```yaml
    - id: throttle
      action: aws.lambda.concurrency
      with: {function: jobs-worker, reserved: 0}
    ```
    """

    name = "aws.lambda.concurrency"
    permissions = (Iam(("lambda:GetFunctionConcurrency",), FUNCTION_ARN),
                   Iam(("lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency"), FUNCTION_ARN,
                       apply=True))
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
      with: {function: jobs-worker, queue: jobs-queue, enabled: false}
    ```
    """

    name = "aws.lambda.trigger"
    # UpdateEventSourceMapping's resource is the mapping's ARN, found by the lookup
    permissions = (Iam(("lambda:ListEventSourceMappings",)),
                   Iam(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), QUEUE_ARN, when="queue"),
                   Iam(("lambda:UpdateEventSourceMapping",), apply=True))
    backend = "aws"
    read_only = False
    summary = "enable/disable event source mappings (blast radius: max_targets)"
    schema = type_schema({"function": _FUNCTION, "queue": {"type": "string"},
                          "enabled": {"type": "boolean"},
                          "max_targets": {"type": "integer", "minimum": 1, "default": 5}},
                         required=["function", "enabled"])

    def _mappings(self) -> list[dict[str, Any]]:
        from opsctl.actions.aws.triggers import list_mappings

        # by the queue's ARN (or all), then by function name: a trigger bound to an alias
        # (FunctionName=fn:LIVE) is not found by the unqualified name
        return list_mappings(self.ctx, queue=self.args.get("queue") or None, function=self.args["function"])

    def plan(self) -> Plan:
        want = self.args["enabled"]
        found = self._mappings()
        if not found:
            raise ActionError(f"{self.args['function']} has no event source mapping"
                              + (f" on {self.args['queue']}" if self.args.get("queue") else ""))
        todo = [m for m in found if (m["state"] in ("Enabled", "Enabling")) != want]
        if len(todo) > self.args.get("max_targets", 5):
            raise ActionError(f"{len(todo)} mappings to change, above max_targets="
                              f"{self.args.get('max_targets', 5)}")
        verb = "enable" if want else "disable"
        return Plan(summary=f"{verb} {len(todo)} trigger(s) of {self.args['function']}",
                    data={"uuids": [m["uuid"] for m in todo]},
                    changes=[Change(target=f"trigger {m['queue']} -> {m['invokes']} ({m['uuid'][:8]})",
                                    operation=verb, before=m["state"],
                                    after="Enabled" if want else "Disabled") for m in todo])

    def apply(self, plan: Plan) -> dict[str, Any]:
        lam, states = client(self.ctx, "lambda"), {}
        for uuid in plan.data["uuids"]:
            self.ctx.check_cancelled()
            with aws_errors(f"update event source mapping {uuid}"):
                got = lam.update_event_source_mapping(UUID=uuid, Enabled=self.args["enabled"])
            states[uuid] = got.get("State")
        return {"changed": len(states), "states": states}
