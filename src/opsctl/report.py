"""A run log rendered as the Markdown incident timeline a post-mortem needs (timeline with the
messages posted, root cause, impact, actions taken, improvements, action items)."""

from __future__ import annotations

from typing import Any

from opsctl.audit import final_records, read_run, summary
from opsctl.records import StepRecord


def _time(ts: str) -> str:
    return ts[11:19] if len(ts) >= 19 else ts


def _describe(e: dict[str, Any]) -> str | None:
    kind = e["event"]
    if kind == "run_start":
        mode = "dry-run" if e.get("dry_run") else ("--yes" if e.get("yes") else "interactive")
        return (f"`{e.get('user')}@{e.get('host')}` started **{e['runbook']}** {e.get('title', '')} "
                f"({mode}, env `{e.get('environment')}`)")
    if kind == "alert":  # stamped with the alert's startsAt: the timeline starts there
        links = " ".join(f"[{name}]({e[key]})" for name, key in (("source", "generatorURL"),
                                                                 ("runbook", "runbook_url")) if e.get(key))
        labels = ", ".join(f"{k}={v}" for k, v in sorted((e.get("labels") or {}).items())
                           if k != "alertname")
        return (f"alert **{e.get('alertname')}** {e.get('status')} ({e.get('source')}; {labels}) "
                f"since {e.get('startsAt')} {links}").rstrip()
    if kind == "option":
        return f"mitigation option chosen: **{e.get('chosen') or 'none'}**" + \
               (f" (by {e['by']})" if e.get("by") else "")
    if kind == "confirm":
        who = e.get("by") or "operator"
        if e.get("interrupted"):
            return f"Ctrl-C at the confirmation of step `{e['step']}` ({who}): not confirmed"
        return f"{'approved' if e.get('answer') else 'declined'} step `{e['step']}` ({who})"
    if kind == "step_end":
        r = e["record"]
        text = f"{r['phase']} `{r['id']}` {r['title']}: **{r['status']}**"
        if r.get("plan") and r["plan"].get("summary"):
            text += f" — {r['plan']['summary']}"
        posted = (r.get("result") or {}).get("text") if r["action"] == "notify.slack" else None
        if posted and r["status"] == "applied":  # the incident communication, word for word
            text += f" — message posted: “{posted}”"
        if r.get("reason") and r["status"] not in ("ok", "applied"):
            text += f" — {r['reason']}"
        bad = [f["message"] for f in r.get("findings", []) if f["severity"] != "ok"]
        if bad:
            text += " — findings: " + "; ".join(bad)
        return text
    if kind == "notify":  # the run's Slack notifications (opsctl.notifier)
        where = f" to {e['channel']}" if e.get("channel") else ""
        if e.get("ok"):
            return f"Slack {e.get('message')} message posted{where}: “{e.get('text')}”"
        return f"Slack {e.get('message')} message NOT posted ({e.get('error')}): “{e.get('text')}”"
    if kind == "apply_start":
        return (f"change sent: step `{e['step']}` ({e.get('action')}) started applying: "
                f"{e.get('summary', '')} ({e.get('changes', 0)} change(s))")
    if kind == "interrupted":
        return "run interrupted (Ctrl-C)"
    if kind == "run_end":
        return f"run ended: **{e['status']}** (exit {e['exit_code']}) {e.get('message', '')}"
    return None


def markdown(run_id: str) -> str:
    events = read_run(run_id)
    s = summary(events)
    start = events[0]
    lines = [f"# Incident timeline: {start['runbook']} {start.get('title', '')}", "",
             f"- Run: `{s['run_id']}`" + (f" (resumed from `{start['resumed_from']}`)"
                                           if start.get("resumed_from") else ""),
             f"- Severity: {start.get('severity')}; environment: `{s['environment']}`; "
             f"operator: `{s['user']}`",
             f"- Runbook file: `{start.get('file')}` (sha256 {str(start.get('sha256'))[:12]})",
             *([f"- Applied from plan file `{start['plan_digest']}`"] if start.get("plan_digest") else []),
             "- Parameters: " + ", ".join(f"`{k}={v}`" for k, v in (start.get("params") or {}).items()),
             f"- Outcome: **{s['status']}**"
             + ("" if s["exit_code"] is None else f" (exit {s['exit_code']})"),
             "", "## Timeline (UTC)", "", "| time | event |", "|---|---|"]
    for e in sorted(events, key=lambda e: str(e.get("ts") or "")):  # an alert's startsAt comes first
        text = _describe(e)
        if text:
            lines.append(f"| {_time(e['ts'])} | {text.replace('|', '/')} |")
    records = final_records(events)
    findings = [(r.phase, r.id, f) for r in records.values() for f in r.findings if f.severity != "ok"]
    lines += ["", "## Findings", ""]
    lines += [f"- **{f.severity}** ({phase}/{sid}): {f.message}" for phase, sid, f in findings] \
        or ["- none"]
    lines += _changes(events, records)
    lines += ["", "## Root cause", "", "_to be written_", "", "## Impact", "", "_to be written_", "",
              "## Action items", "", "| item | owner | due |", "|---|---|---|", "| | | |", ""]
    return "\n".join(lines)


# ---- what was planned, decided and changed --------------------------------------------------------

_NOT_APPLIED = {"planned": "not applied (dry-run)", "declined": "not applied (declined)",
                "refused": "not applied (refused)", "noop": "nothing to change"}


def _decision(r: StepRecord, confirm: dict[str, Any] | None, dry_run: bool) -> str:
    if r.status == "noop":
        return "not needed (nothing to change)"
    if confirm is not None:
        who = "--yes" if confirm.get("by") == "--yes" else "the operator"
        if confirm.get("interrupted"):
            return "interrupted at the confirmation prompt (Ctrl-C): not confirmed"
        return f"confirmed ({who})" if confirm.get("answer") else f"declined ({who})"
    if r.status == "refused":
        return f"refused: {r.reason}"
    if dry_run or r.status == "planned":
        return "not asked (dry-run)"
    return "not asked (the step stopped before the confirmation)"


def _applied(r: StepRecord, sent: bool, progress: dict[str, Any] | None) -> str:
    if r.status == "applied":
        return "yes"
    if not sent:
        return "no"
    last = ""
    if progress:
        extra = ", ".join(f"{k}={v}" for k, v in progress.items() if k not in ("description", "total"))
        last = f"; last progress reported: {extra}"
    partial = r.result if isinstance(r.result, dict) else None
    got = ""
    if partial:
        got = "; done before it stopped: " + ", ".join(
            f"{k}={v}" for k, v in partial.items() if isinstance(v, int | float | str) and k != "partial")
    if r.status == "not_run":
        return "unknown: the change was sent and the run log ends before the step did" + last
    return f"partly or unknown: the change was sent, then the step was {r.status} ({r.reason})" + got + last


def _changes(events: list[dict[str, Any]], records: dict[str, StepRecord]) -> list[str]:
    dry_run = bool(events[0].get("dry_run"))
    confirms = {e["step"]: e for e in events if e["event"] == "confirm"}
    sent = {e["step"]: e for e in events if e["event"] == "apply_start"}
    progress = {e["step"]: e.get("progress") for e in events if e["event"] == "apply_progress"}
    # a step whose apply was logged but whose end never was (a killed process) is still a change
    for sid, e in sent.items():
        if sid not in records:
            records[sid] = StepRecord(sid, "mitigate", e.get("action", ""), sid, None, False,
                                      plan={"summary": e.get("summary", ""), "changes": [
                                          {"target": t, "operation": "?"} for t in e.get("targets", [])]})
    planned = [r for r in records.values() if r.plan is not None or r.id in sent]
    taken = [r for r in planned if r.status == "applied" or r.id in sent]
    rest = [r for r in planned if r not in taken]
    out = ["", "## Actions taken", ""]
    if not taken:
        out.append("- none: no change was sent to any system")
    for r in taken:
        out += _step_changes(r, confirms.get(r.id), dry_run, r.id in sent, progress.get(r.id))
    out += ["", "## Planned, not applied", ""]
    if not rest:
        out.append("- none")
    for r in rest:
        out += _step_changes(r, confirms.get(r.id), dry_run, False, None)
    return out


def _step_changes(r: StepRecord, confirm: dict[str, Any] | None, dry_run: bool, sent: bool,
                  progress: dict[str, Any] | None) -> list[str]:
    plan = r.plan or {}
    changes = plan.get("changes", [])
    applied = _applied(r, sent, progress)
    option = f", option `{r.option}`" if r.option else ""
    reused = f" (done in run `{r.reused_from}`, reused by this resumed run)" if r.reused_from else ""
    out = [f"- `{r.id}` ({r.action}{option}): {r.status}{reused}",
           f"  - planned: {plan.get('summary', '')} ({len(changes)} change(s))",
           f"  - decision: {_decision(r, confirm, dry_run)}",
           f"  - applied: {applied}"]
    outcome = "applied" if r.status == "applied" else (
        "sent, outcome uncertain" if sent else _NOT_APPLIED.get(r.status, f"not applied ({r.status})"))
    for c in changes[:50]:
        out.append(f"  - {c.get('operation')} {c.get('target')}: before `{_v(c.get('before'))}`, "
                   f"{'after' if r.status == 'applied' else 'planned'} `{_v(c.get('after'))}`: {outcome}")
    if len(changes) > 50:
        out.append(f"  - ... and {len(changes) - 50} more")
    return out


def _v(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text.replace("`", "'").replace("|", "/")
