"""A runbook as an Argo WorkflowTemplate (plain dicts; checked against Argo's CRD schema in the tests).

Shape, for each environment (or the pod's default one):

    main (steps)
      1. diagnose-all (dag: one `opsctl run --phase diagnose` task per environment, `parallelism`,
         `failFast`; read-only, so retried)
      2. change-<env>, one environment after the other (steps):
           plan     `opsctl plan --out plan.json` (a dry-run: read-only, retried); outputs the plan
                    file and its Markdown summary as parameters
           approve  `suspend` gate; the plan summary is an input parameter shown to the approver,
                    the decision an intermediate parameter (`supplied`, YES/NO, default NO)
           apply    `opsctl apply plan.json --yes`, only when approved; never retried; its own verify
                    phase proves the fix (the runbook's verify steps may use the diagnosis and the
                    mitigation's results, which only that run has)
           verify   `opsctl run --phase verify` again, read-only and retried, when the runbook's
                    verify steps stand alone

The diagnosis is one `opsctl run --phase diagnose` step rather than one Argo step per runbook step:
a runbook's steps pass results to each other (`steps.x.result` in templates, an option's
`recommended_when`), which Argo would have to carry between pods as parameters, and the engine
already runs independent read-only steps concurrently inside the pod with its deadlines and
watchdog. One pod per environment is the parallelism that matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsctl.export.job import (
    LABEL_PREFIX,
    POD_SECURITY,
    PodSettings,
    container,
    deadline,
    labels,
    param_values,
    run_args,
    volumes,
)
from opsctl.export.naming import _slug, service_account_name

API_VERSION = "argoproj.io/v1alpha1"
WORK = "/tmp/opsctl"  # an emptyDir: the plan file and its summary, for the output parameters
PLAN_IN = "/tmp/opsctl-plan"  # the apply step's input artifact (the approved plan file)
# read-only templates only: again when the pod failed to run (Argo's "Error") or opsctl said a
# backend was unreachable (exit 4); never after a verdict (1), bad input (2) or a refusal (3)
READ_RETRY = {"limit": "2", "retryPolicy": "Always",
              "expression": 'lastRetry.status == "Error" or asInt(lastRetry.exitCode) == 4',
              "backoff": {"duration": "10s", "factor": "2", "maxDuration": "2m"}}


@dataclass(frozen=True)
class ArgoSettings:
    envs: tuple[str, ...] = ()  # empty: one run in the pod's default environment
    parallelism: int = 4
    fail_fast: bool = False
    plan_expires: str = "2h"


def _env_args(with_env: bool) -> list[str]:
    return ["--env", "{{inputs.parameters.env}}"] if with_env else []


def _inputs(with_env: bool, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    params = ([{"name": "env"}] if with_env else []) + list(extra or [])
    return {"parameters": params} if params else {}


def _work_mount() -> dict[str, Any]:
    return {"name": "work", "mountPath": WORK}


def _pod_template(name: str, s: PodSettings, args: list[str], *, read_only: bool, deadline_s: int,
                  with_env: bool, runbook_id: str, command: list[str] | None = None,
                  outputs: dict[str, Any] | None = None, inputs_extra: list[dict[str, Any]] | None = None,
                  artifacts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    c = container(s, args, name="main", extra_mounts=[_work_mount()])
    c.pop("name")
    if command:
        c["command"] = command
    t: dict[str, Any] = {"name": name, "activeDeadlineSeconds": deadline_s,
                         "serviceAccountName": service_account_name(runbook_id, read_only=read_only),
                         "securityContext": POD_SECURITY, "container": c,
                         "volumes": [*volumes(s), {"name": "work", "emptyDir": {}}]}
    inputs = _inputs(with_env, inputs_extra)
    if artifacts:
        inputs["artifacts"] = artifacts
    if inputs:
        t["inputs"] = inputs
    if outputs:
        t["outputs"] = outputs
    if read_only:  # only what changes nothing is retried
        t["retryStrategy"] = READ_RETRY
    return t


def _shell(command: list[str]) -> str:
    import shlex

    return shlex.join(command)


def workflow_template(runbook: Any, runbook_arg: str, params: dict[str, str], s: PodSettings,
                      a: ArgoSettings, *, option: str | None = None) -> dict[str, Any]:
    from opsctl.model import PHASE_ORDER

    with_env = bool(a.envs)
    rb_id = runbook.id
    values = param_values(runbook, params)
    p_args = [x for k, v in params.items() for x in ("-p", f"{k}={v}")]
    templates: list[dict[str, Any]] = []

    # diagnosis: one read-only run per environment, in parallel
    diag_deadline = deadline(runbook, ("diagnose",), applies=False, values=values)
    templates.append(_pod_template(
        "diagnose", s, run_args(runbook_arg, params, option=None, dry_run=False, phase="diagnose")
        + _env_args(with_env), read_only=True, deadline_s=diag_deadline, with_env=with_env, runbook_id=rb_id))
    targets = list(a.envs) or [""]
    tasks = [{"name": f"diagnose-{_slug(e)}" if e else "diagnose", "template": "diagnose",
              **({"arguments": {"parameters": [{"name": "env", "value": e}]}} if e else {})}
             for e in targets]
    templates.append({"name": "diagnose-all", "parallelism": max(1, a.parallelism), "failFast": a.fail_fast,
                      "dag": {"tasks": tasks}})

    # plan -> approve -> apply -> verify, one environment at a time
    plan_cmd = ["opsctl", "plan", runbook_arg, "--out", f"{WORK}/plan.json", "--expires", a.plan_expires,
                *p_args, *(["--option", option] if option else []), *_env_args(with_env)]
    show_cmd = ["opsctl", "show-plan", f"{WORK}/plan.json", "--format", "markdown"]
    plan_script = f"{_shell(plan_cmd)} && {_shell(show_cmd)} > {WORK}/summary.md"
    templates.append(_pod_template(
        "plan", s, [plan_script], read_only=True, with_env=with_env, runbook_id=rb_id,
        deadline_s=deadline(runbook, PHASE_ORDER[:2], applies=False, values=values), command=["sh", "-c"],
        outputs={"parameters": [
            {"name": "plan", "valueFrom": {"path": f"{WORK}/plan.json"}},
            {"name": "summary", "valueFrom": {"path": f"{WORK}/summary.md"}}]}))
    templates.append({
        "name": "approve",
        "inputs": {"parameters": [{"name": "environment"}, {"name": "plan-summary"}]},
        "suspend": {},  # no duration: an unattended gate never approves itself
        "outputs": {"parameters": [{
            "name": "approve", "default": "NO", "enum": ["YES", "NO"],
            "description": "YES applies the plan shown in plan-summary to this environment",
            "valueFrom": {"supplied": {}}}]},
    })
    # the approver named the environment (the gate's input): a protected one needs no more
    apply_args = ["apply", f"{PLAN_IN}/plan.json", "--yes",
                  *(["--yes-protected", "{{inputs.parameters.env}}"] if with_env else [])]
    templates.append(_pod_template(
        "apply", s, apply_args, read_only=False, with_env=with_env,
        runbook_id=rb_id, deadline_s=deadline(runbook, PHASE_ORDER, applies=True, values=values),
        inputs_extra=[{"name": "plan"}],
        artifacts=[{"name": "plan-file", "path": f"{PLAN_IN}/plan.json",
                    "raw": {"data": "{{inputs.parameters.plan}}"}}]))
    standalone = _verify_stands_alone(runbook)
    if standalone:
        templates.append(_pod_template(
            "verify", s, run_args(runbook_arg, params, option=None, dry_run=False, phase="verify")
            + _env_args(with_env), read_only=True, with_env=with_env, runbook_id=rb_id,
            deadline_s=deadline(runbook, ("verify",), applies=False, values=values)))
    change_steps: list[list[dict[str, Any]]] = [
        [{"name": "plan", "template": "plan", **_env_arg(with_env)}],
        [{"name": "approve", "template": "approve", "arguments": {"parameters": [
            {"name": "environment", "value": "{{inputs.parameters.env}}" if with_env else "default"},
            {"name": "plan-summary", "value": "{{steps.plan.outputs.parameters.summary}}"}]}}],
        [{"name": "apply", "template": "apply",
          "when": "{{steps.approve.outputs.parameters.approve}} == YES",
          "arguments": {"parameters": [
              *_env_arg(with_env).get("arguments", {}).get("parameters", []),
              {"name": "plan", "value": "{{steps.plan.outputs.parameters.plan}}"}]}}],
    ]
    if standalone:
        change_steps.append([{"name": "verify", "template": "verify",
                              "when": "{{steps.approve.outputs.parameters.approve}} == YES",
                              **_env_arg(with_env)}])
    templates.append({"name": "change", **({"inputs": _inputs(True)} if with_env else {}),
                      "steps": change_steps})
    main_steps: list[list[dict[str, Any]]] = [[{"name": "diagnose", "template": "diagnose-all"}]]
    for e in targets:
        main_steps.append([{"name": f"change-{_slug(e)}" if e else "change", "template": "change",
                            **({"arguments": {"parameters": [{"name": "env", "value": e}]}} if e else {})}])
    templates.insert(0, {"name": "main", "steps": main_steps})

    lab = labels(runbook, "", "workflow", s.extra_labels)
    return {
        "apiVersion": API_VERSION, "kind": "WorkflowTemplate",
        "metadata": {"name": f"opsctl-{_slug(rb_id)[:40]}", "namespace": s.namespace, "labels": lab,
                     "annotations": {f"{LABEL_PREFIX}/title": runbook.title[:200],
                                     f"{LABEL_PREFIX}/sha256": runbook.sha256,
                                     f"{LABEL_PREFIX}/environments": ",".join(a.envs) or "default"}},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": service_account_name(rb_id, read_only=True),
            "workflowMetadata": {"labels": lab},
            "ttlStrategy": {"secondsAfterCompletion": s.ttl_after_finished},
            "templates": templates,
        },
    }


def _env_arg(with_env: bool) -> dict[str, Any]:
    return {"arguments": {"parameters": [{"name": "env", "value": "{{inputs.parameters.env}}"}]}} \
        if with_env else {}


def _verify_stands_alone(runbook: Any) -> bool:
    """A verify phase that uses no result of the other phases can run again on its own."""
    ids = {s.id for s in runbook.phases.get("verify", ())}
    return bool(ids) and all(s.deps <= ids for s in runbook.phases.get("verify", ()))
