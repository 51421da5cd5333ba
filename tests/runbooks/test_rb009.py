"""rb-009 (Kafka DLQ redrive) rehearsed through the real CLI against real brokers."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.core import REPO, Result, free_port
from tests.fixtures.kafka import Broker, unique

pytestmark = pytest.mark.kafka

RUNBOOK = str(REPO / "runbooks" / "rb-009-kafka-dlq-redrive.yaml")
PER_PARTITION = 10


def build_dlq(broker: Broker) -> tuple[str, str, str]:
    """A source topic and its DLQ holding 2 x 10 failed records (with their error header)."""
    source = broker.create_topic(unique("billing"), 3)
    dlq = broker.create_topic(f"{source}.dlq", 2)
    for p in range(2):
        broker.produce(dlq, PER_PARTITION, partition=p, headers=[("error", b"timeout")], prefix=f"p{p}-")
    return source, dlq, unique("redrive")


def run(opsctl: Callable[..., Result], broker: Broker, names: tuple[str, str, str], *extra: str) -> Result:
    source, dlq, group = names
    return opsctl("run", RUNBOOK, "-o", "json", "-p", f"dlq_topic={dlq}", "-p", f"topic={source}",
                  "-p", f"group={group}", *extra, env=broker.env)


def step(result: Result, step_id: str) -> dict[str, Any]:
    return next(s for s in json.loads(result.stdout)["steps"] if s["id"] == step_id)


def origins(records: list[Any]) -> list[str]:
    return sorted(dict(r.headers)["x-opsctl-redriven"].decode() for r in records)


def test_dry_run_shows_the_dlq_and_produces_nothing(opsctl: Callable[..., Result],
                                                    kafka_broker: Broker) -> None:
    names = build_dlq(kafka_broker)
    source, dlq, group = names
    result = run(opsctl, kafka_broker, names, "--dry-run")
    assert result.code == 0, result.output
    assert step(result, "depth")["result"]["depth"] == 2 * PER_PARTITION
    assert step(result, "pending")["result"]["total_lag"] == 2 * PER_PARTITION
    samples = step(result, "samples")["result"]["records"]
    assert samples and samples[0]["headers"] == {"error": "timeout"}
    assert step(result, "redrive")["status"] == "planned"
    assert kafka_broker.read_all(source) == []  # 0 records produced
    assert kafka_broker.committed(group, dlq) == {}


def test_redrive_with_yes_moves_every_record_exactly_once(opsctl: Callable[..., Result],
                                                          kafka_broker: Broker) -> None:
    names = build_dlq(kafka_broker)
    source, dlq, group = names
    result = run(opsctl, kafka_broker, names, "--yes")
    assert result.code == 0, result.output
    assert step(result, "redrive")["result"]["redriven"] == 2 * PER_PARTITION
    moved = kafka_broker.read_all(source)
    expected = sorted(f"{dlq}/{p}/{o}" for p in range(2) for o in range(PER_PARTITION))
    assert origins(moved) == expected  # counts conserved: none lost, none twice
    assert {(r.key, r.value) for r in moved} == {(r.key, r.value) for r in kafka_broker.read_all(dlq)}
    assert kafka_broker.committed(group, dlq) == {0: PER_PARTITION, 1: PER_PARTITION}
    exact = step(result, "exact")["result"]
    assert (exact["expected"], exact["moved"], exact["duplicates"], exact["remaining"]) == (20, 20, 0, 0)

    again = run(opsctl, kafka_broker, names, "--yes")  # nothing left: nothing sent again
    assert again.code == 0, again.output
    assert origins(kafka_broker.read_all(source)) == expected


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], noida_broker: Broker) -> None:
    names = build_dlq(noida_broker)
    source, dlq, group = names
    result = run(opsctl, noida_broker, names)
    assert result.code == 3, result.output
    assert noida_broker.read_all(source) == [] and noida_broker.committed(group, dlq) == {}


def test_blast_radius_refuses_a_larger_dlq(opsctl: Callable[..., Result], noida_broker: Broker) -> None:
    names = build_dlq(noida_broker)
    source = names[0]
    result = run(opsctl, noida_broker, names, "--yes", "-p", "max_messages=5")
    assert result.code == 1, result.output
    assert "more than max_messages=5" in json.dumps(step(result, "redrive"))
    assert noida_broker.read_all(source) == []


def test_unreachable_broker_exits_4_without_leaking_the_password(opsctl: Callable[..., Result],
                                                                  tmp_path: Path) -> None:
    """Settings from an opsctl.yaml environment (SASL passed through), the broker down."""
    config = tmp_path / "opsctl.yaml"
    config.write_text(
        "default_environment: prod\n"
        "environments:\n"
        "  prod:\n"
        f"    kafka: {{bootstrap_servers: '127.0.0.1:{free_port()}', connect_timeout: 1,\n"
        "            security_protocol: SASL_PLAINTEXT, sasl_mechanism: PLAIN,\n"
        "            sasl_plain_username: ops, sasl_plain_password: 'S3cret-pw'}\n")
    started = time.monotonic()
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "dlq_topic=a.dlq", "-p", "topic=a",
                    env={"OPSCTL_CONFIG": str(config)})
    assert result.code == 4, result.output
    assert "brokers at 127.0.0.1" in result.output and "Traceback" not in result.output
    assert "S3cret-pw" not in result.output and time.monotonic() - started < 15


def test_declining_at_the_prompt_changes_nothing(opsctl_env: dict[str, str], noida_broker: Broker,
                                                 tmp_path: Path) -> None:
    """On a real terminal (a pty) opsctl asks; answering no is exit 3 with nothing produced."""
    source, dlq, group = build_dlq(noida_broker)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", "run", RUNBOOK, "-p", f"dlq_topic={dlq}",
                             "-p", f"topic={source}", "-p", f"group={group}"], cwd=tmp_path,
                            env={**opsctl_env, **noida_broker.env}, stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    seen, answered, deadline = b"", False, time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        if not answered and b"Apply" in seen:
            os.write(master, b"n\n")
            answered = True
    proc.wait(timeout=30)
    os.close(master)
    assert answered, seen.decode(errors="replace")
    assert proc.returncode == 3, seen.decode(errors="replace")
    assert noida_broker.read_all(source) == [] and noida_broker.committed(group, dlq) == {}


def test_verify_finds_the_redriven_records_on_a_busy_source_topic(opsctl: Callable[..., Result],
                                                                   kafka_broker: Broker) -> None:
    """The source topic already holds more records than verify's max_scan: the redriven ones are
    at its end.  Verify scanned from the beginning, found none and failed a redrive that worked."""
    names = build_dlq(kafka_broker)
    source, dlq, group = names
    for p in range(3):
        kafka_broker.produce(source, 40, partition=p, prefix="live-")  # the application's own traffic
    result = run(opsctl, kafka_broker, names, "--yes", "-p", "max_scan=60")
    assert result.code == 0, result.output
    exact = step(result, "exact")["result"]  # scanned from where the redrive began, not the start
    assert exact["moved"] == exact["expected"] == 2 * PER_PARTITION and exact["scanned"] <= 60
    redriven = [r for r in kafka_broker.read_all(source) if "x-opsctl-redriven" in dict(r.headers)]
    assert len(redriven) == 2 * PER_PARTITION  # and they really are there, from the broker's view
