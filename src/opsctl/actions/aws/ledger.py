"""The redrive ledger: what an SQS redrive has sent, so that an interrupted redrive resumes
exactly once from the operator's point of view.

One append-only JSON-lines file per (DLQ, destination queue) pair in ``$OPSCTL_STATE_DIR/sqs-redrive/``.
A *session* starts with a plan (``planned`` messages) and stays open until a run finishes it; a run
that finds an open session (``--resume``, or a plain re-run) continues it.  For every batch the mover
records, in this order:

* ``sending`` (the DLQ message ids) before ``send_message_batch``,
* ``sent`` (DLQ id -> destination id) once the destination accepted the copies,
* ``deleted`` once they are gone from the DLQ.

A DLQ message whose id is already ``sent`` (a stop between send and delete, a failed delete, or SQS
delivering a message twice) is deleted without being sent again: no duplicate.  One that is
``sending`` without an outcome (the process was killed during the send) may or may not be in the
destination: it is left in the DLQ and reported as ``unknown`` unless ``resend_unknown`` is set.
Each line is flushed when written, so a killed process loses nothing that it had recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any


def ledger_path(source_arn: str, dest_arn: str) -> Path:
    from opsctl.audit import state_dir

    key = hashlib.sha256(f"{source_arn}>{dest_arn}".encode()).hexdigest()[:20]
    return state_dir() / "sqs-redrive" / f"{key}.jsonl"


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.session: dict[str, Any] | None = None  # the open session's header
        self.sent: dict[str, int] = {}  # DLQ message id -> times sent, all sessions (reconciling)
        self.session_sent: dict[str, int] = {}  # the same, in the open session (the counts)
        self.deleted: set[str] = set()
        self.sending: set[str] = set()  # sending recorded, no outcome yet
        self.failed: set[str] = set()
        self._file: Any = None  # opened on the first record, once (not once per batch)
        self._load()

    # ---- reading -------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: everything before it counts
                continue
            self._apply(rec)

    def _apply(self, rec: dict[str, Any]) -> None:
        op = rec.get("op")
        if op == "session":
            self.session, self.session_sent = dict(rec), {}
        elif op == "closed":
            self.session = None
        elif op == "sending":
            self.sending.update(rec["ids"])
        elif op == "sent":
            for i in rec["ids"]:
                self.sent[i] = self.sent.get(i, 0) + 1
                self.session_sent[i] = self.session_sent.get(i, 0) + 1
                self.sending.discard(i)
                self.failed.discard(i)
        elif op == "send_failed":
            for i in rec["ids"]:
                self.sending.discard(i)
                self.failed.add(i)
        elif op == "deleted":
            self.deleted.update(rec["ids"])

    @property
    def open(self) -> bool:
        return self.session is not None

    @property
    def moved(self) -> int:
        """Distinct DLQ messages the destination accepted in this session."""
        return len(self.session_sent)

    @property
    def duplicates(self) -> int:
        """Copies sent beyond the first (0 by construction; counted, not assumed)."""
        return sum(n - 1 for n in self.session_sent.values())

    def pending(self) -> int:
        """Sent, but their delete from the DLQ is not recorded: deleted (not re-sent) when seen."""
        with self._lock:
            return len(self.sent.keys() - self.deleted)

    @property
    def unknown(self) -> set[str]:
        return set(self.sending)

    def summary(self) -> dict[str, Any]:
        s = self.session or {}
        return {"open": self.open, "planned": s.get("planned"), "started": s.get("started"),
                "run": s.get("run"), "moved": self.moved, "duplicates": self.duplicates,
                "sent_not_deleted": len(set(self.sent) - self.deleted), "unknown": len(self.sending),
                "ledger": str(self.path)}

    # ---- writing -------------------------------------------------------------------------------
    def record(self, op: str, **fields: Any) -> None:
        rec = {"op": op, "t": round(time.time(), 3), **fields}
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None or self._file.closed:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a")  # noqa: SIM115 - kept open for the redrive's lines
            self._file.write(line)  # one write per line, flushed: a kill leaves whole lines
            self._file.flush()
            self._apply(rec)

    def start(self, planned: int, run: str, source: str, dest: str) -> None:
        self.record("session", planned=planned, run=run, source=source, dest=dest,
                    started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def close(self, reason: str) -> None:
        if self.open:
            self.record("closed", reason=reason, moved=self.moved, duplicates=self.duplicates)
        with self._lock:
            if self._file is not None:
                self._file.close()
