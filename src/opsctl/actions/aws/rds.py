"""RDS / Aurora: describe a cluster or instance (writer, readers), recent events, and failover."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, is_template, type_schema
from opsctl.actions.needs import Iam
from opsctl.backends.aws import aws_errors, client
from opsctl.errors import ActionError, ArgumentError, Cancelled, StepTimeout
from opsctl.records import Change, Plan

_TARGET = {"cluster": {"type": "string", "description": "Aurora DB cluster identifier"},
           "instance": {"type": "string", "description": "RDS (Multi-AZ) DB instance identifier"}}


def _one_target(args: dict[str, Any]) -> list[tuple[str, str]]:
    given = [k for k in ("cluster", "instance") if args.get(k) not in (None, "")]
    if len(given) == 1 or any(is_template(args.get(k)) for k in ("cluster", "instance")):
        return []
    return [("cluster", "give exactly one of `cluster` or `instance`")]


def _target_of(args: dict[str, Any]) -> tuple[str, str]:
    """("cluster"|"instance", identifier) at run time, when templates left one of them empty."""
    if args.get("cluster") and args.get("instance"):
        raise ArgumentError("give exactly one of `cluster` (Aurora) or `instance` (RDS Multi-AZ), not both")
    if args.get("cluster"):
        return "cluster", str(args["cluster"])
    if args.get("instance"):
        return "instance", str(args["instance"])
    raise ArgumentError("give a DB `cluster` (Aurora) or `instance` (RDS Multi-AZ) identifier")


class _TargetAction(Action):
    """An action on one DB cluster or one DB instance: `cluster` xor `instance`."""

    backend = "aws"

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        return _one_target(args)


def describe_cluster(rds: Any, cluster_id: str) -> dict[str, Any]:
    with aws_errors(f"DB cluster {cluster_id!r}"):
        c = rds.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"][0]
        ids = [m["DBInstanceIdentifier"] for m in c.get("DBClusterMembers", [])]
        found = rds.get_paginator("describe_db_instances").paginate(
            Filters=[{"Name": "db-cluster-id", "Values": [cluster_id]}]) if ids else []
        instances = {i["DBInstanceIdentifier"]: i for page in found for i in page["DBInstances"]}
    members = [{"id": m["DBInstanceIdentifier"], "writer": bool(m.get("IsClusterWriter")),
                "promotion_tier": m.get("PromotionTier", 1),
                "status": instances.get(m["DBInstanceIdentifier"], {}).get("DBInstanceStatus", "unknown"),
                "az": instances.get(m["DBInstanceIdentifier"], {}).get("AvailabilityZone", "")}
               for m in c.get("DBClusterMembers", [])]
    writer = next((m for m in members if m["writer"]), None)
    wstatus = writer["status"] if writer else "missing"
    if writer is None:
        state = f"cluster {cluster_id} is {c.get('Status', '')} and has no writer"
    elif c.get("Status") == "available" and wstatus != "available":
        # the cluster's own status stays "available" while its writer instance is stopped or failing
        state = f"cluster {cluster_id} says available but its writer {writer['id']} is {wstatus}"
    else:
        state = f"cluster {cluster_id} is {c.get('Status', '')}, writer {writer['id']} is {wstatus}"
    healthy = [m["id"] for m in members if not m["writer"] and m["status"] == "available"]
    return {"state": state, "writer_status": wstatus, "healthy_readers": healthy,
            "kind": "cluster", "id": cluster_id, "status": c.get("Status", ""),
            "engine": c.get("Engine", ""), "multi_az": bool(c.get("MultiAZ")) or len(members) > 1,
            "endpoint": c.get("Endpoint", ""), "writer": writer["id"] if writer else None,
            "readers": [m["id"] for m in members if not m["writer"]], "members": members,
            "available": c.get("Status") == "available" and writer is not None
            and writer["status"] == "available"}


def describe_instance(rds: Any, instance_id: str) -> dict[str, Any]:
    with aws_errors(f"DB instance {instance_id!r}"):
        i = rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"][0]
    status = i.get("DBInstanceStatus", "")
    return {"state": f"instance {instance_id} is {status}", "writer_status": status,
            "healthy_readers": [],
            "kind": "instance", "id": instance_id, "status": i.get("DBInstanceStatus", ""),
            "engine": i.get("Engine", ""), "multi_az": bool(i.get("MultiAZ")),
            "endpoint": (i.get("Endpoint") or {}).get("Address", ""), "writer": instance_id,
            "az": i.get("AvailabilityZone", ""), "secondary_az": i.get("SecondaryAvailabilityZone"),
            "readers": list(i.get("ReadReplicaDBInstanceIdentifiers", [])),
            "cluster": i.get("DBClusterIdentifier"),
            "available": i.get("DBInstanceStatus") == "available"}


@register
class Describe(_TargetAction):
    """Status, engine, Multi-AZ, writer and readers of an Aurora cluster or an RDS instance.

    ```yaml
    - id: status
      action: aws.rds.describe
      with: {cluster: orders-db}
      expect:
        - that: "result.available and result.readers | length > 0"
          message: "status {{ result.status }}, writer {{ result.writer }}"
    ```
    """

    name = "aws.rds.describe"
    permissions = (Iam(("rds:DescribeDBClusters", "rds:DescribeDBInstances")),)
    summary = "cluster/instance status, writer, readers, Multi-AZ"
    schema = type_schema(dict(_TARGET))

    def run(self) -> dict[str, Any]:
        kind, ident = _target_of(self.args)
        rds = client(self.ctx, "rds")
        return describe_cluster(rds, ident) if kind == "cluster" else describe_instance(rds, ident)

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['kind']} {result['id']}: {result['status']}, writer {result['writer']}, "
                f"{len(result['readers'])} reader(s), multi_az={result['multi_az']}")


@register
class Events(_TargetAction):
    """Recent RDS events (failovers, reboots, maintenance) for a cluster or an instance.

    ```yaml
    - id: events
      action: aws.rds.events
      with: {cluster: orders-db, minutes: 60}
    ```
    """

    name = "aws.rds.events"
    permissions = (Iam(("rds:DescribeEvents",)),)
    summary = "RDS events of the last N minutes"
    schema = type_schema({**_TARGET, "minutes": {"type": "integer", "minimum": 1, "maximum": 20160,
                                                 "default": 60}})

    def run(self) -> dict[str, Any]:
        kind, source = _target_of(self.args)
        kind = f"db-{kind}"
        start = datetime.now(UTC) - timedelta(minutes=self.args.get("minutes", 60))
        with aws_errors(f"events of {source}"):
            found = client(self.ctx, "rds").describe_events(SourceIdentifier=source, SourceType=kind,
                                                            StartTime=start)["Events"]
        events = [{"time": e["Date"].isoformat(), "message": e.get("Message", ""),
                   "categories": e.get("EventCategories", [])} for e in found]
        return {"events": events[-20:], "count": len(events),
                "failovers": sum(1 for e in events if "failover" in e["categories"])}


@register
class Snapshots(_TargetAction):
    """Latest snapshots of a cluster or an instance (what a restore would start from).

    ```yaml
    - id: snapshots
      action: aws.rds.snapshots
      with: {cluster: orders-db}
      expect:
        - that: "result.latest_age_hours is not none and result.latest_age_hours < 24"
          message: "latest snapshot is {{ result.latest_age_hours }}h old"
    ```
    """

    name = "aws.rds.snapshots"
    permissions = (Iam(("rds:DescribeDBClusterSnapshots", "rds:DescribeDBSnapshots")),)
    summary = "snapshots (newest first) and the age of the latest available one"
    schema = type_schema(dict(_TARGET))

    def run(self) -> dict[str, Any]:
        kind, ident = _target_of(self.args)
        rds = client(self.ctx, "rds")
        with aws_errors(f"snapshots of {ident}"):
            if kind == "cluster":
                found = rds.describe_db_cluster_snapshots(DBClusterIdentifier=ident)["DBClusterSnapshots"]
                key = "DBClusterSnapshotIdentifier"
            else:
                found = rds.describe_db_snapshots(DBInstanceIdentifier=ident)["DBSnapshots"]
                key = "DBSnapshotIdentifier"
        now = datetime.now(UTC)
        snaps = sorted(({"id": x[key], "status": x.get("Status", ""), "type": x.get("SnapshotType", ""),
                         "age_hours": round((now - x["SnapshotCreateTime"]).total_seconds() / 3600, 1)}
                        for x in found if x.get("SnapshotCreateTime")), key=lambda x: x["age_hours"])
        ready = [x for x in snaps if x["status"] == "available"]
        return {"snapshots": snaps[:10], "count": len(snaps),
                "latest": ready[0]["id"] if ready else None,
                "latest_age_hours": ready[0]["age_hours"] if ready else None}


@register
class Failover(_TargetAction):
    """Fail over an Aurora cluster (``failover_db_cluster``, optional target) or a Multi-AZ instance
    (``reboot_db_instance`` with ForceFailover), then wait until the new writer is available.

    ```yaml
    - id: failover
      action: aws.rds.failover
      with: {cluster: orders-db, target_instance: orders-db-2, wait_timeout: 600}
    ```
    """

    name = "aws.rds.failover"
    permissions = (Iam(("rds:DescribeDBClusters", "rds:DescribeDBInstances")),
                   Iam(("rds:FailoverDBCluster",), ("arn:aws:rds:*:*:cluster:{cluster}",), apply=True,
                       when="cluster"),
                   Iam(("rds:RebootDBInstance",), ("arn:aws:rds:*:*:db:{instance}",), apply=True,
                       when="instance"))
    read_only = False
    summary = "promote a reader (Aurora) or the standby (Multi-AZ); waits for available"
    schema = type_schema({**_TARGET,
                          "target_instance": {"type": ["string", "null"],
                                              "description": "Aurora reader to promote"},
                          "wait_timeout": {"type": "number", "minimum": 0, "default": 600},
                          "diagnosed": {"type": ["object", "null"], "description": (
                              "what the diagnosis found failing ({writer: ID} for a cluster, {az: AZ} "
                              "for a Multi-AZ instance): when the live writer / AZ is already another "
                              "one, the failover happened (this run before an interruption, Aurora "
                              "itself, another operator) and the plan is empty")}})

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        errors = super().validate_args(args)
        if args.get("instance") and args.get("target_instance") and not is_template(args["instance"]):
            errors.append(("target_instance", "only an Aurora `cluster` failover can pick a target"))
        return errors

    def plan(self) -> Plan:
        kind, ident = _target_of(self.args)
        rds = client(self.ctx, "rds")
        if kind == "cluster":
            return self._plan_cluster(describe_cluster(rds, ident))
        if self.args.get("target_instance"):
            raise ActionError("target_instance only applies to an Aurora cluster failover")
        return self._plan_instance(describe_instance(rds, ident))

    def _already(self, live: str, key: str, what: str) -> Plan | None:
        """An empty plan when the writer (AZ) the diagnosis found failing is no longer the live one:
        a resumed run, or an automatic failover since the diagnosis, must not fail over again."""
        seen = (self.args.get("diagnosed") or {}).get(key)
        if not seen or seen == live:
            return None
        return Plan(summary=f"nothing to fail over: the {what} is already {live}, not {seen} as diagnosed "
                            "(the failover happened: an earlier attempt of this run, or RDS itself)",
                    data={"already": {key: live, "diagnosed": seen}})

    def _plan_cluster(self, c: dict[str, Any]) -> Plan:
        done = self._already(c["writer"], "writer", f"writer of {c['id']}")
        if done is not None:
            return done
        readers = [m for m in c["members"] if not m["writer"]]
        wanted = self.args.get("target_instance") or None
        if wanted and wanted not in c["readers"]:
            raise ActionError(f"{wanted} is not a reader of cluster {c['id']} (readers: "
                              f"{', '.join(c['readers']) or 'none'})")
        if not readers:
            raise ActionError(f"cluster {c['id']} has no reader to fail over to")
        healthy = [m for m in readers if m["status"] == "available"]
        if wanted and wanted not in [m["id"] for m in healthy]:
            status = next(m["status"] for m in readers if m["id"] == wanted)
            raise ActionError(f"target {wanted} is {status}, not available: RDS would refuse the "
                              "failover, or promote a broken writer")
        if not healthy:
            raise ActionError(f"cluster {c['id']} has no healthy reader to fail over to ("
                              + ", ".join(f"{m['id']} is {m['status']}" for m in readers) + ")")
        # without a target, Aurora picks by promotion tier; opsctl names the healthy reader it
        # would pick and asks for it explicitly, so that a stopped reader is never chosen
        target = wanted or sorted(healthy, key=lambda m: (m["promotion_tier"], m["id"]))[0]["id"]
        warnings = [f"{m['id']} is {m['status']}: not a failover target" for m in readers
                    if m["status"] != "available"]
        change = Change(target=f"db-cluster {c['id']}", operation="failover",
                        before={"writer": c["writer"]}, after={"writer": target},
                        detail=("explicit target" if wanted else "healthy reader first in promotion tier")
                        + f"; {target} is available")
        return Plan(summary=f"fail over {c['id']}: writer {c['writer']} -> {target}", changes=[change],
                    data={"kind": "cluster", "id": c["id"], "writer": c["writer"], "target": target,
                          "explicit": True}, warnings=warnings)

    def _plan_instance(self, i: dict[str, Any]) -> Plan:
        done = self._already(i["az"], "az", f"primary AZ of {i['id']}")
        if done is not None:
            return done
        if not i["multi_az"]:
            raise ActionError(f"instance {i['id']} is not Multi-AZ: a forced failover has no standby "
                              "to promote (a plain reboot would only restart it)")
        change = Change(target=f"db-instance {i['id']}", operation="reboot --force-failover",
                        before={"az": i["az"]}, after={"az": i["secondary_az"] or "standby AZ"},
                        detail="the standby in the other AZ becomes primary; connections drop")
        return Plan(summary=f"force failover of {i['id']} (Multi-AZ)", changes=[change],
                    data={"kind": "instance", "id": i["id"], "writer": i["id"], "az": i["az"],
                          "target": i["id"]})

    def apply(self, plan: Plan) -> dict[str, Any]:
        d = plan.data
        rds = client(self.ctx, "rds")
        if d["kind"] == "cluster":
            now = describe_cluster(rds, d["id"])
            if now["writer"] != d["writer"]:
                raise ActionError(f"writer of {d['id']} changed since the plan ({d['writer']} -> "
                                  f"{now['writer']}): re-run to plan again")
            kwargs = {"TargetDBInstanceIdentifier": d["target"]} if d["explicit"] else {}
            with aws_errors(f"failover of {d['id']}"):
                rds.failover_db_cluster(DBClusterIdentifier=d["id"], **kwargs)
        else:
            with aws_errors(f"reboot of {d['id']}"):
                rds.reboot_db_instance(DBInstanceIdentifier=d["id"], ForceFailover=True)
        try:
            return self._wait(rds, d)
        except (Cancelled, StepTimeout) as e:  # the failover was sent: say so in the run log
            raise e.with_partial({"failover_sent": True, "previous_writer": d["writer"],
                                  "target": d["target"], "waited": "cut"},
                                 f"failover of {d['id']} was sent; the wait for the new writer was cut") \
                from None

    def _wait(self, rds: Any, d: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        timeout = self.args.get("wait_timeout", 600)
        seen: dict[str, Any] = {}
        with self.ctx.progress(f"Waiting for {d['id']} to be available", total=None) as bar:
            while True:
                seen = (describe_cluster(rds, d["id"]) if d["kind"] == "cluster"
                        else describe_instance(rds, d["id"]))
                bar.update(description=f"{d['id']}: {seen['status']}, writer {seen['writer']}")
                # the writer must have moved away from the old one (Aurora may choose another reader)
                moved = d["kind"] == "instance" or seen["writer"] not in (None, d["writer"])
                if seen["available"] and moved:
                    break
                if time.monotonic() - started >= timeout:
                    raise ActionError(f"{d['id']} not available with a new writer after {timeout:.0f}s "
                                      f"(status {seen['status']}, writer {seen['writer']})")
                self.ctx.sleep(min(5.0, max(0.5, timeout / 100)))
        return {"previous_writer": d["writer"], "writer": seen["writer"], "status": seen["status"],
                "available": seen["available"], "waited_s": round(time.monotonic() - started, 1)}
