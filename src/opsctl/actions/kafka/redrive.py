"""DLQ topic -> source topic redrive (mutating), exactly-once from the operator's point of view; its
campaign marker and its status (read-only, what verify judges) are in ``campaign``.

How "exactly once" holds across a Ctrl-C, a timeout or a killed process:

* every redriven record carries ``x-opsctl-redriven: <dlq>/<partition>/<offset>``;
* the DLQ group (``group``) is committed after the broker acknowledged each batch; on Ctrl-C the
  batch in flight is finished (acknowledged, committed) before the step stops, so the count it
  reports is what is on the target;
* a *campaign marker* (the group ``<group>.campaign``, plain committed offsets, which every
  Kafka-protocol broker keeps) records where the current redrive began: the DLQ offsets it started
  from and the target's end offsets at that moment.  Every plan scans the target from there: a
  record that a killed run produced but never committed is found by its header and skipped, and
  duplicates are reported.  ``kafka.redrive_status`` compares exact counts from the same marker.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, is_template, type_schema
from opsctl.actions.kafka.campaign import MAX_SCAN, marker_group, read_marker, scan_redriven
from opsctl.actions.kafka.common import REDRIVEN_HEADER, TOPIC
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import (
    Cluster,
    make_consumer,
    make_producer,
    topic_partition,
    translate_errors,
)
from opsctl.errors import ActionError, Cancelled, StepTimeout
from opsctl.records import Change, Plan


@register
class Redrive(Action):
    """Move records from a dead-letter topic back to its source topic, exactly once.

    The records between the DLQ group's committed offset and the DLQ's end (as planned, at most
    `max_messages`) are produced to `topic` by an idempotent producer with acks=all, keeping key,
    value and headers and adding an `x-opsctl-redriven: <dlq>/<partition>/<offset>` header.  The
    DLQ group's offset is committed after the broker acknowledged each batch; a Ctrl-C finishes the
    batch in flight first.  Records already on the target (sent by a run that was killed before it
    could commit) are found by their header and skipped, never sent twice; duplicates already there
    are reported.  A partial redrive (`allow_partial`) says how many records remain.  `--resume` of
    a run cut short while redriving (Ctrl-C, a timeout, a kill) finishes the offset ranges that were
    confirmed: `max_messages` bounds the redrive once, not once per attempt.

    ```yaml
    - id: redrive
      action: kafka.redrive
      with: {dlq_topic: order.events.dlq, topic: order.events, group: opsctl-redrive, max_messages: 1000}
    ```
    """

    name = "kafka.redrive"
    # the campaign marker is a second group, {group}.campaign
    permissions = (KafkaAcl("Group", "{group}", ("Describe",)),
                   KafkaAcl("Group", "{group}.campaign", ("Describe",)),
                   KafkaAcl("Topic", "{dlq_topic}", ("Describe", "Read")),
                   KafkaAcl("Topic", "{topic}", ("Describe", "Read")),
                   KafkaAcl("Topic", "{topic}", ("Write",), apply=True),
                   KafkaAcl("Group", "{group}", ("Read",), apply=True),
                   KafkaAcl("Group", "{group}.campaign", ("Read",), apply=True),
                   # the idempotent producer (brokers before Kafka 2.8 check it on the cluster)
                   KafkaAcl("Cluster", "kafka-cluster", ("IdempotentWrite",), apply=True))
    backend = "kafka"
    read_only = False
    summary = ("DLQ topic -> source topic, exactly once across interruptions (skips what is already "
               "there), commit after ack (blast radius: max_messages)")
    schema = type_schema({"dlq_topic": TOPIC, "topic": TOPIC,
                          "group": {"type": "string", "minLength": 1, "default": "opsctl-redrive"},
                          "max_messages": {"type": "integer", "minimum": 1, "default": 1000},
                          "allow_partial": {"type": "boolean", "default": False},
                          "max_scan": MAX_SCAN},
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
        k.require_empty_group(marker_group(group), "it is opsctl's redrive marker: nobody consumes with it")
        k.partitions(topic)  # the source topic must exist
        tps = k.partitions(dlq)
        committed = k.committed(group, dlq)
        lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
        starts = {tp.partition: max(committed.get(tp) or 0, lows[tp]) for tp in tps}

        marker = read_marker(k, group, dlq, topic)
        present: dict[int, list[int]] = {}
        duplicates = earlier = 0
        warnings: list[str] = []
        if marker is not None:
            scan = scan_redriven(k, topic, dlq, marker["target"], int(self.args.get("max_scan", 1_000_000)))
            if not scan["complete"]:
                raise ActionError(f"kafka: more than max_scan={self.args.get('max_scan', 1_000_000)} records "
                                  f"on {topic} since this redrive began; cannot tell what is already there "
                                  "(raise max_scan)")
            found: Counter[tuple[int, int]] = scan["found"]
            for (p, o), n in sorted(found.items()):
                duplicates += n - 1
                if o >= starts.get(p, 0):
                    present.setdefault(p, []).append(o)
                else:
                    earlier += 1
            if present:
                warnings.append(f"{sum(map(len, present.values()))} record(s) are already on {topic} but "
                                f"not committed in {group} (an interrupted run sent them): they are "
                                "skipped, not sent again")
            if duplicates:
                warnings.append(f"{duplicates} duplicate(s) already on {topic} (a record redriven more "
                                "than once before this run): verify will fail, deduplicate downstream")
        # a new campaign once the previous one is clean up to its commit: nothing in flight, no duplicate
        new_campaign = marker is None or (not present and not duplicates)

        waiting = sum(highs[tp] - starts[tp.partition] for tp in tps if highs[tp] > starts[tp.partition])
        budget = self.args.get("max_messages", 1000)
        confirmed = self._confirmed_ends(dlq, topic, group)
        if confirmed is not None:
            warnings.append("resuming the redrive confirmed in the interrupted run: its offset "
                            "ranges are finished, max_messages is not counted again")
        elif waiting > budget and not self.args.get("allow_partial", False):
            raise ActionError(f"kafka: {waiting} records wait in {dlq}, more than max_messages={budget}; "
                              "raise max_messages or set allow_partial to redrive the first ones")
        ranges, changes = [], []
        for tp in tps:
            start = starts[tp.partition]
            if confirmed is not None:  # up to where the confirmed plan ended, not a fresh budget
                end = min(highs[tp], confirmed.get(tp.partition, start))
            else:
                end = min(highs[tp], start + budget)
                budget -= max(0, end - start)
            if end <= start:
                continue
            skip = [o for o in present.get(tp.partition, []) if start <= o < end]
            ranges.append({"partition": tp.partition, "start": start, "end": end,
                           "committed": committed.get(tp), "skip": skip})
            after = f"produced to {topic}; {group} committed at {end}"
            changes.append(Change(target=f"{dlq}[{tp.partition}]", operation="redrive",
                                  before=f"offsets {start}..{end - 1} ({end - start} records)",
                                  after=after + (f" ({len(skip)} already there: skipped)" if skip else "")))
        count = sum(r["end"] - r["start"] for r in ranges)
        skipped = sum(len(r["skip"]) for r in ranges)
        remaining = waiting - count
        if remaining:
            warnings.append(f"partial redrive: {remaining} record(s) remain in {dlq} after this one "
                            f"(max_messages={self.args.get('max_messages', 1000)}); verify will say so")
        summary = f"redrive {count - skipped} record(s) from {dlq} to {topic}"
        if skipped:
            summary += f" ({skipped} already there, skipped)"
        if remaining:
            summary += f"; {remaining} remain"
        return Plan(summary=summary, changes=changes, warnings=warnings,
                    data={"dlq_topic": dlq, "topic": topic, "group": group, "ranges": ranges,
                          "planned": count, "remaining": remaining, "duplicates": duplicates,
                          "earlier": earlier, "new_campaign": new_campaign})

    def _confirmed_ends(self, dlq: str, topic: str, group: str) -> dict[int, int] | None:
        """Where each partition's range of the plan confirmed in the run being resumed ended
        (``--resume`` after Ctrl-C, a timeout or a kill mid-redrive), or None: not resuming one."""
        prior = self.ctx.resumed_plan
        if not isinstance(prior, dict) or (prior.get("dlq_topic"), prior.get("topic"),
                                           prior.get("group")) != (dlq, topic, group):
            return None
        try:
            return {int(r["partition"]): int(r["end"]) for r in prior.get("ranges") or []}
        except (KeyError, TypeError, ValueError):
            return None  # a log written by something else: plan afresh

    def apply(self, plan: Plan) -> dict[str, Any]:
        k, d = Cluster(self.ctx), plan.data
        k.require_empty_group(d["group"], "another consumer is reading the DLQ with it")
        now = k.committed(d["group"], d["dlq_topic"])
        for r in d["ranges"]:
            if now.get(topic_partition(d["dlq_topic"], r["partition"])) != r["committed"]:
                raise ActionError(f"kafka: {d['group']} moved on {d['dlq_topic']}[{r['partition']}] since "
                                  "the plan was made (someone else is redriving?); plan again")
        if d.get("new_campaign"):
            # where this redrive begins, before anything is sent: what later plans and verify scan from
            dlq_tps = k.partitions(d["dlq_topic"])
            target_tps = k.partitions(d["topic"])
            begin = {topic_partition(d["dlq_topic"], r["partition"]): r["start"] for r in d["ranges"]}
            for tp, low in k.offsets(dlq_tps, "earliest").items():
                begin.setdefault(tp, max(low, (now.get(tp) or 0)))
            begin.update(k.offsets(target_tps, "latest"))
            k.alter_offsets(marker_group(d["group"]), begin, "recording where the redrive begins")
        moved, per_partition = self._copy(k, d)
        skipped = sum(len(r.get("skip", [])) for r in d["ranges"])
        planned = d.get("planned", moved + skipped)
        if moved + skipped != planned:  # compaction gaps in the DLQ, or a truncated log
            raise ActionError(f"kafka: planned {planned} record(s), redrove {moved} and found {skipped} "
                              f"already there: {planned - moved - skipped} not accounted for (was "
                              f"{d['dlq_topic']} compacted or truncated during the redrive?)")
        return {"dlq_topic": d["dlq_topic"], "topic": d["topic"], "group": d["group"],
                "planned": planned, "redriven": moved,
                "already_there": skipped, "remaining": d.get("remaining", 0),
                "duplicates_found": d.get("duplicates", 0), "per_partition": per_partition}

    def _copy(self, k: Cluster, d: dict[str, Any]) -> tuple[int, dict[str, int]]:
        ends = {topic_partition(d["dlq_topic"], r["partition"]): r["end"] for r in d["ranges"]}
        skip = {(r["partition"], o) for r in d["ranges"] for o in r.get("skip", [])}
        consumer = make_consumer(k.conf, fetch_max_wait_ms=100, max_poll_records=200)
        producer = make_producer(k.conf)
        moved, per_partition, idle = 0, {str(tp.partition): 0 for tp in ends}, 0
        try:
            consumer.assign(list(ends))
            for r in d["ranges"]:
                consumer.seek(topic_partition(d["dlq_topic"], r["partition"]), r["start"])
            total = sum(r["end"] - r["start"] for r in d["ranges"]) - len(skip)
            with self.ctx.progress(f"Redriving {d['dlq_topic']} -> {d['topic']}", total=total) as bar:
                while ends:
                    # stop between batches: what was sent is acknowledged and committed by now
                    self.ctx.check_cancelled()
                    batch = k.call(consumer.poll, timeout_ms=500)
                    sent, commit = self._send_batch(k, producer, batch, ends, d["topic"], skip)
                    for tp in list(ends):
                        with translate_errors(k.conf):
                            position = consumer.position(tp)
                        if tp not in commit and position >= ends[tp]:
                            commit[tp] = ends.pop(tp)  # finished, compaction gaps included
                        elif commit.get(tp, -1) >= ends[tp]:
                            ends.pop(tp)
                    self._commit(k, d, commit)
                    for p, n in sent.items():
                        per_partition[str(p)] += n
                    moved += sum(sent.values())
                    bar.advance(sum(sent.values()))
                    idle = 0 if batch else idle + 1
                    if idle > 20:
                        raise ActionError(f"kafka: no records from {d['dlq_topic']} for 10 s before the "
                                          f"planned end; {moved} redriven and committed so far")
        except (Cancelled, StepTimeout) as e:
            raise e.with_partial({"dlq_topic": d["dlq_topic"], "topic": d["topic"], "group": d["group"],
                                  "planned": d.get("planned"), "redriven": moved,
                                  "per_partition": per_partition},
                                 f"{moved} record(s) redriven and committed (acknowledged by the broker); "
                                 "--resume continues after them") from None
        finally:
            consumer.close()
            producer.close(timeout=5)
        return moved, per_partition

    def _send_batch(self, k: Cluster, producer: Any, batch: dict[Any, list[Any]], ends: dict[Any, int],
                    topic: str, skip: set[tuple[int, int]]) -> tuple[dict[int, int], dict[Any, int]]:
        """Produce one poll's records and wait for every ack; returns counts and offsets to commit.

        Not interruptible in the middle: a batch (at most 200 records) is sent and acknowledged
        whole, so that the commit that follows matches what is on the target."""
        futures: list[Any] = []
        commit: dict[Any, int] = {}
        sent: dict[int, int] = {}
        for tp, recs in batch.items():
            for rec in recs:
                if tp not in ends or rec.offset >= ends[tp]:
                    break
                commit[tp] = rec.offset + 1
                if (tp.partition, rec.offset) in skip:
                    continue  # an interrupted run already put it there
                origin = f"{tp.topic}/{tp.partition}/{rec.offset}".encode()
                headers = [*(rec.headers or []), (REDRIVEN_HEADER, origin)]
                futures.append(producer.send(topic, key=rec.key, value=rec.value, headers=headers))
                sent[tp.partition] = sent.get(tp.partition, 0) + 1
        deadline = time.monotonic() + max(10.0, self.ctx.remaining(30) or 30)
        with translate_errors(k.conf):
            for fut in futures:  # the DLQ offset moves only past records the broker has acknowledged
                fut.get(timeout=max(0.1, deadline - time.monotonic()))
        return sent, commit

    @staticmethod
    def _commit(k: Cluster, d: dict[str, Any], commit: dict[Any, int]) -> None:
        if commit:
            # no cancellation check here: the batch is on the target, its commit must follow
            k.alter_offsets(d["group"], commit, f"committing {d['group']} on {d['dlq_topic']}",
                            cancellable=False)

    @classmethod
    def summarize(cls, result: Any) -> str:
        text = f"redriven {result['redriven']} record(s) {result['dlq_topic']} -> {result['topic']}"
        if result.get("already_there"):
            text += f", {result['already_there']} already there (skipped)"
        if result.get("remaining"):
            text += f"; {result['remaining']} remain in the DLQ"
        return text
