"""Executing one step: when -> render -> (run | plan -> confirm -> apply) -> outputs -> findings.

Runs in a worker thread.  Confirmation is asked through ``ask`` which the executor serves from the
main thread (the terminal belongs to it).  Everything that may mutate is in ``_mutating``, after
the dry-run stop and the confirmation.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opsctl import actions, templating
from opsctl.actions.base import Action, ActionContext
from opsctl.errors import (
    ActionError,
    ArgumentError,
    BackendError,
    Cancelled,
    NotConfirmed,
    OpsctlError,
    PlanDrift,
    ReadOnlyViolation,
    StepTimeout,
    Unresponsive,
)
from opsctl.model import Step, parse_duration
from opsctl.records import NO_RESULT, Finding, Plan, StepRecord, jsonable, now_iso
from opsctl.schema import argument_errors
from opsctl.units import seconds

DEFAULT_TIMEOUT = 120.0  # per attempt of a read-only step, and for plan()
APPLY_TIMEOUT = 1800.0  # apply() of a mutating step, unless the step sets `timeout`
_NOTHING = object()


@dataclass
class StepState:
    """Shared between the worker thread and the executor's watchdog."""

    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # watchdog deadline (monotonic); None while waiting for a human
    done: bool = False
    # set by the executor's watchdog before it cancels a step it gave up on: the step's verdict
    # (timed out) is already recorded, and that first verdict wins over whatever the thread does next
    abandoned: bool = False
    # apply() was called: the mutation is being (or was) sent.  `progress` is the last count the
    # action reported (its progress bar: completed, moved, failed...), kept by the executor so that
    # a run cut short (a double Ctrl-C) still says how far the mutation got
    applying: bool = False
    progress: dict[str, Any] = field(default_factory=dict)


class StepFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class StepRunner:
    def __init__(self, *, dry_run: bool, yes: bool, interactive: bool, renderer: Any,
                 context: Callable[..., dict[str, Any]], make_ctx: Callable[..., ActionContext],
                 ask: Callable[[Step, Plan], bool], audit: Any, crash_log: Callable[[str], str],
                 replay: Any = None, gate: Any = None):
        self.dry_run, self.yes, self.interactive = dry_run, yes, interactive
        self.renderer, self.context, self.make_ctx, self.ask = renderer, context, make_ctx, ask
        self.audit, self.crash_log = audit, crash_log
        # opsctl apply PLAN: the plan file's plans (planfile.Replay); gate: locks.ApplyGate
        self.replay, self.gate = replay, gate

    # ---- entry point ---------------------------------------------------------------------------
    def execute(self, step: Step, rec: StepRecord, state: StepState, selected: bool,
                records: dict[str, StepRecord]) -> None:
        rec.started_at, t0 = now_iso(), time.monotonic()
        try:
            self._execute(step, rec, state, selected, records)
            if rec.status == "skipped" and self.replay is not None and self.replay.expects_changes(step.id):
                raise PlanDrift(f"the plan is stale: step {step.id!r} planned changes and is now "
                                f"skipped ({rec.reason}); nothing was changed: make a new plan")
        except StepFailed as e:
            rec.status, rec.error_kind, rec.reason = "failed", e.kind, str(e)
        except BackendError as e:
            rec.status, rec.error_kind, rec.reason = "failed", "backend", str(e)
        except StepTimeout as e:
            rec.status, rec.error_kind = "timed_out", "timeout"
            rec.reason = f"timed out after {seconds(_limit(step, rec))}; the work was stopped" \
                + _partial(rec, e)
        except Cancelled as e:
            if state.abandoned:  # cancelled by the watchdog, not by Ctrl-C
                rec.status, rec.error_kind = "timed_out", "timeout"
                rec.reason = "timed out; the step did not stop in time and was abandoned" + _partial(rec, e)
            else:
                rec.status, rec.reason = "interrupted", "interrupted (Ctrl-C)" + _partial(rec, e)
        except NotConfirmed as e:
            rec.status, rec.reason = "refused", str(e)
        except ArgumentError as e:
            rec.status, rec.error_kind, rec.reason = "failed", "usage", str(e)
        except OpsctlError as e:
            rec.status, rec.error_kind, rec.reason = "failed", "action", str(e)
        except Exception as e:  # a bug in an action: keep the traceback out of the terminal
            where = self.crash_log(traceback.format_exc())
            rec.status, rec.error_kind = "failed", "internal"
            rec.reason = f"internal error in {step.action}: {type(e).__name__}: {e} (traceback: {where})"
        finally:
            if state.cancel.is_set() and not state.abandoned and rec.status in ("ok", "not_run"):
                rec.status, rec.reason = "interrupted", "interrupted"
            if step.continue_on_error and rec.status in ("failed", "timed_out"):
                # an optional probe (not needed for the decision) degrades to a warning
                # (the reason is the step's own, shown once with it)
                rec.findings.append(Finding(step.id, step.phase, "warning",
                                            f"{step.label} could not run (optional, the run goes on)"))
            rec.ended_at, rec.duration = now_iso(), round(time.monotonic() - t0, 3)

    def _execute(self, step: Step, rec: StepRecord, state: StepState, selected: bool,
                 records: dict[str, StepRecord]) -> None:
        if not selected:
            rec.status, rec.reason = "skipped", f"option {step.option!r} not chosen"
            return
        absent = [d for d in sorted(step.deps) if records[d].status == "not_run"
                  and records[d].phase != step.phase]
        if absent:
            d = records[absent[0]]
            raise StepFailed("template", f"needs the result of {d.phase} step {d.id!r}, which did not "
                             "run in this run: run the whole runbook, or --resume a run that has it")
        missing = [d for d in sorted(step.deps) if records[d].status in NO_RESULT]
        if missing:
            d = records[missing[0]]
            rec.status, rec.reason = "skipped", f"needs step {d.id!r}, which is {d.status}"
            return
        ctx = self.context()
        if step.when is not None and not _truthy(self._eval(step.when, ctx)):
            from opsctl.explain import why_false

            rec.status, rec.reason = "skipped", why_false(step.when, ctx)
            return
        cls = actions.get(step.action)
        if cls is None:
            raise StepFailed("template", f"unknown action {step.action!r}")
        args = rec.args = self._args(step, cls, ctx)
        if cls.read_only:
            self._read_only(step, cls, args, rec, state)
        else:
            self._mutating(step, cls, args, rec, state)

    # ---- read-only -----------------------------------------------------------------------------
    def _read_only(self, step: Step, cls: type[Action], args: dict[str, Any], rec: StepRecord,
                   state: StepState) -> None:
        # a dry-run does not wait for a mitigation that was never applied
        waits = not (self.dry_run and step.phase != "diagnose")
        window = self._window(step) if step.within is not None and waits else 0.0
        if window > 0:
            self._converge(step, cls, args, rec, state, window)
            return
        attempts = 1 + (step.retries if waits else 0)
        timeout = step.timeout or DEFAULT_TIMEOUT
        for attempt in range(1, attempts + 1):
            rec.attempts = attempt
            # the watchdog allows for the pause between attempts, when there are attempts to pause for
            ctx = self._arm(step, state, timeout, step.interval if attempts > 1 else 0.0)
            last = attempt == attempts
            try:
                result = jsonable(cls(args, ctx).run())
            except (BackendError, ActionError) as e:
                # a server that does not answer cost this attempt its whole deadline: one
                # deadline, not one per attempt (a refused or dropped connection is looked at again)
                if last or isinstance(e, StepTimeout | ArgumentError | ReadOnlyViolation | Unresponsive):
                    raise
                self.renderer.attempt(step, attempt, attempts, str(e))
                ctx.sleep(step.interval)
                continue
            if step.until is None or _truthy(self._eval(step.until, self.context(result))):
                self._finish(step, rec, result, "ok")
                return
            if last and self.dry_run and step.phase != "diagnose":
                # nothing was applied, so there is nothing to wait for: report what we see
                self._finish(step, rec, result, "ok")
                rec.findings.append(Finding(step.id, step.phase, "warning",
                                            f"not met now (dry-run does not wait): {step.until}"))
                return
            if last:
                self._finish(step, rec, result, "failed")
                rec.error_kind = "action"
                rec.reason = f"condition not met after {attempts} attempt(s): {step.until}"
                return
            self.renderer.attempt(step, attempt, attempts, f"waiting for: {step.until}")
            ctx.sleep(step.interval)

    # ---- convergence window (`within`) -----------------------------------------------------------
    def _converge(self, step: Step, cls: type[Action], args: dict[str, Any], rec: StepRecord,
                  state: StepState, window: float) -> None:
        """Re-run a read-only action until the system converged: `until` holds or, without
        `until`, every critical expectation passes.  Checks start only within the window (the
        last one at its end); each check is bounded by the step's `timeout` (default: the window,
        at most 120 s), so the step ends within `within` + one `timeout`.  A backend that cannot be
        reached, or a first check that times out, fails at once: a hung server costs one deadline,
        not one per attempt."""
        t0 = time.monotonic()
        end = t0 + window
        per_attempt = step.timeout or min(window, DEFAULT_TIMEOUT)
        last: Any = _NOTHING
        waiting, attempt = "", 0
        while True:
            attempt += 1
            rec.attempts = attempt
            ctx = self._arm(step, state, per_attempt, max(0.0, end - time.monotonic()))
            try:
                result = jsonable(cls(args, ctx).run())
            except StepTimeout:
                if last is _NOTHING:
                    raise
                waiting += " (the last check did not answer in time)"
                break  # judge what was last seen
            except ActionError as e:
                if isinstance(e, ArgumentError) or time.monotonic() >= end:
                    raise
                waiting = f"error: {e}"  # e.g. HTTP 503 while a service restarts: look again
            else:
                waiting = self._pending(step, result)
                if not waiting:
                    self._finish(step, rec, result, "ok")
                    return
                last = result
            left = end - time.monotonic()
            if left <= 0:
                break
            expected = attempt + max(1, math.ceil(left / max(step.interval, 0.001)))
            self.renderer.attempt(step, attempt, expected,
                                  f"waiting for: {waiting}; {seconds(left)} of {seconds(window)} left")
            pause = min(step.interval, left)
            self._arm(step, state, pause + 1.0).sleep(pause)
        took = seconds(time.monotonic() - t0)
        if last is _NOTHING:
            raise ActionError(f"still {waiting} after {took} ({attempt} check(s) within {seconds(window)})")
        self._finish(step, rec, last, "ok")
        note = f" (still so after {took}: {attempt} check(s) within {seconds(window)})"
        if step.until is not None:
            rec.status, rec.error_kind = "failed", "action"
            rec.reason = f"still not {step.until} after {took} ({attempt} check(s) within {seconds(window)})"
        for f in rec.findings:
            if f.severity == "critical":
                f.message += note

    def _window(self, step: Step) -> float:
        if not isinstance(step.within, str):
            return float(step.within or 0)
        try:
            return parse_duration(templating.render(step.within, self.context()))
        except templating.TemplateError as e:
            raise StepFailed("template", f"within: {e}") from None
        except ValueError as e:
            raise StepFailed("template", f"within: {e}") from None

    def _pending(self, step: Step, result: Any) -> str:
        """What the step still waits for ("" once converged)."""
        ctx = self.context(result)
        if step.until is not None:
            return "" if _truthy(self._eval(step.until, ctx)) else step.until
        for exp in step.expect:
            if exp.severity == "critical" and not _truthy(self._eval(exp.that, ctx)):
                try:
                    return str(templating.render(exp.message, ctx)) if exp.message else exp.that
                except templating.TemplateError:
                    return exp.that
        return ""

    # ---- mutating ------------------------------------------------------------------------------
    def _mutating(self, step: Step, cls: type[Action], args: dict[str, Any], rec: StepRecord,
                  state: StepState) -> None:
        ctx = self._arm(step, state, step.timeout or DEFAULT_TIMEOUT)
        try:
            plan = cls(args, ctx).plan()
        except ActionError as e:
            if not self.dry_run or isinstance(e, StepTimeout | ReadOnlyViolation):
                raise
            # a dry-run reports what would happen; a refusing guard is part of that answer, and
            # the run's exit code says so (executor.verdict: 1, or 2 for bad input)
            rec.status, rec.reason = "planned", f"the plan refuses: {e}"
            rec.error_kind = "usage" if isinstance(e, ArgumentError) else "plan_refused"
            rec.findings.append(Finding(step.id, step.phase, "critical", f"would refuse: {e}"))
            return
        if self.replay is not None:  # a plan file: the live plan must still be the reviewed one
            plan = self.replay.check(step.id, plan)
        rec.plan = jsonable(plan.as_dict())
        self.renderer.plan(step, plan, dry_run=self.dry_run)
        if plan.empty:
            rec.status, rec.reason = "noop", plan.summary or "nothing to change"
            return
        if self.dry_run:
            rec.status, rec.reason = "planned", "dry-run: not applied"
            return
        if not self.yes:
            if not self.interactive:
                raise NotConfirmed(
                    f"step {step.id!r} would change {len(plan.changes)} thing(s) but stdin is not a "
                    "terminal and --yes was not given: refusing to change anything. Review the plan "
                    "(--dry-run) and re-run with --yes to apply it.")
            state.deadline = None  # a human is reading the plan
            try:
                rec.confirmed = self.ask(step, plan)
            except Cancelled:
                # asked, and answered with Ctrl-C: the post-mortem must not read "not asked"
                self.audit.event("confirm", step=step.id, answer=False, interrupted=True)
                raise
            self.audit.event("confirm", step=step.id, answer=rec.confirmed)
            if not rec.confirmed:
                rec.status, rec.reason = "declined", "not confirmed"
                return
        else:
            rec.confirmed = True
            self.audit.event("confirm", step=step.id, answer=True, by="--yes")
        ctx = self._arm(step, state, step.timeout or APPLY_TIMEOUT, writable=True)
        if self.gate is None:
            self._sending(step, plan, state)
            result = jsonable(cls(args, ctx).apply(plan))
            self._finish(step, rec, result, "applied")
            return
        # one apply at a time per target: lock, re-plan, apply what is still to do
        with self.gate.hold(step, cls, args, plan, ctx) as final:
            if final is None:
                rec.status, rec.reason = "noop", "nothing left to change: another run already changed it"
                return
            rec.plan = jsonable(final.as_dict())
            self._sending(step, final, state)
            result = jsonable(cls(args, ctx).apply(final))
        self._finish(step, rec, result, "applied")

    def _sending(self, step: Step, plan: Plan, state: StepState) -> None:
        """Logged before apply() sends anything: a run cut short still shows the change was sent."""
        # the plan's data too: a resumed run finishes this confirmed change, not a bigger one
        # (audit.unfinished_plans), even when this process is killed mid-apply
        self.audit.event("apply_start", step=step.id, action=step.action, summary=plan.summary,
                         targets=[c.target for c in plan.changes][:200], changes=len(plan.changes),
                         plan_data=jsonable(plan.data))
        state.applying = True

    # ---- helpers -------------------------------------------------------------------------------
    def _arm(self, step: Step, state: StepState, timeout: float, slack: float = 0.0, *,
             writable: bool = False) -> ActionContext:
        """A context for one call; read-only (guarded backend clients) unless it is for apply()."""
        deadline = time.monotonic() + timeout
        state.deadline = deadline + slack
        return self.make_ctx(step, state.cancel, deadline, read_only=not writable)

    def _args(self, step: Step, cls: type[Action], ctx: dict[str, Any]) -> dict[str, Any]:
        try:
            args = templating.render(step.args, ctx)
        except templating.TemplateError as e:
            raise StepFailed("template", f"with: {e}") from None
        errors = argument_errors(cls, args)
        if errors:
            first = errors[0]
            where = ".".join(map(str, first.absolute_path)) or "with"
            raise StepFailed("template", f"{step.action}: argument {where}: {first.message}")
        return args

    def _eval(self, expr: str, ctx: dict[str, Any]) -> Any:
        try:
            return templating.evaluate(expr, ctx)
        except templating.TemplateError as e:
            raise StepFailed("template", str(e)) from None

    def _finish(self, step: Step, rec: StepRecord, result: Any, status: str) -> None:
        rec.result = result
        ctx = self.context(result)
        rec.outputs = {name: jsonable(self._eval(expr, ctx)) for name, expr in step.outputs.items()}
        for exp in step.expect:
            ok = _truthy(self._eval(exp.that, ctx))
            # `message` describes the problem; a passed check says `ok_message`, or what was checked
            text = exp.ok_message if ok else exp.message
            try:
                message = templating.render(text, ctx) if text else f"{exp.that}: passed"
            except templating.TemplateError as err:
                raise StepFailed("template", f"expect message: {err}") from None
            severity = "ok" if ok else exp.severity
            if not ok and self.dry_run and step.phase == "verify":
                # nothing was applied: this is the state before any mitigation, not a failed fix
                severity, message = "warning", f"not yet (dry-run, nothing applied): {message}"
            rec.findings.append(Finding(step.id, step.phase, severity, str(message)))
        rec.status = status


def _partial(rec: StepRecord, e: OpsctlError) -> str:
    """Record what a stopped action had already done; the text to add to the reason."""
    if e.partial is None:
        return ""
    rec.result = jsonable(e.partial)
    return f" after: {e.partial_note}" if e.partial_note else ""


def _truthy(value: Any) -> bool:
    return bool(value)


def _limit(step: Step, rec: StepRecord) -> float:
    if step.timeout:
        return step.timeout
    return APPLY_TIMEOUT if rec.plan is not None and rec.confirmed else DEFAULT_TIMEOUT
