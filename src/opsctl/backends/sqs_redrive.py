"""Client-side SQS mover: DLQ -> source queue, at-least-once, in batches, with several workers.

Each worker loops: receive up to 10 (hidden for ``visibility_timeout``) -> ``send_message_batch`` to
the destination -> ``delete_message_batch`` for exactly the entries whose send succeeded.  A message is
therefore deleted only after a copy exists in the destination: a crash at any point loses nothing
(unsent messages reappear in the DLQ when their visibility expires; a crash between send and delete
leaves a duplicate, which consumers must tolerate anyway with SQS).  Messages whose send failed are
left hidden until their visibility expires so that a poison message is not retried in a tight loop.

FIFO: the group id is kept, and the deduplication id is derived from the DLQ message id, so that a
re-run after a crash between send and delete is deduplicated by SQS (within its 5-minute window).
Order inside a group is kept because SQS hands a group to one receiver at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# consecutive empty receives after which a worker believes the queue is drained; with long polling
# (wait_seconds > 0) SQS asks all its servers, so one empty answer means nothing visible is left
EMPTY_RECEIVES_TO_STOP = 1

# total payload of one send_message_batch: 256 KiB is SQS's historical limit (1 MiB since 2025, and
# in moto); large DLQ messages are sent in smaller batches instead of failing as a whole
BATCH_BYTES = 256 * 1024


@dataclass
class MoveStats:
    moved: int = 0
    failed: int = 0  # send failed: message left in the source, visible again later
    delete_failed: int = 0  # sent but not deleted: will be moved again (duplicate)
    batches: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, moved: int, failed: int, delete_failed: int, error: str = "") -> None:
        with self.lock:
            self.moved += moved
            self.failed += failed
            self.delete_failed += delete_failed
            self.batches += 1
            if error and len(self.errors) < 5:
                self.errors.append(error)


class Budget:
    """Shared message budget (max_messages) that workers reserve from before each receive."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        with self._lock:
            got = min(n, self._left)
            self._left -= got
            return got

    def give_back(self, n: int) -> None:
        with self._lock:
            self._left += n

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self._left <= 0


class RateLimiter:
    """Token bucket shared by workers; ``rate`` messages per second, None for unlimited."""

    def __init__(self, rate: float | None, stop: threading.Event) -> None:
        self.rate = rate
        self._stop = stop
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
        # wait outside the lock; a stop request ends the wait early
        self._stop.wait(max(0.0, start - time.monotonic()))


def _send_entry(msg: dict[str, Any], i: int, fifo: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": str(i), "MessageBody": msg["Body"]}
    attrs = {k: {kk: vv for kk, vv in v.items() if kk in ("DataType", "StringValue", "BinaryValue")}
             for k, v in (msg.get("MessageAttributes") or {}).items()}
    if attrs:
        entry["MessageAttributes"] = attrs
    if fifo:
        system = msg.get("Attributes") or {}
        entry["MessageGroupId"] = system.get("MessageGroupId") or "redrive"
        entry["MessageDeduplicationId"] = hashlib.sha256(
            f"redrive:{msg['MessageId']}".encode()).hexdigest()
    return entry


def message_size(msg: dict[str, Any]) -> int:
    """Bytes SQS counts for a message: body plus each attribute's name, type and value."""
    size = len(msg["Body"].encode())
    for name, v in (msg.get("MessageAttributes") or {}).items():
        value = v.get("StringValue")
        size += len(name.encode()) + len(str(v.get("DataType", "")).encode()) + (
            len(value.encode()) if value is not None else len(v.get("BinaryValue") or b""))
    return size


def _size_chunks(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split a received batch so that each send_message_batch stays within BATCH_BYTES (a single
    message larger than that goes alone: SQS accepts it if the queue's MaximumMessageSize does)."""
    chunks: list[list[dict[str, Any]]] = []
    size = 0
    for m in messages:
        n = message_size(m)
        if chunks and chunks[-1] and size + n <= BATCH_BYTES:
            chunks[-1].append(m)
            size += n
        else:
            chunks.append([m])
            size = n
    return chunks


@dataclass
class Mover:
    client: Any  # boto3 SQS client (thread-safe for calls)
    source_url: str  # where messages are taken from (the DLQ)
    dest_url: str  # where they go (the original queue)
    max_messages: int
    fifo: bool = False
    workers: int = 4
    rate: float | None = None
    visibility_timeout: int = 60
    wait_seconds: int = 1
    stop: threading.Event = field(default_factory=threading.Event)
    stats: MoveStats = field(default_factory=MoveStats)

    def run(self, on_tick: Callable[[MoveStats], None] | None = None, tick: float = 0.2) -> MoveStats:
        """Move until drained, budget spent or ``stop`` is set; ``on_tick`` runs in the calling
        thread (progress, cancellation checks: it may raise, the workers are stopped first)."""
        budget = Budget(self.max_messages)
        limiter = RateLimiter(self.rate, self.stop)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="redrive") as pool:
            futures = [pool.submit(self._worker, budget, limiter) for _ in range(self.workers)]
            try:
                while not all(f.done() for f in futures):
                    if on_tick:
                        on_tick(self.stats)
                    time.sleep(tick)
            finally:
                self.stop.set()  # on any exception from on_tick: stop the workers, then re-raise
            for f in futures:
                f.result()  # surface a worker's unexpected error
        if on_tick:
            on_tick(self.stats)
        return self.stats

    def _worker(self, budget: Budget, limiter: RateLimiter) -> None:
        empty = 0
        while not self.stop.is_set() and empty < EMPTY_RECEIVES_TO_STOP:
            want = budget.take(10)
            if not want:
                return
            messages = self._receive(want)
            budget.give_back(want - len(messages))
            if not messages:
                empty += 1
                continue
            empty = 0
            limiter.acquire(len(messages))
            if self.stop.is_set():  # stopped while waiting for the rate limit: do not send
                self._release(messages)
                return
            self._move(messages)

    def _release(self, messages: list[dict[str, Any]]) -> None:
        """Make received, unsent messages visible in the DLQ again at once (best effort: else they
        reappear after visibility_timeout)."""
        from botocore.exceptions import BotoCoreError, ClientError

        with contextlib.suppress(BotoCoreError, ClientError):
            self.client.change_message_visibility_batch(QueueUrl=self.source_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)])

    def _receive(self, n: int) -> list[dict[str, Any]]:
        resp = self.client.receive_message(
            QueueUrl=self.source_url, MaxNumberOfMessages=n, WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout, MessageAttributeNames=["All"],
            AttributeNames=["All"])
        return list(resp.get("Messages", []))

    def _move(self, messages: list[dict[str, Any]]) -> None:
        for chunk in _size_chunks(messages):
            self._move_chunk(chunk)

    def _move_chunk(self, messages: list[dict[str, Any]]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        entries = [_send_entry(m, i, self.fifo) for i, m in enumerate(messages)]
        try:
            sent = self.client.send_message_batch(QueueUrl=self.dest_url, Entries=entries)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code.endswith("BatchRequestTooLong") and len(messages) > 1:
                # the endpoint counts differently (or has a lower limit): halve until it fits
                half = len(messages) // 2
                self._move_chunk(messages[:half])
                self._move_chunk(messages[half:])
                return
            self.stats.add(0, len(messages), 0, f"send: {e}")  # nothing was deleted: count it, go on
            return
        except BotoCoreError as e:
            self.stats.add(0, len(messages), 0, f"send: {e}")
            return
        ok = {s["Id"] for s in sent.get("Successful", [])}
        failed = sent.get("Failed", [])
        to_delete = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                     for i, m in enumerate(messages) if str(i) in ok]
        delete_failed = 0
        if to_delete:
            try:
                deleted = self.client.delete_message_batch(QueueUrl=self.source_url, Entries=to_delete)
                delete_failed = len(deleted.get("Failed", []))
            except (BotoCoreError, ClientError):  # sent but not deleted: a duplicate, never a loss
                delete_failed = len(to_delete)
        error = f"send: {failed[0].get('Code')}: {failed[0].get('Message', '')}" if failed else ""
        self.stats.add(len(ok), len(failed), delete_failed, error)
