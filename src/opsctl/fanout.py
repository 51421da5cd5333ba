"""One runbook over several environments: ``opsctl run RUNBOOK --env A --env B``, ``--all-envs``,
``--env-tag TAG`` (c7n-org's accounts x regions model, on opsctl's named environments).

* A run that cannot change anything (``--dry-run``, ``--phase diagnose``/``verify``,
  ``--option none``, or a runbook without mutating steps in the phases that run) runs in every
  environment at once, at most ``max_concurrency`` at a time; once ``max_errors`` environments
  ended with a non-zero exit code, the environments not yet started are not started (reported as
  such). Each environment is one ordinary run: its own Executor, backend clients, step deadlines
  and watchdog, and its own run log; nothing is printed while they run but one line per environment
  as it ends.
* A run that may mutate goes one environment at a time, in the order given, each a complete
  ordinary run with its own plans shown and its own confirmation (or ``--yes``): an approval never
  covers a second environment. ``max_errors`` stops the sequence the same way.

Either way, one summary table (environment x verdict, exit code, findings, run id) ends the output
(or one JSON document with every environment's run), and the exit code is the worst one
(:data:`WORST`).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from opsctl.errors import ExitCode, NotConfirmed, OpsctlError, UsageError
from opsctl.render import JsonRenderer

# worst first: an interrupted fan-out, bad input, an unreachable backend, a failure, a refusal
WORST = (ExitCode.INTERRUPTED, ExitCode.INVALID, ExitCode.BACKEND, ExitCode.FAILED,
         ExitCode.NOT_CONFIRMED, ExitCode.OK)


def worst(codes: list[int]) -> int:
    rank = {c: i for i, c in enumerate(WORST)}
    return min(codes, key=lambda c: rank.get(c, 0), default=ExitCode.OK)


@dataclass
class EnvRun:
    """One environment's row of the summary (and its whole JSON document)."""

    environment: str
    status: str = "not_run"  # an Outcome status, or not_run / error
    exit_code: int | None = None
    message: str = ""
    run_id: str | None = None
    duration: float = 0.0
    critical: int = 0
    warning: int = 0
    first_finding: str = ""
    document: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"environment": self.environment, "status": self.status, "exit_code": self.exit_code,
                "message": self.message, "run_id": self.run_id, "duration": self.duration,
                "findings": {"critical": self.critical, "warning": self.warning},
                "first_finding": self.first_finding}


class _Collecting(JsonRenderer):
    """The JSON renderer, keeping its document instead of printing it (one per environment)."""

    def __init__(self, interactive: bool = False) -> None:
        super().__init__()
        self.doc: dict[str, Any] = {}
        self.interactive = interactive

    def confirm(self, step: Any, plan: Any) -> bool:
        if not self.interactive:  # a parallel fan-out never asks (it runs nothing that mutates)
            return False
        return super().confirm(step, plan)

    def finish(self, outcome: Any) -> None:
        import io
        import json

        buf = io.StringIO()
        self.stream = buf
        super().finish(outcome)
        self.doc = json.loads(buf.getvalue())


def cannot_mutate(rb: Any, settings: Any) -> bool:
    """True when this run applies nothing, whatever the environment: it may fan out in parallel."""
    from opsctl.actions import get as get_action

    if settings.dry_run or settings.option == "none":
        return True
    phases = (settings.phase,) if settings.phase else tuple(rb.phases)
    for phase in phases:
        for step in rb.phases.get(phase, ()):
            cls = get_action(step.action)
            if cls is not None and not cls.read_only:
                return False
    return True


@dataclass
class FanOut:
    rb: Any
    params: dict[str, dict[str, Any]]  # environment name -> the run's parameters there
    environments: list[Any]
    settings: Any  # RunSettings shared by every environment (interactive decided here)
    output: str = "text"
    verbose: bool = False
    no_log: bool = False
    max_concurrency: int = 4
    max_errors: int | None = None
    lock_wait: float = 30.0
    # the run command's own steps, so that a fan-out run is exactly an ordinary run:
    # open_run(env, renderer) -> (log, renderer) with the header written; text_renderer() for people
    open_run: Any = None
    text_renderer: Any = None
    rows: dict[str, EnvRun] = field(default_factory=dict)

    def run(self) -> int:
        self.rows = {e.name: EnvRun(e.name) for e in self.environments}
        self._say(f"{self.rb.id} over {len(self.environments)} environment(s): "
                  + ", ".join(e.name for e in self.environments)
                  + (" (in parallel, read-only)" if self.parallel else " (one at a time)"))
        try:
            if self.parallel:
                self._parallel()
            else:
                self._sequential()
        except KeyboardInterrupt:
            self.interrupted = True
        return self._finish()

    @property
    def parallel(self) -> bool:
        return cannot_mutate(self.rb, self.settings)

    interrupted = False

    # ---- one environment ------------------------------------------------------------------------
    def _one(self, env: Any, renderer: Any, stop: threading.Event | None = None) -> None:
        from opsctl.executor import Executor
        from opsctl.locks import ApplyGate

        row = self.rows[env.name]
        started = time.monotonic()
        try:
            log, renderer = self.open_run(env, renderer)
            row.run_id = log.run_id
            gate = None if self.settings.dry_run else ApplyGate(self.rb.id, log.run_id, env, renderer, log,
                                                                wait=self.lock_wait)
            executor = Executor(self.rb, self.params[env.name], env, self.settings, renderer, log, gate=gate)
            if stop is not None:
                executor.stop_requested = stop
            outcome = executor.execute()
            log.end(outcome)
            renderer.finish(outcome)
            row.status, row.exit_code, row.message = outcome.status, outcome.exit_code, outcome.message
            found = outcome.findings()
            row.critical = sum(1 for f in found if f.severity == "critical")
            row.warning = sum(1 for f in found if f.severity == "warning")
            bad = sorted((f for f in found if f.severity != "ok"), key=lambda f: f.severity != "critical")
            row.first_finding = bad[0].message if bad else ""
            row.document = getattr(renderer, "doc", {})
        except OpsctlError as e:  # e.g. the run log cannot be written: this environment only
            row.status, row.exit_code, row.message = "error", e.exit_code, str(e)
        except Exception as e:  # a bug: its traceback to crash.log, the other environments go on
            import traceback

            from opsctl.audit import write_crash

            saved = write_crash(traceback.format_exc() + "\n")
            row.status, row.exit_code = "error", ExitCode.FAILED
            row.message = f"internal error: {type(e).__name__}: {e} ({saved})"
        finally:
            row.duration = round(time.monotonic() - started, 3)

    def _errors(self) -> int:
        return sum(1 for r in self.rows.values() if r.exit_code not in (None, ExitCode.OK))

    def _stop_starting(self) -> bool:
        return self.max_errors is not None and self._errors() >= self.max_errors

    # ---- parallel (read-only) -------------------------------------------------------------------
    def _parallel(self) -> None:
        from opsctl.signals import sigint_blocked

        pending = list(self.environments)
        running: dict[str, threading.Thread] = {}
        done: queue.Queue[str] = queue.Queue()
        stop = threading.Event()

        def work(env: Any) -> None:
            try:
                self._one(env, _Collecting(), stop)
            finally:
                done.put(env.name)

        try:
            while pending or running:
                while pending and len(running) < self.max_concurrency and not self._stop_starting():
                    env = pending.pop(0)
                    t = threading.Thread(target=work, args=(env,), name=f"env-{env.name}", daemon=True)
                    with sigint_blocked():
                        t.start()
                    running[env.name] = t
                if not running:
                    break
                try:
                    name = done.get(timeout=0.2)
                except queue.Empty:
                    continue
                running.pop(name, None)
                self._line(self.rows[name])
        except KeyboardInterrupt:
            stop.set()  # every executor stops its steps as on Ctrl-C and records what it had
            deadline = time.monotonic() + 15
            try:
                while running and time.monotonic() < deadline:
                    try:
                        running.pop(done.get(timeout=0.2), None)
                    except queue.Empty:
                        continue
            except KeyboardInterrupt:
                pass
            raise
        finally:
            for env in pending:
                self.rows[env.name].message = (f"not started: {self._errors()} environment(s) failed "
                                               f"(--max-errors {self.max_errors})") \
                    if self._stop_starting() else "not started: interrupted"

    # ---- sequential (may mutate) ----------------------------------------------------------------
    def _sequential(self) -> None:
        for i, env in enumerate(self.environments):
            if self._stop_starting():
                for rest in self.environments[i:]:
                    self.rows[rest.name].message = (f"not started: {self._errors()} environment(s) "
                                                    f"failed (--max-errors {self.max_errors})")
                return
            self._say(f"environment {env.name} ({i + 1}/{len(self.environments)}): its own plan and "
                      "confirmation", rule=True)
            renderer = _Collecting(interactive=self.settings.interactive) if self.output == "json" \
                else self.text_renderer()
            self._one(env, renderer)
            if self.rows[env.name].exit_code == ExitCode.INTERRUPTED:
                raise KeyboardInterrupt

    # ---- output ---------------------------------------------------------------------------------
    def _say(self, text: str, rule: bool = False) -> None:
        if self.output == "json":
            return
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        if rule:
            console.rule(f"[bold]{escape(text)}")
        else:
            console.print(f"[cyan]›[/] {escape(text)}")

    def _line(self, row: EnvRun) -> None:
        if self.output == "json":
            return
        self._say(f"{row.environment}: {row.status} (exit {row.exit_code}, {row.duration:.1f}s"
                  + (f", run {row.run_id})" if row.run_id else ")"))

    def _finish(self) -> int:
        from opsctl.tables import fanout_summary

        ran = [r.exit_code for r in self.rows.values() if r.exit_code is not None]
        code = ExitCode.INTERRUPTED if self.interrupted else worst(ran)
        if self.interrupted:
            for row in self.rows.values():
                if row.exit_code is None and not row.message:
                    row.message = "not started: interrupted"
        fanout_summary(self.rb, list(self.rows.values()), code, self.output, self.settings.dry_run)
        return code


def check_fanout_usage(resume: str | None, yes_protected: str | None, environments: list[Any],
                       settings: Any) -> None:
    """What a fan-out refuses before anything runs: --resume (one run's), --yes in a protected
    environment that --yes-protected does not name."""
    if resume:
        raise UsageError("--resume continues one run: give the run's own environment (--env NAME), "
                         "not several")
    names = [e.name for e in environments]
    if yes_protected is not None and yes_protected not in names:
        raise UsageError(f"--yes-protected {yes_protected!r} names none of the environments of this "
                         f"run ({', '.join(names)})")
    if settings.dry_run or not settings.yes:
        return
    for env in environments:
        if getattr(env, "protected", False) and yes_protected != env.name:
            raise NotConfirmed(f"environment {env.name!r} is protected: --yes is refused there; pass "
                               f"--yes-protected {env.name} to approve it unattended (one protected "
                               "environment per run), or confirm at the terminal: nothing was run")
