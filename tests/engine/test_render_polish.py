"""What people read, at 80 and 120 columns (Rich's recording console): compact plans, no cross
beside "ok", durations as "3 s", the end of a dry-run (diagnosis, recommended option, the command
that applies it), a status said once, a warning printed once, the option menu's numbers."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from opsctl.explain import why_false
from opsctl.records import Change, Finding, Outcome, Plan, StepRecord
from opsctl.render import HumanRenderer
from opsctl.units import seconds


def renderer(width: int, verbose: bool = False) -> tuple[HumanRenderer, Console]:
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=False,
                      color_system=None, highlight=False)
    return HumanRenderer(console=console, verbose=verbose), console


def step(id_: str = "kill", option: str | None = "kill-long-queries") -> Any:
    return SimpleNamespace(id=id_, option=option, label=id_)


def plan_of(n: int) -> Plan:
    return Plan(summary=f"terminate {n} backend(s)",
                changes=[Change(f"backend pid {4000 + i}", "terminate", "idle in transaction", "terminated")
                         for i in range(n)] + [Change("role app", "set", "0", "60s")])


def outcome(records: list[StepRecord], **kw: Any) -> Outcome:
    base = {"run_id": "20261129T000000000Z-rb-006-abcd", "runbook": "rb-006", "exit_code": 0,
            "status": "ok", "message": "dry-run complete: nothing was changed", "dry_run": True,
            "option": None, "records": records, "started_at": "", "ended_at": "", "duration": 2.99996}
    return Outcome(**{**base, **kw})


@pytest.mark.parametrize("width", [80, 120])
def test_a_plan_is_compact_per_change_group_and_full_with_v(width: int) -> None:
    r, console = renderer(width)
    r.plan(step(), plan_of(16), dry_run=True)
    text = console.export_text()
    assert "backend pid 4009" in text and "backend pid 4010" not in text
    assert "and 6 more" in text and "role app" in text  # the other group is shown
    assert all(len(line) <= width for line in text.splitlines())
    r, console = renderer(width, verbose=True)
    r.plan(step(), plan_of(16), dry_run=True)
    text = console.export_text()
    assert "backend pid 4015" in text and "more" not in text


@pytest.mark.parametrize("width", [80, 120])
def test_a_probe_that_found_a_problem_is_not_labelled_ok(width: int) -> None:
    r, console = renderer(width)
    rec = StepRecord("sessions", "diagnose", "postgres.sessions", "Sessions", None, True, status="ok",
                     duration=2.99996, findings=[Finding("sessions", "diagnose", "critical", "14 leaked")])
    r.step_finished(rec)
    first = console.export_text().splitlines()[0]
    assert "✘" in first and ", ok)" not in first and "found a critical problem" in first
    assert "(3 s," in first


def test_a_warning_is_printed_once() -> None:
    r, console = renderer(120)
    hint = "the pg_stat_statements extension is not installed (CREATE EXTENSION pg_stat_statements)"
    rec = StepRecord("slow", "diagnose", "postgres.top_statements", "Slow", None, True, status="ok",
                     result={"available": False, "reason": hint},
                     findings=[Finding("slow", "diagnose", "warning", f"no statistics: {hint}")])
    r.step_finished(rec)
    r.finish(outcome([rec], dry_run=False, message="done"))  # (a dry-run's last lines name the worst)
    assert console.export_text().count("CREATE EXTENSION") == 1


@pytest.mark.parametrize("width", [80, 120])
def test_a_dry_run_ends_with_diagnosis_recommended_option_and_the_command(width: int) -> None:
    r, console = renderer(width)
    r.command = ["opsctl", "run", "rb-006", "-p", "database=app"]
    recs = [StepRecord("sessions", "diagnose", "postgres.sessions", "S", None, True, status="ok",
                       findings=[Finding("sessions", "diagnose", "warning", "pool at 85%"),
                                 Finding("sessions", "diagnose", "critical",
                                         "14 sessions idle in transaction")])]
    r.finish(outcome(recs, recommended=["kill-long-queries"]))
    text = console.export_text()
    tail = text.splitlines()[-3:]
    assert tail[0].startswith("diagnosis: 14 sessions idle in transaction")
    assert tail[1] == "recommended: option kill-long-queries"
    assert tail[2] == "apply it: opsctl run rb-006 -p database=app --option kill-long-queries"
    assert "(exit 0, 3 s;" in text


def test_a_status_is_said_once() -> None:
    r, console = renderer(80)
    r.finish(outcome([], exit_code=130, status="interrupted", message="interrupted", dry_run=False))
    assert console.export_text().count("interrupted") == 1


def test_the_option_menu_accepts_the_numbers_it_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    r, console = renderer(80)
    answers = iter(["7", "2"])
    monkeypatch.setattr("rich.prompt.Prompt.ask", lambda *a, **k: next(answers))
    rb = SimpleNamespace(options=[SimpleNamespace(name="kill-long-queries", title="Kill", explicit=False),
                                  SimpleNamespace(name="raise-pool", title="Raise", explicit=False)])
    assert r.choose_option(rb, []) == "raise-pool"
    assert "'7' is not one of the options" in console.export_text()


def test_durations_and_skip_reasons_read_as_words() -> None:
    assert [seconds(v) for v in (2.99996, 0.25, 12.4, 125)] == ["3 s", "0.2 s", "12 s", "2 min 5 s"]
    ctx = {"params": {"deployment": "", "enabled": False}, "run": {"option": None, "dry_run": True},
           "steps": {"blocked": {"result": {"count": 0}}}}
    assert why_false("params.deployment != ''", ctx) == "no deployment given (-p deployment=...)"
    assert why_false("params.enabled", ctx) == "enabled is false"
    assert why_false("run.option == 'set-eviction-policy' and not run.dry_run", ctx) == \
        "option set-eviction-policy was not chosen"
    assert why_false("steps.blocked.result.count > 0", ctx) == "count of step blocked is 0, not > 0"
    assert why_false("range(3) | length > 5", ctx).startswith("its condition is false")
