"""A runbook run as a Kubernetes Job or CronJob: plain manifests (dicts), one pod running opsctl.

The pod gets its backend settings only by reference: opsctl.yaml from a ConfigMap (``OPSCTL_CONFIG``)
and credentials from a Secret as environment variables (``envFrom``: the ``${VAR}`` of opsctl.yaml,
the standard PGPASSWORD/REDIS_URL/AWS_* variables, and ``OPSCTL_PARAM_<NAME>`` for secret runbook
parameters), never a literal secret.  It talks to the Kubernetes API with the pod's service account
(the in-cluster configuration, backends/kubernetes.py) and writes the run log as JSON lines on
stdout (``OPSCTL_RUN_LOG=stdout``).  Shared with argo.py: the container, the deadlines.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from opsctl.export.naming import _slug, service_account_name

LABEL_PREFIX = "opsctl.dev"
STATE_DIR = "/var/lib/opsctl"
CONFIG_DIR = "/etc/opsctl"
PLAN_DIR = "/etc/opsctl-plan"
START_MARGIN = 60  # seconds: interpreter start, imports, connections, the run log
GRACE = 5  # the watchdog's grace period per step (executor)


@dataclass(frozen=True)
class PodSettings:
    """What every exported pod shares; from the export command's options."""

    image: str
    namespace: str = "default"
    config_map: str | None = "opsctl-config"
    secret: str | None = "opsctl-credentials"
    env: str | None = None  # the opsctl.yaml environment the pod runs in
    image_pull_policy: str = "IfNotPresent"
    ttl_after_finished: int = 86400
    run_id: str = ""
    extra_labels: dict[str, str] = field(default_factory=dict)


def run_id_for(runbook_id: str) -> str:
    """The run id the pod's run will have (labels, OPSCTL_RUN_ID): a label value (<= 63 chars)."""
    from opsctl.audit import new_run_id

    return new_run_id(_slug(runbook_id)[:30])


def labels(runbook: Any, run_id: str, mode: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": "opsctl", "app.kubernetes.io/managed-by": "opsctl",
           f"{LABEL_PREFIX}/runbook": _slug(runbook.id)[:63], f"{LABEL_PREFIX}/mode": mode}
    if run_id:
        out[f"{LABEL_PREFIX}/run-id"] = run_id[:63]
    return {**out, **(extra or {})}


# ---- deadlines ----------------------------------------------------------------------------------

TEMPLATED_WINDOW = 600.0  # a `within` template naming no parameter with a value


def _window(within: float | str, values: dict[str, Any]) -> float:
    """A templated convergence window (`{{ params.verify_window }}`): the longest of the parameters
    it names, as the run will see them (an upper bound whatever the template picks)."""
    import re

    from opsctl.model import parse_duration

    if isinstance(within, float):
        return within
    found = []
    for name in re.findall(r"params\.([A-Za-z_][A-Za-z0-9_]*)", within):
        try:
            found.append(parse_duration(values[name]))
        except (KeyError, ValueError, TypeError):
            continue
    return max(found) if found else TEMPLATED_WINDOW


def step_budget(step: Any, *, mutating_applied: bool, values: dict[str, Any] | None = None) -> float:
    """The longest one step can take, by the engine's own rules (stepexec): every attempt bounded by
    the step's timeout (default 120 s), pauses between attempts, a convergence window plus one
    attempt, the apply() bound (default 30 min) and the watchdog's grace."""
    from opsctl.actions import get as get_action
    from opsctl.stepexec import APPLY_TIMEOUT, DEFAULT_TIMEOUT

    cls = get_action(step.action)
    read_only = True if cls is None else cls.read_only
    per = step.timeout or DEFAULT_TIMEOUT
    if read_only:
        if step.within is not None:
            total = _window(step.within, values or {}) + per
        else:
            total = (step.retries + 1) * per + step.retries * step.interval
    else:  # plan() (read-only), then apply() when the run applies
        total = per + ((step.timeout or APPLY_TIMEOUT) if mutating_applied else 0.0)
    return total + GRACE


def deadline(runbook: Any, phases: tuple[str, ...], *, applies: bool,
             values: dict[str, Any] | None = None) -> int:
    """activeDeadlineSeconds for a run of these phases: the steps' budgets added up (steps of a
    phase may run concurrently: the sum is an upper bound) plus a start-up margin.  ``values``:
    the run's parameters (with defaults), for templated convergence windows."""
    total = START_MARGIN + sum(step_budget(s, mutating_applied=applies, values=values)
                               for p in phases for s in runbook.phases.get(p, ()))
    return int(math.ceil(total))


# ---- the container and the pod ------------------------------------------------------------------

def container(s: PodSettings, args: list[str], *, name: str = "opsctl",
              extra_mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": "OPSCTL_STATE_DIR", "value": STATE_DIR},
                                 {"name": "OPSCTL_RUN_LOG", "value": "stdout"},
                                 {"name": "HOME", "value": STATE_DIR}]
    if s.run_id:
        env.append({"name": "OPSCTL_RUN_ID", "value": s.run_id})
    if s.env:
        env.append({"name": "OPSCTL_ENV", "value": s.env})
    mounts: list[dict[str, Any]] = [{"name": "state", "mountPath": STATE_DIR}]
    if s.config_map:
        env.append({"name": "OPSCTL_CONFIG", "value": f"{CONFIG_DIR}/opsctl.yaml"})
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    out: dict[str, Any] = {
        "name": name, "image": s.image, "imagePullPolicy": s.image_pull_policy,
        "command": ["opsctl"], "args": args, "env": env,
        "volumeMounts": mounts + list(extra_mounts or []),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if s.secret:
        out["envFrom"] = [{"secretRef": {"name": s.secret}}]
    return out


def volumes(s: PodSettings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": "state", "emptyDir": {}}]
    if s.config_map:
        items = [{"key": "opsctl.yaml", "path": "opsctl.yaml"}]
        out.append({"name": "config", "configMap": {"name": s.config_map, "items": items}})
    return out


POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}


def run_args(runbook_id: str, params: dict[str, str], *, option: str | None, dry_run: bool,
             phase: str | None) -> list[str]:
    """`opsctl run ...` arguments; every -p is a plain value (secret ones come from the Secret)."""
    args = ["run", runbook_id]
    if dry_run:
        args.append("--dry-run")
    if phase:
        args += ["--phase", phase]
    if option:
        args += ["--option", option]
    for k, v in params.items():
        args += ["-p", f"{k}={v}"]
    return args


# ---- Job and CronJob ----------------------------------------------------------------------------

def param_values(runbook: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the run will see them: the defaults, overridden by what was given."""
    return {**{k: p.default for k, p in runbook.params.items() if p.default is not None},
            **{k: v for k, v in given.items() if v is not None}}


@dataclass(frozen=True)
class JobSpec:
    """What one Job runs: `opsctl run` read-only (diagnose, or the whole runbook with --dry-run) or
    `opsctl apply` of a reviewed plan file."""

    mode: str  # "diagnose" | "dry-run" | "apply"
    args: list[str]
    deadline: int
    read_only: bool
    plan_doc: dict[str, Any] | None = None


def job_spec(runbook: Any, runbook_arg: str, params: dict[str, str], *, option: str | None,
             dry_run: bool, plan_doc: dict[str, Any] | None, yes_protected: str | None = None,
             values: dict[str, Any] | None = None) -> JobSpec:
    """``params``: what the command line gave (passed on as -p); ``values``: every parameter as the
    run will see it (defaults included), for the deadline."""
    from opsctl.model import PHASE_ORDER

    if values is None:
        values = param_values(runbook, (plan_doc or {}).get("params") or params)

    if plan_doc is not None:
        args = ["apply", f"{PLAN_DIR}/plan.json", "--yes"]
        if yes_protected:
            args += ["--yes-protected", yes_protected]
        return JobSpec("apply", args, deadline(runbook, PHASE_ORDER, applies=True, values=values),
                       read_only=False, plan_doc=plan_doc)
    if dry_run:
        return JobSpec("dry-run", run_args(runbook_arg, params, option=option, dry_run=True, phase=None),
                       deadline(runbook, PHASE_ORDER, applies=False, values=values), read_only=True)
    return JobSpec("diagnose", run_args(runbook_arg, params, option=None, dry_run=False, phase="diagnose"),
                   deadline(runbook, ("diagnose",), applies=False, values=values), read_only=True)


def _name(runbook: Any, mode: str, run_id: str) -> str:
    suffix = run_id.rsplit("-", 1)[-1] if run_id else secrets.token_hex(4)
    return f"opsctl-{_slug(runbook.id)[:30]}-{mode}-{suffix}"[:63].rstrip("-")


def pod_template(runbook: Any, spec: JobSpec, s: PodSettings, lab: dict[str, str]) -> dict[str, Any]:
    mounts, vols = [], volumes(s)
    if spec.plan_doc is not None:
        mounts.append({"name": "plan", "mountPath": PLAN_DIR, "readOnly": True})
        vols.append({"name": "plan", "configMap": {"name": plan_config_map_name(spec.plan_doc)}})
    return {
        "metadata": {"labels": lab},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": service_account_name(runbook.id, read_only=spec.read_only),
            "automountServiceAccountToken": True,
            "securityContext": POD_SECURITY,
            "containers": [container(s, spec.args, extra_mounts=mounts)],
            "volumes": vols,
        },
    }


def plan_config_map_name(plan_doc: dict[str, Any]) -> str:
    digest = str(plan_doc["digest"]).split(":")[-1]
    return f"opsctl-plan-{digest[:16]}"


def plan_config_map(plan_doc: dict[str, Any], s: PodSettings, lab: dict[str, str]) -> dict[str, Any]:
    """The reviewed plan file, as the ConfigMap the apply Job mounts (a plan holds no secret: its
    secret parameters are withheld and come from the Secret at apply)."""
    import json

    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": plan_config_map_name(plan_doc), "namespace": s.namespace, "labels": lab},
            "data": {"plan.json": json.dumps(plan_doc, indent=2) + "\n"}}


def job(runbook: Any, spec: JobSpec, s: PodSettings) -> list[dict[str, Any]]:
    """The Job (preceded by the plan's ConfigMap for an apply Job): apply-ready documents."""
    lab = labels(runbook, s.run_id, spec.mode, s.extra_labels)
    docs: list[dict[str, Any]] = []
    if spec.plan_doc is not None:
        docs.append(plan_config_map(spec.plan_doc, s, lab))
    docs.append({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": _name(runbook, spec.mode, s.run_id), "namespace": s.namespace, "labels": lab,
                     "annotations": {f"{LABEL_PREFIX}/title": runbook.title[:200],
                                     f"{LABEL_PREFIX}/sha256": runbook.sha256}},
        "spec": {
            "backoffLimit": 0,  # a mutation is never blindly retried; nor is a diagnosis that failed
            "activeDeadlineSeconds": spec.deadline,
            "ttlSecondsAfterFinished": s.ttl_after_finished,
            "template": pod_template(runbook, spec, s, lab),
        },
    })
    return docs


def cronjob(runbook: Any, spec: JobSpec, s: PodSettings, schedule: str, *,
            api_version: str = "batch/v1") -> dict[str, Any]:
    """A read-only JobSpec on a schedule; runs never overlap, a missed run is not caught up later
    than one deadline."""
    if not spec.read_only:
        raise ValueError("a CronJob runs read-only checks only")
    lab = labels(runbook, "", spec.mode, s.extra_labels)
    return {
        "apiVersion": api_version, "kind": "CronJob",
        "metadata": {"name": f"opsctl-{_slug(runbook.id)[:30]}-{spec.mode}"[:52],
                     "namespace": s.namespace, "labels": lab},
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": min(spec.deadline, 3600),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": lab},
                "spec": {"backoffLimit": 0, "activeDeadlineSeconds": spec.deadline,
                         "ttlSecondsAfterFinished": s.ttl_after_finished,
                         "template": pod_template(runbook, spec, s, lab)},
            },
        },
    }
