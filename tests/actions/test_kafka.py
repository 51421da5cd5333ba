"""Kafka actions against real Kafka-protocol brokers (noida-db and Tansu, see tests/fixtures/kafka.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from opsctl.actions.base import ActionContext
from opsctl.actions.kafka import (
    Brokers,
    DescribeTopic,
    DlqDepth,
    Lag,
    LagTrend,
    Peek,
    Redrive,
    ResetOffsets,
)
from opsctl.config import Environment
from opsctl.errors import ActionError, BackendError
from tests.fixtures.core import free_port
from tests.fixtures.kafka import Broker, unique
from tests.timing import budget

pytestmark = pytest.mark.kafka


def ctx(broker: Broker | str, **kw: Any) -> ActionContext:
    servers = broker if isinstance(broker, str) else broker.bootstrap
    env = Environment(name="test", backends={"kafka": {"bootstrap_servers": servers, **kw}})
    return ActionContext(environment=env)


def lagged(broker: Broker, partitions: int = 3, per_partition: int = 20, consumed: int = 25
           ) -> tuple[str, str]:
    topic, group = broker.create_topic(unique("orders"), partitions), unique("svc")
    for p in range(partitions):
        broker.produce(topic, per_partition, partition=p)
    assert broker.consume_with_group(topic, group, consumed) == consumed
    return topic, group


def test_lag_per_partition_topic_and_total(kafka_broker: Broker) -> None:
    topic, group = lagged(kafka_broker)
    committed = kafka_broker.committed(group, topic)
    result = Lag({"group": group, "topic": topic, "lag_threshold": 10}, ctx(kafka_broker)).run()
    by_part = {r["partition"]: r for r in result["partitions"]}
    assert result["total_lag"] == 60 - 25
    for p in range(3):
        expected = 20 - committed.get(p, 0)
        assert by_part[p]["end"] == 20 and by_part[p]["lag"] == expected
    assert result["topics"] == [{"topic": topic, "partitions": 3, "lag": 35}]
    assert result["partitions_over_threshold"] == sum(20 - committed.get(p, 0) > 10 for p in range(3))
    assert result["member_count"] == 0 and result["state"] in ("Empty", "Dead")
    assert result["partition_count"] == 3 and result["max_partition_lag"] == max(
        r["lag"] for r in result["partitions"])


def test_lag_without_topic_uses_the_groups_commits(kafka_broker: Broker) -> None:
    topic, group = lagged(kafka_broker, partitions=2, per_partition=10, consumed=12)
    result = Lag({"group": group}, ctx(kafka_broker)).run()
    assert {r["topic"] for r in result["partitions"]} == {topic}
    assert result["total_lag"] == 8
    with pytest.raises(ActionError, match="no committed offsets"):
        Lag({"group": unique("never")}, ctx(kafka_broker)).run()


@contextlib.contextmanager
def member(broker: Broker, topic: str, group: str) -> Iterator[Any]:
    """A live member of the group, holding its partitions, committing nothing."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False, session_timeout_ms=6000)
    try:
        deadline = time.monotonic() + 15
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200, max_records=1)
        assert consumer.assignment(), "the consumer never got its partitions"
        yield consumer
    finally:
        consumer.close()


def test_lag_counts_active_members(kafka_broker: Broker) -> None:
    topic, group = lagged(kafka_broker, partitions=2, per_partition=5, consumed=3)
    with member(kafka_broker, topic, group):
        result = Lag({"group": group, "topic": topic}, ctx(kafka_broker)).run()
        assert result["member_count"] == 1 and result["state"] == "Stable"
        assert result["idle_members"] == 0
        with pytest.raises(ActionError, match="active member"):
            ResetOffsets({"group": group, "topic": topic, "to": "latest"}, ctx(kafka_broker)).plan()


def test_lag_without_topic_measures_a_new_members_assignment(noida_broker: Broker) -> None:
    # a consumer that just (re)joined has partitions assigned but nothing committed yet: its lag
    # is measured from the log start of what it owns, not refused for want of a topic name.
    # (noida only: Tansu 0.6 describes members with an empty assignment, where Kafka fills it in)
    topic, group = noida_broker.create_topic(unique("fresh"), 2), unique("fresh-svc")
    for p in range(2):
        noida_broker.produce(topic, 4, partition=p)
    with member(noida_broker, topic, group):
        assert noida_broker.committed(group, topic) == {}
        result = Lag({"group": group}, ctx(noida_broker)).run()
        assert {(r["topic"], r["partition"], r["committed"]) for r in result["partitions"]} == {
            (topic, 0, None), (topic, 1, None)}
        assert result["total_lag"] == 8 and result["member_count"] == 1


def test_lag_trend_measures_a_draining_group(noida_broker: Broker) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = lagged(noida_broker, partitions=1, per_partition=100, consumed=10)

    def drain() -> None:  # a "consumer" that commits 40 more records during the interval
        time.sleep(0.3)
        admin = noida_broker.admin()
        admin.alter_group_offsets(group, {TopicPartition(topic, 0): OffsetAndMetadata(50, "", -1)})
        admin.close()

    worker = threading.Thread(target=drain)
    worker.start()
    result = LagTrend({"group": group, "topic": topic, "interval": 1, "drain_window": 10},
                      ctx(noida_broker)).run()
    worker.join()
    assert result["lag_before"] == 90 and result["total_lag"] == 50
    assert result["draining"] and 20 < result["drain_rate_per_s"] < 45
    assert result["eta_seconds"] == pytest.approx(50 / result["drain_rate_per_s"], abs=0.1)
    assert result["clears_within_window"] is True  # 50 left at ~40/s: about 1.3 s < 10 s

    stuck = LagTrend({"group": group, "topic": topic, "interval": 0.2, "drain_window": 3600},
                     ctx(noida_broker)).run()
    assert stuck["total_lag"] == 50 and stuck["drain_rate_per_s"] == 0
    assert not stuck["draining"] and stuck["eta_seconds"] is None
    assert stuck["clears_within_window"] is False


def test_describe_topic_and_dlq_depth(kafka_broker: Broker) -> None:
    topic = kafka_broker.create_topic(unique("events"), 4)
    desc = DescribeTopic({"topic": topic}, ctx(kafka_broker)).run()
    assert desc["partition_count"] == 4 and desc["replication_factor"] == 1
    assert desc["under_replicated"] == 0 and [p["partition"] for p in desc["partitions"]] == [0, 1, 2, 3]
    with pytest.raises(ActionError, match="does not exist"):
        DescribeTopic({"topic": unique("missing")}, ctx(kafka_broker)).run()

    dlq = kafka_broker.create_topic(unique("events.dlq"), 2)
    kafka_broker.produce(dlq, 7, partition=1)
    depth = DlqDepth({"topic": dlq}, ctx(kafka_broker)).run()
    assert depth["exists"] and depth["depth"] == 7
    assert [p["depth"] for p in depth["partitions"]] == [0, 7]
    absent = DlqDepth({"topic": unique("none.dlq")}, ctx(kafka_broker)).run()
    assert absent == {"topic": absent["topic"], "exists": False, "depth": 0, "partitions": []}


def test_peek_truncates_values_and_filters_on_a_header(kafka_broker: Broker) -> None:
    from kafka import KafkaProducer

    dlq = kafka_broker.create_topic(unique("pay.dlq"), 1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for i in range(4):
        headers = [("error", b"timeout")] + ([("x-opsctl-redriven", b"a/0/1")] if i % 2 else [])
        producer.send(dlq, key=b"order-%d" % i, value=b"x" * 500, headers=headers).get(timeout=10)
    producer.close()
    result = Peek({"topic": dlq, "limit": 2, "max_value_bytes": 10}, ctx(kafka_broker)).run()
    assert len(result["records"]) == 2
    first = result["records"][0]
    assert first["key"] == "order-0" and first["size"] == 500
    assert first["value"] == "xxxxxxxxxx... (+490 bytes)"
    assert first["headers"] == {"error": "timeout"}
    hidden = Peek({"topic": dlq, "max_value_bytes": 0}, ctx(kafka_broker)).run()
    assert all(r["value"] is None for r in hidden["records"])
    marked = Peek({"topic": dlq, "header": "x-opsctl-redriven", "limit": 0}, ctx(kafka_broker)).run()
    assert marked["scanned"] == 4 and marked["matched"] == 2 and marked["records"] == []


def dlq_with(broker: Broker, n: int, partitions: int = 2) -> tuple[str, str]:
    source = broker.create_topic(unique("billing"), 3)
    dlq = broker.create_topic(f"{source}.dlq", partitions)
    for p in range(partitions):
        broker.produce(dlq, n, partition=p, headers=[("error", b"boom")], prefix=f"p{p}-")
    return source, dlq


def test_redrive_plan_changes_nothing_then_apply_moves_each_record_once(kafka_broker: Broker) -> None:
    source, dlq = dlq_with(kafka_broker, 6)
    group = unique("redrive")
    action = Redrive({"dlq_topic": dlq, "topic": source, "group": group}, ctx(kafka_broker))
    plan = action.plan()
    assert [(c.target, c.before) for c in plan.changes] == [
        (f"{dlq}[0]", "offsets 0..5 (6 records)"), (f"{dlq}[1]", "offsets 0..5 (6 records)")]
    assert kafka_broker.read_all(source) == [] and kafka_broker.committed(group, dlq) == {}

    result = action.apply(plan)
    assert result["redriven"] == 12 and result["per_partition"] == {"0": 6, "1": 6}
    moved = kafka_broker.read_all(source)
    origins = sorted(dict(r.headers)["x-opsctl-redriven"].decode() for r in moved)
    assert origins == sorted(f"{dlq}/{p}/{o}" for p in range(2) for o in range(6))  # each once
    assert all(dict(r.headers)["error"] == b"boom" for r in moved)
    originals = {(r.key, r.value) for r in kafka_broker.read_all(dlq)}
    assert {(r.key, r.value) for r in moved} == originals
    assert kafka_broker.committed(group, dlq) == {0: 6, 1: 6}

    again = Redrive({"dlq_topic": dlq, "topic": source, "group": group}, ctx(kafka_broker)).plan()
    assert again.empty


def test_redrive_blast_radius_and_stale_plan(kafka_broker: Broker) -> None:
    source, dlq = dlq_with(kafka_broker, 5, partitions=1)
    group = unique("redrive")
    args = {"dlq_topic": dlq, "topic": source, "group": group, "max_messages": 3}
    with pytest.raises(ActionError, match="5 records wait .* more than max_messages=3"):
        Redrive(args, ctx(kafka_broker)).plan()
    partial = Redrive({**args, "allow_partial": True}, ctx(kafka_broker))
    plan = partial.plan()
    assert plan.data["ranges"] == [{"partition": 0, "start": 0, "end": 3, "committed": None, "skip": []}]
    assert plan.data["remaining"] == 2 and "2 remain" in plan.summary  # a partial redrive says so
    applied = partial.apply(plan)
    assert (applied["redriven"], applied["planned"], applied["remaining"]) == (3, 3, 2)
    assert len(kafka_broker.read_all(source)) == 3 and kafka_broker.committed(group, dlq) == {0: 3}
    with pytest.raises(ActionError, match="moved .* since the plan"):
        partial.apply(plan)  # the same plan again: the group has moved, nothing is sent twice
    assert len(kafka_broker.read_all(source)) == 3
    assert Redrive.validate_args({"dlq_topic": "a", "topic": "a"}) != []


def test_reset_offsets_plans_every_partition_and_applies_it(kafka_broker: Broker) -> None:
    topic, group = lagged(kafka_broker)
    before = kafka_broker.committed(group, topic)
    action = ResetOffsets({"group": group, "topic": topic, "to": "latest"}, ctx(kafka_broker))
    plan = action.plan()
    assert {c.target: (c.before, c.after) for c in plan.changes} == {
        f"{group} {topic}[{p}]": (before.get(p), 20) for p in range(3) if before.get(p) != 20}
    assert plan.data["skipped"] == 35 and kafka_broker.committed(group, topic) == before
    assert action.apply(plan)["skipped"] == 35
    assert kafka_broker.committed(group, topic) == {0: 20, 1: 20, 2: 20}
    assert Lag({"group": group, "topic": topic}, ctx(kafka_broker)).run()["total_lag"] == 0

    rewind = ResetOffsets({"group": group, "topic": topic, "to": "shift", "shift": -5}, ctx(kafka_broker))
    assert rewind.plan().changes[0].detail == "re-reads 5 messages"
    rewind.apply(rewind.plan())
    assert kafka_broker.committed(group, topic) == {0: 15, 1: 15, 2: 15}

    limited = ResetOffsets({"group": group, "topic": topic, "to": "latest", "max_skipped": 14},
                           ctx(kafka_broker))
    with pytest.raises(ActionError, match="would skip 15 messages, more than max_skipped=14"):
        limited.plan()
    future = ResetOffsets({"group": group, "topic": topic, "to": "timestamp",
                           "timestamp": "2099-01-01T00:00:00+00:00"}, ctx(kafka_broker)).plan()
    assert [c.after for c in future.changes] == [20, 20, 20]
    past = ResetOffsets({"group": group, "topic": topic, "to": "timestamp", "timestamp": 0},
                        ctx(kafka_broker)).plan()
    assert [c.after for c in past.changes] == [0, 0, 0] and past.data["skipped"] == 0
    assert ResetOffsets.validate_args({"group": "g", "topic": "t", "to": "shift"}) != []


def test_unreachable_broker_is_a_quick_backend_error() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach|no answer") as err:
        Lag({"group": "g", "topic": "t"}, ctx(f"127.0.0.1:{port}", connect_timeout=1)).run()
    assert time.monotonic() - started < budget(5)
    assert f"127.0.0.1:{port}" in str(err.value) and "Traceback" not in str(err.value)


def test_secrets_never_appear_in_errors() -> None:
    with pytest.raises(BackendError) as err:
        DlqDepth({"topic": "t"}, ctx(f"127.0.0.1:{free_port()}", connect_timeout=0.5,
                                     security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                     sasl_plain_username="ops", sasl_plain_password="hunter2")).run()
    assert "hunter2" not in str(err.value)
    with pytest.raises(BackendError, match="unknown setting.*bootstrap_server\\b"):
        DlqDepth({"topic": "t"}, ActionContext(environment=Environment(
            name="x", backends={"kafka": {"bootstrap_server": "a:1"}}))).run()


def test_kafka_python_is_imported_lazily() -> None:
    code = "import sys, opsctl.actions.kafka; print('kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_end_offsets_count_every_record_of_a_batch(kafka_broker: Broker) -> None:
    """Lag and DLQ depth rest on the broker's end offsets; a broker that miscounts batches is a skip."""
    if not kafka_broker.batch_end_offsets_ok:
        pytest.skip(f"{kafka_broker.name}: ListOffsets(latest) returns the last batch's base offset + 1 "
                    "after a multi-record batch (probed at start): lag and DLQ depth under-count there")
    from kafka import KafkaProducer

    topic = kafka_broker.create_topic(unique("batched"), 1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=200)
    for i in range(50):
        producer.send(topic, value=b"%d" % i, partition=0)
    producer.flush(timeout=10)
    producer.close()
    assert DlqDepth({"topic": topic}, ctx(kafka_broker)).run()["depth"] == 50


# ---- issue 9: brokers judged at the protocol level; waits that honour their deadline -----------------

def test_brokers_are_judged_by_a_kafka_answer_not_a_tcp_connect(kafka_broker: Broker,
                                                                silent_server: Any) -> None:
    hung, dead = f"127.0.0.1:{silent_server.port}", f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = Brokers({"targets": [kafka_broker.bootstrap, hung, dead], "timeout": 1.5},
                     ctx(kafka_broker)).run()
    took = time.monotonic() - started
    assert result["healthy_count"] == 1 and result["unhealthy"] == [hung, dead]
    assert result["hung"] == [hung] and result["dead"] == [dead]
    checks = {c["target"]: c for c in result["checks"]}
    assert checks[hung]["tcp"] is True and checks[hung]["answered"] is False  # TCP alone is not "up"
    assert "did not answer ApiVersions within 1.5 s" in checks[hung]["error"]
    assert checks[kafka_broker.bootstrap]["state"] == "up"
    assert checks[kafka_broker.bootstrap]["brokers"]  # the Metadata round trip named the cluster
    assert took < budget(10)  # probed concurrently: one deadline, not one per broker (loaded-machine margin)


def test_three_hung_brokers_cost_one_deadline(silent_server: Any) -> None:
    target = f"127.0.0.1:{silent_server.port}"
    started = time.monotonic()
    result = Brokers({"targets": [target] * 3, "timeout": 2}, ctx(target)).run()
    assert result["hung"] == [target] * 3
    assert time.monotonic() - started < budget(5.5)  # 3 x 2 s in sequence would be 6 s


def test_a_slow_broker_answers_and_is_reported_slow(slow_broker: Any) -> None:
    result = Brokers({"targets": [slow_broker.address], "timeout": 2}, ctx(slow_broker.address)).run()
    assert result["healthy_count"] == 1 and result["slow"] == [slow_broker.address]
    hung = Brokers({"targets": [slow_broker.address], "timeout": 0.6}, ctx(slow_broker.address)).run()
    assert hung["hung"] == [slow_broker.address]  # the same answer past the deadline: not answering


def test_lag_waiting_for_members_on_a_hung_broker_costs_one_deadline(silent_server: Any) -> None:
    """Defect 7: 61 attempts for 3 min 51 s.  A cluster that does not answer fails the wait at once."""
    target = f"127.0.0.1:{silent_server.port}"
    started = time.monotonic()
    with pytest.raises(BackendError, match="no answer|cannot reach"):
        Lag({"group": "g", "topic": "t", "wait_until_members": 120}, ctx(target, connect_timeout=1)).run()
    assert time.monotonic() - started < budget(15)


def test_lag_convergence_window_both_sides(noida_broker: Broker) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = lagged(noida_broker, partitions=1, per_partition=100, consumed=10)

    def drain() -> None:  # a consumer catching up over ~2 s
        admin = noida_broker.admin()
        try:
            for committed in (30, 50, 70, 95):
                time.sleep(0.5)
                admin.alter_group_offsets(group, {TopicPartition(topic, 0):
                                                  OffsetAndMetadata(committed, "", -1)})
        finally:
            admin.close()

    worker = threading.Thread(target=drain)
    worker.start()
    converged = Lag({"group": group, "topic": topic, "lag_threshold": 10,
                     "wait_until_below_threshold": 60}, ctx(noida_broker)).run()
    worker.join()
    assert converged["max_partition_lag"] < 10 and converged["checks"] > 1
    assert converged["lag_before"] == 90 and converged["waited_s"] < 60

    stuck = Lag({"group": group, "topic": topic, "lag_threshold": 1, "wait_until_below_threshold": 2.5,
                 "drain_window": 60}, ctx(noida_broker)).run()
    assert stuck["max_partition_lag"] == 5 and 2.0 <= stuck["waited_s"] < 10
    assert stuck["drain_rate_per_s"] == 0 and stuck["clears_within_window"] is False


def test_a_hung_broker_in_the_bootstrap_list_does_not_fail_the_lookups(noida_broker: Broker,
                                                                        silent_server: Any) -> None:
    """kafka-python bootstraps from a random server: with a hung one in the list, half the lookups
    failed after the connect timeout.  Now they bootstrap from the brokers that answer."""
    topic, group = lagged(noida_broker, partitions=1, per_partition=10, consumed=4)
    servers = f"127.0.0.1:{silent_server.port},{noida_broker.bootstrap}"
    for _ in range(6):  # fresh context each time: a fresh random pick
        assert Lag({"group": group, "topic": topic}, ctx(servers, connect_timeout=1)).run()["total_lag"] == 6
