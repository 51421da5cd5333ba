"""Kafka actions: consumer lag, lag trend, topic description, DLQ depth and peek (read-only);
DLQ redrive and consumer-group offset reset (mutating).

Every lookup is batched: one OffsetFetch for all of a group's partitions and one ListOffsets per
partition leader, never a request per partition (see bench/kafka_lag_1000_partitions.py).
opsctl never joins the groups it inspects or changes: it reads with group-less consumers and
commits through the admin API, which Kafka only accepts while the group has no active members.
"""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, is_template, type_schema
from opsctl.backends.kafka import Cluster, make_consumer, make_producer
from opsctl.errors import ActionError, ArgumentError, Cancelled, StepTimeout
from opsctl.records import Change, Plan

REDRIVEN_HEADER = "x-opsctl-redriven"
_TOPIC = {"type": "string", "minLength": 1}


@register
class Lag(Action):
    """Consumer-group lag per partition, per topic and in total, with the group's state and members.

    One committed-offsets request and one end-offsets request cover every partition.

    ```yaml
    - id: lag
      action: kafka.lag
      with: {group: order-service-group, topic: order.events, lag_threshold: 1000}
      expect:
        - that: "result.max_partition_lag < 1000"
          message: "partition lag up to {{ result.max_partition_lag }}"
    ```
    """

    name = "kafka.lag"
    backend = "kafka"
    summary = "consumer-group lag per partition / topic / total, group state, members vs partitions"
    schema = type_schema({"group": _TOPIC, "topic": {"type": "string"},
                          "lag_threshold": {"type": "integer", "minimum": 0},
                          "must_exist": {"type": "boolean", "default": False,
                                         "description": "fail when the group does not exist (no member, "
                                                        "no committed offset) instead of measuring the "
                                                        "whole log as its lag"}},
                         required=["group"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        group, topic = self.args["group"], self.args.get("topic") or None
        info = k.group(group)
        exists = k.group_exists(group, info)
        if self.args.get("must_exist") and not exists:
            k.require_existing_group(group, info)
        snap = k.lag_snapshot(group, topic, info)
        rows = snap["partitions"]
        topics: dict[str, dict[str, int]] = {}
        for r in rows:
            t = topics.setdefault(r["topic"], {"partitions": 0, "lag": 0})
            t["partitions"] += 1
            t["lag"] += r["lag"]
        threshold = self.args.get("lag_threshold")
        members = len(info["members"])
        return {"group": group, "exists": exists, "state": info["state"], "member_count": members,
                "members": info["members"], "partition_count": len(rows),
                "idle_members": max(0, members - len(rows)), "total_lag": snap["total_lag"],
                "max_partition_lag": max((r["lag"] for r in rows), default=0),
                "partitions_over_threshold": (sum(r["lag"] > threshold for r in rows)
                                              if threshold is not None else None),
                "topics": [{"topic": t, **v} for t, v in topics.items()], "partitions": rows}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"group {result['group']} ({result['state']}, {result['member_count']} members / "
                f"{result['partition_count']} partitions): total lag {result['total_lag']}, "
                f"max per partition {result['max_partition_lag']}")


@register
class LagTrend(Action):
    """Sample a group's lag twice, `interval` seconds apart: drain rate and time to drain.

    ```yaml
    - id: trend
      action: kafka.lag_trend
      with: {group: order-service-group, topic: order.events, interval: 10, drain_window: 600}
    ```
    """

    name = "kafka.lag_trend"
    backend = "kafka"
    summary = "lag sampled twice: drain rate (messages/s, > 0 when draining) and ETA to zero"
    schema = type_schema({"group": _TOPIC, "topic": {"type": "string"},
                          "interval": {"type": "number", "exclusiveMinimum": 0, "default": 10},
                          "drain_window": {"type": "number", "minimum": 0}}, required=["group"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        group, topic = self.args["group"], self.args.get("topic") or None
        first = k.lag_snapshot(group, topic)
        self.ctx.sleep(float(self.args.get("interval", 10)))
        second = k.lag_snapshot(group, topic)
        elapsed = max(second["taken_at"] - first["taken_at"], 1e-6)
        rate = (first["total_lag"] - second["total_lag"]) / elapsed
        lag = second["total_lag"]
        eta = 0.0 if lag == 0 else (lag / rate if rate > 0 else None)
        window = self.args.get("drain_window")
        return {"group": group, "lag_before": first["total_lag"], "total_lag": lag,
                "max_partition_lag": max((r["lag"] for r in second["partitions"]), default=0),
                "interval_s": round(elapsed, 3), "drain_rate_per_s": round(rate, 3),
                "draining": rate > 0 or lag == 0,
                "eta_seconds": round(eta, 1) if eta is not None else None,
                "clears_within_window": ((eta is not None and eta <= window)
                                         if window is not None else None)}

    @classmethod
    def summarize(cls, result: Any) -> str:
        eta = f"ETA {result['eta_seconds']}s" if result["eta_seconds"] is not None else "not draining"
        return (f"lag {result['lag_before']} -> {result['total_lag']} in {result['interval_s']}s "
                f"({result['drain_rate_per_s']}/s, {eta})")


@register
class DescribeTopic(Action):
    """Partitions, replication factor, leaders and in-sync replicas of a topic.

    ```yaml
    - id: topic
      action: kafka.describe_topic
      with: {topic: order.events}
    ```
    """

    name = "kafka.describe_topic"
    backend = "kafka"
    summary = "topic partitions, replication factor, leaders, ISR, under-replicated partitions"
    schema = type_schema({"topic": _TOPIC}, required=["topic"])

    def run(self) -> dict[str, Any]:
        desc = Cluster(self.ctx).describe(self.args["topic"])
        assert desc is not None
        parts = [{"partition": p["partition_index"], "leader": p["leader_id"],
                  "replicas": p["replica_nodes"], "isr": p["isr_nodes"],
                  "offline": p.get("offline_replicas", [])} for p in desc["partitions"]]
        rf = max((len(p["replicas"]) for p in parts), default=0)
        return {"topic": desc["name"], "partition_count": len(parts), "replication_factor": rf,
                "under_replicated": sum(len(p["isr"]) < len(p["replicas"]) for p in parts),
                "offline_partitions": sum(p["leader"] < 0 for p in parts), "partitions": parts}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['topic']}: {result['partition_count']} partitions, "
                f"RF {result['replication_factor']}, {result['under_replicated']} under-replicated")


@register
class DlqDepth(Action):
    """Messages waiting in a dead-letter topic (high minus low watermark per partition).

    A missing topic is not an error: `exists` is false and `depth` 0.

    ```yaml
    - id: dlq
      action: kafka.dlq_depth
      with: {topic: order.events.dlq}
      expect:
        - that: "result.depth == 0"
          severity: warning
    ```
    """

    name = "kafka.dlq_depth"
    backend = "kafka"
    summary = "DLQ topic depth: messages between low and high watermark"
    schema = type_schema({"topic": _TOPIC}, required=["topic"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        topic = self.args["topic"]
        tps = k.partitions(topic, missing_ok=True)
        lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
        parts = [{"partition": tp.partition, "low": lows[tp], "high": highs[tp],
                  "depth": max(0, highs[tp] - lows[tp])} for tp in tps]
        return {"topic": topic, "exists": bool(tps), "depth": sum(p["depth"] for p in parts),
                "partitions": parts}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["exists"]:
            return f"{result['topic']}: no such topic"
        return f"{result['topic']}: {result['depth']} messages"



def _text(data: bytes | None, limit: int) -> str | None:
    if data is None:
        return None
    shown = data[:limit].decode("utf-8", errors="replace")
    return shown if len(data) <= limit else f"{shown}... (+{len(data) - limit} bytes)"


@register
class Peek(Action):
    """Read the first records of a topic (a DLQ, typically) without joining any consumer group.

    Values are truncated to `max_value_bytes` (0 hides them); with `header`, only records carrying
    that header count as `matched` (the whole topic is scanned, up to `max_scan` records, from
    `start_offsets` where given).

    ```yaml
    - id: samples
      action: kafka.peek
      with: {topic: order.events.dlq, limit: 5, max_value_bytes: 64}
    ```
    """

    name = "kafka.peek"
    backend = "kafka"
    summary = "first N records of a topic: key, headers, size, truncated value; optional header filter"
    schema = type_schema({"topic": _TOPIC, "limit": {"type": "integer", "minimum": 0, "default": 5},
                          "max_value_bytes": {"type": "integer", "minimum": 0, "default": 64},
                          "header": {"type": "string"},
                          "max_scan": {"type": "integer", "minimum": 1, "default": 10000},
                          "start_offsets": {"type": ["array", "object"],
                                            "description": "offset to start from per partition (a list "
                                                           "indexed by partition, or partition -> offset); "
                                                           "other partitions start at the beginning"}},
                         required=["topic"])

    def _starts(self) -> dict[int, int]:
        raw = self.args.get("start_offsets") or {}
        items = enumerate(raw) if isinstance(raw, list) else raw.items()
        try:
            return {int(p): int(o) for p, o in items if o is not None}
        except (TypeError, ValueError):
            raise ActionError(f"kafka.peek: start_offsets must map partitions to offsets, "
                              f"got {raw!r}") from None

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        tps = k.partitions(self.args["topic"])
        starts = self._starts()
        limit, header = self.args.get("limit", 5), self.args.get("header")
        max_scan = self.args.get("max_scan", 10000)
        records: list[dict[str, Any]] = []
        scanned = matched = empty = 0
        consumer = make_consumer(k.conf, fetch_max_wait_ms=100)
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            for tp in tps:  # e.g. the source topic's end offsets before a redrive: only what it wrote
                if tp.partition in starts:
                    consumer.seek(tp, starts[tp.partition])
            # stop on two empty polls, not at the end offsets: some brokers under-report them
            while scanned < max_scan and empty < 2 and (header or len(records) < limit):
                batch = k.call(consumer.poll, timeout_ms=300, max_records=min(500, max_scan - scanned))
                empty = 0 if batch else empty + 1
                for rec in (r for recs in batch.values() for r in recs):
                    scanned += 1
                    if header and not any(h == header for h, _ in rec.headers or []):
                        continue
                    matched += 1
                    if len(records) < limit:
                        records.append(self._view(rec))
        finally:
            consumer.close()
        return {"topic": self.args["topic"], "records": records, "scanned": scanned,
                "matched": matched, "complete": scanned < max_scan}

    def _view(self, rec: Any) -> dict[str, Any]:
        width = self.args.get("max_value_bytes", 64)
        return {"partition": rec.partition, "offset": rec.offset, "timestamp_ms": rec.timestamp,
                "key": _text(rec.key, 64), "size": len(rec.value or b""),
                "headers": {h: _text(v, 64) for h, v in rec.headers or []},
                "value": _text(rec.value, width) if width else None}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['topic']}: {len(result['records'])} shown, "
                f"{result['matched']} of {result['scanned']} scanned")


@register
class Redrive(Action):
    """Move records from a dead-letter topic back to its source topic.

    The records between the DLQ group's committed offset and the DLQ's end (as planned) are produced
    to `topic` by an idempotent producer with acks=all, keeping key, value and headers and adding an
    `x-opsctl-redriven: <dlq>/<partition>/<offset>` header.  The DLQ group's offset is committed
    only after the broker has acknowledged the records, batch by batch, so an interrupted redrive
    resumes where it stopped and never sends a record twice in one run.

    ```yaml
    - id: redrive
      action: kafka.redrive
      with: {dlq_topic: order.events.dlq, topic: order.events, group: opsctl-redrive, max_messages: 1000}
    ```
    """

    name = "kafka.redrive"
    backend = "kafka"
    read_only = False
    summary = "DLQ topic -> source topic, idempotent acks=all, commit after ack (blast radius: max_messages)"
    schema = type_schema({"dlq_topic": _TOPIC, "topic": _TOPIC,
                          "group": {"type": "string", "minLength": 1, "default": "opsctl-redrive"},
                          "max_messages": {"type": "integer", "minimum": 1, "default": 1000},
                          "allow_partial": {"type": "boolean", "default": False}},
                         required=["dlq_topic", "topic"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        dlq, topic = args.get("dlq_topic"), args.get("topic")
        if dlq and dlq == topic and not is_template(dlq):
            return [("topic", "the source topic must differ from the DLQ topic")]
        return []

    def plan(self) -> Plan:
        k = Cluster(self.ctx)
        dlq, topic = self.args["dlq_topic"], self.args["topic"]
        group = self.args.get("group", "opsctl-redrive")
        k.require_empty_group(group, "another consumer is reading the DLQ with it")
        k.partitions(topic)  # the source topic must exist
        tps = k.partitions(dlq)
        committed = k.committed(group, dlq)
        lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
        budget = self.args.get("max_messages", 1000)
        total = sum(highs[tp] - max(committed.get(tp) or 0, lows[tp]) for tp in tps)
        if total > budget and not self.args.get("allow_partial", False):
            raise ActionError(f"kafka: {total} records wait in {dlq}, more than max_messages={budget}; "
                              "raise max_messages or set allow_partial to redrive the first ones")
        ranges, changes = [], []
        for tp in tps:
            start = max(committed.get(tp) or 0, lows[tp])
            end = min(highs[tp], start + budget)
            budget -= max(0, end - start)
            if end <= start:
                continue
            ranges.append({"partition": tp.partition, "start": start, "end": end,
                           "committed": committed.get(tp)})
            changes.append(Change(target=f"{dlq}[{tp.partition}]", operation="redrive",
                                  before=f"offsets {start}..{end - 1} ({end - start} records)",
                                  after=f"produced to {topic}; {group} committed at {end}"))
        count = sum(r["end"] - r["start"] for r in ranges)
        return Plan(summary=f"redrive {count} record(s) from {dlq} to {topic}", changes=changes,
                    data={"dlq_topic": dlq, "topic": topic, "group": group, "ranges": ranges})

    def apply(self, plan: Plan) -> dict[str, Any]:
        from kafka import TopicPartition

        k, d = Cluster(self.ctx), plan.data
        k.require_empty_group(d["group"], "another consumer is reading the DLQ with it")
        now = k.committed(d["group"], d["dlq_topic"])
        for r in d["ranges"]:
            if now.get(TopicPartition(d["dlq_topic"], r["partition"])) != r["committed"]:
                raise ActionError(f"kafka: {d['group']} moved on {d['dlq_topic']}[{r['partition']}] since "
                                  "the plan was made (someone else is redriving?); plan again")
        moved, per_partition = self._copy(k, d)
        return {"dlq_topic": d["dlq_topic"], "topic": d["topic"], "group": d["group"],
                "redriven": moved, "per_partition": per_partition}

    def _copy(self, k: Cluster, d: dict[str, Any]) -> tuple[int, dict[str, int]]:
        from kafka import TopicPartition

        ends = {TopicPartition(d["dlq_topic"], r["partition"]): r["end"] for r in d["ranges"]}
        consumer = make_consumer(k.conf, fetch_max_wait_ms=100, max_poll_records=200)
        producer = make_producer(k.conf)
        moved, per_partition, idle = 0, {str(tp.partition): 0 for tp in ends}, 0
        try:
            consumer.assign(list(ends))
            for r in d["ranges"]:
                consumer.seek(TopicPartition(d["dlq_topic"], r["partition"]), r["start"])
            total = sum(r["end"] - r["start"] for r in d["ranges"])
            with self.ctx.progress(f"Redriving {d['dlq_topic']} -> {d['topic']}", total=total) as bar:
                while ends:
                    batch = k.call(consumer.poll, timeout_ms=500)
                    sent, commit = self._send_batch(k, producer, batch, ends, d["topic"])
                    for tp in [tp for tp in ends if k.call(consumer.position, tp) >= ends[tp]]:
                        commit[tp] = ends.pop(tp)  # finished, compaction gaps included
                    self._commit(k, d, commit)
                    idle = 0 if batch else idle + 1
                    if idle > 20:
                        raise ActionError(f"kafka: no records from {d['dlq_topic']} for 10 s before the "
                                          f"planned end; {moved} redriven and committed so far")
                    for p, n in sent.items():
                        per_partition[str(p)] += n
                    moved += sum(sent.values())
                    bar.advance(sum(sent.values()))
        except (Cancelled, StepTimeout) as e:
            raise e.with_partial({"dlq_topic": d["dlq_topic"], "topic": d["topic"], "group": d["group"],
                                  "redriven": moved, "per_partition": per_partition},
                                 f"{moved} record(s) redriven and committed") from None
        finally:
            consumer.close()
            producer.close(timeout=5)
        return moved, per_partition

    def _send_batch(self, k: Cluster, producer: Any, batch: dict[Any, list[Any]],
                    ends: dict[Any, int], topic: str) -> tuple[dict[int, int], dict[Any, int]]:
        """Produce one poll's records and wait for every ack; returns counts and offsets to commit."""
        futures: list[Any] = []
        commit: dict[Any, int] = {}
        sent: dict[int, int] = {}
        for tp, recs in batch.items():
            for rec in recs:
                if tp not in ends or rec.offset >= ends[tp]:
                    break
                origin = f"{tp.topic}/{tp.partition}/{rec.offset}".encode()
                headers = [*(rec.headers or []), (REDRIVEN_HEADER, origin)]
                futures.append(k.call(producer.send, topic, key=rec.key, value=rec.value, headers=headers))
                commit[tp] = rec.offset + 1
                sent[tp.partition] = sent.get(tp.partition, 0) + 1
        for fut in futures:  # the DLQ offset moves only past records the broker has acknowledged
            k.call(fut.get, timeout=self.ctx.remaining(30))
        return sent, commit

    @staticmethod
    def _commit(k: Cluster, d: dict[str, Any], commit: dict[Any, int]) -> None:
        from kafka.structs import OffsetAndMetadata

        if commit:
            k.alter_offsets(d["group"], {tp: OffsetAndMetadata(off, "", -1) for tp, off in commit.items()},
                            f"committing {d['group']} on {d['dlq_topic']}")

    @classmethod
    def summarize(cls, result: Any) -> str:
        return f"redriven {result['redriven']} record(s) {result['dlq_topic']} -> {result['topic']}"


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _timestamp_ms(value: Any) -> int:
    from datetime import datetime

    if isinstance(value, int | float):
        return int(value)
    try:
        return int(datetime.fromisoformat(str(value)).timestamp() * 1000)
    except ValueError:
        raise ArgumentError(f"kafka: timestamp {value!r} is neither epoch milliseconds nor ISO 8601"
                            ) from None


@register
class ResetOffsets(Action):
    """Move a consumer group's committed offsets on one topic: to the end (`latest`, skipping the
    backlog), to the first record at or after a `timestamp`, or by `shift` records (negative
    rewinds).  Refused while the group has active members; the plan lists every partition's
    old -> new offset and how many messages are skipped (max_skipped is the blast radius).

    ```yaml
    - id: skip
      action: kafka.reset_offsets
      with: {group: order-service-group, topic: order.events, to: latest, max_skipped: 100000}
    ```
    """

    name = "kafka.reset_offsets"
    backend = "kafka"
    read_only = False
    summary = ("reset a group's offsets (latest / timestamp / shift); empty groups only "
               "(blast radius: max_skipped)")
    schema = type_schema({"group": _TOPIC, "topic": _TOPIC,
                          "to": {"type": "string", "enum": ["latest", "timestamp", "shift"]},
                          "timestamp": {"type": ["string", "number"]}, "shift": {"type": "integer"},
                          "max_skipped": {"type": "integer", "minimum": 0, "default": 100000}},
                         required=["group", "topic", "to"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        to = args.get("to")
        if to == "timestamp" and args.get("timestamp") is None:
            return [("timestamp", "to: timestamp needs a timestamp (ISO 8601 or epoch ms)")]
        if to == "shift" and args.get("shift") is None:
            return [("shift", "to: shift needs shift (records, negative rewinds)")]
        return []

    def _targets(self, k: Cluster, tps: list[Any], committed: dict[Any, int | None],
                 lows: dict[Any, int], highs: dict[Any, int]) -> dict[Any, int]:
        to = self.args["to"]
        if to == "latest":
            wanted = dict(highs)
        elif to == "timestamp":
            found = k.offsets_at(tps, _timestamp_ms(self.args["timestamp"]))
            wanted = {tp: highs[tp] if found.get(tp) is None else found[tp] for tp in tps}
        else:
            shift = int(self.args["shift"])
            wanted = {tp: _or(committed.get(tp), lows[tp]) + shift for tp in tps}
        return {tp: min(max(wanted[tp], lows[tp]), highs[tp]) for tp in tps}

    def plan(self) -> Plan:
        k = Cluster(self.ctx)
        group, topic = self.args["group"], self.args["topic"]
        k.require_empty_group(group, "stop the consumers first (offsets can only be reset on an "
                                       "empty group)")
        k.require_existing_group(group, k.group(group))
        tps = k.partitions(topic)
        committed = k.committed(group, topic)
        lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
        targets = self._targets(k, tps, committed, lows, highs)
        changes, rows = [], []
        for tp in tps:
            old = committed.get(tp)
            skipped = targets[tp] - (old if old is not None else lows[tp])
            if old == targets[tp]:
                continue
            rows.append({"partition": tp.partition, "old": old, "new": targets[tp], "skipped": skipped})
            detail = f"skips {skipped} messages" if skipped >= 0 else f"re-reads {-skipped} messages"
            changes.append(Change(target=f"{group} {topic}[{tp.partition}]", operation="reset offset",
                                  before=old, after=targets[tp], detail=detail))
        total = sum(max(0, r["skipped"]) for r in rows)
        limit = self.args.get("max_skipped", 100000)
        if total > limit:
            raise ActionError(f"kafka: resetting {group} on {topic} would skip {total} messages, more "
                              f"than max_skipped={limit}")
        return Plan(summary=f"reset {group} on {topic} to {self.args['to']}: {len(rows)} partition(s), "
                            f"{total} message(s) skipped", changes=changes,
                    data={"group": group, "topic": topic, "partitions": rows, "skipped": total})

    def apply(self, plan: Plan) -> dict[str, Any]:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        k, d = Cluster(self.ctx), plan.data
        k.require_empty_group(d["group"], "a consumer joined since the plan; nothing was changed")
        now = k.committed(d["group"], d["topic"])
        offsets = {}
        for r in d["partitions"]:
            tp = TopicPartition(d["topic"], r["partition"])
            if now.get(tp) != r["old"]:
                raise ActionError(f"kafka: {d['group']} moved on {d['topic']}[{r['partition']}] since the "
                                  "plan was made; nothing was changed, plan again")
            offsets[tp] = OffsetAndMetadata(r["new"], "", -1)
        if offsets:
            k.alter_offsets(d["group"], offsets, f"resetting {d['group']} on {d['topic']}")
        return {"group": d["group"], "topic": d["topic"], "partitions_reset": len(offsets),
                "skipped": d["skipped"]}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['group']} on {result['topic']}: {result['partitions_reset']} partition(s) reset, "
                f"{result['skipped']} message(s) skipped")
