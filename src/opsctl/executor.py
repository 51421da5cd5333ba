"""diagnose -> findings -> (mitigate: plan -> show -> dry-run stop -> confirm -> apply) -> verify.

The executor owns the order of things and every safety decision; actions only look things up
(``run``/``plan``) or change them (``apply``) when told to.  Steps run in daemon worker threads:
independent read-only steps of a phase run concurrently, a mutating step runs alone, and the main
thread keeps the terminal (confirmations, Ctrl-C) and a watchdog that enforces timeouts.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from opsctl import templating, verdict
from opsctl.actions import get as get_action
from opsctl.actions.base import ActionContext
from opsctl.config import Environment
from opsctl.errors import Cancelled, ExitCode, UsageError
from opsctl.model import PHASE_ORDER, Option, Runbook, Step
from opsctl.notifier import Notifier
from opsctl.progresslog import ProgressLog, progress_text
from opsctl.records import DONE, Outcome, Plan, StepRecord, now_iso
from opsctl.signals import sigint_blocked
from opsctl.stepexec import StepRunner, StepState

GRACE = 5.0  # how long past its deadline a step may take to notice cancellation
STOP_GRACE = 5.0  # after Ctrl-C: how long running steps get to stop and record what they did
_NO_RESULT = object()


@dataclass
class RunSettings:
    dry_run: bool = False
    yes: bool = False
    interactive: bool = False
    option: str | None = None
    phase: str | None = None
    max_parallel: int = 8
    # opsctl plan: a dry-run that plans one option (the chosen or recommended one), not all of them
    one_option: bool = False
    notify: bool = True  # --no-notify: no Slack notifications of this run (opsctl.notifier)


class Executor:
    def __init__(self, runbook: Runbook, params: dict[str, Any], environment: Environment,
                 settings: RunSettings, renderer: Any, audit: Any,
                 previous: dict[str, StepRecord] | None = None, *, replay: Any = None,
                 gate: Any = None, resumed_plans: dict[str, dict[str, Any]] | None = None) -> None:
        self.rb, self.params, self.environment, self.s = runbook, params, environment, settings
        self.renderer, self.audit = renderer, audit
        self.previous = previous or {}
        # --resume: the confirmed plans whose apply was cut short (audit.unfinished_plans)
        self.resumed_plans = resumed_plans or {}
        self.records = {st.id: StepRecord(st.id, st.phase, st.action, st.label, st.option,
                                          _read_only(st.action), continue_on_error=st.continue_on_error)
                        for st in runbook.steps()}
        if settings.phase:  # --phase X --resume RUN: the other phases' results come from that run
            for sid, old in self.previous.items():
                if sid in self.records and old.status in DONE and old.phase != settings.phase:
                    self.records[sid] = StepRecord.from_dict(
                        {**old.as_dict(), "reused_from": audit.resumed_from})
        self.clients: dict[str, Any] = {}
        self.clients_lock = threading.Lock()
        self.states: dict[str, StepState] = {}
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        # known from the start when chosen with --option, so diagnose steps can see run.option
        self.selected: set[str] | None = {settings.option} if settings.option not in (None, "none") \
            else set()
        self.halt: str | None = None  # why the run stopped early
        self.interrupted = False
        self.ended: set[str] = set()  # steps whose end was rendered and logged
        self.usage_error: str | None = None
        # set from another thread (a fan-out over environments on Ctrl-C): stop as on Ctrl-C
        self.stop_requested: threading.Event | None = None
        self.runner = StepRunner(dry_run=settings.dry_run, yes=settings.yes,
                                 interactive=settings.interactive, renderer=renderer,
                                 context=self.template_context, make_ctx=self._make_ctx,
                                 ask=self._ask, audit=audit, crash_log=audit.crash,
                                 replay=replay, gate=gate)
        self.notifier = Notifier(runbook, environment, settings, audit)

    # ---- the run -------------------------------------------------------------------------------
    def execute(self) -> Outcome:
        started, t0 = now_iso(), time.monotonic()
        phases = (self.s.phase,) if self.s.phase else PHASE_ORDER
        self.notifier.send("start")
        try:
            for phase in phases:
                steps = self.rb.phases.get(phase, ())
                if not steps or self.halt:
                    continue
                if phase == "mitigate":
                    try:
                        self.selected = self.select_options()
                    except UsageError as e:  # decided after the diagnosis: end the run cleanly
                        self.usage_error, self.halt = str(e), "no mitigation option chosen"
                        break
                    self.notifier.option(self.rb, self.selected)
                    if self.selected is None:
                        # skipped by choice, not "not run": verify steps that refer to a
                        # mitigate step are skipped with it, not failed as bad input
                        for step in steps:
                            rec = self.records[step.id]
                            rec.status, rec.reason = "skipped", "mitigation skipped: no option chosen"
                        continue
                self.renderer.phase(phase)
                self.run_phase(steps)
        except KeyboardInterrupt:
            self.interrupt()
        finally:
            self.close_clients()
        outcome = self.outcome(started, time.monotonic() - t0)
        self.notifier.verdict(outcome)
        for warning in self.notifier.close():  # a failing Slack is a warning, never the verdict
            self.renderer.note(f"warning: {warning}")
            self.audit.event("notify_warning", message=warning)
        return outcome

    def run_phase(self, steps: tuple[Step, ...]) -> None:
        group: list[Step] = []
        for step in steps:
            if self.records[step.id].read_only:
                group.append(step)
                continue
            self.run_group(group)
            group = []
            if self.halt:
                return
            self.run_group([step])
            if self.halt:
                return
        self.run_group(group)

    def run_group(self, steps: list[Step]) -> None:
        """Run steps concurrently, each as soon as the steps it references are done."""
        pending = list(steps)
        running: dict[str, threading.Thread] = {}
        while (pending and not self.halt) or running:
            for step in list(pending):
                if self.halt or len(running) >= self.s.max_parallel:
                    break
                if any(d in running or d in {p.id for p in pending} for d in step.deps):
                    continue
                pending.remove(step)
                running[step.id] = self.start(step)
            try:
                kind, payload = self.inbox.get(timeout=0.1)
            except queue.Empty:
                if self.stop_requested is not None and self.stop_requested.is_set():
                    raise KeyboardInterrupt from None  # execute() handles it as a Ctrl-C here
                self.watchdog(running)
                continue
            if kind == "done":
                if running.pop(payload, None) is not None:  # else: the watchdog already gave up on it
                    self.finished(payload)
            elif kind == "confirm":
                step, plan, answer = payload
                answer.put(self.renderer.confirm(step, plan))
        for step in pending:  # never started because the run halted
            self.records[step.id].reason = f"not run: {self.halt}"

    def start(self, step: Step) -> threading.Thread:
        state = self.states[step.id] = StepState()
        rec = self.records[step.id]
        old = self.previous.get(step.id)
        # verification is re-checked on resume: the world may have changed since
        if old is not None and old.status in DONE and step.phase != "verify":
            reused = {**old.as_dict(), "reused_from": self.audit.resumed_from}
            self.records[step.id] = StepRecord.from_dict(reused)
            state.done = True
            self.inbox.put(("done", step.id))
            return threading.Thread()
        self.renderer.step_started(step)
        self.audit.event("step_start", step=step.id, phase=step.phase, action=step.action)
        selected = step.option is None or (self.selected is not None and step.option in self.selected)

        def work() -> None:
            try:
                self.runner.execute(step, rec, state, selected, self.records)
            finally:
                state.done = True
                self.inbox.put(("done", step.id))

        t = threading.Thread(target=work, name=f"step-{step.id}", daemon=True)
        with sigint_blocked():  # Ctrl-C goes to the main thread, never to a step's thread
            t.start()
        return t

    def finished(self, step_id: str) -> None:
        self.ended.add(step_id)
        rec = self.records[step_id]
        self.renderer.step_finished(rec)
        self.audit.event("step_end", record=rec.as_dict())
        failed = rec.status in ("failed", "timed_out") and not rec.continue_on_error
        if failed or rec.status in ("declined", "refused"):
            self.halt = self.halt or f"step {step_id!r} {rec.status}"
        elif rec.status == "interrupted":
            self.halt = self.halt or "interrupted"

    def watchdog(self, running: dict[str, threading.Thread]) -> None:
        now = time.monotonic()
        for step_id in list(running):
            state = self.states[step_id]
            if state.deadline is not None and not state.done and now > state.deadline + GRACE:
                # the action ignored its deadline: stop waiting, and tell it to stop working.
                # The verdict is recorded on a copy the thread never sees: whatever the abandoned
                # thread writes afterwards (its `finally`, a Cancelled) cannot overwrite it.
                state.abandoned = True
                state.cancel.set()
                rec = self.records[step_id] = _detached(self.records[step_id])
                rec.status, rec.error_kind = "timed_out", "timeout"
                rec.reason = "timed out; the step did not stop in time and was abandoned"
                rec.ended_at = now_iso()
                running.pop(step_id)
                self.finished(step_id)

    def interrupt(self) -> None:
        """Ctrl-C: tell every running step to stop, and give them STOP_GRACE seconds to do so and
        record what they had done (a redrive's moved count); a second Ctrl-C stops the wait."""
        self.interrupted = True
        self.halt = "interrupted"
        for state in self.states.values():
            state.cancel.set()
        self.audit.event("interrupted")
        self.renderer.note("interrupted: stopping running steps (Ctrl-C again to stop waiting)")
        live = [i for i, s in self.states.items() if not s.done and i not in self.ended]
        deadline = time.monotonic() + STOP_GRACE
        try:
            while any(not self.states[i].done for i in live) and time.monotonic() < deadline:
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        for step_id, state in self.states.items():
            rec = self.records[step_id]
            if state.done and step_id not in self.ended:
                self.finished(step_id)  # it stopped by itself, with its own status and result
            elif not state.done and rec.status == "not_run":
                rec.status, rec.reason, rec.ended_at = "interrupted", "interrupted (Ctrl-C)", now_iso()
                if state.applying:
                    # the step did not stop in time (or a second Ctrl-C cut the wait): its own
                    # partial result will never come, so keep the last count it reported
                    done = progress_text(state.progress)
                    rec.reason += (" while applying: the change was being sent and may be partly "
                                   "done" + (f"; last progress: {done}" if done else ""))
                    rec.result = {"partial": True, "progress": dict(state.progress)}
                self.renderer.step_finished(rec)
                self.audit.event("step_end", record=rec.as_dict())

    # ---- options -------------------------------------------------------------------------------
    def select_options(self) -> set[str] | None:
        """The chosen option names; an empty set runs only option-less steps; None skips mitigate."""
        options = self.rb.options
        if self.s.option:
            return set() if self.s.option == "none" else {self.s.option}  # checked by the CLI
        if not options:
            return set()
        if self.s.dry_run and not self.s.one_option:
            self.renderer.note("dry-run without --option: planning every mitigation option")
            return {o.name for o in options}
        recommended, unknown = self.recommended()
        if self.s.interactive:
            choice = self.renderer.choose_option(self.rb, recommended)
            self.audit.event("option", chosen=choice, recommended=[o.name for o in recommended])
            if choice is not None:
                self.rb.check_requires(choice, self.params)
            return None if choice is None else {choice}
        implicit = [o for o in recommended if not o.explicit]
        if len(implicit) == 1:
            self.rb.check_requires(implicit[0].name, self.params)
            self.renderer.note(f"using the recommended option {implicit[0].name!r} "
                               f"({implicit[0].title})")
            self.audit.event("option", chosen=implicit[0].name, by="recommendation")
            return {implicit[0].name}
        if not recommended and any(o.recommended_when for o in options) and not unknown:
            self.renderer.note("the diagnosis recommends no mitigation: skipping mitigate "
                               "(force one with --option NAME)")
            return None
        names = ", ".join(o.name for o in options)
        raise UsageError(f"{self.rb.id} has several mitigation options ({names}); no terminal to "
                         "ask which one: choose with --option NAME")

    def recommended(self) -> tuple[list[Option], int]:
        """Options the diagnosis recommends, and how many could not be evaluated (no diagnosis)."""
        out, unknown = [], 0
        for o in self.rb.options:
            if o.recommended_when:
                try:
                    if templating.evaluate(o.recommended_when, self.template_context()):
                        out.append(o)
                except templating.TemplateError as e:
                    unknown += 1
                    self.renderer.note(f"option {o.name}: cannot evaluate recommended_when: {e}")
        return out, unknown

    # ---- context for steps ---------------------------------------------------------------------
    def template_context(self, result: Any = _NO_RESULT) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "params": self.params,
            "env": self.environment.template_view(),
            # option: the chosen one; None while several are planned (dry-run) or none chosen
            "run": {"id": self.audit.run_id, "dry_run": self.s.dry_run,
                    "option": next(iter(self.selected)) if self.selected and len(self.selected) == 1
                    else None,
                    "options": sorted(self.selected or ())},
            "steps": {sid: r.view() for sid, r in self.records.items()
                      if r.status != "not_run"},
        }
        if result is not _NO_RESULT:
            ctx["result"] = result
        return ctx

    def _make_ctx(self, step: Step, cancel: threading.Event, deadline: float, *,
                  read_only: bool = True) -> ActionContext:
        reporter = ProgressLog(self.renderer, self.audit, self.states[step.id], step.id) \
            if step.id in self.states else self.renderer
        return ActionContext(step_id=step.id, dry_run=self.s.dry_run, read_only=read_only,
                             environment=self.environment,
                             clients=self.clients, clients_lock=self.clients_lock, cancelled=cancel,
                             deadline=deadline, reporter=reporter,
                             resumed_plan=self.resumed_plans.get(step.id))

    def _ask(self, step: Step, plan: Plan) -> bool:
        """In the step's thread: the main thread asks; Ctrl-C at the prompt cancels the step."""
        answer: queue.Queue[bool] = queue.Queue()
        self.inbox.put(("confirm", (step, plan, answer)))
        cancel = self.states[step.id].cancel
        while True:
            try:
                return answer.get(timeout=0.1)
            except queue.Empty:
                if cancel.is_set():
                    raise Cancelled("interrupted at the confirmation prompt") from None

    def close_clients(self) -> None:
        for client in self.clients.values():
            close = getattr(client, "close", None)
            if callable(close):
                # closing is best effort; the run's outcome is already decided
                with contextlib.suppress(Exception):
                    close()

    # ---- outcome -------------------------------------------------------------------------------
    def outcome(self, started: str, duration: float) -> Outcome:
        code, status, message = self.verdict()
        return Outcome(run_id=self.audit.run_id, runbook=self.rb.id, exit_code=code, status=status,
                       message=message, dry_run=self.s.dry_run,
                       option=sorted(self.selected) if self.selected else None,
                       records=list(self.records.values()), started_at=started, ended_at=now_iso(),
                       duration=round(duration, 3), recommended=self._recommended_names(code))

    def _recommended_names(self, code: int) -> list[str]:
        """After a clean dry-run: the options the diagnosis recommends (what to apply next)."""
        if not self.s.dry_run or code != ExitCode.OK or not self.rb.options:
            return []
        try:
            return [o.name for o in self.recommended()[0]]
        except Exception:  # noqa: BLE001 - a hint, never a reason to fail the run
            return []

    def verdict(self) -> tuple[int, str, str]:
        return verdict.judge(list(self.records.values()), interrupted=self.interrupted,
                             usage_error=self.usage_error, settings=self.s, runbook=self.rb)


def _detached(rec: StepRecord) -> StepRecord:
    """A copy of a step's record that its (abandoned) thread no longer writes to."""
    for _ in range(3):
        try:
            return StepRecord.from_dict(rec.as_dict())
        except RuntimeError:  # the thread changed a list while it was copied: copy again
            continue
    return StepRecord(rec.id, rec.phase, rec.action, rec.title, rec.option, rec.read_only,
                      continue_on_error=rec.continue_on_error, started_at=rec.started_at)


def _read_only(action: str) -> bool:
    cls = get_action(action)
    return True if cls is None else cls.read_only
