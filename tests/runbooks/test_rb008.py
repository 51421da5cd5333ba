"""rb-008 (Kafka consumer lag) rehearsed through the real CLI against real brokers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from opsctl.testing.kafka import start_broker
from tests.fixtures.core import REPO, Result, free_port
from tests.fixtures.kafka import Broker, unique
from tests.timing import budget

pytestmark = pytest.mark.kafka

RUNBOOK = str(REPO / "runbooks" / "rb-008-kafka-consumer-lag.yaml")
PER_PARTITION, CONSUMED = 100, 50  # 300 records, 250 behind: >= 2 partitions over 60


def build_lag(broker: Broker) -> tuple[str, str]:
    """Produce, consume part with the group, stop: real lag and an Empty group."""
    topic, group = broker.create_topic(unique("orders"), 3), unique("order-service")
    for p in range(3):
        broker.produce(topic, PER_PARTITION, partition=p)
    assert broker.consume_with_group(topic, group, CONSUMED) == CONSUMED
    return topic, group


def run(opsctl: Callable[..., Result], broker: Broker, topic: str, group: str, *extra: str) -> Result:
    # a short convergence window unless the test gives its own (a parameter may be given once)
    window = () if any(str(e).startswith("verify_window=") for e in extra) else ("-p", "verify_window=3s")
    return opsctl("run", RUNBOOK, "-o", "json", "-p", f"group={group}", "-p", f"topic={topic}",
                  "-p", "lag_threshold=60", "-p", "trend_interval=0.5s", *window, *extra, env=broker.env)


def step(result: Result, step_id: str) -> dict:
    return next(s for s in json.loads(result.stdout)["steps"] if s["id"] == step_id)


def test_dry_run_finds_the_lag_and_changes_nothing(opsctl: Callable[..., Result],
                                                   kafka_broker: Broker) -> None:
    topic, group = build_lag(kafka_broker)
    before = kafka_broker.committed(group, topic)
    result = run(opsctl, kafka_broker, topic, group, "--dry-run")
    assert result.code == 0, result.output
    lag = step(result, "lag")["result"]
    assert lag["total_lag"] == 3 * PER_PARTITION - CONSUMED and lag["partitions_over_threshold"] >= 2
    findings = json.loads(result.stdout)["findings"]
    assert any(f["step"] == "lag" and f["severity"] == "critical" for f in findings)
    skip = step(result, "skip")
    assert skip["status"] == "planned" and skip["plan"]["data"]["skipped"] == lag["total_lag"]
    assert kafka_broker.committed(group, topic) == before  # the broker's own view: unchanged


def test_skip_to_latest_with_yes_clears_the_lag(opsctl: Callable[..., Result], kafka_broker: Broker) -> None:
    topic, group = build_lag(kafka_broker)
    result = run(opsctl, kafka_broker, topic, group, "--yes", "--option", "skip-to-latest")
    assert result.code == 0, result.output
    assert kafka_broker.committed(group, topic) == {p: PER_PARTITION for p in range(3)}
    assert step(result, "lag_after")["result"]["total_lag"] == 0


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], noida_broker: Broker) -> None:
    topic, group = build_lag(noida_broker)
    before = noida_broker.committed(group, topic)
    result = run(opsctl, noida_broker, topic, group, "--option", "skip-to-latest")
    assert result.code == 3, result.output
    assert noida_broker.committed(group, topic) == before


def test_skip_to_latest_refused_while_consumers_run(opsctl: Callable[..., Result],
                                                    noida_broker: Broker) -> None:
    topic, group = build_lag(noida_broker)
    before = noida_broker.committed(group, topic)
    consumer = KafkaConsumer(topic, bootstrap_servers=noida_broker.bootstrap, group_id=group,
                             enable_auto_commit=False, session_timeout_ms=6000)
    try:
        deadline = time.monotonic() + 15
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=1)  # joins the group; commits nothing
        result = run(opsctl, noida_broker, topic, group, "--yes", "--option", "skip-to-latest")
    finally:
        consumer.close(autocommit=False)
    assert result.code == 1, result.output
    assert "active member" in json.dumps(step(result, "skip"))
    assert noida_broker.committed(group, topic) == before


def test_unreachable_broker_exits_4(opsctl: Callable[..., Result]) -> None:
    started = time.monotonic()
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "group=g", "-p", "topic=t",
                    env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert result.code == 4, result.output
    assert "cannot reach the brokers" in result.output or "no answer from the brokers" in result.output
    assert "Traceback" not in result.output and time.monotonic() - started < budget(20)


def test_verify_passes_when_lag_is_under_the_threshold(opsctl: Callable[..., Result],
                                                       noida_broker: Broker) -> None:
    topic, group = build_lag(noida_broker)
    noida_broker.consume_with_group(topic, group, 3 * PER_PARTITION - CONSUMED - 30)
    result = run(opsctl, noida_broker, topic, group, "--phase", "verify")
    assert result.code == 0, result.output
    assert step(result, "lag_after")["result"]["total_lag"] == 30


def test_verify_accepts_a_backlog_that_drains_in_time_and_fails_a_stuck_one(
        opsctl: Callable[..., Result], noida_broker: Broker) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = build_lag(noida_broker)
    stuck = run(opsctl, noida_broker, topic, group, "--phase", "verify")
    assert stuck.code == 1, stuck.output  # 250 behind, nothing moving: verification fails

    done = threading.Event()

    def consumer_catching_up() -> None:  # 3 records every 0.25 s, for as long as the run lasts
        admin = noida_broker.admin()
        offsets = noida_broker.committed(group, topic)
        while not done.wait(0.25):
            offsets = {p: offsets.get(p, 0) + 1 for p in range(3)}
            admin.alter_group_offsets(group, {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                                              for p, o in offsets.items()})
        admin.close()

    worker = threading.Thread(target=consumer_catching_up)
    worker.start()
    try:
        draining = opsctl("run", RUNBOOK, "-o", "json", "-p", f"group={group}", "-p", f"topic={topic}",
                          "-p", "lag_threshold=10", "-p", "trend_interval=2s", "-p", "drain_window=1h",
                          "-p", "verify_window=4s", "--phase", "verify", env=noida_broker.env)
    finally:
        done.set()
        worker.join()
    assert draining.code == 0, draining.output
    trend = step(draining, "lag_after")["result"]
    assert trend["lag_before"] > trend["total_lag"] and trend["max_partition_lag"] > 10
    assert trend["clears_within_window"] is True


def test_a_group_that_does_not_exist_is_refused_not_created(opsctl: Callable[..., Result],
                                                            kafka_broker: Broker) -> None:
    """A typo'd group used to measure the whole log as lag, and skip-to-latest then *created* that
    group at the end offsets and reported "verified" while the real group kept lagging."""
    topic, group = build_lag(kafka_broker)
    typo = unique("order-servce")
    result = run(opsctl, kafka_broker, topic, typo, "--yes", "--option", "skip-to-latest")
    assert result.code == 1, result.output
    assert f"consumer group '{typo}' does not exist" in result.output
    assert "Traceback" not in result.output and "verified" not in result.output
    assert kafka_broker.committed(typo, topic) == {}  # not created
    assert sum(kafka_broker.committed(group, topic).values()) == CONSUMED  # the real group: untouched


def test_broker_stopped_mid_run_exits_4(opsctl_env: dict[str, str], tmp_path: Path) -> None:
    """The broker goes away between the trend's two samples: exit 4 (backend unreachable) with one
    line naming the servers; kafka-python's NodeNotReadyError used to surface as a failed step
    (exit 1, "kafka: NodeNotReadyError: 1")."""
    broker = start_broker("noida", tmp_path)  # a broker of our own: this test stops it
    try:
        topic, group = build_lag(broker)
        proc = subprocess.Popen([sys.executable, "-m", "opsctl", "run", RUNBOOK, "-p", f"group={group}",
                                 "-p", f"topic={topic}", "-p", "lag_threshold=60", "-p", "trend_interval=4s",
                                 "--yes", "--option", "skip-to-latest"],
                                cwd=tmp_path, env={**opsctl_env, **broker.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(2.5)
    finally:
        broker.stop()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 4, output
    assert broker.bootstrap in output and "Traceback" not in output


def test_dry_run_without_a_topic_plans_what_it_can(opsctl: Callable[..., Result],
                                                   noida_broker: Broker) -> None:
    """`topic` is optional (every topic the group committed); the dry-run plans every option and
    skip-to-latest needs a topic: the dry-run used to exit 2 on that plan.  Chosen explicitly
    without a topic, the option is still a parameter error."""
    topic, group = build_lag(noida_broker)
    base = ("run", RUNBOOK, "-o", "json", "-p", f"group={group}", "-p", "lag_threshold=60",
            "-p", "trend_interval=0.5s")
    result = opsctl(*base, "--dry-run", env=noida_broker.env)
    assert result.code == 0, result.output
    assert step(result, "lag")["result"]["total_lag"] == 3 * PER_PARTITION - CONSUMED
    assert step(result, "skip")["status"] == "skipped"
    before = noida_broker.committed(group, topic)
    chosen = opsctl(*base, "--yes", "--option", "skip-to-latest", env=noida_broker.env)
    assert chosen.code == 2, chosen.output
    assert "option 'skip-to-latest' needs topic (-p topic=...)" in chosen.output
    # the Kubernetes options without -p deployment: exit 2 before the run starts (requires)
    for option in ("scale-consumers", "restart-consumers"):
        chosen = opsctl(*base, "-p", f"topic={topic}", "--yes", "--option", option, env=noida_broker.env)
        assert chosen.code == 2, chosen.output
        assert f"option {option!r} needs deployment (-p deployment=...)" in chosen.output
    assert noida_broker.committed(group, topic) == before


# ---- issue 9: verify waits for convergence, and fails after the window when nothing converges ---------

def test_verify_waits_for_a_slowly_converging_fix(opsctl: Callable[..., Result], opsctl_env: dict[str, str],
                                                  noida_broker: Broker) -> None:
    """Converges -> 0: the lag falls under the threshold a few seconds into verify (drain_window=0:
    only convergence within the window can pass)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = build_lag(noida_broker)
    done = threading.Event()

    def verify_started() -> bool:  # the run log says lag_after started: the fix "lands" after that
        runs = Path(opsctl_env["OPSCTL_STATE_DIR"]) / "runs"
        return any('"step_start"' in line and '"lag_after"' in line
                   for f in runs.glob("*.jsonl") for line in f.read_text().splitlines())

    def consumer_catching_up() -> None:  # 8 records per partition every 0.25 s until caught up
        while not done.wait(0.05) and not verify_started():
            pass
        time.sleep(1)
        admin = noida_broker.admin()
        offsets = noida_broker.committed(group, topic)
        try:
            while not done.wait(0.25) and min(offsets.get(p, 0) for p in range(3)) < PER_PARTITION:
                offsets = {p: min(PER_PARTITION, offsets.get(p, 0) + 8) for p in range(3)}
                admin.alter_group_offsets(group, {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                                                  for p, o in offsets.items()})
        finally:
            admin.close()

    worker = threading.Thread(target=consumer_catching_up)
    worker.start()
    try:
        result = run(opsctl, noida_broker, topic, group, "--phase", "verify", "-p", "verify_window=60s",
                     "-p", "drain_window=0s")
    finally:
        done.set()
        worker.join()
    assert result.code == 0, result.output
    lag = step(result, "lag_after")["result"]
    assert lag["max_partition_lag"] < 60 and lag["checks"] > 1 and lag["lag_before"] > lag["total_lag"]


def test_verify_fails_after_the_window_when_nothing_converges(opsctl: Callable[..., Result],
                                                              noida_broker: Broker) -> None:
    """Does not work -> 1, after the window (not before it, not forever)."""
    topic, group = build_lag(noida_broker)
    started = time.monotonic()
    result = run(opsctl, noida_broker, topic, group, "--phase", "verify", "-p", "verify_window=4s")
    assert result.code == 1, result.output
    lag = step(result, "lag_after")["result"]
    assert lag["waited_s"] >= 3.5 and lag["checks"] >= 2 and lag["clears_within_window"] is False
    assert time.monotonic() - started < budget(120)
    assert "verification failed: after" in json.loads(result.stdout)["message"]


def test_hung_broker_exits_4_within_the_connect_deadline(opsctl: Callable[..., Result],
                                                         silent_server: Any) -> None:
    started = time.monotonic()
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "group=g", "-p", "topic=t",
                    env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{silent_server.port}"})
    assert result.code == 4, result.output
    assert "Traceback" not in result.output and f"127.0.0.1:{silent_server.port}" in result.output
    assert time.monotonic() - started < budget(60)


def test_slow_broker_still_measures_the_lag(opsctl: Callable[..., Result], noida_broker: Broker,
                                            slow_broker: Any) -> None:
    topic, group = build_lag(noida_broker)
    result = opsctl("run", RUNBOOK, "-o", "json", "--dry-run", "-p", f"group={group}", "-p",
                    f"topic={topic}", "-p", "lag_threshold=60", "-p", "trend_interval=0.5s",
                    env={"KAFKA_BOOTSTRAP_SERVERS": slow_broker.address})
    assert result.code == 0, result.output
    assert step(result, "lag")["result"]["total_lag"] == 3 * PER_PARTITION - CONSUMED


def test_skip_to_latest_touches_only_the_topic_in_scope(opsctl: Callable[..., Result],
                                                        noida_broker: Broker) -> None:
    """The group also consumes another topic: its offsets there are out of scope, unchanged, and the
    plan says so."""
    topic, group = build_lag(noida_broker)
    other = noida_broker.create_topic(unique("payments"), 2)
    for p in range(2):
        noida_broker.produce(other, 30, partition=p)
    assert noida_broker.consume_with_group(other, group, 20) == 20
    kept = noida_broker.committed(group, other)
    result = run(opsctl, noida_broker, topic, group, "--yes", "--option", "skip-to-latest")
    assert result.code == 0, result.output
    plan = step(result, "skip")["plan"]
    assert {c["target"].split()[1].rsplit("[", 1)[0] for c in plan["changes"]} == {topic}
    assert any(other in w and "out of scope" in w for w in plan["warnings"])
    assert noida_broker.committed(group, other) == kept
    assert noida_broker.committed(group, topic) == {p: PER_PARTITION for p in range(3)}


FAULT_MATRIX: dict[str, tuple[str, Any]] = {
    "dead": ("exit 4 within seconds, no traceback", ["test_unreachable_broker_exits_4",
                                                    "test_broker_stopped_mid_run_exits_4"]),
    "hung": ("exit 4 within one connect deadline, naming the broker", [
        "test_hung_broker_exits_4_within_the_connect_deadline"]),
    "slow": ("a broker answering late through a delaying proxy (bootstrap; kafka-python then follows the "
             "advertised address) still gives exact lag figures", [
        "test_slow_broker_still_measures_the_lag"]),
    "permission_denied_optional": ("n/a", "neither broker of the suite (noida-db 0.2.3, Tansu 0.6.0) "
                                   "enforces ACLs, so no probe can be denied for real; rb-008's only "
                                   "optional probes are Kubernetes ones (consumers)"),
    "permission_denied_required": ("n/a", "no authorizer in noida-db / Tansu to inject it for real; "
                                   "kafka-python's AuthorizationError maps to exit 4 'refused us: check "
                                   "the SASL/SSL settings and ACLs' (backends/kafka.translate_errors)"),
    "ordinary_role": ("n/a", "Kafka has no superuser role to fall back from: opsctl needs Describe on the "
                      "group and topic and, for skip-to-latest, Read on the group; the suite's brokers "
                      "grant every principal everything"),
    "scope": ("only the group's offsets on the named topic move (other topics: unchanged, named in the "
              "plan); restart-consumers never restarts healthy consumers; scale is bounded by "
              "max_consumers", [
        "test_skip_to_latest_touches_only_the_topic_in_scope",
        "test_rb008_k8s.py::test_restart_consumers_never_restarts_healthy_consumers",
        "test_rb008_k8s.py::test_scale_consumers_is_bounded_by_max_consumers"]),
    "converges_slowly": ("verify waits (verify_window) and passes once the lag is under the threshold", [
        "test_verify_waits_for_a_slowly_converging_fix",
        "test_verify_accepts_a_backlog_that_drains_in_time_and_fails_a_stuck_one"]),
    "does_not_work": ("exit 1 after the window, with the lag and drain rate seen over it", [
        "test_verify_fails_after_the_window_when_nothing_converges"]),
    "interrupted_resume": ("n/a", "skip-to-latest is one OffsetCommit request for every partition (the "
                           "broker applies it whole or not at all) and a resumed run re-plans from the "
                           "live offsets (an already-reset group plans nothing); the Kubernetes options "
                           "are one PATCH each, rehearsed by the k8s action tests"),
}


def test_fault_matrix_every_cell_is_tested_or_explained() -> None:
    from tests.fixtures.kafka import check_fault_matrix

    check_fault_matrix(FAULT_MATRIX, sys.modules[__name__])
