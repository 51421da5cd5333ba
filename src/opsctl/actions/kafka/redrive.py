"""DLQ topic -> source topic redrive (mutating)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, is_template, type_schema
from opsctl.actions.kafka.common import REDRIVEN_HEADER, TOPIC
from opsctl.backends.kafka import Cluster, make_consumer, make_producer
from opsctl.errors import ActionError, Cancelled, StepTimeout
from opsctl.records import Change, Plan


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
    schema = type_schema({"dlq_topic": TOPIC, "topic": TOPIC,
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
