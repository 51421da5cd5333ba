"""What a mutation reported while it was being applied: the renderer as actions see it
(``ctx.progress``), plus a memory on the step's state and in the run log (``apply_progress``
events), so that a run cut short (a double Ctrl-C, a killed process) still says how far the
change got.  Read-only progress (a scan, a wait) is shown, not kept."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from opsctl.stepexec import StepState


class ProgressLog:
    """The renderer as actions see it (``ctx.progress``), plus a memory: while a step applies a
    change, what its progress bar reports (completed, moved, failed...) is kept on the step's
    state and written to the run log (at most once a second, and at the end), so that a run cut
    short by a double Ctrl-C still records how far the mutation got."""

    def __init__(self, renderer: Any, audit: Any, state: StepState, step_id: str) -> None:
        self.renderer, self.audit, self.state, self.step_id = renderer, audit, state, step_id

    def log(self, step_id: str, message: str) -> None:
        self.renderer.log(step_id, message)

    @contextlib.contextmanager
    def progress(self, step_id: str, description: str, total: float | None) -> Iterator[Any]:
        with self.renderer.progress(step_id, description, total) as handle:
            tracked = _TrackedHandle(handle, self, description, total)
            try:
                yield tracked
            finally:
                tracked.flush(force=True)


class _TrackedHandle:
    def __init__(self, handle: Any, owner: ProgressLog, description: str, total: float | None) -> None:
        self.handle, self.owner = handle, owner
        self.completed = 0.0
        self.fields: dict[str, Any] = {}
        self.description, self.total = description, total
        self.logged_at = 0.0
        self.dirty = False

    def advance(self, n: float = 1, **fields: Any) -> None:
        self.completed += n
        self.fields.update(fields)
        self.handle.advance(n, **fields)
        self._keep()

    def update(self, *, total: float | None = None, completed: float | None = None,
               description: str | None = None, **fields: Any) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self.fields.update(fields)
        self.handle.update(total=total, completed=completed, description=description, **fields)
        self._keep()

    def _keep(self) -> None:
        state = self.owner.state
        if not state.applying:
            return  # read-only progress (a scan, a wait) is not a change
        state.progress = {"description": self.description, "completed": self.completed,
                          "total": self.total, **self.fields}
        self.dirty = True
        self.flush()

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.dirty and (force or now - self.logged_at >= 1.0):
            self.logged_at, self.dirty = now, False
            self.owner.audit.event("apply_progress", step=self.owner.step_id,
                                   progress=dict(self.owner.state.progress))


def progress_text(progress: dict[str, Any]) -> str:
    if not progress:
        return ""
    done = f"{progress.get('completed', 0):g}" + (f"/{progress['total']:g}" if progress.get("total") else "")
    extra = ", ".join(f"{k}={v}" for k, v in progress.items()
                      if k not in ("description", "completed", "total"))
    return f"{progress.get('description', '')}: {done}" + (f" ({extra})" if extra else "")
