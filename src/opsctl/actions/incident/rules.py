"""The triage rules: what was measured -> signals -> a proposed severity, the response it calls for,
and the specialised runbooks to run.  Pure functions (no backend): tested cell by cell.

Severity levels (the usual incident scale):

* **P0** - complete unavailability: a critical service does not answer or reports itself down, the
  database cannot be reached or has no connection left, a workload has no ready replica.
* **P1** - degraded: slow or partially failing services, a pool past its warning threshold, a cache
  that is full, missing or refusing clients, consumer lag or a queue backlog past the threshold,
  alarms firing, workloads short of replicas, Kafka unreachable.
* **P2** - needs attention, not urgent: messages in a dead-letter queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

ORDER = {"P0": 0, "P1": 1, "P2": 2}

# response targets per severity (minutes), war room, update cadence
RESPONSE: dict[str, dict[str, Any]] = {
    "P0": {"announce_within": "3m", "investigate_within": "10m", "contain_within": "15-30m",
           "update_every": "15m", "war_room": True,
           "definition": "complete unavailability of a critical service, all users affected"},
    "P1": {"announce_within": "5m", "investigate_within": "15m", "contain_within": "30-60m",
           "update_every": "30m", "war_room": True,
           "definition": "degraded service: reduced performance or a key function limited"},
    "P2": {"announce_within": "15m", "investigate_within": "flexible", "contain_within": "next release",
           "update_every": "on resolution", "war_room": False,
           "definition": "non-critical problem that needs attention, no direct user impact"},
}
ESCALATION = [  # P0/P1; contacts come from the environment (settings.escalation)
    {"after": "30m", "role": "platform_lead", "when": "P0/P1 without progress"},
    {"after": "60m", "role": "engineering_manager", "when": "P0/P1 with business impact (decisions, "
                                                             "external communication)"},
    {"after": "0m", "role": "security", "when": "any suspected security problem"},
]


@dataclass
class Signal:
    severity: str  # P0 | P1 | P2
    backend: str
    target: str
    message: str
    runbook: str = ""
    args: dict[str, str] = field(default_factory=dict)
    title: str = ""  # a few words for the incident's title ("api down", "PostgreSQL pool at 97 %")

    @property
    def command(self) -> str:
        if not self.runbook:
            return ""
        extra = "".join(f" -p {k}={v}" for k, v in self.args.items() if v not in (None, ""))
        return f"opsctl run {self.runbook}{extra} --dry-run"


@dataclass
class Thresholds:
    pool_warning_pct: float = 80.0
    pool_critical_pct: float = 95.0
    slow_ms: float = 1000.0
    redis_memory_pct: float = 90.0
    redis_hit_rate_pct: float = 80.0
    redis_min_lookups: int = 100  # a hit rate over fewer lookups says nothing
    redis_clients_pct: float = 90.0
    kafka_lag: int = 10000
    queue_backlog: int = 1000
    dlq_messages: int = 1

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Thresholds:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (args or {}).items() if k in known})


def http_signals(p: dict[str, Any], t: Thresholds) -> list[Signal]:
    name = p["target"]
    if p["status"] == "unreachable":
        return [Signal("P0", "http", name, f"service {name} does not answer: {p['error']}",
                       title=f"{name} down")]
    if not p.get("healthy"):
        return [Signal("P0", "http", name, f"service {name} reports itself unhealthy (HTTP "
                       f"{p['http_status']}{', status ' + str(p['reported']) if p.get('reported') else ''})",
                       title=f"{name} unhealthy")]
    if p.get("latency_ms", 0) >= t.slow_ms:
        return [Signal("P1", "http", name, f"service {name} is slow: health answered in "
                       f"{p['latency_ms']:.0f} ms (slow at {t.slow_ms:g} ms)", title=f"{name} slow")]
    return []


def postgres_signals(p: dict[str, Any], t: Thresholds, database: str) -> list[Signal]:
    args = {"database": database}
    if p["status"] == "unreachable":
        return [Signal("P0", "postgres", "postgres", f"PostgreSQL cannot be reached: {p['error']}",
                       "rb-005", title="PostgreSQL unreachable")]
    r = p["result"]
    pct = r["usage_pct"]
    where = f"{r['total']}/{r['max_connections']}, {r['idle_in_transaction']} idle in transaction"
    if r["available"] <= 0 or pct >= t.pool_critical_pct:
        return [Signal("P0", "postgres", "connections", f"pool at {pct:g} % ({where})", "rb-006", args,
                       title=f"PostgreSQL pool at {pct:g} %")]
    if pct >= t.pool_warning_pct:
        return [Signal("P1", "postgres", "connections", f"pool at {pct:g} % ({where}; warning at "
                       f"{t.pool_warning_pct:g} %)", "rb-006", args,
                       title=f"PostgreSQL pool at {pct:g} %")]
    return []


def redis_signals(p: dict[str, Any], t: Thresholds) -> list[Signal]:
    if p["status"] == "unreachable":
        return [Signal("P1", "redis", "redis", f"Redis cannot be reached: {p['error']}", "rb-010",
                       title="Redis unreachable")]
    r, out = p["result"], []
    if r.get("memory_pct") is not None and r["memory_pct"] >= t.redis_memory_pct:
        out.append(f"memory at {r['memory_pct']:g} % of maxmemory ({r.get('maxmemory_policy')})")
    lookups = int(r.get("keyspace_hits", 0)) + int(r.get("keyspace_misses", 0))
    if r.get("hit_rate_pct") is not None and lookups >= t.redis_min_lookups \
            and r["hit_rate_pct"] < t.redis_hit_rate_pct:
        out.append(f"hit rate {r['hit_rate_pct']:g} % (under {t.redis_hit_rate_pct:g} %)")
    maxclients = int(r.get("maxclients") or 0)
    if maxclients and 100.0 * r["connected_clients"] / maxclients >= t.redis_clients_pct:
        out.append(f"{r['connected_clients']}/{maxclients} clients")
    if r.get("rejected_connections"):
        out.append(f"{r['rejected_connections']} connections rejected")
    if not out:
        return []
    return [Signal("P1", "redis", "redis", "Redis: " + ", ".join(out), "rb-010",
                   title="Redis cache degraded")]


def kafka_signals(p: dict[str, Any], t: Thresholds) -> list[Signal]:
    group = p["target"]
    if p["status"] == "unreachable":
        return [Signal("P1", "kafka", group, f"Kafka cannot be reached: {p['error']}", "rb-014",
                       {"group": group}, title="Kafka unreachable")]
    r = p["result"]
    lag, members = int(r.get("total_lag") or 0), int(r.get("member_count") or 0)
    if lag >= t.kafka_lag:
        idle = "" if members else "; no consumer in the group"
        return [Signal("P1", "kafka", group, f"consumer group {group}: lag {lag} (threshold "
                       f"{t.kafka_lag}){idle}", "rb-008", {"group": group},
                       title=f"consumer lag on {group}")]
    return []


def sqs_signals(p: dict[str, Any], t: Thresholds) -> list[Signal]:
    queue = p["target"]
    if p["status"] == "unreachable":
        return [Signal("P1", "aws", queue, f"SQS {queue} cannot be read: {p['error']}")]
    r, out = p["result"], []
    if r["visible"] >= t.queue_backlog:
        out.append(Signal("P1", "aws", queue, f"queue {queue}: {r['visible']} messages waiting "
                          f"(backlog at {t.queue_backlog})", "rb-012", {"queue": queue},
                          title=f"backlog in {queue}"))
    if r.get("dlq") and r["dlq_visible"] >= t.dlq_messages:
        out.append(Signal("P2", "aws", queue, f"{r['dlq_visible']} messages in the DLQ "
                          f"{r['dlq']['name']} of {queue}", "rb-007", {"queue": queue},
                          title=f"messages in the DLQ of {queue}"))
    return out


def alarm_signals(p: dict[str, Any]) -> list[Signal]:
    if p["status"] == "unreachable":
        return [Signal("P1", "aws", "cloudwatch", f"CloudWatch alarms cannot be read: {p['error']}")]
    return [Signal("P1", "aws", a["name"], f"alarm {a['name']} in ALARM: {a.get('reason', '')[:160]}",
                   title=f"alarm {a['name']}")
            for a in p["result"]["alarms"] if a["state"] == "ALARM"]


def k8s_signals(p: dict[str, Any]) -> list[Signal]:
    ns = p["target"]
    if p["status"] == "unreachable":
        return [Signal("P1", "kubernetes", ns, f"Kubernetes cannot be read: {p['error']}")]
    out = []
    for w in p["result"]["items"]:
        if w["desired"] and w["ready"] == 0:
            out.append(Signal("P0", "kubernetes", f"{ns}/{w['name']}",
                              f"{w.get('kind', 'workload')} {ns}/{w['name']}: 0/{w['desired']} "
                              "replicas ready", title=f"{ns}/{w['name']} down"))
        elif w["ready"] < w["desired"]:
            out.append(Signal("P1", "kubernetes", f"{ns}/{w['name']}",
                              f"{ns}/{w['name']}: {w['ready']}/{w['desired']} replicas ready",
                              title=f"{ns}/{w['name']} degraded"))
    return out


def classify(signals: list[Signal], *, now: dt.datetime | None = None,
             war_room_prefix: str = "incident", escalation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The proposed severity (the worst signal), the response it calls for and the runbooks."""
    signals = sorted(signals, key=lambda s: ORDER[s.severity])
    severity = signals[0].severity if signals else "none"
    now = now or dt.datetime.now(dt.UTC)
    response = dict(RESPONSE.get(severity, {}))
    war_room = (f"#{war_room_prefix}-{severity.lower()}-{now:%Y-%m-%d-%H%M}"
                if response.get("war_room") else "")
    recommendations: list[dict[str, str]] = []
    for s in signals:
        if s.runbook and not any(r["command"] == s.command for r in recommendations):
            recommendations.append({"runbook": s.runbook, "why": s.message, "command": s.command,
                                    "severity": s.severity})
    contacts = escalation or {}
    steps = [{**e, "contact": str(contacts.get(e["role"], ""))} for e in ESCALATION] \
        if severity in ("P0", "P1") else []
    by = {lvl: [s.message for s in signals if s.severity == lvl] for lvl in ORDER}
    return {
        "severity": severity, "signals": [asdict(s) | {"command": s.command} for s in signals],
        "p0": by["P0"], "p1": by["P1"], "p2": by["P2"],
        "recommendations": recommendations,
        "recommended": [f"{r['why']}: run {r['runbook']} ({r['command']})" for r in recommendations],
        "title": _title(signals), "response": response, "war_room": war_room, "escalation": steps,
    }


def _title(signals: list[Signal]) -> str:
    if not signals:
        return "no incident signal"
    titles = list(dict.fromkeys(s.title or s.message[:80] for s in signals))
    more = len(titles) - 2
    return ", ".join(titles[:2]) + (f" (+{more} more)" if more > 0 else "")
