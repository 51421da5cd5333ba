"""A run log rendered as the Markdown incident timeline a post-mortem needs (seed 001 §1.6:
timeline, root cause, impact, actions taken, improvements, action items)."""

from __future__ import annotations

from typing import Any

from opsctl.audit import final_records, read_run, summary


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
        return f"{'approved' if e.get('answer') else 'declined'} step `{e['step']}` ({who})"
    if kind == "step_end":
        r = e["record"]
        text = f"{r['phase']} `{r['id']}` {r['title']}: **{r['status']}**"
        if r.get("plan") and r["plan"].get("summary"):
            text += f" — {r['plan']['summary']}"
        if r.get("reason") and r["status"] not in ("ok", "applied"):
            text += f" — {r['reason']}"
        bad = [f["message"] for f in r.get("findings", []) if f["severity"] != "ok"]
        if bad:
            text += " — findings: " + "; ".join(bad)
        return text
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
    actions = [r for r in records.values() if r.status in ("applied", "planned", "declined", "refused")]
    lines += ["", "## Actions taken", ""]
    for r in actions:
        plan = r.plan or {}
        lines.append(f"- `{r.id}` ({r.action}): {r.status} — {plan.get('summary', '')}")
        lines += [f"  - {c['operation']} {c['target']}: {c.get('before')} → {c.get('after')}"
                  for c in plan.get("changes", [])[:20]]
    if not actions:
        lines.append("- none")
    lines += ["", "## Root cause", "", "_to be written_", "", "## Impact", "", "_to be written_", "",
              "## Action items", "", "| item | owner | due |", "|---|---|---|", "| | | |", ""]
    return "\n".join(lines)
