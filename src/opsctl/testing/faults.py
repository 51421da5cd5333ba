"""The faults and state checks a rehearsal file may name, over the kit's servers.

A fault is ``{NAME: {ARG: VALUE}}`` in a rehearsal's ``faults:`` list (one that lasts while the run
goes on, such as a worker reading a queue, returns what stops it; the rehearsal calls it after the
run, whatever happened); a state check is
``{NAME: {ARG: VALUE, equals|min|max: N}}`` in ``expect.state``.  Each entry below is one function
of the servers (``servers.get("postgres")`` ...); its keyword arguments are the arguments the file
may give (checked before anything starts: an unknown name or argument is a located error).
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import time
from collections.abc import Callable
from typing import Any, Protocol


class Servers(Protocol):
    def get(self, kind: str) -> Any: ...


# ---- faults ---------------------------------------------------------------------------------------

def _lasting(running: contextlib.AbstractContextManager[Any]) -> Callable[[], None]:
    """A fault that goes on during the run: started now, stopped by what this returns."""
    running.__enter__()

    def stop() -> None:
        running.__exit__(None, None, None)

    return stop


def pg_leak_connections(s: Servers, count: int, application_name: str = "leaky-app",
                        idle_in_transaction: bool = True, user: str = "app", database: str = "app") -> None:
    """``count`` connections of an application (an ordinary role) left idle (in transaction)."""
    s.get("postgres").leak_connections(count, application_name, idle_in_transaction=idle_in_transaction,
                                       user=user, dbname=database)


def pg_lock_chain(s: Servers, waiters: int = 2, table: str = "orders", holder: str = "checkout-api",
                  waiter: str = "billing-worker", database: str = "app") -> None:
    """A session idle in transaction holding a row lock, ``waiters`` sessions blocked behind it."""
    s.get("postgres").lock_chain(waiters, table=table, holder=holder, waiter=waiter, dbname=database)


def pg_long_queries(s: Servers, count: int = 1, seconds: float = 600, application_name: str = "report-job",
                    database: str = "app") -> None:
    """``count`` queries running for ``seconds``."""
    s.get("postgres").long_queries(count, seconds, application_name, dbname=database)


def pg_sql(s: Servers, statement: str, database: str = "app") -> None:
    """One statement as the superuser (set-up: a table, a role setting)."""
    s.get("postgres").sql(statement, dbname=database)


def redis_fill_to_maxmemory(s: Servers, prefix: str = "cache:", value_size: int = 4096,
                            ttl: int | None = None, policy: str | None = None) -> None:
    """Write keys until maxmemory is reached (``policy``: set maxmemory-policy first)."""
    server = s.get("redis")
    if policy:
        client = server.client()
        client.config_set("maxmemory-policy", policy)
        client.close()
    server.fill_to_maxmemory(prefix, value_size, ttl)


def redis_command(s: Servers, args: list[str]) -> None:
    """One Redis command (``[SET, flag:x, "1"]``, ``[CONFIG, SET, maxmemory, 2mb]``)."""
    client = s.get("redis").client()
    try:
        client.execute_command(*[str(a) for a in args])
    finally:
        client.close()


def redis_block_clients(s: Servers, count: int, key: str = "jobs") -> None:
    """``count`` clients blocked in BLPOP."""
    s.get("redis").block_clients(count, key)


def kafka_consumer_lag(s: Servers, topic: str, group: str, produced: int = 100, consumed: int = 10,
                       partitions: int = 2) -> None:
    """A group that consumed ``consumed`` of ``produced`` records and stopped."""
    s.get("kafka").build_lag(topic, group, produced=produced, consumed=consumed, partitions=partitions)


def kafka_fill_dlq(s: Servers, topic: str, count: int, partitions: int = 1) -> None:
    """``count`` failed records in a DLQ topic."""
    s.get("kafka").fill_dlq(topic, count, partitions=partitions)


def kafka_app_consumer(s: Servers, topic: str, group: str, partitions: int = 1,
                       dlq_topic: str = "") -> Callable[[], None]:
    """The application reading ``topic`` (created with ``partitions`` when missing) as a member of
    ``group`` during the run; with ``dlq_topic`` it fails every record into it, headers kept."""
    from kafka.errors import TopicAlreadyExistsError

    from opsctl.testing.kafka import app_consumer

    broker = s.get("kafka")
    with contextlib.suppress(TopicAlreadyExistsError):
        broker.create_topic(topic, int(partitions))
    return _lasting(app_consumer(broker, topic, group, dlq=dlq_topic or None))


def aws_fill_dlq(s: Servers, queue: str, count: int, fifo: bool = False) -> None:
    """An SQS queue with a DLQ ``<queue>-dlq`` holding ``count`` messages."""
    from opsctl.testing.aws import fill, make_queue_with_dlq

    moto = s.get("aws")
    _, dlq = make_queue_with_dlq(moto, queue, fifo=fifo)
    fill(moto, dlq, count, fifo=fifo)


def aws_consumer(s: Servers, queue: str, fails: bool = False, visibility: int = 1,
                 pause: float = 0.0) -> Callable[[], None]:
    """A worker reading ``queue`` during the run: it deletes what it receives, or with ``fails``
    leaves it (back after ``visibility`` s, to the DLQ after maxReceiveCount receives)."""
    from opsctl.testing.aws import consumer, queue_url_of

    moto = s.get("aws")
    return _lasting(consumer(moto, queue_url_of(moto, queue), fails=fails, visibility=int(visibility),
                             pause=float(pause)))


def wait(s: Servers, seconds: float) -> None:
    """Let a fault age (sessions idle past a threshold)."""
    time.sleep(float(seconds))


FAULTS: dict[str, tuple[str | None, Callable[..., Any]]] = {
    "postgres.leak_connections": ("postgres", pg_leak_connections),
    "postgres.lock_chain": ("postgres", pg_lock_chain),
    "postgres.long_queries": ("postgres", pg_long_queries),
    "postgres.sql": ("postgres", pg_sql),
    "redis.fill_to_maxmemory": ("redis", redis_fill_to_maxmemory),
    "redis.command": ("redis", redis_command),
    "redis.block_clients": ("redis", redis_block_clients),
    "kafka.consumer_lag": ("kafka", kafka_consumer_lag),
    "kafka.fill_dlq": ("kafka", kafka_fill_dlq),
    "kafka.app_consumer": ("kafka", kafka_app_consumer),
    "aws.fill_dlq": ("aws", aws_fill_dlq),
    "aws.consumer": ("aws", aws_consumer),
    "wait": (None, wait),
}


# ---- state checks: each returns a number or a string ----------------------------------------------

def pg_sessions(s: Servers, application_name: str = "*", state: str | None = None, user: str | None = None,
                database: str = "app") -> int:
    """Client sessions (as the server sees them) matching an application glob, state, role."""
    rows = s.get("postgres").sql(
        "SELECT coalesce(application_name, ''), coalesce(state, ''), usename::text FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = %s", (database,))
    return sum(1 for app, st, usr in rows if fnmatch.fnmatchcase(app, application_name)
               and (state is None or st == state) and (user is None or usr == user))


def pg_blocked(s: Servers, database: str = "app") -> int:
    """Sessions waiting on another session's lock."""
    return int(s.get("postgres").blocked(database))


def pg_query(s: Servers, sql: str, database: str = "app") -> Any:
    """The first column of the first row of a query run as the superuser."""
    rows = s.get("postgres").sql(sql, dbname=database)
    return rows[0][0] if rows else None


def redis_info(s: Servers, field: str, section: str | None = None) -> Any:
    """One field of INFO (``used_memory``, ``evicted_keys``, ``blocked_clients`` ...)."""
    client = s.get("redis").client()
    try:
        return client.info(section)[field] if section else client.info("everything")[field]
    finally:
        client.close()


def redis_get(s: Servers, key: str) -> Any:
    client = s.get("redis").client()
    try:
        return client.get(key)
    finally:
        client.close()


def redis_config(s: Servers, name: str) -> Any:
    client = s.get("redis").client()
    try:
        return client.config_get(name).get(name)
    finally:
        client.close()


def kafka_lag(s: Servers, topic: str, group: str) -> int:
    """The group's total lag on the topic (end offsets - committed offsets)."""
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec

    broker = s.get("kafka")
    admin = broker.admin()
    try:
        parts = admin.describe_topics([topic])[0]["partitions"]
        tps = [TopicPartition(topic, p["partition_index"]) for p in parts]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    finally:
        admin.close()
    committed = broker.committed(group, topic)
    return sum(ends[tp].offset - max(committed.get(tp.partition, 0), 0) for tp in tps)


def aws_queue_depth(s: Servers, queue: str) -> int:
    """Visible + in-flight messages of an SQS queue (by name)."""
    from opsctl.testing.aws import depth, queue_url_of

    moto = s.get("aws")
    return depth(moto, queue_url_of(moto, queue))


PROBES: dict[str, tuple[str, Callable[..., Any]]] = {
    "postgres.sessions": ("postgres", pg_sessions),
    "postgres.blocked": ("postgres", pg_blocked),
    "postgres.query": ("postgres", pg_query),
    "redis.info": ("redis", redis_info),
    "redis.get": ("redis", redis_get),
    "redis.config": ("redis", redis_config),
    "kafka.lag": ("kafka", kafka_lag),
    "aws.queue_depth": ("aws", aws_queue_depth),
}


def arguments(fn: Callable[..., Any]) -> tuple[set[str], set[str]]:
    """(every argument, the required ones) of a fault or probe, from its signature."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    return ({p.name for p in params},
            {p.name for p in params if p.default is inspect.Parameter.empty})
