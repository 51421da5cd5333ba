"""Running what an alert maps to, read-only, through the one executor.

- a firing alert: the diagnosis, then the plan of the option the diagnosis recommends, in dry-run
  (``plan()`` does read-only lookups; the executor never calls ``apply()`` in a dry-run), written
  as a plan file (``$OPSCTL_STATE_DIR/plans/RUN_ID.json``) for ``opsctl apply``.  No verify phase:
  verify waits for a mitigation that was not applied.
- a resolved alert: the verify phase only, reusing the results of the firing episode's run when
  there is one (like ``--phase verify --resume RUN``), and the outcome recorded.

Each run writes the usual run log, plus an ``alert`` event stamped with the alert's ``startsAt``, so
that ``opsctl report`` starts the timeline at the alert.
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from typing import Any

from opsctl import audit
from opsctl.alerts.bindings import Match
from opsctl.alerts.payloads import Alert
from opsctl.config import Environment
from opsctl.executor import Executor, RunSettings
from opsctl.model import Option, Runbook
from opsctl.records import Outcome, StepRecord
from opsctl.render import JsonRenderer


@dataclass
class RunResult:
    runbook: Runbook
    alert: Alert
    match: Match
    phase: str  # diagnose | verify
    run_id: str
    outcome: Outcome
    recommended: Option | None = None
    recommendation_note: str = ""
    secrets: tuple[str, ...] = ()
    environment: str = "default"
    plan_file: str | None = None  # the recommended option's plan file (`opsctl apply PLAN_FILE`)

    @property
    def plan_steps(self) -> list[StepRecord]:
        return [r for r in self.outcome.records if r.phase == "mitigate" and r.plan]


class _DiagnosisExecutor(Executor):
    """Plans only the option the diagnosis recommends (never one needing a missing parameter)."""

    recommended_option: Option | None = None
    recommendation_note: str = ""

    def select_options(self) -> set[str] | None:
        recommended, _ = self.recommended()
        implicit = [o for o in recommended if not o.explicit]
        if len(implicit) != 1:
            self.recommendation_note = (
                "the diagnosis recommends no mitigation" if not implicit else
                "the diagnosis recommends several options: " + ", ".join(o.name for o in implicit))
            self.audit.event("option", chosen=None, recommended=[o.name for o in implicit],
                             by="alert diagnosis (plan only)")
            return None
        option = self.recommended_option = implicit[0]
        missing = [p for p in option.requires if self.params.get(p) in (None, "", 0)]
        if missing:
            self.recommendation_note = (f"recommended option {option.name!r} needs "
                                        f"{', '.join(missing)}: not planned")
            return None
        self.audit.event("option", chosen=option.name, by="alert diagnosis (plan only)")
        return {option.name}


def _log(rb: Runbook, alert: Alert, match: Match, environment: Environment, settings: RunSettings,
         resumed_from: str | None, argv: list[str]) -> audit.RunLog:
    log = audit.RunLog(audit.new_run_id(rb.id), resumed_from=resumed_from)  # claims a unique id
    assert match.params is not None
    log.start(rb, match.params, environment.name, settings, argv)
    # ts = the alert's startsAt: `opsctl report` sorts by time, so the timeline starts at the alert
    stamp = {"ts": alert.starts_at} if alert.starts_at else {}
    log.event("alert", **stamp, alertname=alert.name, status=alert.status, source=alert.source,
              fingerprint=alert.fingerprint, startsAt=alert.starts_at,
              endsAt=alert.ends_at, generatorURL=alert.generator_url,
              runbook_url=alert.runbook_url, labels=alert.labels, via=match.via)
    return log


def environment_for(environment: Environment, match: Match) -> Environment:
    """The environment, pointed at the server the alert names (``connect: {redis: host:port}``);
    credentials stay the environment's (its URL, REDIS_URL)."""
    if not match.connect:
        return environment
    backends = {k: dict(v) for k, v in environment.backends.items()}
    for backend, address in match.connect.items():
        address = address.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[2]
        host, sep, port = address.rpartition(":")
        host, port = (host, port) if sep and port.isdigit() else (address, "")
        cfg = backends.setdefault(backend, {})
        if backend == "redis" and not cfg.get("url"):
            cfg["url"] = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        cfg["host"] = host.strip("[]")
        if port:
            cfg["port"] = int(port)
    return dataclasses.replace(environment, backends=backends)


def diagnose(rb: Runbook, alert: Alert, match: Match, environment: Environment,
             argv: list[str] | None = None, plan_ttl: float = 3600.0) -> RunResult:
    """The diagnosis + the recommended option's plan (dry-run): nothing is ever changed."""
    assert match.params is not None
    diag_only = dataclasses.replace(
        rb, phases={k: v for k, v in rb.phases.items() if k in ("diagnose", "mitigate")})
    settings = RunSettings(dry_run=True, yes=False, interactive=False, phase=None, notify=False)
    log = _log(rb, alert, match, environment, settings, None, argv or ["alert", alert.name])
    renderer = JsonRenderer(io.StringIO())
    renderer.secrets = log.secrets
    ex = _DiagnosisExecutor(diag_only, match.params, environment_for(environment, match), settings,
                            renderer, log)
    outcome = ex.execute()
    log.end(outcome)
    result = RunResult(rb, alert, match, "diagnose", log.run_id, outcome, ex.recommended_option,
                       ex.recommendation_note, log.secrets, environment.name)
    if ex.recommended_option and outcome.exit_code == 0 and outcome.option:
        result.plan_file = _write_plan(result, environment_for(environment, match), plan_ttl)
    return result


def _write_plan(result: RunResult, environment: Environment, ttl: float) -> str | None:
    """The plan file of the recommended option, beside the run log (plans/RUN_ID.json)."""
    from opsctl import planfile
    from opsctl.errors import OpsctlError

    assert result.match.params is not None
    try:
        doc = planfile.build(result.runbook, result.runbook.id, result.match.params, environment,
                             result.outcome, result.secrets, ttl)
        directory = audit.state_dir() / "plans"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{result.run_id}.json"
        planfile.write(doc, str(path))
    except (OpsctlError, OSError) as e:
        result.recommendation_note = f"no plan file written: {e}"
        return None
    return str(path)


def verify(rb: Runbook, alert: Alert, match: Match, environment: Environment,
           previous_run: str | None = None, argv: list[str] | None = None) -> RunResult:
    """The verify phase only (a resolved alert): proves the symptom is gone, or says it is not."""
    assert match.params is not None
    previous: dict[str, StepRecord] = {}
    if previous_run:
        try:
            previous = audit.final_records(audit.read_run(previous_run))
        except Exception:  # an unreadable log: verify on its own
            previous, previous_run = {}, None
    # verify steps are read-only in every shipped runbook; a mutating one is only planned
    read_only = all(_read_only(s.action) for s in rb.phases["verify"])
    # the alert path posts its own Slack message (alerts/message.py): no run notifications
    settings = RunSettings(dry_run=not read_only, yes=False, interactive=False, phase="verify",
                           notify=False)
    log = _log(rb, alert, match, environment, settings, previous_run,
               argv or ["alert", alert.name, "--resolved"])
    renderer = JsonRenderer(io.StringIO())
    renderer.secrets = log.secrets
    outcome = Executor(rb, match.params, environment_for(environment, match), settings, renderer, log,
                       previous).execute()
    log.end(outcome)
    return RunResult(rb, alert, match, "verify", log.run_id, outcome, secrets=log.secrets,
                     environment=environment.name)


def _read_only(action: str) -> bool:
    from opsctl.actions import get

    cls = get(action)
    return cls is not None and cls.read_only


def summary(result: RunResult) -> dict[str, Any]:
    """What `opsctl alert --run -o json` prints and `opsctl serve` logs, per run."""
    o = result.outcome
    return audit.redact({
        "runbook": result.runbook.id, "phase": result.phase, "run_id": result.run_id,
        "status": o.status, "exit_code": o.exit_code, "message": o.message,
        "findings": [f.__dict__ for f in o.findings() if f.severity != "ok"],
        "recommended": result.recommended.name if result.recommended else None,
        "recommendation_note": result.recommendation_note,
        "plans": [{"step": r.id, "option": r.option, **(r.plan or {})} for r in result.plan_steps],
        "plan_file": result.plan_file,
    }, result.secrets)
