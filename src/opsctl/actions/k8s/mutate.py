"""Kubernetes actions that change the cluster (scale, rollout restart, rollout undo, pod delete), the
base of every mutating Kubernetes action and the rollout wait they share (the container env patch is
in ``mutate_env``).  Imported by ``opsctl.actions.k8s`` (the registered module).

Each ``plan()`` is read-only and records what it saw; ``apply()`` re-reads and refuses when the
target changed since the plan (someone else scaled, rolled out or edited it meanwhile).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.k8s.common import (
    KIND,
    NAME,
    NS,
    ONLY,
    RESTARTED_AT,
    SELECTOR,
    K8sAction,
    name_or_selector,
    only_guilty,
    pod_info,
    selector_of,
    workload_status,
)
from opsctl.actions.needs import Kube
from opsctl.backends.kubernetes import delete_if_uid
from opsctl.errors import ActionError
from opsctl.records import Change, Plan

WAIT = {"wait": {"type": "boolean", "default": True, "description": "wait for the rollout to complete"},
        "wait_timeout": {"type": "number", "minimum": 1, "default": 300, "description": "seconds"}}
REVISION = "deployment.kubernetes.io/revision"


def wait_rollout(action: K8sAction, kind: str, name: str, timeout: float) -> dict[str, Any]:
    """Poll until the rollout is complete (see workload_status); ActionError when it is not in time."""
    limit = action.ctx.remaining(timeout) or timeout
    start = time.monotonic()
    with action.ctx.progress(f"Rollout {kind} {action.ns}/{name}", total=None) as bar:
        while True:
            st = workload_status(action.read_workload(name, kind), kind)
            bar.update(total=st["desired"], completed=min(st["updated"], st["ready"]),
                       description=f"Rollout {name}: {st['ready']}/{st['desired']} ready, "
                                   f"{st['updated']} updated")
            # the old pods' processes (and their connections) are gone only once deleted, which
            # comes a moment after the counts say "complete": what is verified next depends on it
            terminating = _terminating(action, st["selector"]) if st["rollout_complete"] else -1
            if terminating == 0:
                return {**st, "seconds": round(time.monotonic() - start, 1)}
            if time.monotonic() - start >= limit:
                old = f", {terminating} old pod(s) still terminating" if terminating > 0 else ""
                raise ActionError(f"rollout of {kind} {action.ns}/{name} not complete after {limit:.0f}s: "
                                  f"{st['ready']}/{st['desired']} ready, {st['updated']} updated{old}")
            action.ctx.sleep(0.5)


def _terminating(action: K8sAction, selector: str) -> int:
    return sum(1 for p in action.pods_of(selector) if p.metadata.deletion_timestamp)


class Mutating(K8sAction):
    read_only = False

    def maybe_wait(self, kind: str, name: str) -> dict[str, Any] | None:
        if not self.args.get("wait", True):
            return None
        return wait_rollout(self, kind, name, float(self.args.get("wait_timeout", 300)))

    def validate_on_server(self, fn: Any, *args: Any, what: str) -> None:
        """Send the planned change as a server-side dry run (dryRun=All): validation and admission
        (quotas, policies, webhooks) judge it before the confirmation prompt; nothing is persisted.
        The read-only client of plan() lets exactly this kind of write through."""
        try:
            self.call(fn, *args, what=what, dry_run="All")
        except ActionError as e:
            raise ActionError(f"the API server refuses this change (server-side dry run): {e}") from None

    def recheck(self, kind: str, name: str, field: str, expected: Any, actual: Any) -> None:
        if actual != expected:
            raise ActionError(f"{kind} {self.ns}/{name} changed since the plan ({field}: planned from "
                              f"{expected!r}, now {actual!r}); plan again")


@register
class Scale(Mutating):
    """Scale a deployment or statefulset to an absolute replica count, bounded by max_replicas.

    ```yaml
    - id: scale
      action: k8s.scale
      with: {name: orders, namespace: shop, replicas: 4, max_replicas: 6}
    ```
    """

    name = "k8s.scale"
    # the plan sends the patch as a server-side dry run (dryRun=All): RBAC cannot tell it apart
    permissions = (Kube("apps", ("{kind}s",), ("get",)), Kube("apps", ("{kind}s/scale",), ("patch",)),
                   Kube("", ("pods",), ("list",), apply=True))
    summary = "set spec.replicas (plan: old -> new; refused above max_replicas or to 0 unless allowed)"
    schema = type_schema({"kind": KIND, "name": NAME, "namespace": NS,
                          "replicas": {"type": "integer", "minimum": 0},
                          "max_replicas": {"type": "integer", "minimum": 1, "default": 10,
                                           "description": "blast radius: refuse to scale above this"},
                          "allow_zero": {"type": "boolean", "default": False}, **WAIT},
                         required=["name", "replicas"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        r, m = args.get("replicas"), args.get("max_replicas", 10)
        if isinstance(r, int) and isinstance(m, int) and r > m:
            return [("replicas", f"{r} is above max_replicas {m}")]
        return []

    def plan(self) -> Plan:
        obj = self.read_workload()
        before, after = obj.spec.replicas, int(self.args["replicas"])
        limit = int(self.args.get("max_replicas", 10))
        if after > limit:
            raise ActionError(f"refusing to scale {self.kind} {self.ns}/{obj.metadata.name} to {after}: "
                              f"above max_replicas={limit}")
        if after == 0 and not self.args.get("allow_zero"):
            raise ActionError("refusing to scale to 0 replicas (set allow_zero: true to stop a workload)")
        target = f"{self.kind} {self.ns}/{obj.metadata.name}"
        if after == before:
            return Plan(summary=f"{target} already has {after} replicas")
        self.validate_on_server(self.apps_fn("patch", suffix="_scale"), obj.metadata.name, self.ns,
                                {"spec": {"replicas": after}}, what=target)
        return Plan(summary=f"scale {target} {before} -> {after}",
                    changes=[Change(target, "scale", before, after)],
                    data={"name": obj.metadata.name, "before": before, "after": after})

    def apply(self, plan: Plan) -> dict[str, Any]:
        d = plan.data
        obj = self.read_workload(d["name"])
        self.recheck(self.kind, d["name"], "replicas", d["before"], obj.spec.replicas)
        self.call(self.apps_fn("patch", suffix="_scale"), d["name"], self.ns,
                  {"spec": {"replicas": d["after"]}}, what=d["name"])
        return {"name": d["name"], "before": d["before"], "after": d["after"],
                "rollout": self.maybe_wait(self.kind, d["name"])}


@register
class RolloutRestart(Mutating):
    """Rollout restart (as `kubectl rollout restart`): new pods through the workload's update strategy.

    ```yaml
    - id: restart
      action: k8s.rollout_restart
      with: {kind: statefulset, name: kafka, namespace: shop, wait_timeout: 600}
    ```
    """

    name = "k8s.rollout_restart"
    permissions = (Kube("apps", ("{kind}s",), ("get", "list")),
                   Kube("apps", ("{kind}s",), ("patch",), apply=True),
                   Kube("", ("pods",), ("list",), apply=True))
    summary = "set the restartedAt template annotation on each target (max_targets), then wait"
    schema = type_schema({"kind": KIND, "name": NAME, "selector": SELECTOR, "namespace": NS,
                          "max_targets": {"type": "integer", "minimum": 1, "default": 5}, **ONLY, **WAIT})
    validate_args = classmethod(name_or_selector)

    def plan(self) -> Plan:
        objs, excluded = only_guilty(self.targets(), self.args, self.kind)
        limit = int(self.args.get("max_targets", 5))
        if len(objs) > limit:
            raise ActionError(f"{len(objs)} {self.kind}s match {self.args.get('selector')!r}: above "
                              f"max_targets={limit}")
        changes, warnings = [], []
        for o in objs:
            st = workload_status(o, self.kind)
            changes.append(Change(f"{self.kind} {self.ns}/{o.metadata.name}", "rollout restart",
                                  f"{st['ready']}/{st['desired']} ready, restartedAt={st['restarted_at']}",
                                  "all pods replaced, one at a time"))
            if self.kind == "statefulset" and st["ready"] < st["current"] and \
                    (o.spec.pod_management_policy or "OrderedReady") == "OrderedReady":
                # the statefulset controller never rolls past a pod that is not Running and Ready
                stuck = st["current"] - st["ready"]
                warnings.append(f"{o.metadata.name} is OrderedReady with {stuck} pod(s) not ready: the "
                                "restart stalls until they are; delete them (k8s.delete_pod)")
        left = f"; {len(excluded)} left alone" if excluded else ""
        return Plan(summary=f"rollout restart of {len(objs)} {self.kind}(s){left}", changes=changes,
                    data={"names": [o.metadata.name for o in objs], "excluded": excluded},
                    warnings=excluded + warnings)

    def apply(self, plan: Plan) -> dict[str, Any]:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        fn = self.apps_fn("patch")
        for name in plan.data["names"]:
            self.call(fn, name, self.ns, body, what=f"{self.kind} {self.ns}/{name}")
        rollouts = [self.maybe_wait(self.kind, n) for n in plan.data["names"]]
        return {"restarted": plan.data["names"], "restarted_at": stamp,
                "seconds": [r["seconds"] for r in rollouts if r]}


@register
class RolloutUndo(Mutating):
    """Roll a deployment back to its previous revision (as `kubectl rollout undo`).

    ```yaml
    - id: undo
      action: k8s.rollout_undo
      with: {name: payments-gateway, namespace: shop}
    ```
    """

    name = "k8s.rollout_undo"
    permissions = (Kube("apps", ("deployments",), ("get",)), Kube("apps", ("replicasets",), ("list",)),
                   Kube("apps", ("replicasets",), ("get",), apply=True),
                   Kube("apps", ("deployments",), ("update",), apply=True),
                   Kube("", ("pods",), ("list",), apply=True))
    summary = "restore the pod template of the previous ReplicaSet revision, then wait"
    schema = type_schema({"kind": {"type": "string", "enum": ["deployment"], "default": "deployment"},
                          "name": NAME, "namespace": NS, **WAIT}, required=["name"])

    def _revisions(self, obj: Any) -> list[Any]:
        rss = self.call(self.kube.apps.list_namespaced_replica_set, self.ns, label_selector=selector_of(obj))
        owned = [r for r in rss.items
                 if any(o.uid == obj.metadata.uid for o in r.metadata.owner_references or [])]
        return sorted(owned, key=lambda r: int((r.metadata.annotations or {}).get(REVISION, 0)))

    def plan(self) -> Plan:
        obj = self.read_workload()
        current = int((obj.metadata.annotations or {}).get(REVISION, 0))
        older = [r for r in self._revisions(obj) if int(r.metadata.annotations.get(REVISION, 0)) < current]
        if not older:
            raise ActionError(f"deployment {self.ns}/{obj.metadata.name} has no revision before {current}")
        prev = older[-1]
        prev_rev = int(prev.metadata.annotations[REVISION])
        imgs = ", ".join(c.image for c in obj.spec.template.spec.containers)
        prev_imgs = ", ".join(c.image for c in prev.spec.template.spec.containers)
        cause = (prev.metadata.annotations or {}).get("kubernetes.io/change-cause")
        target = f"deployment {self.ns}/{obj.metadata.name}"
        return Plan(summary=f"undo {target}: revision {current} -> {prev_rev}",
                    changes=[Change(target, "rollout undo",
                                    f"revision {current} ({imgs})", f"revision {prev_rev} ({prev_imgs})",
                                    detail=f"change-cause of {prev_rev}: {cause}" if cause else "")],
                    data={"name": obj.metadata.name, "current": current, "replica_set": prev.metadata.name})

    def apply(self, plan: Plan) -> dict[str, Any]:
        d = plan.data
        obj = self.read_workload(d["name"])
        self.recheck("deployment", d["name"], "revision", d["current"],
                     int((obj.metadata.annotations or {}).get(REVISION, 0)))
        rs = self.call(self.kube.apps.read_namespaced_replica_set, d["replica_set"], self.ns,
                       what=f"replicaset {d['replica_set']}")
        template = self.kube.to_dict(rs.spec.template)
        template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
        body = self.kube.to_dict(obj)
        body["spec"]["template"] = template
        # replace (not patch) so the resourceVersion read above guards against a concurrent change
        self.call(self.kube.apps.replace_namespaced_deployment, d["name"], self.ns, body, what=d["name"])
        return {"name": d["name"], "from_revision": d["current"], "replica_set": d["replica_set"],
                "rollout": self.maybe_wait("deployment", d["name"])}


@register
class DeletePod(Mutating):
    """Delete one pod so its controller replaces it (bare pods are refused: they would not come back).

    ```yaml
    - id: kill_pod
      action: k8s.delete_pod
      with: {pod: "{{ steps.pods.result.pods[0].name }}", namespace: shop}
    ```
    """

    name = "k8s.delete_pod"
    permissions = (Kube("", ("pods",), ("get",)), Kube("", ("pods",), ("delete",), apply=True))
    summary = "delete a single pod owned by a controller (guarded by its uid)"
    schema = type_schema({"pod": {"type": "string", "minLength": 1}, "namespace": NS,
                          "allow_unowned": {"type": "boolean", "default": False}}, required=["pod"])

    def plan(self) -> Plan:
        p = self.call(self.kube.core.read_namespaced_pod, self.args["pod"], self.ns,
                      what=f"pod {self.ns}/{self.args['pod']}")
        owners = [f"{o.kind}/{o.name}" for o in p.metadata.owner_references or []]
        if not owners and not self.args.get("allow_unowned"):
            raise ActionError(f"pod {self.ns}/{p.metadata.name} has no controller: deleting it loses it "
                              "(set allow_unowned: true if that is intended)")
        i = pod_info(p)
        return Plan(summary=f"delete pod {self.ns}/{p.metadata.name}",
                    changes=[Change(f"pod {self.ns}/{p.metadata.name}", "delete",
                                    f"{i['phase']}, ready={i['ready']}, restarts={i['restarts']}",
                                    f"deleted; recreated by {', '.join(owners) or 'nothing'}")],
                    data={"pod": p.metadata.name, "uid": p.metadata.uid})

    def apply(self, plan: Plan) -> dict[str, Any]:
        self.call(self.kube.core.delete_namespaced_pod, plan.data["pod"], self.ns,
                  body=delete_if_uid(plan.data["uid"]),
                  what=f"pod {self.ns}/{plan.data['pod']}")
        return {"deleted": plan.data["pod"]}


@register
class WaitRollout(K8sAction):
    """Wait until a rollout is complete (observedGeneration current, updated == ready == desired).

    ```yaml
    - id: rolled_out
      action: k8s.wait_rollout
      with: {kind: statefulset, name: kafka, namespace: shop, timeout: 600}
    ```
    """

    name = "k8s.wait_rollout"
    permissions = (Kube("apps", ("{kind}s",), ("get",)), Kube("", ("pods",), ("list",)))
    summary = "poll the rollout with progress until complete; fails after timeout seconds"
    schema = type_schema({"kind": KIND, "name": NAME, "namespace": NS,
                          "timeout": {"type": "number", "minimum": 1, "default": 300}}, required=["name"])

    def run(self) -> dict[str, Any]:
        return wait_rollout(self, self.kind, self.args["name"], float(self.args.get("timeout", 300)))

