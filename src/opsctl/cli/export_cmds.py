"""`opsctl export job|cronjob|argo RUNBOOK`: the runbook as Kubernetes/Argo manifests (YAML on stdout).

Only typer is imported here; the builders (opsctl.export) are imported when a command runs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from opsctl.cli.run_cmd import complete_runbook

app = typer.Typer(no_args_is_help=True, help="Write a runbook as a Kubernetes Job or CronJob, or an Argo "
                                             "WorkflowTemplate with an approval gate (YAML on stdout).")


class Format(StrEnum):
    yaml = "yaml"
    json = "json"


class CronApi(StrEnum):
    v1 = "batch/v1"
    v1beta1 = "batch/v1beta1"


Runbook = Annotated[str, typer.Argument(help="Runbook id (rb-006) or path to a runbook file.",
                                        autocompletion=complete_runbook)]
Image = Annotated[str, typer.Option("--image", metavar="IMAGE",
                                    help="The opsctl image (see Dockerfile), pinned: repo@sha256:... "
                                         "or repo:tag.")]
Params = Annotated[list[str] | None, typer.Option("--param", "-p", metavar="KEY=VALUE",
                                                  help="Runbook parameter (repeatable); secret "
                                                       "parameters come from the Secret, not from here.")]
OptionName = Annotated[str | None, typer.Option("--option", help="Mitigation option.")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the manifests.")]
ConfigMap = Annotated[str, typer.Option("--config-map", metavar="NAME",
                                        help="ConfigMap with key opsctl.yaml (the environments; "
                                             "'' for none: standard variables only).")]
Secret = Annotated[str, typer.Option("--secret", metavar="NAME",
                                     help="Secret whose keys become the pod's environment variables "
                                          "(${VAR} of opsctl.yaml, PGPASSWORD, AWS_*, OPSCTL_PARAM_<NAME>; "
                                          "'' for none).")]
Out = Annotated[str | None, typer.Option("--out", metavar="FILE", help="Write to FILE instead of stdout.")]
Fmt = Annotated[Format, typer.Option("--output", "-o", help="yaml (kubectl apply -f -) or json.")]
Ttl = Annotated[int, typer.Option("--ttl", metavar="SECONDS", min=0,
                                  help="Delete finished runs after this long.")]


def _common(runbook: str, param: list[str] | None, option: str | None, *,
            allow_secret_values: bool = False) -> tuple[Any, dict[str, str]]:
    """The runbook and its plain parameters, checked as `opsctl run` checks them (exit 2)."""
    from opsctl import catalog
    from opsctl.cli import run_cmd
    from opsctl.errors import UsageError

    rb = catalog.load(runbook)
    given = run_cmd.parse_params(list(param or []))
    secret = sorted(k for k in given if k in rb.params and rb.params[k].secret)
    if secret and not allow_secret_values:
        raise UsageError(f"{rb.id}: parameter {secret[0]!r} is secret: a manifest never holds a secret; "
                         f"put it in the Secret (--secret) as OPSCTL_PARAM_{secret[0].upper()}")
    run_cmd._check_option(rb, option)
    # secret parameters are supplied in the pod: stand-ins here, only to check the others
    stand_in = {k: str(p.default) if p.default is not None else "secret"
                for k, p in rb.params.items() if p.secret and k not in given}
    values = rb.resolve_params({**given, **stand_in})
    if option and option != "none":
        rb.check_requires(option, values)
    return rb, given


def _settings(image: str, namespace: str, config_map: str, secret: str, env: str | None, ttl: int,
              run_id: str) -> Any:
    from opsctl.errors import UsageError
    from opsctl.export.job import PodSettings

    if not image.strip() or any(c.isspace() for c in image):
        raise UsageError(f"--image {image!r}: expected an image reference such as "
                         "registry.example.com/opsctl@sha256:...")
    _check_name("--namespace", namespace)
    for flag, name in (("--config-map", config_map), ("--secret", secret)):
        if name:
            _check_name(flag, name)
    return PodSettings(image=image, namespace=namespace, config_map=config_map or None,
                       secret=secret or None, env=env, ttl_after_finished=ttl, run_id=run_id)


def _check_name(flag: str, name: str) -> None:
    import re

    from opsctl.errors import UsageError

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise UsageError(f"{flag} {name!r}: not a Kubernetes object name (lower-case letters, digits, "
                         "'-' and '.')")


def _check_envs(envs: list[str]) -> list[Any]:
    """Each name must be an environment of opsctl.yaml (the config's own lookup, its errors)."""
    from opsctl import config
    from opsctl.errors import UsageError

    seen, out = set(), []
    for name in envs:
        if name in seen:
            raise UsageError(f"--env {name!r} given twice")
        seen.add(name)
        out.append(config.load_environment(name))
    return out


def _emit(docs: list[dict[str, Any]], fmt: Format, out: str | None) -> None:
    import json

    import yaml

    from opsctl.errors import UsageError

    if fmt == Format.json:
        text = json.dumps(docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs},
                          indent=2) + "\n"
    else:
        class _Dumper(yaml.SafeDumper):
            def ignore_aliases(self, data: Any) -> bool:  # the same labels twice: no &id001 anchors
                return True

        text = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as e:
        raise UsageError(f"--out {out}: {e.strerror or e}") from None
    typer.echo(f"wrote {out}", err=True)


def job(
    runbook: Runbook, image: Image, param: Params = None, option: OptionName = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run the whole runbook read-only "
                                          "(mitigations are only planned).")] = False,
    plan: Annotated[str | None, typer.Option("--plan", metavar="PLAN_FILE",
                                             help="Apply this reviewed plan file (opsctl plan): the "
                                                  "only way a Job changes anything.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml.")] = None,
    yes_protected: Annotated[str | None, typer.Option("--yes-protected", metavar="ENV",
                                                      help="With --plan in a protected environment: "
                                                           "its name.")] = None,
    namespace: Namespace = "default", config_map: ConfigMap = "opsctl-config",
    secret: Secret = "opsctl-credentials", ttl: Ttl = 86400, out: Out = None, output: Fmt = Format.yaml,
) -> int:
    """A Job: the diagnosis (default), a --dry-run, or `opsctl apply` of a reviewed --plan file."""
    from opsctl.errors import UsageError
    from opsctl.export import job as jobs

    if plan is not None and (dry_run or param or option):
        raise UsageError("--plan applies a reviewed plan as it is: its parameters and option are fixed "
                         "(no -p, --option or --dry-run with --plan)")
    if plan is None:
        rb, given = _common(runbook, param, option)
    else:  # the plan's parameters were checked when it was made; its digest proves them unchanged
        from opsctl import catalog

        rb, given = catalog.load(runbook), {}
    doc = None
    if plan is not None:
        doc = _plan(plan, rb)
        env = env or doc["environment"]["name"]
        if env != doc["environment"]["name"]:
            raise UsageError(f"--env {env!r}: the plan was made for environment "
                             f"{doc['environment']['name']!r}")
        if doc["environment"].get("named") is False:
            env = None
    protected = bool(env and _check_envs([env])[0].protected)
    if yes_protected is not None and yes_protected != env:
        raise UsageError(f"--yes-protected {yes_protected!r} does not name the environment of this Job "
                         f"({env!r})")
    if doc is not None and protected and yes_protected is None:  # the pod would refuse it (exit 3)
        from opsctl.errors import NotConfirmed

        raise NotConfirmed(f"environment {env!r} is protected: an apply Job needs --yes-protected {env}")
    spec = jobs.job_spec(rb, rb.id, given, option=option, dry_run=dry_run, plan_doc=doc,
                         yes_protected=yes_protected)
    s = _settings(image, namespace, config_map, secret, env, ttl, jobs.run_id_for(rb.id))
    _emit(jobs.job(rb, spec, s), output, out)
    return 0


def _plan(path: str, rb: Any) -> dict[str, Any]:
    from opsctl import planfile
    from opsctl.errors import NotConfirmed, UsageError

    doc = planfile.load(path)
    if doc["runbook"]["id"] != rb.id:
        raise UsageError(f"{path} is a plan of {doc['runbook']['id']}, not {rb.id}")
    if doc["runbook"].get("sha256") != rb.sha256:
        raise NotConfirmed(f"runbook {rb.id} changed since {path} was made: make a new plan")
    if planfile.expired(doc):
        raise NotConfirmed(f"{path} expired at {doc['expires_at']}: make a new plan")
    return doc


def cronjob(
    runbook: Runbook, image: Image,
    schedule: Annotated[str, typer.Option("--schedule", metavar="CRON", help="Cron schedule, e.g. "
                                          "'*/15 * * * *'.")],
    param: Params = None, option: OptionName = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="The whole runbook read-only instead of "
                                          "the diagnosis alone.")] = False,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml.")] = None,
    api_version: Annotated[CronApi, typer.Option("--api-version", help="batch/v1beta1 for clusters "
                                                 "before Kubernetes 1.21.")] = CronApi.v1,
    namespace: Namespace = "default", config_map: ConfigMap = "opsctl-config",
    secret: Secret = "opsctl-credentials", ttl: Ttl = 86400, out: Out = None, output: Fmt = Format.yaml,
) -> int:
    """A CronJob for scheduled read-only checks (the diagnosis, or a --dry-run); never a mutation."""
    from opsctl.errors import UsageError
    from opsctl.export import job as jobs

    fields = schedule.split()
    if len(fields) != 5 and not (len(fields) == 1 and fields[0].startswith("@")):
        raise UsageError(f"--schedule {schedule!r}: expected five cron fields ('*/15 * * * *') or @hourly")
    rb, given = _common(runbook, param, option)
    if env:
        _check_envs([env])
    spec = jobs.job_spec(rb, rb.id, given, option=option, dry_run=dry_run, plan_doc=None)
    s = _settings(image, namespace, config_map, secret, env, ttl, "")
    _emit([jobs.cronjob(rb, spec, s, schedule, api_version=api_version.value)], output, out)
    return 0


def argo(
    runbook: Runbook, image: Image, param: Params = None, option: OptionName = None,
    env: Annotated[list[str] | None, typer.Option(
        "--env", "-e", help="Environment from opsctl.yaml (repeatable): diagnosed in parallel, changed "
                            "one at a time, each behind its own approval.")] = None,
    parallelism: Annotated[int, typer.Option("--parallelism", min=1,
                                             help="At most this many diagnoses at once.")] = 4,
    fail_fast: Annotated[bool, typer.Option("--fail-fast/--no-fail-fast",
                                            help="Stop starting diagnoses after one fails.")] = False,
    plan_expires: Annotated[str, typer.Option("--plan-expires", metavar="DURATION",
                                              help="How long an approver has for each plan.")] = "2h",
    namespace: Namespace = "default", config_map: ConfigMap = "opsctl-config",
    secret: Secret = "opsctl-credentials", ttl: Ttl = 86400, out: Out = None, output: Fmt = Format.yaml,
) -> int:
    """An Argo WorkflowTemplate: diagnose -> plan -> approval (suspend) -> opsctl apply -> verify."""
    import re

    from opsctl.errors import UsageError
    from opsctl.export import argo as argo_export
    from opsctl.model import parse_duration

    rb, given = _common(runbook, param, option)
    if option == "none":
        raise UsageError("--option none plans nothing: the workflow's plan needs a mitigation option")
    for k, v in given.items():
        if "{{" in v:  # Argo would substitute it
            raise UsageError(f"-p {k}: a value with '{{{{' would be rewritten by Argo's templating")
    envs = list(env or [])
    for name in envs:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
            raise UsageError(f"--env {name!r}: an environment exported to Argo needs a plain name "
                             "(letters, digits, '-', '_', '.')")
    _check_envs(envs)
    try:
        if parse_duration(plan_expires) <= 0:
            raise ValueError("must be positive")
    except ValueError as e:
        raise UsageError(f"--plan-expires: {e}") from None
    s = _settings(image, namespace, config_map, secret, None, ttl, "")
    a = argo_export.ArgoSettings(envs=tuple(envs), parallelism=parallelism, fail_fast=fail_fast,
                                 plan_expires=plan_expires)
    _emit([argo_export.workflow_template(rb, rb.id, given, s, a, option=option)], output, out)
    return 0


app.command("job")(job)
app.command("cronjob")(cronjob)
app.command("argo")(argo)
