"""Kubernetes actions: workload and pod state, rollout history, events, logs, HPA (read-only); scale,
rollout restart, rollout undo, container env patch, pod delete (mutating); wait for a rollout.

All go through ``opsctl.backends.kubernetes`` (official client, imported lazily).  Workloads are
deployments or statefulsets; a rollout is complete only when the controller has observed the latest
generation and updated == ready == current == desired (``kubectl rollout status``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, is_template, type_schema
from opsctl.backends.kubernetes import Kube, age_seconds, iso, kube_for
from opsctl.errors import ActionError

NS: dict[str, Any] = {"type": "string", "default": "default", "description": "namespace"}
KIND: dict[str, Any] = {"type": "string", "enum": ["deployment", "statefulset"], "default": "deployment"}
NAME: dict[str, Any] = {"type": "string", "minLength": 1, "description": "workload name"}
SELECTOR: dict[str, Any] = {"type": "string", "description": "label selector, e.g. app=order-service"}
RESTARTED_AT: str = "kubectl.kubernetes.io/restartedAt"


class _K8sAction(Action):
    backend = "kubernetes"

    @property
    def kube(self) -> Kube:
        return kube_for(self.ctx)

    @property
    def ns(self) -> str:
        return str(self.args.get("namespace") or "default")

    @property
    def kind(self) -> str:
        return str(self.args.get("kind") or "deployment")

    def call(self, fn: Any, *args: Any, what: str = "", **kw: Any) -> Any:
        self.ctx.check_cancelled()
        return self.kube.call(fn, *args, what=what, timeout=self.ctx.remaining(30.0), **kw)

    def apps_fn(self, verb: str, kind: str | None = None, suffix: str = "") -> Any:
        """AppsV1Api.<verb>_namespaced_deployment / _stateful_set<suffix> for the workload kind."""
        resource = "deployment" if (kind or self.kind) == "deployment" else "stateful_set"
        return getattr(self.kube.apps, f"{verb}_namespaced_{resource}{suffix}")

    def read_workload(self, name: str | None = None, kind: str | None = None) -> Any:
        kind, name = kind or self.kind, name or self.args["name"]
        return self.call(self.apps_fn("read", kind), name, self.ns, what=f"{kind} {self.ns}/{name}")

    def list_workloads(self, selector: str) -> list[Any]:
        return list(self.call(self.apps_fn("list"), self.ns, label_selector=selector).items)

    def targets(self) -> list[Any]:
        """The workloads named by ``name`` or matched by ``selector``."""
        if self.args.get("name"):
            return [self.read_workload()]
        found = self.list_workloads(self.args["selector"])
        if not found:
            raise ActionError(f"no {self.kind} in namespace {self.ns} matches {self.args['selector']!r}")
        return found

    def pods_of(self, selector: str) -> list[Any]:
        return list(self.call(self.kube.core.list_namespaced_pod, self.ns, label_selector=selector).items)


def _name_or_selector(cls: type[Action], args: dict[str, Any]) -> list[tuple[str, str]]:
    if not args.get("name") and not args.get("selector"):
        return [("name", f"{cls.name} needs either name or selector")]
    if args.get("name") and args.get("selector"):
        return [("selector", "give name or selector, not both")]
    return []


def selector_of(obj: Any) -> str:
    labels = obj.spec.selector.match_labels or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def workload_status(obj: Any, kind: str) -> dict[str, Any]:
    st, desired = obj.status, obj.spec.replicas if obj.spec.replicas is not None else 1
    updated, ready = st.updated_replicas or 0, st.ready_replicas or 0
    current = st.replicas or 0
    available = st.available_replicas if kind == "deployment" else ready
    complete = ((st.observed_generation or 0) >= obj.metadata.generation
                and updated == ready == current == desired)
    if kind == "statefulset":
        complete = complete and (st.current_revision == st.update_revision)
    conds = [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
             for c in (st.conditions or [])]
    return {"kind": kind, "name": obj.metadata.name, "namespace": obj.metadata.namespace,
            "desired": desired, "current": current, "ready": ready, "available": available or 0,
            "updated": updated, "unavailable": max(0, desired - ready), "rollout_complete": complete,
            "generation": obj.metadata.generation, "observed_generation": st.observed_generation,
            "resource_version": obj.metadata.resource_version, "conditions": conds,
            "images": [c.image for c in obj.spec.template.spec.containers],
            "restarted_at": (obj.spec.template.metadata.annotations or {}).get(RESTARTED_AT),
            "selector": selector_of(obj)}


def pod_info(p: Any) -> dict[str, Any]:
    statuses = (p.status.container_statuses if p.status else None) or []
    reasons = [cs.last_state.terminated.reason for cs in statuses
               if cs.last_state and cs.last_state.terminated and cs.last_state.terminated.reason]
    waiting = [cs.state.waiting.reason for cs in statuses if cs.state and cs.state.waiting]
    ready = any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])) \
        if p.status else False
    return {"name": p.metadata.name, "phase": p.status.phase if p.status else None, "ready": ready,
            "restarts": sum(cs.restart_count or 0 for cs in statuses),
            "last_termination_reason": reasons[0] if reasons else None,
            "waiting_reason": waiting[0] if waiting else None, "node": p.spec.node_name,
            "age_seconds": age_seconds(p.metadata.creation_timestamp),
            "resource_version": p.metadata.resource_version}


@register
class Workload(_K8sAction):
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
class Workloads(_K8sAction):
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
class RolloutHistory(_K8sAction):
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
class Pods(_K8sAction):
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
    summary = "pods with phase, readiness, restart counts and OOMKilled / Error terminations"
    schema = type_schema({"kind": KIND, "name": NAME, "selector": SELECTOR, "namespace": NS})
    validate_args = classmethod(_name_or_selector)

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
class Events(_K8sAction):
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
class Logs(_K8sAction):
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
        errors = _name_or_selector(cls, args)
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
class Hpa(_K8sAction):
    """HorizontalPodAutoscaler (autoscaling/v1) status for a workload, if it has one.

    ```yaml
    - id: hpa
      action: k8s.hpa
      with: {name: order-service, namespace: shop}
      expect:
        - that: "not result.found or result.current_replicas < result.max_replicas"
          severity: warning
          message: HPA is at its maximum
    ```
    """

    name = "k8s.hpa"
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


from opsctl.actions.k8s_mutate import (  # noqa: E402,F401 - registers the mutating actions
    DeletePod,
    RolloutRestart,
    RolloutUndo,
    Scale,
    SetEnv,
    WaitRollout,
)
