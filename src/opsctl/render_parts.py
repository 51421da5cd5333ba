"""Small parts of the human renderer (render.py): an action's progress handle, and the stream that
blanks out secret values whatever prints them."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress


class _Handle:
    def __init__(self, progress: Progress | None, task: Any, console: Console, desc: str) -> None:
        self._bar, self.task, self.console, self.desc = progress, task, console, desc
        self.completed = 0.0
        self.fields: dict[str, Any] = {}

    def advance(self, n: float = 1, **fields: Any) -> None:
        self.completed += n
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self.task, advance=n, info=self._info())

    def update(self, *, total: float | None = None, completed: float | None = None,
               description: str | None = None, **fields: Any) -> None:
        self.fields.update(fields)
        if completed is not None:
            self.completed = completed
        if self._bar is not None:
            kw: dict[str, Any] = {"info": self._info()}
            if total is not None:
                kw["total"] = total
            if completed is not None:
                kw["completed"] = completed
            if description is not None:
                kw["description"] = description
            self._bar.update(self.task, **kw)

    def _info(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.fields.items())


class _Scrubbed:
    """A text stream that blanks out the values of secret params, whatever prints them."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.secrets: tuple[str, ...] = ()

    def write(self, text: str) -> int:
        from opsctl.errors import mask

        return self.stream.write(mask(text, self.secrets))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
