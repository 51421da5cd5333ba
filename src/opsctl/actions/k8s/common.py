"""What every Kubernetes action shares: the client, argument schemas, workload and pod views."""

from __future__ import annotations

from typing import Any

from opsctl.actions.base import Action
from opsctl.backends.kubernetes import Kube, age_seconds, kube_for
from opsctl.errors import ActionError

NS: dict[str, Any] = {"type": "string", "default": "default", "description": "namespace"}
KIND: dict[str, Any] = {"type": "string", "enum": ["deployment", "statefulset"], "default": "deployment"}
NAME: dict[str, Any] = {"type": "string", "minLength": 1, "description": "workload name"}
SELECTOR: dict[str, Any] = {"type": "string", "description": "label selector, e.g. app=orders"}
RESTARTED_AT: str = "kubectl.kubernetes.io/restartedAt"
# only the workloads the diagnosis proved guilty, among what the selector matches (scope)
ONLY: dict[str, Any] = {
    "only": {"type": ["array", "null"], "items": {"type": "string"},
             "description": "restart only these of the workloads the selector matches (the ones the "
                            "diagnosis proved guilty); the others are listed in the plan as excluded, "
                            "with excluded_reason; an empty list restarts nothing"},
    "excluded_reason": {"type": "string", "default": "not proven guilty by the diagnosis",
                        "description": "why a workload outside `only` is left alone (shown in the plan)"}}


class K8sAction(Action):
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


def name_or_selector(cls: type[Action], args: dict[str, Any]) -> list[tuple[str, str]]:
    if not args.get("name") and not args.get("selector"):
        return [("name", f"{cls.name} needs either name or selector")]
    if args.get("name") and args.get("selector"):
        return [("selector", "give name or selector, not both")]
    return []


def selector_of(obj: Any) -> str:
    labels = obj.spec.selector.match_labels or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def only_guilty(objs: list[Any], args: dict[str, Any], kind: str) -> tuple[list[Any], list[str]]:
    """(targets, why each other matching workload is left alone) for the `only` argument."""
    only = args.get("only")
    if only is None:
        return objs, []
    wanted = set(only)
    targets = [o for o in objs if o.metadata.name in wanted]
    reason = args.get("excluded_reason") or "not proven guilty by the diagnosis"
    excluded = []
    for o in objs:
        if o.metadata.name not in wanted:
            st = workload_status(o, kind)
            excluded.append(f"{kind} {o.metadata.name} excluded ({st['ready']}/{st['desired']} ready): "
                            f"{reason}")
    return targets, excluded


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
