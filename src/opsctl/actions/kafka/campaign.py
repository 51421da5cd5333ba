"""A redrive campaign seen from the target topic: the campaign marker (the group ``<group>.campaign``:
where the current redrive began, on the DLQ and on the target), the scan that counts redriven
records by origin, and ``kafka.redrive_status`` (read-only, what verify judges): exact counts from
the same marker.  ``redrive`` (the mutating side) plans and applies from them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.kafka.common import REDRIVEN_HEADER, TOPIC
from opsctl.actions.needs import KafkaAcl
from opsctl.backends.kafka import Cluster, make_consumer

MARKER_SUFFIX = ".campaign"
MAX_SCAN = {"type": "integer", "minimum": 1, "default": 1_000_000,
            "description": "records of the target topic read (from the campaign marker) to find what "
                           "was already redriven"}


def marker_group(group: str) -> str:
    return group + MARKER_SUFFIX


def read_marker(k: Cluster, group: str, dlq: str, topic: str) -> dict[str, dict[int, int]] | None:
    """The campaign marker: DLQ start offsets and target offsets, or None when there is none."""
    offsets = k.committed(marker_group(group))
    dlq_start = {tp.partition: o for tp, o in offsets.items() if tp.topic == dlq and o is not None}
    since = {tp.partition: o for tp, o in offsets.items() if tp.topic == topic and o is not None}
    if not dlq_start:
        return None
    return {"dlq": dlq_start, "target": since}


def origin_of(rec: Any, dlq: str) -> tuple[int, int] | None:
    """(DLQ partition, offset) a record was redriven from, None when it was not redriven from `dlq`.

    A record redriven, failed again and redriven once more carries two origins (a DLQ handler
    copies the headers): its origin is the last one, the one the redrive appended; counting the
    earlier one too invented a duplicate of that record."""
    origins = [v for name, v in rec.headers or [] if name == REDRIVEN_HEADER]
    origin = (origins[-1] or b"").decode(errors="replace") if origins else ""
    prefix = f"{dlq}/"
    if not origin.startswith(prefix):
        return None
    part, _, offset = origin[len(prefix):].partition("/")
    return (int(part), int(offset)) if part.isdigit() and offset.isdigit() else None


def scan_redriven(k: Cluster, topic: str, dlq: str, since: dict[int, int], max_scan: int
                  ) -> dict[str, Any]:
    """Read `topic` from `since` (partition -> offset; others from their start) and count the
    records redriven from `dlq`, by origin (dlq partition, offset)."""
    found: Counter[tuple[int, int]] = Counter()
    tps = k.partitions(topic)
    scanned = empty = 0
    consumer = make_consumer(k.conf, fetch_max_wait_ms=100, max_poll_records=2000)
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for tp in tps:
            if tp.partition in since:
                consumer.seek(tp, since[tp.partition])
        # stop on two empty polls, not at the end offsets: some brokers under-report them
        while scanned < max_scan and empty < 2:
            batch = k.call(consumer.poll, timeout_ms=300)
            empty = 0 if batch else empty + 1
            for rec in (r for recs in batch.values() for r in recs):
                scanned += 1
                origin = origin_of(rec, dlq)
                if origin is not None:
                    found[origin] += 1
    finally:
        consumer.close()
    return {"found": found, "scanned": scanned, "complete": scanned < max_scan}


def records_between(k: Cluster, tps: list[Any], start: dict[Any, int], end: dict[Any, int], dlq: str,
                    limit: int = 1_000_000, after: dict[Any, int] | None = None) -> tuple[int, int, int]:
    """(records, how many of them were redriven from `dlq`, how many of the others are at or past
    `after`) between `start` and `end` of each partition of the DLQ, reading at most `limit`
    records: a redriven record found in the DLQ again was failed again by the consumer (a DLQ
    handler copies the headers)."""
    todo = {tp: end[tp] for tp in tps if end.get(tp, 0) > start.get(tp, 0)}
    if not todo:
        return 0, 0, 0
    records = refailed = later = empty = 0
    consumer = make_consumer(k.conf, fetch_max_wait_ms=100, max_poll_records=2000)
    try:
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, start.get(tp, 0))
        while todo and empty < 2 and records < limit:
            batch = k.call(consumer.poll, timeout_ms=300)
            empty = 0 if batch else empty + 1
            for tp, recs in batch.items():
                for rec in recs:
                    if tp in todo and rec.offset < todo[tp]:
                        records += 1
                        if origin_of(rec, dlq) is not None:
                            refailed += 1
                        elif after is not None and rec.offset >= after.get(tp, 0):
                            later += 1
                if tp in todo and consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    finally:
        consumer.close()
    return records, refailed, later


@register
class RedriveStatus(Action):
    """Exact counts of the current redrive campaign, from the target topic's point of view.

    For every DLQ offset between where the redrive began (its marker) and the redrive group's
    commit, the target must hold exactly one record with that origin: `moved == expected`,
    `missing == 0`, `duplicates == 0`; `remaining` counts the DLQ records not redriven yet, and
    `refailed` those of them that this redrive sent and the consumer failed again into the DLQ.

    ```yaml
    - id: exact
      action: kafka.redrive_status
      with: {dlq_topic: order.events.dlq, topic: order.events, group: opsctl-redrive}
      expect:
        - that: "result.exact and result.remaining == 0"
    ```
    """

    name = "kafka.redrive_status"
    permissions = (KafkaAcl("Group", "{group}", ("Describe",)),
                   KafkaAcl("Group", "{group}.campaign", ("Describe",)),
                   KafkaAcl("Topic", "{dlq_topic}", ("Describe", "Read")),
                   KafkaAcl("Topic", "{topic}", ("Describe", "Read")))
    backend = "kafka"
    summary = "redrive campaign counts: expected / moved / missing / duplicates on the target, remaining"
    schema = type_schema({"dlq_topic": TOPIC, "topic": TOPIC,
                          "group": {"type": "string", "minLength": 1, "default": "opsctl-redrive"},
                          "max_scan": MAX_SCAN}, required=["dlq_topic", "topic"])

    def run(self) -> dict[str, Any]:
        k = Cluster(self.ctx)
        dlq, topic = self.args["dlq_topic"], self.args["topic"]
        group = self.args.get("group", "opsctl-redrive")
        tps = k.partitions(dlq)
        committed = k.committed(group, dlq)
        lows, highs = k.offsets(tps, "earliest"), k.offsets(tps, "latest")
        marker = read_marker(k, group, dlq, topic)
        remaining = sum(max(0, highs[tp] - max(committed.get(tp) or 0, lows[tp])) for tp in tps)
        out: dict[str, Any] = {"dlq_topic": dlq, "topic": topic, "group": group,
                               "campaign": marker is not None, "remaining": remaining, "refailed": 0,
                               "expected": 0,
                               "moved": 0, "missing": 0,
                               "duplicates": 0, "outside": 0, "scanned": 0, "complete": True,
                               "missing_examples": [], "duplicate_examples": []}
        if marker is None:
            out["exact"] = True
            return out
        max_scan = int(self.args.get("max_scan", 1_000_000))
        if remaining:  # of the records left in the DLQ, those this redrive sent that failed again
            start = {tp: max(committed.get(tp) or 0, lows[tp]) for tp in tps}
            out["refailed"] = records_between(k, tps, start, highs, dlq, max_scan)[1]
        scan = scan_redriven(k, topic, dlq, marker["target"], max_scan)
        found: Counter[tuple[int, int]] = scan["found"]
        expected = moved = 0
        missing: list[str] = []
        for tp in tps:
            begin = marker["dlq"].get(tp.partition)
            upto = committed.get(tp)
            if begin is None or upto is None or upto <= begin:
                continue
            for o in range(max(begin, lows[tp]), upto):
                expected += 1
                if found.get((tp.partition, o)):
                    moved += 1
                elif len(missing) < 5:
                    missing.append(f"{dlq}/{tp.partition}/{o}")
        dups = {key: n for key, n in found.items() if n > 1}
        inside = {(tp.partition, o) for tp in tps for o in range(marker["dlq"].get(tp.partition, 0),
                                                                  committed.get(tp) or 0)}
        out.update({"expected": expected, "moved": moved, "missing": expected - moved,
                    "duplicates": sum(n - 1 for n in dups.values()),
                    "outside": sum(1 for key in found if key not in inside),
                    "scanned": scan["scanned"], "complete": scan["complete"],
                    "missing_examples": missing,
                    "duplicate_examples": [f"{dlq}/{p}/{o} x{n}" for (p, o), n in sorted(dups.items())[:5]]})
        out["exact"] = out["complete"] and out["missing"] == 0 and out["duplicates"] == 0
        return out

    @classmethod
    def summarize(cls, r: Any) -> str:
        return (f"{r['moved']}/{r['expected']} redriven record(s) on {r['topic']}, {r['duplicates']} "
                f"duplicate(s), {r['missing']} missing; {r['remaining']} remain in {r['dlq_topic']}")
