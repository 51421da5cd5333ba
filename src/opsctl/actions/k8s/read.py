"""Kubernetes read-only actions: workload and pod state, rollout history, events, logs, HPA."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import is_template, type_schema
from opsctl.actions.k8s.common import (
    KIND,
    NAME,
    NS,
    SELECTOR,
    K8sAction,
    name_or_selector,
    pod_info,
    selector_of,
    workload_status,
)
from opsctl.actions.needs import Kube
from opsctl.backends.kubernetes import age_seconds, iso
from opsctl.errors import ActionError


@register
class Workload(K8sAction):
    """Desired / ready / available / updated replicas and conditions of one deployment or statefulset.

    ```yaml
    - id: downstream
      action: k8s.workload
      with: {kind: deployment, name: payments-gateway, namespace: shop}
      expect:
        - that: "result.ready == result.desired"
          message: "{{ result.ready }}/{{ result.desired }} replicas ready"
    ```
    """

    name = "k8s.workload"
    permissions = (Kube("apps", ("{kind}s",), ("get",)),)
    summary = "replica counts, rollout completeness and conditions of a deployment / statefulset"
    schema = type_schema({"kind": KIND, "name": NAME, "namespace": NS}, required=["name"])

    def run(self) -> dict[str, Any]:
        return workload_status(self.read_workload(), self.kind)

    @classmethod
    def summarize(cls, r: Any) -> str:
        done = "rollout complete" if r["rollout_complete"] else "rollout NOT complete"
        return f"{r['kind']} {r['namespace']}/{r['name']}: {r['ready']}/{r['desired']} ready, " \
               f"{r['updated']} updated, {done}"


@register
class Workloads(K8sAction):
    """Every deployment (or statefulset) matching a label selector, with totals.

    ```yaml
    - id: consumers
      action: k8s.workloads
      with: {selector: "role=kafka-consumer", namespace: shop}
      expect:
        - that: "result.not_ready_count == 0"
    ```
    """

    name = "k8s.workloads"
    permissions = (Kube("apps", ("{kind}s",), ("list",)),)
    summary = "deployments / statefulsets matching a label selector, with not-ready totals"
    schema = type_schema({"kind": KIND, "selector": SELECTOR, "namespace": NS}, required=["selector"])

    def run(self) -> dict[str, Any]:
        items = [workload_status(o, self.kind) for o in self.list_workloads(self.args["selector"])]
        bad = [i["name"] for i in items if i["ready"] < i["desired"]]
        return {"count": len(items), "not_ready_count": len(bad), "not_ready": bad, "items": items,
                "desired_total": sum(i["desired"] for i in items),
                "ready_total": sum(i["ready"] for i in items)}

    @classmethod
    def summarize(cls, r: Any) -> str:
        bad = f"; not ready: {', '.join(r['not_ready'])}" if r["not_ready"] else ""
        return f"{r['count']} workload(s), {r['ready_total']}/{r['desired_total']} replicas ready{bad}"


@register
class RolloutHistory(K8sAction):
    """Rollout revisions of a deployment (its ReplicaSets) or statefulset (ControllerRevisions), newest
    first, with creation time and change-cause: answers "what changed recently".

    ```yaml
    - id: recent_changes
      action: k8s.rollout_history
      with: {name: payments-gateway, namespace: shop, window: 3600}
      expect:
        - that: "result.recent_count == 0"
          severity: warning
          message: "rolled out {{ result.recent_count }} time(s) in the last hour"
    ```
    """

    name = "k8s.rollout_history"
    permissions = (Kube("apps", ("{kind}s",), ("get",)),
                   # the revisions: ReplicaSets of a deployment, ControllerRevisions of a statefulset
                   Kube("apps", ("replicasets",), ("list",), kinds=("deployment",)),
                   Kube("apps", ("controllerrevisions",), ("list",), kinds=("statefulset",)))
    summary = "revisions with creation time, change-cause and images (recent_count within window)"
    schema = type_schema({"kind": KIND, "name": NAME, "namespace": NS,
                          "window": {"type": "number", "minimum": 0, "default": 3600,
                                     "description": "seconds; revisions newer than this count as recent"},
                          "limit": {"type": "integer", "minimum": 1, "default": 10}}, required=["name"])

    def run(self) -> dict[str, Any]:
        obj = self.read_workload()
        revs = self._deployment_revs(obj) if self.kind == "deployment" else self._sts_revs(obj)
        revs.sort(key=lambda r: r["revision"], reverse=True)
        window = float(self.args.get("window", 3600))
        recent = [r for r in revs if r["age_seconds"] is not None and r["age_seconds"] <= window]
        latest = revs[0] if revs else None
        return {"name": obj.metadata.name, "current_revision": latest["revision"] if latest else None,
                "revision_count": len(revs), "recent_count": len(recent),
                "latest_created": latest["created"] if latest else None,
                "latest_age_seconds": latest["age_seconds"] if latest else None,
                "revisions": revs[: int(self.args.get("limit", 10))]}

    @classmethod
    def summarize(cls, r: Any) -> str:
        age = r["latest_age_seconds"]
        when = f", latest {age / 60:.0f} min ago" if age is not None else ""
        return (f"revision {r['current_revision']} ({r['revision_count']} kept, "
                f"{r['recent_count']} recent{when})")

    def _owned(self, items: list[Any], obj: Any) -> list[Any]:
        return [i for i in items if any(o.uid == obj.metadata.uid for o in i.metadata.owner_references or [])]

    def _deployment_revs(self, obj: Any) -> list[dict[str, Any]]:
        rss = self.call(self.kube.apps.list_namespaced_replica_set, self.ns, label_selector=selector_of(obj))
        out = []
        for rs in self._owned(rss.items, obj):
            ann = rs.metadata.annotations or {}
            out.append({"revision": int(ann.get("deployment.kubernetes.io/revision", 0)),
                        "created": iso(rs.metadata.creation_timestamp),
                        "age_seconds": age_seconds(rs.metadata.creation_timestamp),
                        "change_cause": ann.get("kubernetes.io/change-cause"),
                        "images": [c.image for c in rs.spec.template.spec.containers],
                        "replicas": rs.status.replicas or 0, "replica_set": rs.metadata.name})
        return out

    def _sts_revs(self, obj: Any) -> list[dict[str, Any]]:
        crs = self.call(self.kube.apps.list_namespaced_controller_revision, self.ns,
                        label_selector=selector_of(obj))
        return [{"revision": cr.revision, "created": iso(cr.metadata.creation_timestamp),
                 "age_seconds": age_seconds(cr.metadata.creation_timestamp),
                 "change_cause": (cr.metadata.annotations or {}).get("kubernetes.io/change-cause"),
                 "images": [], "replicas": None, "controller_revision": cr.metadata.name}
                for cr in self._owned(crs.items, obj)]


@register
class Pods(K8sAction):
    """Pods of a workload (or a label selector): phase, readiness, restarts, last termination reason.

    ```yaml
    - id: pods
      action: k8s.pods
      with: {kind: deployment, name: payments-gateway, namespace: shop}
      expect:
        - that: "result.oom_killed_count == 0"
          message: "{{ result.oom_killed_count }} pod(s) were OOMKilled"
    ```
    """

    name = "k8s.pods"
    permissions = (Kube("apps", ("{kind}s",), ("get",)), Kube("", ("pods",), ("list",)))
    summary = "pods with phase, readiness, restart counts and OOMKilled / Error terminations"
    schema = type_schema({"kind": KIND, "name": NAME, "selector": SELECTOR, "namespace": NS})
    validate_args = classmethod(name_or_selector)

    def run(self) -> dict[str, Any]:
        selector = self.args.get("selector") or selector_of(self.read_workload())
        found = self.pods_of(selector)
        # pods being deleted belong to the past rollout: counted apart, as kubectl's "Terminating"
        pods = [pod_info(p) for p in found if not p.metadata.deletion_timestamp]
        reasons = [p["last_termination_reason"] for p in pods]
        return {"count": len(pods), "terminating_count": len(found) - len(pods),
                "ready_count": sum(p["ready"] for p in pods),
                "not_ready_count": sum(not p["ready"] for p in pods),
                "restarts_total": sum(p["restarts"] for p in pods),
                "oom_killed_count": reasons.count("OOMKilled"), "error_count": reasons.count("Error"),
                "crashloop_count": sum(p["waiting_reason"] == "CrashLoopBackOff" for p in pods),
                "pods": pods}

    @classmethod
    def summarize(cls, r: Any) -> str:
        return (f"{r['ready_count']}/{r['count']} pods ready, {r['restarts_total']} restarts, "
                f"{r['oom_killed_count']} OOMKilled, {r['terminating_count']} terminating")


@register
class Events(K8sAction):
    """CoreV1 events about an object (and, with include_pods, about the pods named after it), newest first.

    ```yaml
    - id: events
      action: k8s.events
      with: {kind: deployment, name: payments-gateway, namespace: shop, include_pods: true}
      expect:
        - that: "result.warning_count == 0"
          severity: warning
    ```
    """

    name = "k8s.events"
    permissions = (Kube("", ("events",), ("list",)),)
    summary = "events of an object (optionally of its pods), newest first, with warning count"
    schema = type_schema({"kind": {"type": "string", "default": "deployment"}, "name": NAME, "namespace": NS,
                          "include_pods": {"type": "boolean", "default": True},
                          "limit": {"type": "integer", "minimum": 1, "default": 20}}, required=["name"])

    def run(self) -> dict[str, Any]:
        name = self.args["name"]
        evs = self.call(self.kube.core.list_namespaced_event, self.ns).items
        mine = [e for e in evs if e.involved_object.name == name
                or (self.args.get("include_pods", True) and e.involved_object.kind in ("Pod", "ReplicaSet")
                    and e.involved_object.name.startswith(name + "-"))]
        def when(e: Any) -> datetime:
            return e.last_timestamp or e.event_time or e.metadata.creation_timestamp or datetime.min.replace(
                tzinfo=UTC)
        mine.sort(key=when, reverse=True)
        out = [{"type": e.type, "reason": e.reason, "message": e.message, "count": e.count or 1,
                "object": f"{e.involved_object.kind}/{e.involved_object.name}", "last_seen": iso(when(e))}
               for e in mine[: int(self.args.get("limit", 20))]]
        warn = next((e for e in mine if e.type == "Warning"), None)
        return {"count": len(mine), "warning_count": sum(e.type == "Warning" for e in mine),
                "latest_warning": f"{warn.reason}: {warn.message}" if warn else None, "events": out}


@register
class Logs(K8sAction):
    """Recent log lines of a workload's pods that match a regex (bounded in pods, lines and bytes).

    ```yaml
    - id: errors
      action: k8s.logs
      with: {name: payments-gateway, namespace: shop, pattern: "ERROR|WARN", tail_lines: 200}
      expect:
        - that: "result.matched_count == 0"
          severity: warning
    ```
    """

    name = "k8s.logs"
    permissions = (Kube("apps", ("{kind}s",), ("get",)), Kube("", ("pods",), ("list",)),
                   Kube("", ("pods/log",), ("get",)))
    summary = "log lines matching a pattern across a workload's pods (max_pods, tail_lines, max_bytes)"
    schema = type_schema({"kind": KIND, "name": NAME, "selector": SELECTOR, "namespace": NS,
                          "container": {"type": "string"},
                          "pattern": {"type": "string", "default": "ERROR|WARN"},
                          "tail_lines": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 200},
                          "max_bytes": {"type": "integer", "minimum": 1024, "default": 262144},
                          "max_pods": {"type": "integer", "minimum": 1, "default": 5},
                          "max_matches": {"type": "integer", "minimum": 1, "default": 50},
                          "since": {"type": "integer", "minimum": 1, "description": "seconds"}})

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        errors = name_or_selector(cls, args)
        pattern = args.get("pattern")
        if isinstance(pattern, str) and not is_template(pattern):
            try:
                re.compile(pattern)
            except re.error as e:
                errors.append(("pattern", f"not a valid regular expression: {e}"))
        return errors

    def run(self) -> dict[str, Any]:
        a = self.args
        selector = a.get("selector") or selector_of(self.read_workload())
        rx = re.compile(a.get("pattern", "ERROR|WARN"))
        pods = sorted(self.pods_of(selector), key=lambda p: p.metadata.name)[: int(a.get("max_pods", 5))]
        matches: list[dict[str, str]] = []
        unreadable: list[dict[str, str]] = []
        counted = 0
        for p in pods:
            kw: dict[str, Any] = {"tail_lines": int(a.get("tail_lines", 200)),
                                  "limit_bytes": int(a.get("max_bytes", 262144))}
            if a.get("container"):
                kw["container"] = a["container"]
            if a.get("since"):
                kw["since_seconds"] = int(a["since"])
            try:
                text = self.call(self.kube.core.read_namespaced_pod_log, p.metadata.name, self.ns,
                                 what=f"logs of pod {self.ns}/{p.metadata.name}", **kw)
            except ActionError as e:
                # one pod's logs unreadable (container waiting to start, its node's kubelet down):
                # diagnosis goes on with the others; unreachable API server / RBAC still fail the step
                unreadable.append({"pod": p.metadata.name, "error": str(e)[:300]})
                continue
            for line in (text or "").splitlines():
                if rx.search(line):
                    counted += 1
                    if len(matches) < int(a.get("max_matches", 50)):
                        matches.append({"pod": p.metadata.name, "line": line[:500]})
        return {"pods_read": len(pods) - len(unreadable), "matched_count": counted, "lines": matches,
                "unreadable": unreadable}

    @classmethod
    def summarize(cls, r: Any) -> str:
        first = f"; first: {r['lines'][0]['line'][:80]}" if r["lines"] else ""
        skipped = f"; {len(r['unreadable'])} pod(s) unreadable" if r.get("unreadable") else ""
        return f"{r['matched_count']} matching line(s) in {r['pods_read']} pod(s){first}{skipped}"


@register
class Hpa(K8sAction):
    """HorizontalPodAutoscaler (autoscaling/v1) status for a workload, if it has one.

    ```yaml
    - id: hpa
      action: k8s.hpa
      with: {name: orders, namespace: shop}
      expect:
        - that: "not result.found or result.current_replicas < result.max_replicas"
          severity: warning
          message: HPA is at its maximum
    ```
    """

    name = "k8s.hpa"
    permissions = (Kube("autoscaling", ("horizontalpodautoscalers",), ("list",)),)
    summary = "autoscaler min/max/current/desired replicas and CPU, found=false when there is none"
    schema = type_schema({"kind": KIND, "name": NAME, "namespace": NS}, required=["name"])

    def run(self) -> dict[str, Any]:
        hpas = self.call(self.kube.autoscaling.list_namespaced_horizontal_pod_autoscaler, self.ns).items
        kind = "Deployment" if self.kind == "deployment" else "StatefulSet"
        for h in hpas:
            ref = h.spec.scale_target_ref
            if ref.kind == kind and ref.name == self.args["name"]:
                return {"found": True, "name": h.metadata.name, "min_replicas": h.spec.min_replicas or 1,
                        "max_replicas": h.spec.max_replicas, "current_replicas": h.status.current_replicas,
                        "desired_replicas": h.status.desired_replicas,
                        "target_cpu_pct": h.spec.target_cpu_utilization_percentage,
                        "current_cpu_pct": h.status.current_cpu_utilization_percentage,
                        "at_max": (h.status.current_replicas or 0) >= h.spec.max_replicas}
        return {"found": False, "name": None, "at_max": False}
