"""The verdict of a run: its exit code, status and message, from the step records (the README's
exit-code table)."""

from __future__ import annotations

from typing import Any

from opsctl.errors import ExitCode
from opsctl.model import Runbook
from opsctl.records import StepRecord


def refused_plans(recs: list[StepRecord], settings: Any, runbook: Runbook) -> list[StepRecord]:
    """A dry-run's plans that the action refuses, for the steps the run would execute: steps
    of no option, or of the chosen one.  A dry-run that plans every option (no --option) shows
    the refused alternatives as findings and still exits 0 when another one would run."""
    refused = [r for r in recs if _refused(r)]
    planning_all = not settings.option and not settings.one_option and bool(runbook.options)
    if not planning_all:
        return sorted(refused, key=lambda r: r.error_kind != "usage")
    counted = [r for r in refused if r.option is None]
    by_option = {o.name: [r for r in recs if r.option == o.name and r.phase == "mitigate"
                          and r.status not in ("skipped", "not_run")] for o in runbook.options}
    planned = {name: rs for name, rs in by_option.items() if rs}
    if planned and all(any(_refused(r) for r in rs) for rs in planned.values()):
        counted += [r for r in refused if r.option is not None]  # no option would work
    return sorted(counted, key=lambda r: r.error_kind != "usage")


def judge(recs: list[StepRecord], *, interrupted: bool, usage_error: str | None, settings: Any,
          runbook: Runbook) -> tuple[int, str, str]:
    """The run's exit code, status and message, from its step records."""
    if interrupted:  # a real Ctrl-C (SIGINT), and only that, is exit 130
        return ExitCode.INTERRUPTED, "interrupted", "interrupted"
    for r in recs:  # a step stopped without Ctrl-C (cannot happen today): a failure, not 130
        if r.status == "interrupted":
            r.status, r.error_kind = "failed", r.error_kind or "action"
            r.reason = f"stopped without Ctrl-C: {r.reason}"
    if usage_error:
        return ExitCode.INVALID, "invalid", usage_error
    for r in recs:
        if r.status in ("declined", "refused"):
            return ExitCode.NOT_CONFIRMED, "not_confirmed", f"{r.id}: {r.reason}"
    failed = [r for r in recs if r.status in ("failed", "timed_out") and not r.continue_on_error]
    # bad input (a template or argument problem) is the root cause of whatever else failed
    failed.sort(key=lambda r: r.error_kind not in ("template", "usage"))
    if failed:
        r = failed[0]
        code = {"backend": ExitCode.BACKEND, "template": ExitCode.INVALID,
                "usage": ExitCode.INVALID}.get(r.error_kind or "", ExitCode.FAILED)
        kind = {ExitCode.BACKEND: "backend_error", ExitCode.INVALID: "invalid"}.get(code, "failed")
        return code, kind, f"{r.phase}/{r.id}: {r.reason}"
    if settings.dry_run:
        refused = refused_plans(recs, settings, runbook)
        if refused:
            r = refused[0]
            code = ExitCode.INVALID if r.error_kind == "usage" else ExitCode.FAILED
            return (code, "invalid" if code == ExitCode.INVALID else "failed",
                    f"dry-run: nothing was changed, but {r.phase}/{r.id} would not run: {r.reason}")
        return ExitCode.OK, "ok", "dry-run complete: nothing was changed"
    bad = [f for r in recs if r.phase == "verify" for f in r.findings if f.severity == "critical"]
    if bad:
        return ExitCode.FAILED, "verify_failed", f"verification failed: {bad[0].message}"
    if any(r.phase == "verify" and r.status == "ok" for r in recs):
        if not any(r.status == "applied" for r in recs):
            return ExitCode.OK, "ok", "verified (no mitigation was applied)"
        return ExitCode.OK, "ok", "verified"
    return ExitCode.OK, "ok", "done"


def _refused(rec: StepRecord) -> bool:
    return rec.status == "planned" and rec.error_kind in ("plan_refused", "usage")
