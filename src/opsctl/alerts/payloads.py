"""Alert payloads -> one ``Alert`` per alert: Alertmanager's webhook (version 4) and PagerDuty's v3
webhooks.  Plain data, no web imports: ``opsctl alert``, ``validate --alerts`` and ``opsctl serve``
all read payloads through here.

Alertmanager groups alerts: a notification carries every alert of its group, with ``commonLabels``
holding only the labels they share.  Mapping is done per alert from the alert's own labels (a group
with two databases has no ``database`` in commonLabels); ``truncatedAlerts`` > 0 (``max_alerts`` in the
receiver) is reported as a warning, since those alerts are not in the payload at all.

PagerDuty v3 webhooks describe an incident, not the alert behind it: the alert name is read from the
incident title (``[FIRING:1] DatabaseConnectionPoolCritical ...`` as Alertmanager's PagerDuty
integration writes it, or the first word naming a known trigger), labels from ``key=value`` pairs in
the title (or the ``custom_details`` / ``body.details`` some senders add, Alertmanager's
``firing`` text included), and the incident's service, urgency and priority.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opsctl.errors import UsageError


class PayloadError(UsageError):
    """The payload is not an alert notification we understand (HTTP 400, exit 2)."""


@dataclass(frozen=True)
class Alert:
    name: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str = ""
    fingerprint: str = ""
    generator_url: str = ""
    source: str = "alertmanager"

    @property
    def key(self) -> str:
        """One alert episode: Alertmanager re-sends it every repeat_interval with the same key."""
        return f"{self.fingerprint}@{self.starts_at}"

    @property
    def runbook_url(self) -> str:
        return self.annotations.get("runbook_url", "")

    def describe(self) -> str:
        shown = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()) if k != "alertname")
        return f"{self.name}{{{shown}}} ({self.status})"

    def as_dict(self) -> dict[str, Any]:
        return {"alertname": self.name, "status": self.status, "labels": self.labels,
                "annotations": self.annotations, "startsAt": self.starts_at, "endsAt": self.ends_at,
                "fingerprint": self.fingerprint, "generatorURL": self.generator_url,
                "source": self.source}


@dataclass
class Batch:
    source: str  # alertmanager | pagerduty
    alerts: list[Alert]
    warnings: list[str] = field(default_factory=list)
    group_key: str = ""
    truncated: int = 0


def parse(body: bytes | str, known_names: Iterable[str] = ()) -> Batch:
    """A webhook body -> its alerts; PayloadError (one sentence) for anything else."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PayloadError(f"not JSON: {e}") from None
    except RecursionError:  # "[[[[..." within the body limit
        raise PayloadError("not an alert notification: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise PayloadError(f"expected a JSON object, got {type(data).__name__}")
    if isinstance(data.get("event"), dict):
        return _pagerduty(data["event"], set(known_names))
    if "alerts" in data or "version" in data:
        return _alertmanager(data)
    raise PayloadError("neither an Alertmanager webhook (version 4: 'alerts') nor a PagerDuty v3 "
                       "webhook ('event')")


def fingerprint(labels: dict[str, str]) -> str:
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def normalise_time(value: str) -> str:
    """RFC 3339 with nanoseconds or an offset -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (run log format);
    the value unchanged when it is no such time (see ``_time``)."""
    import datetime as dt

    m = re.fullmatch(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:?\d\d)?",
                     value.strip())
    if not m:
        return value
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    try:
        offset = "+00:00" if m.group(3) in (None, "Z", "z") else m.group(3)
        t = dt.datetime.fromisoformat(f"{m.group(1).replace('t', 'T')}.{frac}{offset}")
    except ValueError:
        return value
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: Any, what: str) -> str:
    """An alert's time: "" when absent, else RFC 3339 (a 400 with the field otherwise: it keys the
    episode and starts the report's timeline)."""
    if value in (None, ""):
        return ""
    text = normalise_time(str(value))
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text):
        raise PayloadError(f"{what}: not an RFC 3339 time: {str(value)[:40]!r}")
    return text


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{what}: expected an object, got {type(value).__name__}")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _alertmanager(data: dict[str, Any]) -> Batch:
    version = str(data.get("version", ""))
    if version != "4":
        raise PayloadError(f"unsupported Alertmanager webhook version {version or '(none)'!r}; "
                           "expected \"4\"")
    raw = data.get("alerts")
    if not isinstance(raw, list):
        raise PayloadError("'alerts' must be a list")
    batch = Batch("alertmanager", [], group_key=str(data.get("groupKey", "")))
    try:
        batch.truncated = int(data.get("truncatedAlerts") or 0)
    except (TypeError, ValueError, OverflowError):
        raise PayloadError("'truncatedAlerts' must be a number") from None
    if batch.truncated > 0:
        batch.warnings.append(f"{batch.truncated} alert(s) of group {batch.group_key or '?'} were "
                              "truncated by Alertmanager (max_alerts): they are not in this payload "
                              "and get no diagnosis; raise max_alerts on the receiver")
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            raise PayloadError(f"alerts[{i}]: expected an object")
        labels = _strings(a.get("labels"), f"alerts[{i}].labels")
        if not labels.get("alertname"):
            raise PayloadError(f"alerts[{i}]: no 'alertname' label")
        status = str(a.get("status") or data.get("status") or "")
        if status not in ("firing", "resolved"):
            raise PayloadError(f"alerts[{i}]: status must be firing or resolved, got {status!r}")
        batch.alerts.append(Alert(
            name=labels["alertname"], status=status, labels=labels,
            annotations=_strings(a.get("annotations"), f"alerts[{i}].annotations"),
            starts_at=_time(a.get("startsAt"), f"alerts[{i}].startsAt"),
            ends_at=_time(a.get("endsAt"), f"alerts[{i}].endsAt"),
            fingerprint=str(a.get("fingerprint") or fingerprint(labels)),
            generator_url=str(a.get("generatorURL") or ""), source="alertmanager"))
    return batch


def _details(data: dict[str, Any]) -> dict[str, str]:
    """Labels in an incident's details, when the payload carries them (``custom_details`` /
    ``body.details``: flat string values, or Alertmanager's ``firing`` text, `` - key = value``
    lines under ``Labels:``)."""
    body = data.get("body")
    details = data.get("custom_details") or (body.get("details") if isinstance(body, dict) else None)
    if not isinstance(details, dict):
        return {}
    out = {str(k): str(v) for k, v in details.items()
           if isinstance(v, str | int | float) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k))
           and k not in ("firing", "resolved", "num_firing", "num_resolved")}
    text = details.get("firing") or details.get("resolved")
    if isinstance(text, str) and "Labels:" in text:
        block = text.split("Labels:", 1)[1].split("Annotations:", 1)[0]
        for m in re.finditer(r"^\s*-\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", block, re.M):
            out.setdefault(m.group(1), m.group(2))
    return out


_PD_STATUS = {"incident.triggered": "firing", "incident.reopened": "firing",
              "incident.resolved": "resolved"}
_AM_TITLE = re.compile(r"^\s*\[(?:FIRING|RESOLVED)(?::\d+)?\]\s*([A-Za-z_:][A-Za-z0-9_:]*)")
_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s,;}\])]+))")


def _pagerduty(event: dict[str, Any], known: set[str]) -> Batch:
    kind = str(event.get("event_type") or "")
    data = event.get("data")
    if not kind or not isinstance(data, dict):
        raise PayloadError("PagerDuty v3 webhook: 'event' needs 'event_type' and 'data'")
    batch = Batch("pagerduty", [])
    if kind not in _PD_STATUS:
        batch.warnings.append(f"PagerDuty event {kind!r} ignored (only incident.triggered, "
                              "incident.reopened and incident.resolved start runs)")
        return batch
    title = str(data.get("title") or data.get("summary") or "")
    if not title:
        raise PayloadError("PagerDuty v3 webhook: the incident has no title")
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_:]*", title)
    m = _AM_TITLE.match(title)
    name = next((w for w in words if w in known), None) or (m.group(1) if m else words[0] if words else "")
    labels: dict[str, str] = {k: next((v for v in vs if v), "") for k, *vs in _PAIR.findall(title)}
    for key, text in _details(data).items():  # the title's pairs first
        labels.setdefault(key, text)
    if name not in known and labels.get("alertname"):
        name = labels["alertname"]
    labels["alertname"] = str(name)
    for key, value in (("service", (data.get("service") or {}).get("summary")),
                       ("urgency", data.get("urgency")),
                       ("priority", (data.get("priority") or {}).get("summary"))):
        if value and key not in labels:
            labels[key] = str(value)
    incident = str(data.get("id") or "")
    if not incident:
        raise PayloadError("PagerDuty v3 webhook: the incident has no id")
    annotations = {"summary": title}
    if data.get("html_url"):
        annotations["incident_url"] = str(data["html_url"])
    batch.alerts.append(Alert(
        name=name, status=_PD_STATUS[kind], labels=labels, annotations=annotations,
        starts_at=_time(data.get("created_at") or event.get("occurred_at"), "event.data.created_at"),
        ends_at=_time(event.get("occurred_at"), "event.occurred_at") if kind == "incident.resolved"
        else "", fingerprint=f"pd-{incident}", generator_url=str(data.get("html_url") or ""),
        source="pagerduty"))
    return batch
