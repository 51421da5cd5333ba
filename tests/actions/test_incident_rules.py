"""The triage rules (rb-001) cell by cell: what was measured -> severity and runbook.  Pure
functions; the probes that feed them run against real servers in tests/runbooks/test_rb001.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from opsctl.actions.incident import rules

T = rules.Thresholds()


def ok(result: dict[str, Any], target: str = "x") -> dict[str, Any]:
    return {"status": "ok", "target": target, "result": result}


def redis(**over: Any) -> dict[str, Any]:
    base = {"memory_pct": 40.0, "maxmemory_policy": "allkeys-lru", "keyspace_hits": 900,
            "keyspace_misses": 100, "hit_rate_pct": 90.0, "connected_clients": 10, "rejected_connections": 0}
    return ok({**base, **over})


@pytest.mark.parametrize(("probe", "expected"), [
    (redis(), []),
    (redis(memory_pct=95.0), ["memory at 95 %"]),
    (redis(hit_rate_pct=50.0, keyspace_hits=500, keyspace_misses=500), ["hit rate 50 %"]),
    (redis(hit_rate_pct=0.0, keyspace_hits=0, keyspace_misses=5), []),  # 5 lookups say nothing
    (redis(maxclients=100, connected_clients=95), ["95/100 clients"]),
    (redis(rejected_connections=3), ["3 connections rejected"]),
])
def test_redis_cells(probe: dict[str, Any], expected: list[str]) -> None:
    got = rules.redis_signals(probe, T)
    assert len(got) == (1 if expected else 0)
    for part in expected:
        assert part in got[0].message and got[0].severity == "P1" and got[0].runbook == "rb-010"


def test_postgres_levels_and_the_full_pool() -> None:
    def pool(pct: float, available: int = 10) -> dict[str, Any]:
        return ok({"usage_pct": pct, "available": available, "total": 1, "max_connections": 100,
                   "idle_in_transaction": 0})

    assert rules.postgres_signals(pool(79.9), T, "app") == []
    assert rules.postgres_signals(pool(80.0), T, "app")[0].severity == "P1"
    p0 = rules.postgres_signals(pool(97.0), T, "app")[0]
    assert (p0.severity, p0.runbook) == ("P0", "rb-006")
    assert p0.command == "opsctl run rb-006 -p database=app --dry-run"
    assert rules.postgres_signals(pool(50.0, available=0), T, "")[0].severity == "P0"  # only reserved left
    down = rules.postgres_signals({"status": "unreachable", "target": "x", "error": "refused"}, T, "")
    assert (down[0].severity, down[0].runbook) == ("P0", "rb-005")


def test_http_k8s_kafka_and_queues() -> None:
    up = {"status": "ok", "target": "api", "healthy": True, "latency_ms": 20.0, "http_status": 200}
    assert rules.http_signals(up, T) == []
    assert rules.http_signals({**up, "latency_ms": 1500.0}, T)[0].severity == "P1"
    down = {**up, "healthy": False, "http_status": 503, "reported": "DOWN"}
    assert rules.http_signals(down, T)[0].severity == "P0"
    items = [{"name": "api", "desired": 3, "ready": 0}, {"name": "web", "desired": 3, "ready": 2},
             {"name": "idle", "desired": 0, "ready": 0}]
    assert [s.severity for s in rules.k8s_signals(ok({"items": items}, "shop"))] == ["P0", "P1"]
    assert rules.kafka_signals(ok({"total_lag": 9999, "member_count": 1}, "g"), T) == []
    lag = rules.kafka_signals(ok({"total_lag": 10000, "member_count": 0}, "g"), T)[0]
    assert lag.runbook == "rb-008" and "no consumer" in lag.message
    q = ok({"visible": 0, "dlq": {"name": "q-dlq"}, "dlq_visible": 1}, "q")
    assert [(s.severity, s.runbook) for s in rules.sqs_signals(q, T)] == [("P2", "rb-007")]


def test_classify_takes_the_worst_signal_and_dedups_recommendations() -> None:
    signals = [rules.Signal("P2", "aws", "q", "dlq", "rb-007", {"queue": "q"}),
               rules.Signal("P0", "postgres", "c", "pool at 99 %", "rb-006", {"database": "app"}),
               rules.Signal("P1", "postgres", "c", "pool again", "rb-006", {"database": "app"})]
    out = rules.classify(signals, now=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC), war_room_prefix="inc",
                         escalation={"platform_lead": "@lead"})
    assert out["severity"] == "P0" and out["war_room"] == "#inc-p0-2026-01-02-0304"
    assert [r["runbook"] for r in out["recommendations"]] == ["rb-006", "rb-007"]
    assert out["escalation"][0] == {"after": "30m", "role": "platform_lead", "when": "P0/P1 without progress",
                                    "contact": "@lead"}
    quiet = rules.classify([])
    assert quiet["severity"] == "none" and quiet["war_room"] == "" and quiet["escalation"] == []
    p2 = rules.classify(signals[:1])
    assert p2["severity"] == "P2" and p2["war_room"] == "" and p2["response"]["announce_within"] == "15m"
