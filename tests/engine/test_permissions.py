"""The permission half of the action contract: every registered action declares what it needs, the
declarations are consistent with the action's kind and schema, docs/permissions.md is current, and
`opsctl permissions` prints what each system's tool takes.  (That the generated permissions are
enough, and that one missing is an exit-4 naming it, is shown on real servers in tests/export/.)"""

from __future__ import annotations

import json
import re
import runpy
from collections.abc import Callable

import yaml

from opsctl import actions, catalog
from opsctl.actions.base import Action
from opsctl.actions.needs import Iam, KafkaAcl, Kube, Local, Pg, RedisAcl
from opsctl.export import permissions as P
from tests.fixtures.core import REPO, Result

REGISTRY = actions.load_all()
SYSTEM = {"kubernetes": Kube, "aws": Iam, "postgres": Pg, "redis": RedisAcl, "kafka": KafkaAcl}
READ_VERBS = {"get", "list", "watch"}
READ_IAM = re.compile(r"^[a-z0-9-]+:(Describe|List|Get|BatchGet|Head)[A-Za-z]*$")
# what a read-only action may receive; aws.sqs.peek receives messages and makes them visible again
READ_IAM_EXCEPTIONS = {("aws.sqs.peek", "sqs:ReceiveMessage"),
                       ("aws.sqs.peek", "sqs:ChangeMessageVisibility")}
FIELD = re.compile(r"\{([a-z_]+)\}")


def _templates(need: object) -> list[str]:
    if isinstance(need, Kube):
        return list(need.resources)
    if isinstance(need, Iam):
        return list(need.resources)
    if isinstance(need, RedisAcl):
        return [need.keys]
    if isinstance(need, KafkaAcl):
        return [need.name]
    return []


def declaration_problems(registry: dict[str, type[Action]]) -> list[str]:
    problems = []
    for name, cls in sorted(registry.items()):
        needs = cls.permissions
        if not needs:
            problems.append(f"{name}: declares no permissions (Action.permissions)")
            continue
        kind = SYSTEM.get(cls.backend)
        for need in needs:
            if kind is not None and not isinstance(need, kind | Local):
                problems.append(f"{name}: a {cls.backend} action declares a {type(need).__name__}")
            if isinstance(need, Local) and need.backend != cls.backend:
                problems.append(f"{name}: Local need for {need.backend}, the action is {cls.backend}")
            for template in _templates(need):
                for arg in FIELD.findall(template):
                    if arg not in cls.schema.get("properties", {}):
                        problems.append(f"{name}: {template!r} names {arg!r}, not an argument")
            if isinstance(need, Kube) and need.kinds and "kind" not in cls.schema["properties"]:
                problems.append(f"{name}: kinds={need.kinds} but no kind argument")
            if isinstance(need, Iam) and need.when and need.when not in cls.schema["properties"]:
                problems.append(f"{name}: when={need.when!r} is not an argument")
        if cls.backend in SYSTEM and not any(isinstance(n, SYSTEM[cls.backend]) for n in needs) \
                and cls.name != "kafka.brokers":  # raw ApiVersions/Metadata requests need no ACL
            problems.append(f"{name}: no {cls.backend} permission declared")
    return problems


def test_every_action_declares_its_permissions() -> None:
    problems = declaration_problems(REGISTRY)
    assert not problems, "\n".join(problems)


def test_an_action_without_a_declaration_is_refused() -> None:
    class Undeclared(Action):
        name, backend = "redis.undeclared", "redis"

    class Wrong(Action):
        name, backend = "redis.wrong", "redis"
        permissions = (Kube("apps", ("{nope}s",), ("get",)),)

    assert declaration_problems({"redis.undeclared": Undeclared, "redis.wrong": Wrong}) == [
        "redis.undeclared: declares no permissions (Action.permissions)",
        "redis.wrong: a redis action declares a Kube",
        "redis.wrong: '{nope}s' names 'nope', not an argument",
        "redis.wrong: no redis permission declared"]


def test_read_only_actions_declare_only_reads_and_mutations_their_writes() -> None:
    problems = []
    for name, cls in sorted(REGISTRY.items()):
        needs = cls.permissions or ()
        if cls.read_only:
            problems += [f"{name}: read-only, yet {n} is apply-only" for n in needs if n.apply]
            for n in needs:
                if isinstance(n, Kube) and set(n.verbs) - READ_VERBS:
                    problems.append(f"{name}: read-only, yet verbs {sorted(set(n.verbs) - READ_VERBS)}")
                if isinstance(n, Iam):
                    problems += [f"{name}: read-only, yet {a}" for a in n.actions
                                 if not READ_IAM.match(a) and (name, a) not in READ_IAM_EXCEPTIONS]
                if isinstance(n, Pg) and (n.attributes or set(n.roles) - {"pg_monitor", "pg_read_all_stats"}):
                    problems.append(f"{name}: read-only, yet {n.roles} {n.attributes}")
        elif cls.backend in SYSTEM and not any(n.apply for n in needs):
            problems.append(f"{name}: mutating, yet nothing marked apply=True (what does apply() need?)")
    assert not problems, "\n".join(problems)


def test_docs_permissions_table_is_current() -> None:
    doc = REPO / "docs" / "permissions.md"
    generate = runpy.run_path(str(REPO / "scripts" / "permissions-doc.py"))["generate"]
    assert doc.read_text() == generate(), \
        "docs/permissions.md is stale: run .venv/bin/python scripts/permissions-doc.py"


def test_the_diagnosis_needs_less_than_the_whole_runbook() -> None:
    rb = catalog.load("rb-006")
    full, read = P.collect(rb), P.collect(rb, read_only=True)
    full_verbs = {v for g in full.of("kubernetes") for v in g.need.verbs}  # type: ignore[union-attr]
    read_verbs = {v for g in read.of("kubernetes") for v in g.need.verbs}  # type: ignore[union-attr]
    assert "patch" in full_verbs and read_verbs <= READ_VERBS
    assert "GRANT pg_signal_backend TO opsctl_rb_006;" in P.postgres_sql(full)
    assert P.postgres_sql(read) == [P.postgres_sql(read)[0], "GRANT pg_monitor TO opsctl_rb_006_read;"]


def cli(*args: str) -> str:
    """`opsctl ARGS` in this process (the output forms; exit codes and errors: a real subprocess
    below), its stdout."""
    from typer.testing import CliRunner

    from opsctl.cli.main import app

    got = CliRunner().invoke(app, list(args))
    assert got.exit_code == 0, got.output
    return str(got.stdout)


def test_parameters_given_name_the_resources() -> None:
    wild = json.loads(cli("permissions", "rb-007", "--for", "aws", "-o", "json"))
    exact = json.loads(cli("permissions", "rb-007", "--for", "aws", "-o", "json", "-p", "queue=orders",
                           "-p", "dlq=https://sqs.eu-west-1.amazonaws.com/1/orders-dlq"))
    send = [s for s in exact["Statement"] if "sqs:SendMessage" in s["Action"]]
    assert send[0]["Resource"] == "arn:aws:sqs:*:*:orders"
    delete = [s for s in exact["Statement"] if "sqs:DeleteMessage" in s["Action"]]
    assert delete[0]["Resource"] == "arn:aws:sqs:*:*:orders-dlq"
    assert all(s["Resource"] in ("*", "arn:aws:sqs:*:*:*") for s in wild["Statement"])


def test_for_prints_only_what_the_tool_takes(opsctl: Callable[..., Result]) -> None:
    docs = list(yaml.safe_load_all(cli("permissions", "rb-006", "--for", "kubernetes", "-o", "yaml",
                                       "-n", "shop")))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    assert {d["metadata"]["namespace"] for d in docs} == {"shop"}
    assert docs[2]["subjects"] == [{"kind": "ServiceAccount", "name": "opsctl-rb-006", "namespace": "shop"}]
    sql = cli("permissions", "rb-013", "--for", "postgres", "--read-only")
    assert all(line.endswith(";") for line in sql.splitlines()), sql
    assert "ACL SETUSER opsctl-rb-010 on " in cli("permissions", "rb-010", "--for", "redis")
    text = cli("permissions", "rb-008")
    assert "## Kubernetes" in text and "## Kafka ACLs" in text and "kafka-acls.sh" in text
    nothing = opsctl("permissions", "rb-006", "--for", "aws")
    assert nothing.code == 2 and nothing.stdout == "" and "makes no aws call" in nothing.stderr
    assert "Traceback" not in nothing.output


def test_steps_in_several_namespaces_get_one_cluster_role_bound_in_each() -> None:
    rb = catalog.load("rb-001")  # incident.sweep lists workloads in every namespace it is given
    docs = P.kubernetes_manifests(rb, namespace="ops", params={"namespaces": "shop,pay"})
    assert [(d["kind"], d["metadata"].get("namespace")) for d in docs] == [
        ("ServiceAccount", "ops"), ("ClusterRole", None), ("RoleBinding", "pay"), ("RoleBinding", "shop")]
    assert {d["roleRef"]["name"] for d in docs[2:]} == {docs[1]["metadata"]["name"]}
    assert all(d["subjects"] == [{"kind": "ServiceAccount", "name": "opsctl-rb-001", "namespace": "ops"}]
               for d in docs[2:])
    single = P.kubernetes_manifests(rb, namespace="ops")  # the parameter not given: the SA's namespace
    assert [(d["kind"], d["metadata"]["namespace"]) for d in single] == [
        ("ServiceAccount", "ops"), ("Role", "ops"), ("RoleBinding", "ops")]
