"""What an action needs on the systems it talks to: the permission half of the action contract.

Each registered action declares ``permissions``, next to its ``schema``: a tuple of the records below.
``opsctl permissions`` (``opsctl.export.permissions``) collects them over a runbook's steps and prints a
Kubernetes Role, an IAM policy, PostgreSQL GRANTs, a Redis ACL rule and Kafka ACLs.  A meta-test fails
any action that declares none.

Templates: ``{arg}`` in a resource, ARN, key pattern or Kafka resource name is replaced by the step's
value of that argument (a value templated from a runbook parameter is known only when the parameter
is given: otherwise the whole name is a wildcard).  ``apply=True`` marks what only ``apply()`` needs
(the mutation itself); ``plan()`` and ``run()`` need the rest.

This module is plain data: importing it costs nothing (``opsctl --help`` never does).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kube:
    """A Kubernetes RBAC rule in the step's namespace.  ``resources`` may use ``{kind}`` (the
    action's ``kind`` argument: deployment or statefulset; every value of its enum when unknown)."""

    group: str  # "" is the core group
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    apply: bool = False
    backend: str = "kubernetes"
    kinds: tuple[str, ...] = ()  # only for these values of ``kind`` (all when empty or unknown)


@dataclass(frozen=True)
class Iam:
    """IAM actions (``sqs:ReceiveMessage``) on resource ARN templates (``*`` when the API takes no
    resource-level permission or the resource is found by a lookup).  ``when`` names an argument
    without which the call is never made (``rds:RebootDBInstance`` only for an ``instance``)."""

    actions: tuple[str, ...]
    resources: tuple[str, ...] = ("*",)
    apply: bool = False
    when: str = ""
    backend: str = "aws"


@dataclass(frozen=True)
class Pg:
    """PostgreSQL: predefined roles to grant (``pg_monitor``, ``pg_signal_backend``...) and role
    attributes (``CREATEROLE``); ``note`` for what cannot be derived (tables a query reads)."""

    roles: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    note: str = ""
    apply: bool = False
    backend: str = "postgres"


@dataclass(frozen=True)
class RedisAcl:
    """Redis ACL commands (``info``, ``client|kill``) and the key pattern they touch (``""`` when
    they touch no key)."""

    commands: tuple[str, ...]
    keys: str = ""
    apply: bool = False
    backend: str = "redis"


@dataclass(frozen=True)
class KafkaAcl:
    """Kafka ACL operations on a resource: ``Topic``, ``Group`` or ``Cluster`` named by a template
    (``kafka-cluster`` for the cluster)."""

    resource_type: str
    name: str
    operations: tuple[str, ...]
    apply: bool = False
    backend: str = "kafka"


@dataclass(frozen=True)
class Local:
    """A need outside the five permission systems (network access to a URL, a writable path, a
    webhook secret): shown in the table, never in a manifest."""

    backend: str
    what: str
    apply: bool = False


Need = Kube | Iam | Pg | RedisAcl | KafkaAcl | Local

# ARN templates shared by the AWS actions (names, URLs and ARNs given as arguments are reduced to the
# resource's name, see opsctl.export.permissions)
QUEUE_ARN = ("arn:aws:sqs:*:*:{queue}",)
DLQ_ARN = ("arn:aws:sqs:*:*:{dlq}",)
FUNCTION_ARN = ("arn:aws:lambda:*:*:function:{function}", "arn:aws:lambda:*:*:function:{function}:*")
SERVICE_ARN = ("arn:aws:ecs:*:*:service/{cluster}/{service}",)
