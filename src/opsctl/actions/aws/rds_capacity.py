"""Aurora capacity: add a reader instance to a cluster (the writer's reads and its replicas' load
move to more instances), waiting until it is available."""

from __future__ import annotations

import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.aws.rds import describe_cluster
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import Iam
from opsctl.backends.aws import aws_errors, client
from opsctl.errors import ActionError, ArgumentError, Cancelled, StepTimeout
from opsctl.records import Change, Plan


def _instance_class(rds: Any, instance_id: str) -> str:
    with aws_errors(f"DB instance {instance_id!r}"):
        found = rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
    return str(found[0].get("DBInstanceClass", "")) if found else ""


@register
class AddReader(Action):
    """Add a reader to an Aurora cluster: same engine, the writer's instance class unless told,
    a free name (``<cluster>-reader-N``) unless told; refused past `max_readers`; waits until the
    new instance is available (creating one takes minutes on AWS).

    ```yaml
    - id: add_reader
      action: aws.rds.add_reader
      with: {cluster: orders-db, instance_class: db.r6g.xlarge, max_readers: 5}
    ```
    """

    name = "aws.rds.add_reader"
    # CreateDBInstance is authorized on the new instance (`instance`, else <cluster>-reader-N), the
    # cluster it joins, and the groups it gets: the default parameter and option groups, the
    # cluster's subnet group (its name is not an argument)
    permissions = (Iam(("rds:DescribeDBClusters", "rds:DescribeDBInstances")),
                   Iam(("rds:CreateDBInstance",), ("arn:aws:rds:*:*:db:{instance}",), apply=True,
                       when="instance"),
                   Iam(("rds:CreateDBInstance",), ("arn:aws:rds:*:*:db:{cluster}-reader-*",
                                                   "arn:aws:rds:*:*:cluster:{cluster}",
                                                   "arn:aws:rds:*:*:pg:default*",
                                                   "arn:aws:rds:*:*:og:default*",
                                                   "arn:aws:rds:*:*:subgrp:*"), apply=True))
    backend = "aws"
    read_only = False
    summary = "create a reader instance in an Aurora cluster (blast radius: max_readers); waits for it"
    schema = type_schema({
        "cluster": {"type": "string", "minLength": 1, "description": "Aurora DB cluster identifier"},
        "instance": {"type": "string", "description": "name of the new reader (default <cluster>-reader-N)"},
        "instance_class": {"type": "string", "description": "default: the writer's class"},
        "max_readers": {"type": "integer", "minimum": 1, "maximum": 15, "default": 5},
        "wait_timeout": {"type": "number", "minimum": 0, "default": 1200},
    }, required=["cluster"])

    def plan(self) -> Plan:
        cluster = str(self.args["cluster"])
        rds = client(self.ctx, "rds")
        c = describe_cluster(rds, cluster)
        if not c["writer"]:
            raise ActionError(f"cluster {cluster} has no writer: a reader cannot replicate from it")
        limit = int(self.args.get("max_readers", 5))
        readers = c["readers"]
        if len(readers) + 1 > limit:
            raise ActionError(f"cluster {cluster} already has {len(readers)} reader(s) "
                              f"({', '.join(readers)}): one more exceeds max_readers={limit}")
        members = {m["id"] for m in c["members"]}
        name = str(self.args.get("instance") or "")
        if name and name in members:
            raise ArgumentError(f"{name} is already a member of cluster {cluster}")
        if not name:
            name = next(f"{cluster}-reader-{n}" for n in range(1, 100)
                        if f"{cluster}-reader-{n}" not in members)
        cls = str(self.args.get("instance_class") or _instance_class(rds, c["writer"]))
        if not cls:
            raise ArgumentError(f"the class of writer {c['writer']} is unknown: give instance_class")
        change = Change(target=f"db-cluster {cluster}", operation="add reader",
                        before={"readers": sorted(readers)}, after={"readers": sorted([*readers, name])},
                        detail=f"new instance {name} ({cls}, {c['engine']}); billed from creation")
        return Plan(summary=f"add reader {name} ({cls}) to {cluster}", changes=[change],
                    data={"cluster": cluster, "instance": name, "instance_class": cls,
                          "engine": c["engine"], "readers": sorted(readers), "max_readers": limit})

    def apply(self, plan: Plan) -> dict[str, Any]:
        d = plan.data
        rds = client(self.ctx, "rds")
        now = describe_cluster(rds, d["cluster"])
        if d["instance"] in {m["id"] for m in now["members"]}:
            raise ActionError(f"{d['instance']} appeared in {d['cluster']} since the plan: re-run to plan "
                              "again")
        if len(now["readers"]) + 1 > d["max_readers"]:
            raise ActionError(f"{d['cluster']} has {len(now['readers'])} reader(s) now: one more exceeds "
                              f"max_readers={d['max_readers']}")
        with aws_errors(f"create reader {d['instance']}"):
            rds.create_db_instance(DBInstanceIdentifier=d["instance"], DBClusterIdentifier=d["cluster"],
                                   Engine=d["engine"], DBInstanceClass=d["instance_class"])
        try:
            return self._wait(rds, d)
        except (Cancelled, StepTimeout) as e:
            raise e.with_partial({"created": d["instance"], "waited": "cut"},
                                 f"reader {d['instance']} was created; the wait for it was cut") from None

    def _wait(self, rds: Any, d: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        timeout = float(self.args.get("wait_timeout", 1200))
        status = "creating"
        with self.ctx.progress(f"Waiting for {d['instance']} to be available", total=None) as bar:
            while True:
                c = describe_cluster(rds, d["cluster"])
                status = next((m["status"] for m in c["members"] if m["id"] == d["instance"]), "missing")
                bar.update(description=f"{d['instance']}: {status}")
                if status == "available":
                    break
                if time.monotonic() - started >= timeout:
                    raise ActionError(f"reader {d['instance']} is {status}, not available after "
                                      f"{timeout:.0f}s")
                self.ctx.sleep(min(15.0, max(0.5, timeout / 100)))
        return {"instance": d["instance"], "instance_class": d["instance_class"], "status": status,
                "readers": sorted(c["readers"]), "waited_s": round(time.monotonic() - started, 1)}
