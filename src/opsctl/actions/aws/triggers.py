"""Lambda event source mappings (SQS triggers) as opsctl sees them: which function, through which
qualifier (an alias, a pinned version, or none: ``$LATEST``), reading which queue.

Shared by ``aws.sqs.consumers`` (diagnose / verify), ``aws.lambda.trigger`` (pause / resume) and
``aws.lambda.rollback_alias`` (does the trigger run what the alias points at?).  A trigger bound to
an alias has ``FunctionArn`` ``...:function:NAME:ALIAS``: it is found by the queue ARN or by listing,
never by the unqualified name alone (AWS and moto filter ``FunctionName`` on the exact value).
"""

from __future__ import annotations

from typing import Any

from opsctl.actions.base import ActionContext
from opsctl.backends.aws import aws_errors, client

ENABLED = ("Enabled", "Enabling")


def function_name(function: str) -> str:
    """The bare name of ``NAME``, ``NAME:QUALIFIER`` or a function ARN."""
    if function.startswith("arn:"):
        return function.split(":")[6]
    return function.split(":")[0]


def mapping_view(m: dict[str, Any]) -> dict[str, Any]:
    parts = str(m.get("FunctionArn", "")).split(":")
    name = parts[6] if len(parts) > 6 else ""
    qualifier = parts[7] if len(parts) > 7 and parts[7] not in ("", "$LATEST") else None
    source = str(m.get("EventSourceArn", ""))
    return {"uuid": m["UUID"], "function": name, "qualifier": qualifier,
            "invokes": f"{name}:{qualifier}" if qualifier else f"{name} (unqualified: $LATEST)",
            "state": m.get("State", ""), "batch_size": m.get("BatchSize"),
            "source": source, "queue": source.rsplit(":", 1)[-1]}


def queue_arn(ctx: ActionContext, queue: str) -> str:
    from opsctl.actions.aws.sqs import _attributes, queue_url

    sqs = client(ctx, "sqs")
    return _attributes(sqs, queue_url(sqs, queue))["QueueArn"]


def list_mappings(ctx: ActionContext, *, queue: str | None = None,
                  function: str | None = None) -> list[dict[str, Any]]:
    """Mappings reading ``queue`` (by its ARN) and/or invoking ``function`` (any qualifier)."""
    lam, kwargs = client(ctx, "lambda"), {}
    if queue:
        kwargs["EventSourceArn"] = queue_arn(ctx, queue)
    with aws_errors("event source mappings" + (f" of {queue}" if queue else "")):
        pages = lam.get_paginator("list_event_source_mappings").paginate(**kwargs)
        found = [mapping_view(m) for page in pages for m in page.get("EventSourceMappings", [])]
    if function:
        name = function_name(function)
        found = [m for m in found if m["function"] == name]
    return found


def bypassing(mappings: list[dict[str, Any]], alias: str) -> list[dict[str, Any]]:
    """Enabled mappings that do not invoke through ``alias``: moving the alias does not change
    what they run."""
    return [m for m in mappings if m["state"] in ENABLED and m["qualifier"] != alias]
