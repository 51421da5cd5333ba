"""Least-privilege permissions derived from a runbook's actions (``opsctl permissions``).

Each action declares what it needs (``Action.permissions``, see ``opsctl.actions.needs``); this module
walks the steps a run can execute (all of them, one ``--option``'s, or only the read-only steps of the
diagnosis), fills the declarations' templates from the steps' arguments, and builds:

* Kubernetes: a ServiceAccount, a Role (a ClusterRole bound per namespace when steps act in several
  namespaces) and its RoleBinding(s) (``kubernetes_manifests``, also used by the Job/Argo export);
* AWS: an IAM policy document (``iam_policy``);
* PostgreSQL: the GRANTs for a login role (``postgres_sql``);
* Redis: an ``ACL SETUSER`` rule (``redis_acl``);
* Kafka: ``kafka-acls.sh`` commands (``kafka_acls``).

Argument values: a literal is used as is; a value templated from runbook parameters is known when
those parameters are given (``-p``), otherwise the name becomes a wildcard (``*``), except a
Kubernetes namespace, which is then the namespace the ServiceAccount is created in (the runbook runs
next to what it repairs).  Values only known at run time (``steps.x...``) are wildcards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from opsctl.actions.needs import Iam, KafkaAcl, Kube, Local, Need, Pg, RedisAcl
from opsctl.export.naming import service_account_name

BACKENDS = ("kubernetes", "aws", "postgres", "redis", "kafka")
_FIELD = re.compile(r"\{([a-z_]+)\}")
_UNKNOWN = object()


@dataclass(frozen=True)
class Grant:
    """One declared need of one step, its templates filled in."""

    need: Need
    step: str
    action: str
    namespace: str = ""  # Kubernetes needs only


@dataclass
class Permissions:
    runbook: str
    principal: str
    namespace: str
    read_only: bool
    grants: list[Grant] = field(default_factory=list)

    def of(self, backend: str) -> list[Grant]:
        return [g for g in self.grants if g.need.backend == backend and not isinstance(g.need, Local)]

    @property
    def local(self) -> list[Grant]:
        return [g for g in self.grants if isinstance(g.need, Local)]


# ---- which steps, which arguments ---------------------------------------------------------------

def selected_steps(runbook: Any, *, option: str | None = None, read_only: bool = False) -> list[Any]:
    """The steps a run may execute: with ``read_only`` the read-only steps of the diagnosis; with
    ``option`` the option-less steps and that option's ("none": no option's); else every step."""
    from opsctl.actions import get

    out = []
    for step in runbook.steps():
        cls = get(step.action)
        if cls is None:
            continue
        if read_only and (step.phase != "diagnose" or not cls.read_only):
            continue
        if option is not None and step.option not in (None, option):
            continue
        out.append(step)
    return out


def _resolve(value: Any, params: dict[str, Any]) -> Any:
    """A step argument's value when it is known before the run, else _UNKNOWN."""
    from opsctl.actions.base import is_template

    if isinstance(value, list):
        items = [_resolve(v, params) for v in value]
        return _UNKNOWN if any(v is _UNKNOWN for v in items) else items
    if not is_template(value):
        return value
    from opsctl.templating import TemplateError, render

    try:
        return render(value, {"params": params})
    except TemplateError:  # steps.*, run.*, a parameter not given: known only at run time
        return _UNKNOWN


def _arg(step: Any, schema: dict[str, Any], name: str, params: dict[str, Any]) -> Any:
    if name in step.args:
        return _resolve(step.args[name], params)
    return schema.get("properties", {}).get(name, {}).get("default", _UNKNOWN)


def _aws_name(value: str) -> str:
    """The resource name in a name, URL or ARN (``arn:aws:lambda:...:function:NAME:ALIAS`` -> NAME)."""
    value = value.rstrip("/")
    if value.startswith("arn:"):
        parts = value.split(":")
        if len(parts) > 6 and parts[5] == "function":
            return parts[6]
        return parts[-1].split("/")[-1]
    return value.rsplit("/", 1)[-1]


def _fill(template: str, step: Any, schema: dict[str, Any], params: dict[str, Any], *,
          aws: bool = False) -> list[str]:
    """Every value of a template: a list argument gives one name per item, an unknown or empty
    value makes the name a wildcard (an enum argument: one name per allowed value)."""
    names = [template]
    for key in _FIELD.findall(template):
        value = _arg(step, schema, key, params)
        prop = schema.get("properties", {}).get(key, {})
        if value is _UNKNOWN:
            value = prop.get("enum") or "*"
        elif isinstance(value, str) and any(t.get("type") == "array" for t in prop.get("anyOf", ())):
            value = [v.strip() for v in value.split(",")]  # a list given as "a,b"
        values = value if isinstance(value, list) else [value]
        values = [str(v) for v in values if v not in (None, "")] or ["*"]
        if aws:
            values = [v if v == "*" else _aws_name(v) for v in values]
        names = [n.replace("{" + key + "}", v) for n in names for v in values]
    return sorted(set(names))


# ---- collection ---------------------------------------------------------------------------------

def collect(runbook: Any, *, option: str | None = None, read_only: bool = False,
            params: dict[str, Any] | None = None, namespace: str = "default",
            principal: str | None = None) -> Permissions:
    """Every permission the selected steps need, their templates filled from the steps' arguments
    (``params``: the runbook parameters given, already coerced)."""
    from opsctl.actions import get

    perms = Permissions(runbook=runbook.id, namespace=namespace, read_only=read_only,
                        principal=principal or service_account_name(runbook.id, read_only=read_only))
    from opsctl.backends.locking import NEEDS as LOCK_NEEDS

    given = dict(params or {})
    for step in selected_steps(runbook, option=option, read_only=read_only):
        cls = get(step.action)
        assert cls is not None
        for need in cls.permissions or ():
            perms.grants += _grants(need, step, cls, given, namespace)
        for need in () if cls.read_only else LOCK_NEEDS.get(cls.backend, ()):
            if isinstance(need, RedisAcl):
                need = replace(need, keys=need.keys.replace("{runbook}", runbook.id))
            perms.grants += [replace(g, action="apply lock")
                             for g in _grants(need, step, cls, given, namespace)]
    return perms


def _grants(need: Need, step: Any, cls: Any, params: dict[str, Any], namespace: str) -> list[Grant]:
    schema = cls.schema

    def fill(template: str, aws: bool = False) -> list[str]:
        return _fill(template, step, schema, params, aws=aws)

    def made(n: Need, ns: str = "") -> Grant:
        return Grant(n, step.id, cls.name, ns)

    if isinstance(need, Kube):
        kind = _arg(step, schema, "kind", params)
        if need.kinds and kind is not _UNKNOWN and kind not in need.kinds:
            return []
        resources = tuple(sorted({r for t in need.resources for r in fill(t)}))
        key = "namespaces" if "namespaces" in schema.get("properties", {}) else "namespace"
        names = [n for n in fill("{" + key + "}") if n != "*"] or [namespace]
        return [made(replace(need, resources=resources), ns) for ns in names]
    if isinstance(need, Iam):
        if need.when and (need.when not in step.args
                          or _resolve(step.args[need.when], params) in (None, "")):
            return []  # the argument is not given: the call is never made
        return [made(replace(need, resources=tuple(sorted({r for t in need.resources
                                                            for r in fill(t, aws=True)}))))]
    if isinstance(need, RedisAcl):
        keys = ",".join(fill(need.keys)) if need.keys else ""
        return [made(replace(need, keys=keys))]
    if isinstance(need, KafkaAcl):
        return [made(replace(need, name=name)) for name in fill(need.name)]
    return [made(need)]


# ---- Kubernetes ---------------------------------------------------------------------------------

def _labels(perms: Permissions) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "opsctl", "opsctl.dev/runbook": perms.runbook,
            "opsctl.dev/access": "read-only" if perms.read_only else "full"}


def rbac_rules(grants: Iterable[Grant]) -> list[dict[str, Any]]:
    """RBAC rules, one per (API group, verbs), resources merged; sorted (stable output)."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for g in grants:
        assert isinstance(g.need, Kube)
        for r in g.need.resources:
            verbs.setdefault((g.need.group, r), set()).update(g.need.verbs)
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), vs in sorted(verbs.items()):
        by_verbs.setdefault((group, tuple(sorted(vs))), []).append(resource)
    return [{"apiGroups": [group], "resources": resources, "verbs": list(vs)}
            for (group, vs), resources in sorted(by_verbs.items())]


def kubernetes_manifests(runbook: Any, *, option: str | None = None, read_only: bool = False,
                         namespace: str = "default", params: dict[str, Any] | None = None
                         ) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for running ``runbook`` in ``namespace``; when its steps
    act in other namespaces as well, a ClusterRole bound in each of them by a RoleBinding (never a
    ClusterRoleBinding).  A runbook that uses no Kubernetes gets the ServiceAccount alone."""
    perms = collect(runbook, option=option, read_only=read_only, namespace=namespace, params=params)
    return manifests(perms)


def manifests(perms: Permissions) -> list[dict[str, Any]]:
    name, ns, labels = perms.principal, perms.namespace, _labels(perms)
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": name, "namespace": ns, "labels": labels}}]
    grants = perms.of("kubernetes")
    if not grants:
        return out
    namespaces = sorted({g.namespace for g in grants})
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    rbac = "rbac.authorization.k8s.io/v1"
    if len(namespaces) == 1:
        target = namespaces[0]
        out.append({"apiVersion": rbac, "kind": "Role",
                    "metadata": {"name": name, "namespace": target, "labels": labels},
                    "rules": rbac_rules(grants)})
        out.append({"apiVersion": rbac, "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": target, "labels": labels},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": subject})
        return out
    # several namespaces: one ClusterRole per namespace's rules would be as many objects; the
    # union of the rules, bound only where the steps act, keeps every other namespace closed
    cluster_role = f"{name}-{ns}"
    out.append({"apiVersion": rbac, "kind": "ClusterRole",
                "metadata": {"name": cluster_role, "labels": labels}, "rules": rbac_rules(grants)})
    for target in namespaces:
        out.append({"apiVersion": rbac, "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": target, "labels": labels},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": cluster_role},
                    "subjects": subject})
    return out


# ---- AWS ----------------------------------------------------------------------------------------

def iam_policy(perms: Permissions) -> dict[str, Any]:
    """An IAM policy document: one statement per set of resources, actions merged."""
    resources: dict[str, set[str]] = {}
    for g in perms.of("aws"):
        assert isinstance(g.need, Iam)
        for action in g.need.actions:
            resources.setdefault(action, set()).update(g.need.resources)
    grouped: dict[tuple[str, ...], list[str]] = {}
    for action, arns in sorted(resources.items()):
        # an ARN that another one's wildcards already cover adds nothing
        key = tuple(sorted(r for r in arns if not any(o != r and fnmatchcase(r, o) for o in arns)))
        grouped.setdefault(key, []).append(action)
    statements = []
    for i, (res, actions) in enumerate(sorted(grouped.items(), key=lambda kv: kv[1]), 1):
        services = sorted({a.split(":")[0] for a in actions})
        statements.append({"Sid": "".join(s.capitalize() for s in services) + str(i), "Effect": "Allow",
                           "Action": actions, "Resource": res[0] if len(res) == 1 else list(res)})
    return {"Version": "2012-10-17", "Statement": statements}


# ---- PostgreSQL, Redis, Kafka -------------------------------------------------------------------

def pg_role_name(principal: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", principal.lower())


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def postgres_sql(perms: Permissions) -> list[str]:
    """SQL statements for psql: the login role (created when missing, no password: set one with
    \\password or ALTER ROLE ... PASSWORD), its predefined roles and role attributes."""
    role = _ident(pg_role_name(perms.principal))
    roles = sorted({r for g in perms.of("postgres") if isinstance(g.need, Pg) for r in g.need.roles})
    attrs = sorted({a for g in perms.of("postgres") if isinstance(g.need, Pg) for a in g.need.attributes})
    if not roles and not attrs:
        return []
    out = [f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"]
    out += [f"GRANT {_ident(r)} TO {role};" for r in roles]
    out += [f"ALTER ROLE {role} {a};" for a in attrs]
    return out


def postgres_notes(perms: Permissions) -> list[str]:
    return sorted({f"{g.action}: {g.need.note}" for g in perms.of("postgres")
                   if isinstance(g.need, Pg) and g.need.note})


def redis_rule(perms: Permissions) -> str:
    """The ACL rule: commands that touch no key at the top, each key pattern with the commands
    that use it in a selector (Redis 7+), so that no command reaches keys it has no business with.
    No password: add >PASSWORD or #SHA256 when creating the user."""
    plain: set[str] = set()
    keyed: dict[str, set[str]] = {}
    for g in perms.of("redis"):
        assert isinstance(g.need, RedisAcl)
        if g.need.keys:
            for k in g.need.keys.split(","):
                keyed.setdefault(k, set()).update(g.need.commands)
        else:
            plain.update(g.need.commands)
    if not plain and not keyed:
        return ""
    parts = ["on", "resetkeys", "resetchannels", "-@all", *("+" + c for c in sorted(plain)), "clearselectors"]
    parts += [f"(~{k} {' '.join('+' + c for c in sorted(cmds))})" for k, cmds in sorted(keyed.items())]
    return " ".join(parts)


def redis_acl(perms: Permissions) -> str:
    rule = redis_rule(perms)
    return f"ACL SETUSER {perms.principal} {rule}" if rule else ""


def kafka_acl_entries(perms: Permissions) -> list[dict[str, Any]]:
    ops: dict[tuple[str, str], set[str]] = {}
    for g in perms.of("kafka"):
        assert isinstance(g.need, KafkaAcl)
        ops.setdefault((g.need.resource_type, g.need.name), set()).update(g.need.operations)
    return [{"principal": f"User:{perms.principal}", "resource_type": rt, "name": name,
             "operations": sorted(o)} for (rt, name), o in sorted(ops.items())]


def kafka_acls(perms: Permissions) -> list[str]:
    """kafka-acls.sh commands (the bootstrap server from $KAFKA_BOOTSTRAP)."""
    out = []
    for e in kafka_acl_entries(perms):
        flag = {"Topic": "--topic", "Group": "--group", "Cluster": "--cluster"}[e["resource_type"]]
        target = flag if e["resource_type"] == "Cluster" else f"{flag} '{e['name']}'"
        ops = " ".join(f"--operation {o}" for o in e["operations"])
        out.append(f'kafka-acls.sh --bootstrap-server "$KAFKA_BOOTSTRAP" --add --allow-principal '
                   f"{e['principal']} {ops} {target}")
    return out
