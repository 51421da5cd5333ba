"""Client-side SQS mover: DLQ -> source queue, in batches, pipelined, exactly once with a journal.

Three stages connected by small queues, ``workers`` threads each: receivers (receive up to 10,
hidden for ``visibility_timeout``), senders (``send_message_batch`` to the destination) and deleters
(``delete_message_batch`` of exactly the entries whose send succeeded).  A message is deleted only
after a copy exists in the destination, so a crash at any point loses nothing; with a journal (see
``opsctl.actions.aws.ledger``) it is also sent at most once: the journal records ``sending`` before
and ``sent`` after each send, and a received message already ``sent`` is deleted, not sent again.
Overlapping the three round trips (and several batches) is what makes the mover several times
faster than a receive -> send -> delete loop when the network, not the server, is the limit.
Messages whose send failed are left hidden until their visibility expires so that a poison message
is not retried in a tight loop.  On stop, batches being sent finish (send, journal, delete) and
received but unsent batches are made visible again.

FIFO: the group id is kept, and the deduplication id is derived from the DLQ message id, so that a
re-run after a crash between send and delete is deduplicated by SQS (within its 5-minute window).
Order inside a group is kept because SQS hands a group's next messages to nobody until the earlier
ones are deleted, which happens only after they were sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from opsctl.backends.sqs_flow import Budget, Journal, MoveStats, NoJournal, RateLimiter

# consecutive empty receives after which a worker believes the queue is drained; with long polling
# (wait_seconds > 0) SQS asks all its servers, so one empty answer means nothing visible is left
EMPTY_RECEIVES_TO_STOP = 1

# total payload of one send_message_batch: 256 KiB is SQS's historical limit (1 MiB since 2025, and
# in moto); large DLQ messages are sent in smaller batches instead of failing as a whole
BATCH_BYTES = 256 * 1024


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


_DONE = object()


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
    journal: Journal = field(default_factory=NoJournal)
    resend_unknown: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    stats: MoveStats = field(default_factory=MoveStats)
    _unknown: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _send_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _inflight: set[str] = field(default_factory=set, repr=False)  # being sent by a sender now

    def run(self, on_tick: Callable[[MoveStats], None] | None = None, tick: float = 0.2) -> MoveStats:
        """Move until drained, budget spent or ``stop`` is set; ``on_tick`` runs in the calling
        thread (progress, cancellation checks: it may raise, the stages are stopped first, and
        whatever was being sent is finished and recorded before this returns or raises)."""
        budget = Budget(self.max_messages)
        limiter = RateLimiter(self.rate, self.stop)
        n = self.workers
        to_send: queue.Queue[Any] = queue.Queue(maxsize=n)
        to_delete: queue.Queue[Any] = queue.Queue()
        with ThreadPoolExecutor(max_workers=3 * n, thread_name_prefix="redrive") as pool:
            receivers = [pool.submit(self._receiver, budget, to_send, to_delete) for _ in range(n)]
            senders = [pool.submit(self._sender, limiter, to_send, to_delete) for _ in range(n)]
            deleters = [pool.submit(self._deleter, to_delete) for _ in range(n)]
            try:
                try:
                    while not all(f.done() for f in receivers):
                        if on_tick:
                            on_tick(self.stats)
                        wait(receivers, timeout=tick)  # returns as soon as the last one ends
                finally:
                    if not all(f.done() for f in receivers):
                        self.stop.set()  # on any exception from on_tick: stop receiving
                    for f in receivers:
                        f.exception()  # wait for them
                    for _ in senders:
                        to_send.put(_DONE)
                    for f in senders:
                        f.exception()
                    for _ in deleters:
                        to_delete.put(_DONE)
            finally:
                self.stop.set()
                # messages left alone (unknown outcome) are shown in the DLQ again, not hidden
                held = list(self._unknown.values())
                for i in range(0, len(held), 10):
                    self._release(held[i:i + 10])
            for f in receivers + senders + deleters:
                f.result()  # surface a stage's unexpected error
        if on_tick:
            on_tick(self.stats)
        return self.stats

    # ---- stages --------------------------------------------------------------------------------
    def _receiver(self, budget: Budget, to_send: queue.Queue[Any], to_delete: queue.Queue[Any]) -> None:
        empty = 0
        while not self.stop.is_set() and empty < EMPTY_RECEIVES_TO_STOP:
            want = budget.take(10)
            if not want and not budget.spent:
                # the last messages of the budget are being received by other workers: a receive
                # now would hide them from those (who would find the DLQ "empty" and stop) while
                # this one hands them back, and the redrive would end with them still in the DLQ
                self.stop.wait(0.005)
                continue
            # budget spent: receive on only to find messages an earlier run sent but did not delete
            reconciling = not want
            if reconciling and not self.journal.pending():
                return
            messages = self._receive(want or 10)
            if not messages:
                budget.settle(want, 0)
                empty += 1
                continue
            empty = 0
            fresh, again, unknown = [], [], 0
            for m in messages:
                if m["MessageId"] in self.journal.sent:
                    again.append(m)  # already in the destination: only the delete is missing
                elif m["MessageId"] in self.journal.sending and not self.resend_unknown:
                    unknown += 1  # may be in the destination: left hidden, reported
                else:
                    fresh.append(m)
            if reconciling:
                if fresh:
                    self._release(fresh)  # not part of this redrive's budget
                fresh = []
                if not again:
                    empty += 1
            budget.settle(want, min(want, len(fresh)))
            if again:
                to_delete.put(("reconcile", again))
            seen_before = True
            if unknown:
                held = {m["MessageId"]: m for m in messages if m["MessageId"] in self.journal.sending}
                with self.stats.lock:
                    seen_before = held.keys() <= self._unknown.keys()
                    self._unknown.update(held)
                    self.stats.unknown = len(self._unknown)
            if fresh:
                to_send.put(fresh)
            elif not again and seen_before:
                # only messages left alone, and back again after their visibility timeout: the
                # rest is drained (or this would never end)
                empty += 1

    def _sender(self, limiter: RateLimiter, to_send: queue.Queue[Any], to_delete: queue.Queue[Any]) -> None:
        error: BaseException | None = None
        while True:
            messages = to_send.get()
            if messages is _DONE:
                break
            if self.stop.is_set() or error:  # stopped before this batch was sent: back to the DLQ
                self._release(messages)
                continue
            limiter.acquire(len(messages))
            if self.stop.is_set():
                self._release(messages)
                continue
            messages = self._not_yet_sent(messages, to_delete)
            try:
                for chunk in _size_chunks(messages):
                    sent = self._send_chunk(chunk)
                    if sent:
                        to_delete.put(("moved", sent))
            except BaseException as e:  # a bug: stop everything, but keep draining the queue so
                error = e               # that no receiver blocks on it
                self.stop.set()
            finally:
                with self._send_lock:
                    self._inflight -= {m["MessageId"] for m in messages}
        if error:
            raise error

    def _not_yet_sent(self, messages: list[dict[str, Any]],
                      to_delete: queue.Queue[Any]) -> list[dict[str, Any]]:
        """A message that waited in the pipeline longer than its visibility timeout is received
        again by another receiver: this copy carries the newest receipt handle.  If another sender
        already sent it, only the delete is missing (with this handle, the valid one); if another
        sender is sending it now, this copy goes back to the DLQ, to be reconciled when it is
        received again.  Either way it is never sent twice."""
        with self._send_lock:
            fresh = [m for m in messages if m["MessageId"] not in self.journal.sent
                     and m["MessageId"] not in self._inflight]
            ids = {m["MessageId"] for m in fresh}
            sent = [m for m in messages if m["MessageId"] in self.journal.sent]
            busy = [m for m in messages if m["MessageId"] not in ids and m not in sent]
            self._inflight |= ids
        if sent:
            to_delete.put(("reconcile", sent))
        if busy:
            self._release(busy)
        return fresh

    def _deleter(self, to_delete: queue.Queue[Any]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while True:
            item = to_delete.get()
            if item is _DONE:
                return
            kind, messages = item
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            try:
                got = self.client.delete_message_batch(QueueUrl=self.source_url, Entries=entries)
                bad = {f["Id"] for f in got.get("Failed", [])}
            except (BotoCoreError, ClientError):  # sent but not deleted: the journal knows it
                bad = {e["Id"] for e in entries}
            gone = [m["MessageId"] for i, m in enumerate(messages) if str(i) not in bad]
            if gone:
                self.journal.record("deleted", ids=gone)
            if kind == "reconcile":
                self.stats.add(reconciled=len(gone), delete_failed=len(bad))
            elif bad:
                self.stats.add(delete_failed=len(bad))

    # ---- calls ---------------------------------------------------------------------------------
    def _release(self, messages: list[dict[str, Any]]) -> None:
        """Make received, unsent messages visible in the DLQ again at once (best effort: else they
        reappear after visibility_timeout)."""
        from botocore.exceptions import BotoCoreError, ClientError

        with contextlib.suppress(BotoCoreError, ClientError):
            self.client.change_message_visibility_batch(QueueUrl=self.source_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)])

    def _receive(self, n: int) -> list[dict[str, Any]]:
        # only the system attribute a copy needs (a FIFO message's group): every other one is
        # computed by the server and parsed by the client for nothing, on every batch
        resp = self.client.receive_message(
            QueueUrl=self.source_url, MaxNumberOfMessages=n, WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout, MessageAttributeNames=["All"],
            **({"AttributeNames": ["MessageGroupId"]} if self.fifo else {}))
        return list(resp.get("Messages", []))

    def _send_chunk(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one chunk; returns the messages the destination accepted (recorded as sent)."""
        from botocore.exceptions import BotoCoreError, ClientError

        ids = [m["MessageId"] for m in messages]
        self.journal.record("sending", ids=ids)  # again after a halving (send_failed cleared it)
        entries = [_send_entry(m, i, self.fifo) for i, m in enumerate(messages)]
        try:
            sent = self.client.send_message_batch(QueueUrl=self.dest_url, Entries=entries)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            self.journal.record("send_failed", ids=ids)  # refused as a whole: nothing was sent
            if code.endswith("BatchRequestTooLong") and len(messages) > 1:
                # the endpoint counts differently (or has a lower limit): halve until it fits
                half = len(messages) // 2
                return self._send_chunk(messages[:half]) + self._send_chunk(messages[half:])
            self.stats.add(failed=len(messages), error=f"send: {e}")
            return []
        except BotoCoreError as e:
            # no answer: the copies may or may not exist; the journal keeps them as "sending",
            # so they are never sent again blindly
            self.stats.add(failed=len(messages), error=f"send: {e}")
            return []
        ok = {s["Id"]: s.get("MessageId") for s in sent.get("Successful", [])}
        failed = sent.get("Failed", [])
        accepted = [m for i, m in enumerate(messages) if str(i) in ok]
        if accepted:
            self.journal.record("sent", ids=[m["MessageId"] for m in accepted],
                                copies=[ok[str(i)] for i, m in enumerate(messages) if str(i) in ok])
        if failed:
            self.journal.record("send_failed", ids=[messages[int(f["Id"])]["MessageId"] for f in failed])
        error = f"send: {failed[0].get('Code')}: {failed[0].get('Message', '')}" if failed else ""
        self.stats.add(moved=len(accepted), failed=len(failed), error=error)
        return accepted
