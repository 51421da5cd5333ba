"""What the SQS mover's workers share: counts (``MoveStats``), the journal they record sends in
(``Journal``), the message budget they reserve from (``Budget``) and the rate they keep
(``RateLimiter``).  The stages themselves are in ``sqs_redrive``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class MoveStats:
    moved: int = 0  # sent to the destination by this run
    failed: int = 0  # send failed: message left in the source, visible again later
    delete_failed: int = 0  # sent but not deleted: deleted (not re-sent) by the next run
    reconciled: int = 0  # sent by an earlier run, deleted from the DLQ now without a new copy
    unknown: int = 0  # receipts of messages whose earlier send has no recorded outcome: left alone
    batches: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, moved: int = 0, failed: int = 0, delete_failed: int = 0, error: str = "",
            reconciled: int = 0, unknown: int = 0) -> None:
        with self.lock:
            self.moved += moved
            self.failed += failed
            self.delete_failed += delete_failed
            self.reconciled += reconciled
            self.unknown += unknown
            self.batches += 1 if moved or failed else 0
            if error and len(self.errors) < 5:
                self.errors.append(error)


class Journal(Protocol):
    """Where the mover records its sends (``opsctl.actions.aws.ledger.Ledger``)."""

    sent: dict[str, int]
    sending: set[str]

    def record(self, op: str, **fields: Any) -> None: ...

    def pending(self) -> int:
        """Messages sent whose delete from the DLQ is not recorded (to reconcile)."""
        ...


class NoJournal:
    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.sending: set[str] = set()

    def record(self, op: str, **fields: Any) -> None:
        pass

    def pending(self) -> int:
        return 0


class Budget:
    """Shared message budget (max_messages) that workers reserve from before each receive, and
    settle after it (what the receive did not use goes back)."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._reserved = 0  # taken by receives still under way
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        with self._lock:
            got = min(n, self._left)
            self._left -= got
            self._reserved += got
            return got

    def settle(self, taken: int, used: int) -> None:
        with self._lock:
            self._left += taken - used
            self._reserved -= taken

    @property
    def spent(self) -> bool:
        """Every message of the budget was received: none left, no receive under way that may give
        some back."""
        with self._lock:
            return self._left <= 0 and self._reserved == 0


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
