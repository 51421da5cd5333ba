"""opsctl export job|cronjob|argo: the manifests every shipped runbook exports to, checked against
Argo's schema (vendored, strict) and the engine's own rules; the command line's bad input."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import opsctl
from opsctl import catalog
from opsctl.export import argo, job
from opsctl.export.naming import service_account_name
from opsctl.model import parse_duration
from tests.export.argo_schema import errors as argo_errors
from tests.fixtures.core import Result

IMAGE = "registry.example.com/opsctl@sha256:" + "ab" * 32
SHIPPED = sorted({p.name[:6] for p in (Path(opsctl.__file__).parent / "runbooks").glob("rb-*.yaml")})
SECRET_RB = Path(__file__).parents[1] / "engine" / "data" / "run" / "rb-410-params.yaml"
_SAMPLE = {"string": "x", "integer": "1", "number": "1", "boolean": "true", "duration": "1m"}


def required_params(rb: Any) -> dict[str, str]:
    """A value for each required, non-secret parameter without a default."""
    return {k: str(p.choices[0]) if p.choices else _SAMPLE[p.type] for k, p in rb.params.items()
            if p.required and p.default is None and not p.secret}


def settings(**kw: Any) -> job.PodSettings:
    return job.PodSettings(image=IMAGE, namespace="ops", **kw)


def pod_templates(wt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in wt["spec"]["templates"] if "container" in t}


def check_references(wt: dict[str, Any]) -> None:
    """What Argo's controller checks beyond the schema: every template a step names exists and gets
    exactly the parameters it declares; `{{inputs.parameters.X}}` is declared; `{{steps.S.outputs.
    parameters.P}}` names an earlier step of the same template whose template outputs P."""
    by_name = {t["name"]: t for t in wt["spec"]["templates"]}
    assert wt["spec"]["entrypoint"] in by_name
    for t in wt["spec"]["templates"]:
        declared = {p["name"] for p in t.get("inputs", {}).get("parameters", [])}
        text = yaml.safe_dump({k: v for k, v in t.items() if k != "name"})
        for used in re.findall(r"\{\{inputs\.parameters\.([\w-]+)\}\}", text):
            assert used in declared, f"template {t['name']} uses undeclared input {used}"
        groups = t.get("steps") or [[task] for task in t.get("dag", {}).get("tasks", [])]
        seen: dict[str, str] = {}
        for group in groups:
            for st in group:
                callee = by_name[st["template"]]
                want = {p["name"] for p in callee.get("inputs", {}).get("parameters", [])}
                given = {p["name"] for p in st.get("arguments", {}).get("parameters", [])}
                assert given == want, f"{st['name']}: {given} given, {callee['name']} wants {want}"
                for ref_step, out in re.findall(r"\{\{steps\.([\w-]+)\.outputs\.parameters\.([\w-]+)\}\}",
                                                yaml.safe_dump(st)):
                    assert ref_step in seen, f"{st['name']} refers to {ref_step}, not an earlier step"
                    outputs = by_name[seen[ref_step]].get("outputs", {})
                    outs = {p["name"] for p in outputs.get("parameters", [])}
                    assert out in outs, f"{ref_step} has no output {out}"
            for st in group:
                seen[st["name"]] = st["template"]


@pytest.mark.parametrize("rb_id", SHIPPED)
def test_every_shipped_runbook_exports_as_a_job_and_a_gated_workflow(rb_id: str) -> None:
    rb = catalog.load(rb_id)
    params = required_params(rb)
    # the Job: the diagnosis, read-only, with the runbook's read-only service account
    s = settings(run_id=job.run_id_for(rb.id))
    (j,) = job.job(rb, job.job_spec(rb, rb.id, params, option=None, dry_run=False, plan_doc=None), s)
    pod = j["spec"]["template"]["spec"]
    assert (pod["restartPolicy"], j["spec"]["backoffLimit"]) == ("Never", 0)
    timeouts = sum(st.timeout or 120 for st in rb.phases["diagnose"])
    assert j["spec"]["activeDeadlineSeconds"] >= timeouts + job.START_MARGIN
    assert pod["serviceAccountName"] == service_account_name(rb.id, read_only=True)
    c = pod["containers"][0]
    assert c["args"][:4] == ["run", rb.id, "--phase", "diagnose"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["OPSCTL_RUN_ID"] == j["metadata"]["labels"]["opsctl.dev/run-id"] == s.run_id
    assert j["metadata"]["labels"]["opsctl.dev/runbook"] == rb.id and env["OPSCTL_RUN_LOG"] == "stdout"

    # the WorkflowTemplate: valid for Argo, an approval gate before the only mutating step
    wt = argo.workflow_template(rb, rb.id, params, settings(), argo.ArgoSettings())
    assert argo_errors(wt) == []
    check_references(wt)
    pods = pod_templates(wt)
    change = next(t for t in wt["spec"]["templates"] if t["name"] == "change")
    order = [group[0]["name"] for group in change["steps"]]
    assert order[:3] == ["plan", "approve", "apply"]
    gate = next(t for t in wt["spec"]["templates"] if t["name"] == "approve")
    assert gate["suspend"] == {} and gate["outputs"]["parameters"][0]["default"] == "NO"
    assert change["steps"][2][0]["when"] == "{{steps.approve.outputs.parameters.approve}} == YES"
    assert pods["apply"]["container"]["args"][0] == "apply" and "retryStrategy" not in pods["apply"]
    assert pods["apply"]["serviceAccountName"] == service_account_name(rb.id)
    for name, t in pods.items():
        assert t["activeDeadlineSeconds"] > 0
        read_only = name != "apply"
        assert ("retryStrategy" in t) == read_only, name
        assert t["serviceAccountName"] == service_account_name(rb.id, read_only=read_only)


def test_dry_run_and_apply_deadlines_follow_the_step_timeouts() -> None:
    rb = catalog.load("rb-006")
    diag = job.job_spec(rb, rb.id, {}, option=None, dry_run=False, plan_doc=None)
    dry = job.job_spec(rb, rb.id, {}, option=None, dry_run=True, plan_doc=None)
    assert diag.args == ["run", "rb-006", "--phase", "diagnose"]
    assert dry.args == ["run", "rb-006", "--dry-run"] and dry.read_only
    # the whole runbook takes longer than its diagnosis; applying adds each apply()'s bound
    assert diag.deadline < dry.deadline < job.deadline(rb, ("diagnose", "mitigate", "verify"), applies=True)
    assert diag.deadline == job.START_MARGIN + sum(st.timeout + job.GRACE for st in rb.phases["diagnose"])
    # a convergence window given as a parameter: the Job waits as long as the run may
    rb4 = catalog.load("rb-004")
    windowed = [s for s in rb4.phases["verify"] if isinstance(s.within, str) and "verify_window" in s.within]
    short = job.job_spec(rb4, rb4.id, {}, option=None, dry_run=True, plan_doc=None)
    long = job.job_spec(rb4, rb4.id, {"verify_window": "2h"}, option=None, dry_run=True, plan_doc=None)
    default = parse_duration(rb4.params["verify_window"].default)
    assert long.deadline - short.deadline == len(windowed) * (7200 - default) and windowed


def test_fan_out_diagnoses_in_parallel_and_changes_one_environment_at_a_time() -> None:
    rb = catalog.load("rb-006")
    wt = argo.workflow_template(rb, rb.id, {"database": "app"}, settings(),
                                argo.ArgoSettings(envs=("prod-eu", "prod-us", "staging"), parallelism=2,
                                                  fail_fast=True), option="kill-long-queries")
    assert argo_errors(wt) == []
    check_references(wt)
    by = {t["name"]: t for t in wt["spec"]["templates"]}
    fan = by["diagnose-all"]
    assert (fan["parallelism"], fan["failFast"]) == (2, True)
    assert [t["arguments"]["parameters"][0]["value"] for t in fan["dag"]["tasks"]] == \
        ["prod-eu", "prod-us", "staging"]
    assert all("depends" not in t and "dependencies" not in t for t in fan["dag"]["tasks"])
    # after the diagnosis, one group per environment: sequential, each with its own gate
    groups = by["main"]["steps"]
    assert [len(g) for g in groups] == [1, 1, 1, 1]
    assert [g[0]["arguments"]["parameters"][0]["value"] for g in groups[1:]] == \
        ["prod-eu", "prod-us", "staging"]
    assert {g[0]["template"] for g in groups[1:]} == {"change"}
    plan_script = by["plan"]["container"]["args"][0]
    assert "--env '{{inputs.parameters.env}}'" in plan_script and "--option kill-long-queries" in plan_script
    assert "-p database=app" in plan_script
    assert by["apply"]["container"]["args"][-2:] == ["--yes-protected", "{{inputs.parameters.env}}"]
    gate_args = by["change"]["steps"][1][0]["arguments"]["parameters"]
    assert {"name": "environment", "value": "{{inputs.parameters.env}}"} in gate_args


def test_the_schema_check_catches_what_the_api_server_would_prune() -> None:
    rb = catalog.load("rb-004")
    wt = argo.workflow_template(rb, rb.id, {}, settings(), argo.ArgoSettings())
    wt["spec"]["templates"][1]["retrystrategy"] = {"limit": 1}
    wt["spec"]["templates"][2]["suspend"] = "yes"
    found = argo_errors(wt)
    assert any("'retrystrategy' was unexpected" in e for e in found)
    assert any(e.startswith("spec.templates.2.suspend") for e in found)


# ---- the command line ---------------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "opsctl.yaml").write_text("environments:\n  prod-eu: {protected: true}\n  prod-us: {}\n")
    yield tmp_path


@pytest.fixture
def cli(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        opsctl_env: dict[str, str]) -> Callable[..., Result]:
    """The real entry point (opsctl.cli.main.main: its error handler, its exit codes) in this
    process: the export commands touch no server, and a subprocess costs seconds on a loaded machine."""
    from opsctl.cli.main import main

    monkeypatch.chdir(workdir)
    for k in [k for k in __import__("os").environ if k.startswith("OPSCTL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("OPSCTL_STATE_DIR", opsctl_env["OPSCTL_STATE_DIR"])
    monkeypatch.setenv("XDG_CONFIG_HOME", opsctl_env["XDG_CONFIG_HOME"])

    def run(*args: str) -> Result:
        monkeypatch.setattr("sys.argv", ["opsctl", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        out = capsys.readouterr()
        return Result(int(exit_.value.code or 0), out.out, out.err)

    return run


def test_cli_writes_apply_ready_yaml(opsctl: Callable[..., Result], cli: Callable[..., Result],
                                    workdir: Path) -> None:
    r = opsctl("export", "job", "rb-006", "--image", IMAGE, "--env", "prod-us", "--dry-run",
               "-p", "database=app", cwd=workdir)  # once through the installed entry point
    assert r.code == 0, r.output
    (doc,) = list(yaml.safe_load_all(r.stdout))
    c = doc["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["run", "rb-006", "--dry-run", "-p", "database=app"]
    assert {"name": "OPSCTL_ENV", "value": "prod-us"} in c["env"]
    assert c["envFrom"] == [{"secretRef": {"name": "opsctl-credentials"}}]
    assert "&id" not in r.stdout  # no YAML anchors
    r = cli("export", "cronjob", "rb-010", "--image", IMAGE, "--schedule", "*/15 * * * *",
            "--api-version", "batch/v1beta1", "--out", str(workdir / "cj.yaml"))
    assert r.code == 0, r.output
    cj = yaml.safe_load((workdir / "cj.yaml").read_text())
    assert (cj["apiVersion"], cj["spec"]["concurrencyPolicy"]) == ("batch/v1beta1", "Forbid")
    assert cj["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    r = cli("export", "argo", "rb-006", "--image", IMAGE, "--env", "prod-eu", "--env", "prod-us",
            "-o", "json")
    assert r.code == 0, r.output
    assert argo_errors(yaml.safe_load(r.stdout)) == []


@pytest.mark.parametrize(("args", "message"), [
    (["job", "rb-007", "-p", "queue=q"], "--image"),
    (["job", "rb-007"], "missing required parameter 'queue'"),
    (["job", "rb-006", "--env", "nowhere"], "unknown environment 'nowhere'"),
    (["job", "rb-006", "--option", "raise-pool"], "option 'raise-pool' needs deployment, new_pool_size"),
    (["job", "rb-006", "--plan", "plan.json", "-p", "database=x"], "its parameters and option are fixed"),
    (["job", "rb-006", "--plan", "missing.json"], "cannot read the plan file missing.json"),
    (["job", "rb-006", "--namespace", "Ops_Team"], "not a Kubernetes object name"),
    (["cronjob", "rb-006", "--schedule", "every hour"], "expected five cron fields"),
    (["argo", "rb-006", "-p", "database={{workflow.name}}"], "rewritten by Argo"),
    (["argo", "rb-006", "--env", "prod-eu", "--env", "prod-eu"], "given twice"),
    (["argo", "rb-006", "--option", "none"], "plans nothing"),
])
def test_bad_input_is_exit_2_with_one_message(cli: Callable[..., Result], args: list[str],
                                             message: str) -> None:
    extra = [] if "--image" in message else ["--image", IMAGE]
    r = cli("export", *args, *extra)
    assert r.code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output and r.stdout == ""


def test_a_secret_parameter_never_lands_in_a_manifest(cli: Callable[..., Result]) -> None:
    rb = catalog.load(str(SECRET_RB))
    name = next(k for k, p in rb.params.items() if p.secret)
    r = cli("export", "job", str(SECRET_RB), "--image", IMAGE,
            *[x for k, v in required_params(rb).items() for x in ("-p", f"{k}={v}")],
            "-p", f"{name}=hunter2-secret")
    assert r.code == 2 and f"OPSCTL_PARAM_{name.upper()}" in r.stderr, r.output
    assert "hunter2-secret" not in r.output


def test_a_job_applies_only_a_reviewed_plan_and_logs_json_lines(opsctl: Callable[..., Result],
                                                                cli: Callable[..., Result],
                                                                opsctl_env: dict[str, str],
                                                                workdir: Path) -> None:
    """The apply Job end to end, without a container runtime: a real plan file, the exported
    ConfigMap + Job, then the Job's container command and environment run here."""
    import json

    runbook = Path(__file__).parents[1] / "engine" / "data" / "run" / "rb-401-write-file.yaml"
    flag = workdir / "flag"
    r = opsctl("plan", str(runbook), "-p", f"target={flag}", "--out", str(workdir / "plan.json"),
               cwd=workdir)
    assert r.code == 0, r.output
    r = cli("export", "job", str(runbook), "--plan", str(workdir / "plan.json"), "--image", IMAGE,
            "--config-map", "")
    assert r.code == 0, r.output
    cm, j = yaml.safe_load_all(r.stdout)
    assert json.loads(cm["data"]["plan.json"]) == json.loads((workdir / "plan.json").read_text())
    pod = j["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == service_account_name("rb-401")  # the one that may change things
    assert pod["volumes"][-1]["configMap"]["name"] == cm["metadata"]["name"]
    c = pod["containers"][0]
    assert c["args"] == ["apply", f"{job.PLAN_DIR}/plan.json", "--yes"] and not flag.exists()

    plan_dir = workdir / "plan-volume"
    plan_dir.mkdir()
    (plan_dir / "plan.json").write_text(cm["data"]["plan.json"])
    env = {**opsctl_env, **{e["name"]: e["value"] for e in c["env"]},
           "OPSCTL_STATE_DIR": str(workdir / "state-volume"), "HOME": str(workdir)}
    args = [a.replace(job.PLAN_DIR, str(plan_dir)) for a in c["args"]]
    r = opsctl(*args, env=env, cwd=workdir)
    assert r.code == 0, r.output
    assert flag.read_text() == "on"
    events = [json.loads(line) for line in r.stdout.splitlines()]  # stdout: JSON lines only
    run_id = j["metadata"]["labels"]["opsctl.dev/run-id"]
    assert {e["run_id"] for e in events} == {run_id}
    assert events[0]["event"] == "run_start" and events[-1]["event"] == "run_end"
    assert events[-1]["exit_code"] == 0 and "verified" in r.stderr


def test_a_run_id_from_the_environment_is_used_only_when_it_is_a_plain_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsctl import audit

    monkeypatch.setenv("OPSCTL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("OPSCTL_RUN_ID", "20261129T120000000Z-rb-006-0badcafe")
    assert audit.open_log("rb-006").run_id == "20261129T120000000Z-rb-006-0badcafe"
    # taken now: the next run with the same variable gets a fresh id, never the same log file
    assert audit.open_log("rb-006").run_id != "20261129T120000000Z-rb-006-0badcafe"
    monkeypatch.setenv("OPSCTL_RUN_ID", "../../etc/cron.d/x")
    log = audit.open_log("rb-006")
    assert "/" not in log.run_id and log.path.parent == tmp_path / "runs"


def test_an_apply_job_in_a_protected_environment_needs_its_name(cli: Callable[..., Result],
                                                               workdir: Path) -> None:
    runbook = str(Path(__file__).parents[1] / "engine" / "data" / "run" / "rb-401-write-file.yaml")
    plan = str(workdir / "plan.json")
    r = cli("plan", runbook, "-p", f"target={workdir / 'flag'}", "--env", "prod-eu", "--out", plan)
    assert r.code == 0, r.output
    r = cli("export", "job", runbook, "--plan", plan, "--image", IMAGE)
    assert r.code == 3 and "needs --yes-protected prod-eu" in r.stderr and r.stdout == ""
    r = cli("export", "job", runbook, "--plan", plan, "--image", IMAGE, "--yes-protected", "prod-eu")
    assert r.code == 0, r.output
    j = list(yaml.safe_load_all(r.stdout))[1]
    c = j["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][-2:] == ["--yes-protected", "prod-eu"]
    assert {"name": "OPSCTL_ENV", "value": "prod-eu"} in c["env"]
    r = cli("export", "job", runbook, "--plan", plan, "--image", IMAGE, "--env", "prod-us")
    assert r.code == 2 and "made for environment 'prod-eu'" in r.stderr


def test_the_workflow_steps_run_as_written(opsctl: Callable[..., Result], opsctl_env: dict[str, str],
                                           workdir: Path) -> None:
    """What Argo would do, by hand: each pod template's command with its environment, parameters
    substituted; the plan step's output files feed the gate and the apply step."""
    import json
    import subprocess
    import sys

    run_dir = Path(__file__).parents[1] / "engine" / "data" / "run"
    rb = catalog.load(str(run_dir / "rb-401-write-file.yaml"))
    flag = workdir / "flag"
    wt = argo.workflow_template(rb, rb.id, {"target": str(flag)}, settings(config_map=None, secret=None),
                                argo.ArgoSettings(envs=("prod-eu",)))
    by = pod_templates(wt)
    work, plan_in = workdir / "work", workdir / "plan-in"
    work.mkdir()
    plan_in.mkdir()

    def substitute(text: str, values: dict[str, str]) -> str:
        for k, v in values.items():
            text = text.replace("{{inputs.parameters." + k + "}}", v)
        return text.replace(argo.PLAN_IN, str(plan_in)).replace(argo.WORK, str(work))

    def run(name: str, values: dict[str, str], pod: str = "") -> subprocess.CompletedProcess[str]:
        c = by[name]["container"]
        env = {**opsctl_env, **{e["name"]: e["value"] for e in c["env"]},
               # each pod its own emptyDir
               "OPSCTL_STATE_DIR": str(workdir / f"state-{pod or name}"), "OPSCTL_RUNBOOK_PATH": str(run_dir),
               "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
        if c["command"] == ["opsctl"]:
            cmd = [sys.executable, "-m", "opsctl"]
        else:
            cmd = c["command"]
            env["PATH"] = f"{workdir / 'bin'}:{env['PATH']}"
        return subprocess.run([*cmd, *[substitute(a, values) for a in c["args"]]], env=env, cwd=workdir,
                              capture_output=True, text=True, timeout=300)

    (workdir / "bin").mkdir()  # `opsctl` on the PATH of the plan step's shell, as in the image
    (workdir / "bin" / "opsctl").write_text(f"#!/bin/sh\nexec {sys.executable} -m opsctl \"$@\"\n")
    (workdir / "bin" / "opsctl").chmod(0o755)

    r = run("plan", {"env": "prod-eu"})
    assert r.returncode == 0, r.stderr
    plan = json.loads((work / "plan.json").read_text())  # the output parameters' files
    summary = (work / "summary.md").read_text()
    assert plan["environment"]["name"] == "prod-eu" and "# Plan for rb-401" in summary
    assert "write_flag" in summary and not flag.exists()
    # the gate said YES: the apply step gets the plan parameter as its raw input artifact
    (plan_in / "plan.json").write_text(json.dumps(plan))
    r = run("apply", {"env": "prod-eu", "plan": json.dumps(plan)})
    assert r.returncode == 0, r.stderr
    assert flag.read_text() == "on"
    # the same plan again, in another pod (no applied-once claim there): the drift check refuses it
    r = run("apply", {"env": "prod-eu", "plan": json.dumps(plan)}, pod="apply-again")
    assert r.returncode == 3, r.stderr
