"""Kafka client factories (kafka-python 3.0.12) and the translation of its errors.

Connection settings come from the environment's ``kafka:`` section, passed through to kafka-python
(``bootstrap_servers``, ``security_protocol``, ``sasl_mechanism``, ``sasl_plain_username``,
``sasl_plain_password``, ``ssl_cafile``...), else from ``KAFKA_BOOTSTRAP_SERVERS``.  One extra key,
``connect_timeout`` (seconds, default 3), bounds bootstrapping: kafka-python's own default retries
for 30 s, far too long for an on-call tool that should say "unreachable" quickly.

kafka-python is imported inside the functions only, so ``opsctl --help`` never loads it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opsctl.backends import readonly
from opsctl.backends.kafka_probe import probe_broker, scrub
from opsctl.errors import ActionError, BackendError

if TYPE_CHECKING:
    from opsctl.actions.base import ActionContext

DEFAULT_CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT_MS = 10_000
# Tansu and other non-Apache brokers need a session timeout inside their accepted range
SESSION_TIMEOUT_MS = 6_000


def settings(section: dict[str, Any]) -> dict[str, Any]:
    """The effective connection settings: the environment section, else KAFKA_BOOTSTRAP_SERVERS."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    conf = {k: v for k, v in section.items() if v is not None}
    known = set(KafkaAdminClient.DEFAULT_CONFIG) | set(KafkaConsumer.DEFAULT_CONFIG) | set(
        KafkaProducer.DEFAULT_CONFIG) | {"connect_timeout"}
    unknown = sorted(set(conf) - known)
    if unknown:
        raise BackendError("kafka", f"unknown setting(s) in the kafka section: {', '.join(unknown)} "
                                    "(expected kafka-python client options such as bootstrap_servers)")
    if not conf.get("bootstrap_servers"):
        servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not servers:
            raise BackendError("kafka", "no broker configured: set bootstrap_servers in the "
                                        "environment's kafka section or KAFKA_BOOTSTRAP_SERVERS")
        conf["bootstrap_servers"] = servers
    if isinstance(conf["bootstrap_servers"], str):
        conf["bootstrap_servers"] = [s.strip() for s in conf["bootstrap_servers"].split(",") if s.strip()]
    return conf


def _client_config(kind: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """The subset of the settings this kafka-python client understands, with short timeouts."""
    timeout_ms = int(float(conf.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)) * 1000)
    out = {k: v for k, v in conf.items() if k in kind.DEFAULT_CONFIG}
    out.setdefault("bootstrap_timeout_ms", timeout_ms)
    out.setdefault("request_timeout_ms", REQUEST_TIMEOUT_MS)
    out.setdefault("reconnect_backoff_max_ms", 1000)
    out.setdefault("client_id", "opsctl")
    return out


def _servers(conf: dict[str, Any]) -> str:
    return ",".join(conf.get("bootstrap_servers", []))


def make_admin(conf: dict[str, Any]) -> Any:
    from kafka import KafkaAdminClient

    class _Admin(KafkaAdminClient):  # type: ignore[misc]
        # kafka-python 3.0.12 always asks DescribeGroups for authorized operations and then fails
        # on operation codes it does not know (Tansu returns 15): we never use them, so drop them.
        def _describe_groups_request(self, group_ids: list[str]) -> Any:
            from kafka.protocol.admin import DescribeGroupsRequest

            return DescribeGroupsRequest(groups=list(group_ids), include_authorized_operations=False)

        def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
            obj["authorized_operations"] = None
            return obj

    with translate_errors(conf):
        return _Admin(**_client_config(KafkaAdminClient, conf))


def make_consumer(conf: dict[str, Any], **overrides: Any) -> Any:
    """A group-less consumer (manual assignment): opsctl never joins the groups it inspects.
    From a read-only Cluster's settings it cannot commit (``readonly.kafka_consumer_class``)."""
    from kafka import KafkaConsumer

    consumer_class = readonly.kafka_consumer_class(conf, overrides)
    cfg = _client_config(KafkaConsumer, conf)
    cfg.update({"group_id": None, "enable_auto_commit": False, "session_timeout_ms": SESSION_TIMEOUT_MS,
                "auto_offset_reset": "earliest"})
    cfg.update(overrides)
    with translate_errors(conf):
        return consumer_class(**cfg)


def make_producer(conf: dict[str, Any]) -> Any:
    """Idempotent, acks=all: a redriven record is written once and only acknowledged when durable."""
    from kafka import KafkaProducer

    readonly.kafka_check_producer(conf)  # never from a read-only Cluster's settings
    cfg = _client_config(KafkaProducer, conf)
    cfg.update({"enable_idempotence": True, "acks": "all", "retries": 5,
                "max_in_flight_requests_per_connection": 5})
    with translate_errors(conf):
        return KafkaProducer(**cfg)


@contextmanager
def translate_errors(conf: dict[str, Any]) -> Iterator[None]:
    """kafka-python exceptions -> BackendError (cannot talk to the cluster) or ActionError."""
    from kafka import errors as kerr

    try:
        yield
    except kerr.KafkaConnectionError as e:
        raise BackendError("kafka", f"cannot reach the brokers at {_servers(conf)} "
                                    f"({scrub(str(e), conf)}); check bootstrap_servers, the network "
                                    "and that the cluster is up") from None
    except (kerr.NodeNotReadyError, kerr.BrokerNotAvailableError) as e:  # the broker went away mid-run
        raise BackendError("kafka", f"lost the brokers at {_servers(conf)} ({scrub(str(e), conf)}); "
                                    "check that the cluster is up") from None
    except kerr.KafkaTimeoutError as e:
        raise BackendError("kafka", f"no answer from the brokers at {_servers(conf)} in time "
                                    f"({scrub(str(e), conf)}); check bootstrap_servers, the network "
                                    "and that the cluster is up") from None
    except (kerr.SaslAuthenticationFailedError, kerr.UnsupportedSaslMechanismError,
            kerr.IllegalSaslStateError, kerr.AuthorizationError) as e:
        raise BackendError("kafka", f"the brokers at {_servers(conf)} refused us: "
                                    f"{scrub(str(e), conf)}; check the SASL/SSL settings and ACLs") from None
    except kerr.KafkaError as e:
        raise ActionError(f"kafka: {scrub(str(e), conf)}") from None


FAILURE_TTL = 10.0  # seconds a connection failure is reused before trying again


class _Failure:
    def __init__(self, error: BackendError) -> None:
        self.error, self.at = error, time.monotonic()


def _admin_or_error(conf: dict[str, Any]) -> Any:
    # the failure is cached too, briefly: concurrent diagnose steps must not each wait for the
    # timeout, but a verify step after a broker restart must be able to connect again
    try:
        return make_admin(conf)
    except BackendError as e:
        return _bootstrap_from_answering(conf, e)


def _bootstrap_from_answering(conf: dict[str, Any], error: BackendError) -> Any:
    """kafka-python bootstraps from one server picked at random: a hung one (accepts TCP, never
    answers) among live ones fails the whole client.  Probe them all at the protocol level (one
    deadline, concurrently) and bootstrap again from those that answered."""
    from concurrent.futures import ThreadPoolExecutor

    servers = list(conf.get("bootstrap_servers") or [])
    if len(servers) < 2:
        return _Failure(error)
    timeout = float(conf.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    with ThreadPoolExecutor(max_workers=min(16, len(servers))) as pool:
        checks = list(pool.map(lambda t: probe_broker(t, timeout, conf), servers))
    alive = [c["target"] for c in checks if c["answered"]]
    if not alive or len(alive) == len(servers):
        return _Failure(error)
    try:
        admin = make_admin({**conf, "bootstrap_servers": alive})
    except BackendError as again:
        return _Failure(again)
    admin.opsctl_bootstrap = alive  # the consumers and producers of the run bootstrap from these too
    return admin


class Cluster:
    """The cluster as the actions see it: batched lookups, each one request per broker, with
    kafka-python errors translated and cancellation checked before every call."""

    def __init__(self, ctx: ActionContext) -> None:
        self.conf = settings(ctx.backend_config("kafka"))
        self.ctx = ctx
        admin = ctx.client("kafka.admin", lambda: _admin_or_error(self.conf))
        if isinstance(admin, _Failure) and time.monotonic() - admin.at > FAILURE_TTL:
            ctx.forget("kafka.admin")
            admin = ctx.client("kafka.admin", lambda: _admin_or_error(self.conf))
        if isinstance(admin, _Failure):
            raise BackendError(admin.error.backend, admin.error.message[len("kafka: "):])
        self.admin = admin
        if getattr(admin, "opsctl_bootstrap", None):  # bootstrapped from the brokers that answer
            self.conf["bootstrap_servers"] = list(admin.opsctl_bootstrap)
        if ctx.read_only:  # a guard per Cluster: the shared admin client itself stays unwrapped
            self.admin = readonly.ReadOnlyAdmin(admin)
            self.conf = readonly.KafkaReadOnlyConf(self.conf)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.ctx.check_cancelled()
        with translate_errors(self.conf):
            return fn(*args, **kwargs)

    def group(self, group: str) -> dict[str, Any]:
        """State and members; ``assigned`` is the set of partitions the members hold."""
        from kafka import TopicPartition

        desc = self.call(self.admin.describe_groups, [group])[group]
        if desc.get("error"):
            raise ActionError(f"kafka: cannot describe group {group!r}: {desc['error']}")
        members, assigned = [], set()
        for m in desc.get("members") or []:
            assignment = m.get("member_assignment") or {}  # empty while the group rebalances
            owned = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
            assigned |= {TopicPartition(a["topic"], p) for a in owned for p in a["partitions"]}
            members.append({"member_id": m["member_id"], "client_id": m.get("client_id", ""),
                            "host": m.get("client_host", ""),
                            "partitions": sum(len(a["partitions"]) for a in owned)})
        return {"state": desc.get("group_state", "Unknown"), "members": members, "assigned": assigned}

    def with_members(self, groups: list[str]) -> list[str]:
        """The groups that have members now (one DescribeGroups for all of them)."""
        if not groups:
            return []
        desc = self.call(self.admin.describe_groups, groups)
        return [g for g in groups if (d := desc.get(g) or {}) and not d.get("error") and d.get("members")]

    def group_exists(self, group: str, info: dict[str, Any]) -> bool:
        """Without a member and without a committed offset on any topic, the group does not exist
        (a typo, or never used): Kafka describes an unknown group as Dead, Tansu 0.6.0 as Empty."""
        if info["members"] or info["state"] in ("Stable", "PreparingRebalance", "CompletingRebalance"):
            return True
        return bool(self.committed(group))

    def require_existing_group(self, group: str, info: dict[str, Any]) -> None:
        """For a typo'd group, a lag is the whole log and an offset reset creates a new group
        while the real one keeps lagging: refuse instead."""
        if not self.group_exists(group, info):
            raise ActionError(f"kafka: consumer group {group!r} does not exist (no member, no committed "
                              f"offset; state {info['state'] or 'unknown'}): check the group name")

    def committed(self, group: str, topic: str | None = None) -> dict[Any, int | None]:
        offsets = self.call(self.admin.list_group_offsets, {group: None}).get(group, {})
        return {tp: (om.offset if om.offset >= 0 else None) for tp, om in offsets.items()
                if topic is None or tp.topic == topic}

    def groups(self) -> list[str]:
        """Every consumer group the cluster knows (one ListGroups per broker)."""
        return sorted(str(g["group_id"]) for g in self.call(self.admin.list_groups) or [])

    def committed_of(self, groups: list[str], topic: str) -> dict[str, dict[Any, int]]:
        """Each group's committed offsets on ``topic`` (one OffsetFetch for all of them)."""
        if not groups:
            return {}
        got = self.call(self.admin.list_group_offsets, {g: None for g in groups})
        return {g: {tp: om.offset for tp, om in (got.get(g) or {}).items()
                    if tp.topic == topic and om.offset >= 0} for g in groups}

    def partitions(self, topic: str, *, missing_ok: bool = False) -> list[Any]:
        from kafka import TopicPartition

        desc = self.describe(topic, missing_ok=missing_ok)
        return [TopicPartition(topic, p["partition_index"]) for p in desc["partitions"]] if desc else []

    def describe(self, topic: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        desc = self.call(self.admin.describe_topics, [topic])[0]
        if desc.get("error_code"):
            if missing_ok:
                return None
            raise ActionError(f"kafka: topic {topic!r} does not exist (or is not visible to us)")
        desc["partitions"] = sorted(desc["partitions"], key=lambda p: p["partition_index"])
        return desc

    def offsets(self, tps: list[Any], spec: str) -> dict[Any, int]:
        """Log-start ("earliest") or high-watermark ("latest") offsets."""
        from kafka.admin import OffsetSpec

        if not tps:
            return {}
        wanted = {"earliest": OffsetSpec.EARLIEST, "latest": OffsetSpec.LATEST}[spec]
        found = self.call(self.admin.list_partition_offsets, {tp: wanted for tp in tps})
        return {tp: o.offset for tp, o in found.items()}

    def offsets_at(self, tps: list[Any], timestamp_ms: int) -> dict[Any, int | None]:
        """First offset whose timestamp is >= timestamp_ms, None when there is none."""
        found = self.call(self.admin.list_partition_offsets, {tp: int(timestamp_ms) for tp in tps})
        # a real match carries the record's timestamp; Tansu 0.6.0 answers "offset 0, timestamp -1"
        # for a time after its last record where Kafka answers -1, so both mean "none"
        return {tp: (o.offset if o.offset >= 0 and o.timestamp >= 0 else None) for tp, o in found.items()}

    def require_empty_group(self, group: str, why: str) -> None:
        """Kafka takes offset commits from outside a group only while it has no active member."""
        info = self.group(group)
        if info["members"]:
            raise ActionError(f"kafka: group {group!r} has {len(info['members'])} active member(s) "
                              f"(state {info['state']}); {why}")

    def alter_offsets(self, group: str, offsets: dict[Any, int], what: str, *,
                      cancellable: bool = True) -> None:
        """Commit ``offsets`` (TopicPartition -> offset) for ``group``; ``cancellable=False`` where
        the commit must follow what was already done (records already on the target)."""
        from kafka import errors as kerr
        from kafka.structs import OffsetAndMetadata

        committed = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        if cancellable:
            result = self.call(self.admin.alter_group_offsets, group, committed)
        else:
            with translate_errors(self.conf):
                result = self.admin.alter_group_offsets(group, committed)
        failed = {f"{tp.topic}[{tp.partition}]": err.__name__ for tp, err in result.items()
                  if err is not kerr.NoError}
        if failed:
            raise ActionError(f"kafka: {what} failed for {failed}")

    def lag_snapshot(self, group: str, topic: str | None,
                     info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Lag of every partition: one OffsetFetch and one ListOffsets per leader for all of them
        (and, without a topic, one DescribeGroups unless ``info`` from group() is given)."""
        committed = self.committed(group, topic)
        if topic:
            tps = self.partitions(topic)
        else:
            # what the group committed plus what its members are assigned (a member that just
            # joined has not committed yet; kafka-consumer-groups shows those rows too)
            tps = sorted(set(committed) | (info or self.group(group))["assigned"])
        if not tps:
            raise ActionError(f"kafka: group {group!r} has no committed offsets and no member with "
                              "assigned partitions; name the topic to measure its lag from the "
                              "beginning of each partition")
        ends = self.offsets(tps, "latest")
        # a partition the group never committed is read from its log start (auto.offset.reset=earliest)
        starts = self.offsets([tp for tp in tps if committed.get(tp) is None], "earliest")
        rows = []
        for tp in sorted(tps):
            position = committed.get(tp)
            lag = max(0, ends[tp] - (position if position is not None else starts[tp]))
            rows.append({"topic": tp.topic, "partition": tp.partition, "committed": position,
                         "end": ends[tp], "lag": lag})
        return {"taken_at": time.time(), "partitions": rows, "total_lag": sum(r["lag"] for r in rows)}


def topic_partition(topic: str, partition: int) -> Any:
    """kafka-python's TopicPartition (the key of every offset map the Cluster returns)."""
    from kafka import TopicPartition

    return TopicPartition(topic, partition)


def bootstrap_targets(section: dict[str, Any]) -> list[str]:
    """The bootstrap servers the kafka actions would use (environment section, else the variable)."""
    return list(settings(section)["bootstrap_servers"])
