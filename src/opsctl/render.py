"""The one output module: Rich for people, one JSON document for machines.

Both renderers receive the same events from the executor.  Human output goes to stdout; prompts
(also in JSON mode) go to stderr, so ``--output json`` stays parseable.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO, cast

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.prompt import Confirm, Prompt
from rich.table import Table

from opsctl.actions import get as get_action
from opsctl.records import Outcome, Plan, StepRecord
from opsctl.render_parts import _Handle, _Scrubbed
from opsctl.signals import TerminalLine, sigint_blocked
from opsctl.units import seconds

ICONS = {"ok": "[green]✔[/]", "applied": "[green]✔[/]", "noop": "[green]=[/]",
         "planned": "[cyan]◇[/]", "skipped": "[dim]-[/]", "failed": "[red]✘[/]",
         "timed_out": "[red]⏱[/]", "declined": "[yellow]✋[/]", "refused": "[yellow]✋[/]",
         "interrupted": "[yellow]![/]", "not_run": "[dim]·[/]"}
PLAN_ROWS = 10  # rows shown per change group; -v, JSON and the run log have every change
ANSWER = cast(TextIO, TerminalLine())  # where prompts read the answer (not input(): see signals)
SEVERITY = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "critical": "[bold red]critical[/]"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, default=str)


class HumanRenderer:
    def __init__(self, console: Console | None = None, verbose: bool = False) -> None:
        self._out = _Scrubbed(sys.stdout)
        self.console = console or Console(file=cast(TextIO, self._out), highlight=False)
        self.verbose = verbose
        self.protected: str | None = None  # a protected environment: confirm by typing its name
        self.command: list[str] = []  # `opsctl run RUNBOOK -p ...` as given (the dry-run's apply hint)
        self.live = self.console.is_terminal
        self._lock = threading.RLock()
        self._tasks: dict[str, Any] = {}
        self._errors: dict[str, str] = {}  # failure text -> first step that reported it
        self._bar: Progress | None = None
        if self.live:
            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                     BarColumn(bar_width=30), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                     console=self.console, transient=True)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._out.secrets

    @secrets.setter
    def secrets(self, values: tuple[str, ...]) -> None:
        self._out.secrets = values

    # ---- run framing ---------------------------------------------------------------------------
    def start(self, runbook: Any, environment: Any, run_id: str, dry_run: bool,
              params: dict[str, Any]) -> None:
        c = self.console
        if dry_run:
            c.print("[bold black on yellow] DRY-RUN [/] nothing will be changed: mutations are only "
                    "planned")
        env = f"[cyan]{escape(environment.name)}[/]" if not self.protected else \
            f"[bold white on red] {escape(environment.name)} (protected) [/]"
        c.print(f"[bold]{escape(runbook.id)}[/] {escape(runbook.title)}  "
                f"[bold]{runbook.severity}[/]  env={env}  run={run_id}")
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items() if v not in (None, ""))
        if shown:
            c.print(f"[dim]params: {escape(shown)}[/]")
        self._start_bar()

    def _start_bar(self) -> None:
        if self._bar is not None:
            with sigint_blocked():  # the live display's refresh thread must never take Ctrl-C
                self._bar.start()

    def phase(self, name: str) -> None:
        self.console.rule(f"[bold]{name}")

    def note(self, message: str) -> None:
        with self._lock:
            self.console.print(f"[cyan]›[/] {escape(message)}")

    # ---- steps ---------------------------------------------------------------------------------
    def step_started(self, step: Any) -> None:
        if self._bar is not None:
            with self._lock:
                self._tasks[step.id] = self._bar.add_task(f"{step.id}: {step.label}", total=None,
                                                              info="")

    def step_finished(self, rec: StepRecord) -> None:
        with self._lock:
            task = self._tasks.pop(rec.id, None)
            if task is not None and self._bar is not None:
                self._bar.remove_task(task)
            self._step_lines(rec)

    def _step_lines(self, rec: StepRecord) -> None:
        title = f" {escape(rec.title)}" if rec.title != rec.id else ""
        icon, label = ICONS.get(rec.status, "?"), rec.status.replace("_", " ")
        worst = {f.severity for f in rec.findings}
        if rec.status == "ok" and worst & {"critical", "warning"}:  # the probe ran; what it saw is bad
            icon = "[red]✘[/]" if "critical" in worst else "[yellow]![/]"
            label = "found a critical problem" if "critical" in worst else "found a warning"
        line = f"{icon} [bold]{escape(rec.id)}[/]{title} " \
               f"[dim]({seconds(rec.duration)}, {label})[/]"
        if rec.reused_from:
            line += f" [dim]reused from {rec.reused_from}[/]"
        self.console.print(line)
        detail = rec.reason if rec.status not in ("ok", "applied") else self._summary(rec)
        if detail and any(detail in f.message for f in rec.findings if f.severity != "ok"):
            detail = ""  # the finding below says it (a warning is printed once)
        if rec.status == "failed" and detail in self._errors:  # one backend down fails every probe
            detail = f"same error as {self._errors[detail]}"
        elif rec.status == "failed" and detail:
            self._errors[detail] = rec.id
        if detail:
            self.console.print(f"    {escape(detail)}", style="red" if rec.status == "failed" else "dim")
        for f in rec.findings:
            if f.severity != "ok" or self.verbose:
                self.console.print(f"    {SEVERITY[f.severity]}: {escape(f.message)}")
        if self.verbose and rec.result is not None:
            self.console.print_json(json.dumps(rec.result, default=str))

    def _summary(self, rec: StepRecord) -> str:
        cls = get_action(rec.action)
        return cls.summarize(rec.result) if cls and rec.result is not None else ""

    def attempt(self, step: Any, attempt: int, attempts: int, message: str) -> None:
        """A polling step (retries/until): a live bar of attempts on a terminal, a line otherwise."""
        task = self._tasks.get(step.id)
        if task is not None and self._bar is not None:
            self._bar.update(task, total=attempts, completed=attempt, info=message[:60])
            return
        self.console.print(f"  [dim]{escape(step.id)}: attempt {attempt}/{attempts}: "
                           f"{escape(message)}[/]")

    def plan(self, step: Any, plan: Plan, dry_run: bool) -> None:
        title = f"plan for {step.id}" + (f" (option {step.option})" if step.option else "")
        table = Table(title=f"{title}: {plan.summary}", title_justify="left", show_lines=False)
        for col in ("target", "change", "before", "after"):
            table.add_column(col, overflow="fold")
        groups: dict[str, list[Any]] = {}
        for ch in plan.changes:  # a change group: one operation
            groups.setdefault(ch.operation, []).append(ch)
        for operation, changes in groups.items():
            shown = changes if self.verbose else changes[:PLAN_ROWS]
            for ch in shown:
                change = ch.operation + (f" ({ch.detail})" if ch.detail else "")
                table.add_row(escape(ch.target), escape(change), escape(_fmt(ch.before)),
                              escape(_fmt(ch.after)))
            if len(changes) > len(shown):
                table.add_row(f"[dim]… and {len(changes) - len(shown)} more[/]", escape(operation),
                              "[dim](-v, -o json and the run log have all)[/]", "")
        with self._lock:
            if plan.changes:
                self.console.print(table)
            else:
                summary = plan.summary or "nothing to change"
                self.console.print(f"  [green]=[/] {escape(step.id)}: {escape(summary)}")
            for w in plan.warnings:
                self.console.print(f"  [yellow]warning:[/] {escape(w)}")

    # ---- questions (main thread only) ----------------------------------------------------------
    @contextmanager
    def _paused(self) -> Iterator[None]:
        """The live display off while a question is asked.  Held under the output lock: a worker
        printing while the display erases itself left stale spinner lines above the prompt."""
        with self._lock:
            if self._bar is not None:
                for task in list(self._bar.task_ids):  # nothing of the display survives the stop
                    self._bar.update(task, visible=False)
                self._bar.refresh()
                self._bar.stop()
            try:
                yield
            finally:
                if self._bar is not None:
                    for task in list(self._bar.task_ids):
                        self._bar.update(task, visible=True)
                self._start_bar()

    def confirm(self, step: Any, plan: Plan) -> bool:
        with self._paused():
            if self.protected:  # as a repository deletion does: type the name, not "y"
                typed = Prompt.ask(f"[bold red]{escape(self.protected)} is a protected environment.[/] "
                                   f"Type its name to apply {len(plan.changes)} change(s) of step "
                                   f"[bold]{escape(step.id)}[/] (anything else declines)",
                                   default="", show_default=False, console=self.console,
                                   stream=ANSWER)
                return typed.strip() == self.protected
            return Confirm.ask(f"Apply {len(plan.changes)} change(s) of step [bold]{escape(step.id)}[/]?",
                               default=False, console=self.console, stream=ANSWER)

    def choose_option(self, runbook: Any, recommended: list[Any]) -> str | None:
        rec_names = {o.name for o in recommended}
        with self._paused():
            self.console.print("[bold]Mitigation options:[/]")
            for i, o in enumerate(runbook.options, 1):
                mark = " [green](recommended by the diagnosis)[/]" if o.name in rec_names else ""
                warn = " [red](explicit choice only)[/]" if o.explicit else ""
                self.console.print(f"  {i}. [bold]{escape(o.name)}[/] {escape(o.title)}{mark}{warn}")
            names = [o.name for o in runbook.options] + ["none"]
            numbers = {str(i): o.name for i, o in enumerate(runbook.options, 1)}
            default = next((o.name for o in recommended if not o.explicit), "none")
            while True:  # the number shown or the name; anything else asks again
                answer = Prompt.ask(f"Choose an option: 1-{len(runbook.options)}, a name, or none "
                                    "(skip mitigation)", default=default, console=self.console,
                                    stream=ANSWER).strip()
                choice = numbers.get(answer, answer)
                if choice in names:
                    break
                self.console.print(f"[red]{escape(answer)!r} is not one of the options[/]")
        return None if choice == "none" else choice

    # ---- progress for actions (Reporter protocol) ----------------------------------------------
    @contextmanager
    def progress(self, step_id: str, description: str, total: float | None) -> Iterator[_Handle]:
        task = None
        if self._bar is not None:
            task = self._bar.add_task(f"{step_id}: {description}", total=total, info="")
        handle = _Handle(self._bar, task, self.console, description)
        try:
            yield handle
        finally:
            if task is not None and self._bar is not None:
                self._bar.remove_task(task)
            done = f"{handle.completed:g}" + (f"/{total:g}" if total else "")
            self.console.print(f"    [dim]{escape(step_id)}: {escape(description)}: {done} "
                               f"{escape(handle._info())}[/]")

    def log(self, step_id: str, message: str) -> None:
        with self._lock:
            self.console.print(f"    [dim]{escape(step_id)}: {escape(message)}[/]")

    # ---- the end -------------------------------------------------------------------------------
    def finish(self, outcome: Outcome) -> None:
        if self._bar is not None:
            self._bar.stop()
        everything = outcome.findings()
        passed = sum(1 for f in everything if f.severity == "ok")
        if self.verbose and everything:  # each finding was printed with its step; -v adds the table
            table = Table(title="findings", title_justify="left")
            for col in ("phase", "step", "severity", "finding"):
                table.add_column(col, overflow="fold")
            for f in everything:
                table.add_row(f.phase, escape(f.step), SEVERITY[f.severity], escape(f.message))
            self.console.print(table)
        counts = {s: sum(1 for f in everything if f.severity == s) for s in ("critical", "warning")}
        told = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        if told or passed:
            self.console.print((f"{told} finding(s); " if told else "")
                               + f"[green]{passed} check(s) passed[/]"
                               + ("" if self.verbose else " [dim](-v shows them)[/]"))
        colour = "green" if outcome.exit_code == 0 else "red"
        message = "" if outcome.message == outcome.status else f" {escape(outcome.message)}"
        self.console.print(f"[bold {colour}]{outcome.status.replace('_', ' ')}[/]{message}  "
                           f"[dim](exit {outcome.exit_code}, {seconds(outcome.duration)}; "
                           f"`opsctl report {outcome.run_id}`)[/]")
        if outcome.dry_run and outcome.exit_code == 0:
            self._next(outcome)

    def _next(self, outcome: Outcome) -> None:
        """What the engineer needs after a dry-run: the diagnosis in one line, the recommended
        option, the exact command that applies it."""
        rank = {"critical": 0, "warning": 1}
        bad = sorted((f for f in outcome.findings() if f.phase == "diagnose" and f.severity in rank),
                     key=lambda f: rank[f.severity])
        if bad:
            f = bad[0]
            self.console.print(f"[bold]diagnosis:[/] {escape(f.message)} "
                               f"[dim]({f.severity}, step {f.step})[/]")
        else:
            self.console.print("[bold]diagnosis:[/] no problem found")
        if outcome.recommended:
            name = outcome.recommended[0]
            self.console.print(f"[bold]recommended:[/] option {escape(name)}")
            command = [*self.command, "--option", name] if self.command else []
            if command:
                import shlex

                self.console.print(f"[bold]apply it:[/] {escape(shlex.join(command))}", soft_wrap=True)


class JsonRenderer:
    """Silent while running; one JSON document at the end.  Questions go to stderr."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.err = HumanRenderer(Console(stderr=True, highlight=False))
        self.err._bar = None  # no live display on stderr in JSON mode
        self.header: dict[str, Any] = {}
        self.notes: list[str] = []
        self.secrets: tuple[str, ...] = ()  # set by the run command: values never to print

    @property
    def protected(self) -> str | None:
        return self.err.protected

    @protected.setter
    def protected(self, name: str | None) -> None:
        self.err.protected = name

    def start(self, runbook: Any, environment: Any, run_id: str, dry_run: bool,
              params: dict[str, Any]) -> None:
        self.header = {"runbook": runbook.id, "title": runbook.title, "severity": runbook.severity,
                       "environment": environment.name, "protected": bool(self.protected),
                       "run_id": run_id, "dry_run": dry_run,
                       "params": params}

    def phase(self, name: str) -> None:
        pass

    def note(self, message: str) -> None:
        self.notes.append(message)

    def step_started(self, step: Any) -> None:
        pass

    def step_finished(self, rec: StepRecord) -> None:
        pass

    def attempt(self, step: Any, attempt: int, attempts: int, message: str) -> None:
        pass

    def plan(self, step: Any, plan: Plan, dry_run: bool) -> None:
        pass

    def confirm(self, step: Any, plan: Plan) -> bool:
        self.err.plan(step, plan, dry_run=False)
        return self.err.confirm(step, plan)

    def choose_option(self, runbook: Any, recommended: list[Any]) -> str | None:
        return self.err.choose_option(runbook, recommended)

    @contextmanager
    def progress(self, step_id: str, description: str, total: float | None) -> Iterator[_Handle]:
        yield _Handle(None, None, self.err.console, description)

    def log(self, step_id: str, message: str) -> None:
        pass

    def finish(self, outcome: Outcome) -> None:
        doc = {**self.header, "status": outcome.status, "exit_code": outcome.exit_code,
               "message": outcome.message, "option": outcome.option,
               "started_at": outcome.started_at, "ended_at": outcome.ended_at,
               "duration": outcome.duration, "notes": self.notes,
               "findings": [f.__dict__ for f in outcome.findings()],
               **({"recommended": outcome.recommended} if outcome.dry_run else {}),
               "steps": [r.as_dict() for r in outcome.records]}
        from opsctl.audit import redact

        # one write: the masked stdout (cli.guard) masks what it is given, and json.dump would give
        # it each token apart (~2,000 writes for a run's document)
        self.stream.write(json.dumps(redact(doc, self.secrets), indent=2, default=str) + "\n")
