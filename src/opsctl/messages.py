"""Incident message templates: the run notifications (start, chosen mitigation, verdict) and the
incident communication posted by runbooks (announcement, update, resolution).

A team overrides any of them per environment in ``opsctl.yaml``::

    notify:
      templates:
        start: "[{{ runbook.severity }}] {{ runbook.title }}: on it ({{ run.user }})"

Templates are Jinja in the runbooks' sandbox (``StrictUndefined``: a misspelt name is an error, and
a template that cannot render falls back to the built-in one with a warning, never stopping a run).
"""

from __future__ import annotations

from typing import Any

from opsctl import templating

_TAG = "[INCIDENT {{ severity }}] {{ title }}."

DEFAULTS: dict[str, str] = {
    # run notifications (every P0/P1 runbook, from the executor)
    "start": ("[INCIDENT {{ runbook.severity }}] {{ runbook.title }}. Status: Investigating. "
              "Runbook {{ runbook.id }} started by {{ run.user }} in {{ env.name }} (run {{ run.id }})."),
    "option": ("[INCIDENT {{ runbook.severity }}] {{ runbook.title }}. Status: Mitigating. "
               "Chosen mitigation: {{ option.name }} ({{ option.title }}). Run {{ run.id }}."),
    "verdict": ("[INCIDENT {{ runbook.severity }}] {{ runbook.title }}. "
                "{% if outcome.status == 'ok' %}Status: {{ 'Mitigated and verified' if outcome.applied "
                "else 'Checked' }}{% else %}Status: NOT resolved ({{ outcome.status }}){% endif %}: "
                "{{ outcome.message }}. Duration: {{ outcome.duration | duration }}. "
                "Timeline: opsctl report {{ run.id }}"),
    # incident communication (rb-001's steps, `notify.slack` with `template:`)
    "announce": (_TAG + " Status: Investigating. Impact: {{ impact }}. Team: {{ team }}."
                 "{% if findings %} Signals: {{ findings }}.{% endif %}"
                 "{% if war_room %} War room: {{ war_room }}.{% endif %}"
                 " Next update within {{ update_every }}."),
    "update": (_TAG + " Status: {{ status }}. Last update: {{ done }}. Next steps: {{ next }}."),
    "resolve": (_TAG + " Status: RESOLVED. Duration: {{ duration }}. Initial root cause: "
                "{{ root_cause }}. Next steps: start the post-mortem."),
}

RUN_EVENTS = ("start", "option", "verdict")


def template(name: str, notify_config: dict[str, Any]) -> str:
    """The environment's template for ``name``, else the built-in one."""
    custom = (notify_config.get("templates") or {}).get(name)
    return custom if isinstance(custom, str) and custom.strip() else DEFAULTS.get(name, "")


def render(name: str, notify_config: dict[str, Any], context: dict[str, Any]) -> tuple[str, str | None]:
    """(text, warning): the team's template rendered; when it cannot render, the built-in one and
    why the team's did not (a message is never lost to a template typo)."""
    text = template(name, notify_config)
    try:
        return _one_line(templating.render(text, context)), None
    except templating.TemplateError as e:
        if text == DEFAULTS.get(name):
            raise
        fallback = _one_line(templating.render(DEFAULTS[name], context)) if name in DEFAULTS else ""
        return fallback, (f"notify template {name!r} of the environment cannot render ({e}); "
                          "the built-in one was used")


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def problems(notify_config: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Static checks of a `notify` section for opsctl.yaml's loader: (path, message) pairs."""
    out: list[tuple[tuple[str, ...], str]] = []
    templates = notify_config.get("templates")
    if templates is not None and not isinstance(templates, dict):
        return [(("templates",), "templates must be a mapping of message name -> Jinja text "
                 f"({', '.join(DEFAULTS)})")]
    for name, text in (templates or {}).items():
        if name not in DEFAULTS:
            out.append((("templates", str(name)), f"unknown message template {name!r} (known: "
                        f"{', '.join(DEFAULTS)})"))
        elif not isinstance(text, str):
            out.append((("templates", name), f"template {name!r} must be a string"))
        else:
            try:
                templating.parse(text, expression=False)
            except templating.TemplateError as e:
                out.append((("templates", name), f"template {name!r}: {e}"))
    severities = notify_config.get("severities")
    if severities is not None and (not isinstance(severities, list) or any(
            s not in ("P0", "P1", "P2", "P3", "P4") for s in severities)):
        out.append((("severities",), "severities must be a list of P0..P4 (default [P0, P1])"))
    for key in ("dry_run",):
        if key in notify_config and not isinstance(notify_config[key], bool):
            out.append(((key,), f"{key} must be true or false"))
    timeout = notify_config.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= 60):
        out.append((("timeout",), "timeout must be a number of seconds in (0, 60]"))
    return out
