"""Consumer lag over 1,000 partitions: opsctl's batched lookup vs a request per partition.

kafka.lag asks once for the group's committed offsets (one OffsetFetch) and once for the end
offsets (one ListOffsets per partition leader).  The naive way, what a script looping over
`kafka-consumer-groups --describe`-like calls does, sends two requests per partition.  One run of
each against a real broker; requests are counted at kafka-python's connection manager.

    .venv/bin/python bench/kafka_lag_1000_partitions.py          # starts a private noida-db
    KAFKA_BOOTSTRAP_SERVERS=host:9092 .venv/bin/python bench/...  # or uses that broker
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))
PARTITIONS = 1000


def start_noida(tmp: str) -> tuple[str, Any]:
    from tests.fixtures.core import free_port

    exe, port = str(Path(sys.executable).parent / "noida-db"), free_port()
    subprocess.run([exe, "up", "--only", "kafka", "--kafka-port", str(port), "--data-dir", tmp],
                   check=True, capture_output=True)
    return f"127.0.0.1:{port}", lambda: subprocess.run([exe, "down", "--data-dir", tmp], capture_output=True)


def counted(admin: Any) -> Counter[str]:
    """Count every request the admin client sends (wraps its connection manager's send)."""
    calls: Counter[str] = Counter()
    send = admin._manager.send

    def counting(request: Any, *args: Any, **kwargs: Any) -> Any:
        calls[type(request).__name__] += 1
        return send(request, *args, **kwargs)

    admin._manager.send = counting
    return calls


def prepare(servers: str) -> tuple[str, str]:
    """A 1,000-partition topic with records on every partition, and a group half-way through."""
    from kafka import KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from opsctl.backends.kafka import make_admin, settings

    topic, group = f"bench-{uuid.uuid4().hex[:6]}", f"bench-group-{uuid.uuid4().hex[:6]}"
    admin = make_admin(settings({"bootstrap_servers": servers}))
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                        wait_for_metadata=True)
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20)
    for p in range(PARTITIONS):
        for i in range(4):
            producer.send(topic, value=b"%d" % i, partition=p)
    producer.flush()
    producer.close()
    admin.alter_group_offsets(group, {TopicPartition(topic, p): OffsetAndMetadata(2, "", -1)
                                      for p in range(PARTITIONS)})
    admin.close()
    return topic, group


def batched(servers: str, topic: str, group: str) -> tuple[float, Counter[str], int]:
    from opsctl.actions.base import ActionContext
    from opsctl.backends.kafka import Cluster
    from opsctl.config import Environment

    ctx = ActionContext(environment=Environment("bench", backends={"kafka": {"bootstrap_servers": servers}}))
    cluster = Cluster(ctx)
    calls = counted(cluster.admin)
    t0 = time.perf_counter()
    snap = cluster.lag_snapshot(group, topic)
    elapsed = time.perf_counter() - t0
    cluster.admin.close()
    return elapsed, calls, snap["total_lag"]


def per_partition(servers: str, topic: str, group: str) -> tuple[float, Counter[str], int]:
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec

    from opsctl.backends.kafka import make_admin, settings

    admin = make_admin(settings({"bootstrap_servers": servers}))
    calls = counted(admin)
    t0 = time.perf_counter()
    total = 0
    for p in range(PARTITIONS):
        tp = TopicPartition(topic, p)
        committed = admin.list_group_offsets({group: [tp]})[group][tp].offset
        end = admin.list_partition_offsets({tp: OffsetSpec.LATEST})[tp].offset
        total += end - committed
    elapsed = time.perf_counter() - t0
    admin.close()
    return elapsed, calls, total


def main() -> None:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with tempfile.TemporaryDirectory() as tmp:
        stop = None
        if not servers:
            servers, stop = start_noida(tmp)
        try:
            topic, group = prepare(servers)
            b_time, b_calls, b_lag = batched(servers, topic, group)
            l_time, l_calls, l_lag = per_partition(servers, topic, group)
        finally:
            if stop:
                stop()
    assert b_lag == l_lag == 2 * PARTITIONS, (b_lag, l_lag)
    print(f"lag over {PARTITIONS} partitions (total lag {b_lag}, same both ways), broker {servers}")
    for name, (took, calls) in {"batched (kafka.lag)": (b_time, b_calls),
                                "per-partition loop": (l_time, l_calls)}.items():
        detail = ", ".join(f"{k.removesuffix('Request')} {v}" for k, v in sorted(calls.items()))
        print(f"{name:20s} {sum(calls.values()):5d} requests {took * 1000:9.1f} ms   ({detail})")
    print(f"ratio: {sum(l_calls.values()) / sum(b_calls.values()):.0f}x fewer round trips, "
          f"{l_time / b_time:.0f}x faster")


if __name__ == "__main__":
    main()
