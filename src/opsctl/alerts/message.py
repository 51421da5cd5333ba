"""The Slack message of an alert-triggered run (Block Kit) and the command that applies its plan.

Everything shown comes from the run's records, redacted like the run log (secret parameters,
credential-looking keys, passwords inside URLs); the webhook URL is never part of a message.
"""

from __future__ import annotations

import shlex
from typing import Any

from opsctl import audit
from opsctl.alerts.runner import RunResult

MAX_FINDINGS = 12
MAX_CHANGES = 10
SECTION_LIMIT = 2900  # Slack's limit for a section's text is 3000 characters
_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}


def apply_command(runbook: Any, given: dict[str, str], option: str, environment: str = "default",
                  plan_file: str | None = None) -> str:
    """The exact command that applies ``option`` with the alert's parameters: ``opsctl apply`` of
    the plan file the diagnosis wrote, else the ``opsctl run ... --option`` line."""
    if plan_file:
        return f"opsctl apply {shlex.quote(plan_file)}"
    parts = ["opsctl", "run", runbook.id]
    if environment != "default":
        parts += ["--env", shlex.quote(environment)]
    for key, value in given.items():
        secret = key in runbook.params and runbook.params[key].secret
        parts += ["-p", f"{key}=${{{key.upper()}}}" if secret else shlex.quote(f"{key}={value}")]
    parts += ["--option", option]
    return " ".join(parts)


def _esc(text: object) -> str:
    """Slack mrkdwn control characters in text that comes from the alert or the systems
    (a label value must not become a link or a mention)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_summary(result: RunResult) -> str:
    """The notification's plain-text fallback (and what phones show)."""
    a, o = result.alert, result.outcome
    name = _esc(a.name)
    if result.phase == "verify":
        return f"{name} resolved: {result.runbook.id} verify {o.status} ({o.message})"
    crit = sum(1 for f in o.findings() if f.severity == "critical")
    warn = sum(1 for f in o.findings() if f.severity == "warning")
    return (f"{name} firing: {result.runbook.id} diagnosis {o.status}, {crit} critical / "
            f"{warn} warning finding(s)"
            + (f"; recommended: {result.recommended.name}" if result.recommended else ""))


def blocks(result: RunResult) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}`` for an incoming webhook."""
    a, o, rb = result.alert, result.outcome, result.runbook
    title = f"{a.name} {a.status}: {rb.id} {rb.title}"
    labels = ", ".join(f"{_esc(k)}={_esc(v)}" for k, v in sorted(a.labels.items()) if k != "alertname")
    links = " · ".join(f"<{url.replace('|', '%7C').replace('>', '%3E')}|{name}>"
                       for name, url in (("source", a.generator_url), ("runbook", a.runbook_url))
                       if url.startswith(("http://", "https://")))
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            f"*Alert* `{_esc(a.name)}` ({a.source}) since {_esc(a.starts_at or '?')}\n"
            f"*Labels* {labels or '-'}"
            + (f"\n{links}" if links else "")
            + f"\n*{result.phase.capitalize()}* `{rb.id}` with "
            + (" ".join(f"`{_esc(k)}={_esc(v)}`" for k, v in result.match.given.items())
               or "default parameters")
            + (f" (from {_esc(result.environment)}: "
               + " ".join(f"`{_esc(k)}={_esc(v)}`" for k, v in result.match.environment.items()) + ")"
               if result.match.environment else "")
            + f" → *{o.status}*: {_esc(o.message)}")}},
    ]
    findings = [f for f in o.findings() if f.severity != "ok"]
    findings.sort(key=lambda f: f.severity != "critical")
    if findings:
        lines = [f"{_ICON.get(f.severity, '')} *{f.severity}* ({f.step}) {_esc(f.message)}"
                 for f in findings[:MAX_FINDINGS]]
        if len(findings) > MAX_FINDINGS:
            lines.append(f"… and {len(findings) - MAX_FINDINGS} more (`opsctl report {result.run_id}`)")
        out.append({"type": "section", "text": {"type": "mrkdwn",
                                                 "text": _clip("*Findings*\n" + "\n".join(lines))}})
    elif result.phase == "diagnose":
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Findings* none"}})
    if result.phase == "diagnose":
        out += _recommendation(result)
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
        f"run `{result.run_id}` · `opsctl report {result.run_id}` · nothing was changed", 300)}]})
    return audit.redact({"text": _clip(text_summary(result)), "blocks": out}, result.secrets)


def _recommendation(result: RunResult) -> list[dict[str, Any]]:
    option = result.recommended
    if option is None:
        note = _esc(result.recommendation_note or "no recommendation")
        return [{"type": "section", "text": {"type": "mrkdwn", "text": f"*Recommended* {note}"}}]
    lines = [f"*Recommended* `{option.name}`: {_esc(option.title)}"]
    if result.recommendation_note:
        lines.append(_esc(result.recommendation_note))
    for rec in result.plan_steps:
        plan = rec.plan or {}
        lines.append(f"*Plan* ({rec.id}): {_esc(plan.get('summary', ''))}")
        changes = plan.get("changes") or []
        lines += [_esc(f"• {c.get('operation')} {c.get('target')}"
                       + (f" ({c['detail']})" if c.get("detail") else ""))
                  for c in changes[:MAX_CHANGES]]
        if len(changes) > MAX_CHANGES:
            lines.append(f"• … {len(changes) - MAX_CHANGES} more")
    failed = [r for r in result.outcome.records if r.phase == "mitigate" and r.status == "failed"]
    lines += [f"planning {r.id} failed: {_esc(r.reason)}" for r in failed]
    command = apply_command(result.runbook, result.match.given, option.name, result.environment,
                            result.plan_file)
    if result.plan_file:
        command = f"opsctl show-plan {shlex.quote(result.plan_file)}\n{command}"
    lines += [f"(diagnosed against the {k} at {_esc(v)}: point {k.upper()}_URL or --env there to apply)"
              for k, v in result.match.connect.items()]
    return [{"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines))}},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": _clip(f"*Apply* (after review):\n```{_esc(command)}```")}}]
