"""`opsctl permissions`: the least privilege a runbook needs, from what its actions declare."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from opsctl.cli.run_cmd import complete_runbook


class Target(StrEnum):
    kubernetes = "kubernetes"
    aws = "aws"
    postgres = "postgres"
    redis = "redis"
    kafka = "kafka"


class Format(StrEnum):
    text = "text"
    yaml = "yaml"
    json = "json"


def permissions(
    runbook: Annotated[str, typer.Argument(help="Runbook id (rb-006) or path to a runbook file.",
                                           autocompletion=complete_runbook)],
    option: Annotated[str | None, typer.Option("--option", help="Only this mitigation option's steps "
                                               "('none': no option's).")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Only what the diagnosis needs (its "
                                            "read-only steps).")] = False,
    target: Annotated[Target | None, typer.Option("--for", help="Only one system, apply-ready: manifests, "
                                                  "policy, SQL, ACL rule or ACL commands.")] = None,
    output: Annotated[Format, typer.Option("--output", "-o", help="text (readable), yaml or json.")
                      ] = Format.text,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", metavar="KEY=VALUE",
                                                    help="Runbook parameter: names resources exactly "
                                                         "instead of a wildcard (repeatable).")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the ServiceAccount "
                                           "(and of steps whose namespace is a parameter not given).")
                         ] = "default",
    principal: Annotated[str | None, typer.Option("--principal", metavar="NAME",
                                                  help="ServiceAccount / login role / ACL user name "
                                                       "(default opsctl-RUNBOOK[-read]).")] = None,
) -> int:
    """Print the permissions a runbook needs: Kubernetes RBAC, IAM policy, PostgreSQL GRANTs, Redis
    and Kafka ACLs (`--for kubernetes -o yaml | kubectl apply -f -`)."""
    from opsctl import catalog
    from opsctl.cli.run_cmd import _check_option, parse_params
    from opsctl.errors import UsageError
    from opsctl.export import permissions as P
    from opsctl.export import permissions_view as view

    rb = catalog.load(runbook)
    _check_option(rb, option)
    given = parse_params(list(param or []))
    unknown = sorted(set(given) - set(rb.params))
    if unknown:
        rb.resolve_params(given)  # raises the located "unknown parameter" error
    params = {k: rb.params[k].coerce(v) for k, v in given.items()}
    perms = P.collect(rb, option=option, read_only=read_only, params=params, namespace=namespace,
                      principal=principal)
    if target is None:
        if output == Format.text:
            typer.echo(view.text(perms))
        else:
            doc = view.document(perms)
            typer.echo(json.dumps(doc, indent=2) if output == Format.json else view.yaml_dump(doc))
        return 0
    if target != Target.kubernetes and not perms.of(target.value):
        scope = " in its diagnosis" if read_only else (f" with option {option}" if option else "")
        raise UsageError(f"{rb.id} makes no {target.value} call{scope}: there is nothing to grant")
    if target == Target.kubernetes:
        docs = P.manifests(perms)
        typer.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2)
                   if output == Format.json else view.yaml_dump(docs, many=True))
    elif target == Target.aws:
        policy = P.iam_policy(perms)
        typer.echo(view.yaml_dump(policy) if output == Format.yaml else json.dumps(policy, indent=2))
    elif target == Target.postgres:
        typer.echo("\n".join(P.postgres_sql(perms)))
    elif target == Target.redis:
        typer.echo(json.dumps({"user": perms.principal, "rule": P.redis_rule(perms)})
                   if output == Format.json else P.redis_acl(perms))
    else:
        entries = P.kafka_acl_entries(perms)
        typer.echo(json.dumps(entries, indent=2) if output == Format.json else
                   view.yaml_dump(entries) if output == Format.yaml else "\n".join(P.kafka_acls(perms)))
    return 0
