"""The CLI's error boundary without Typer: streams that never raise and mask secrets, the one-line
messages and exit codes of errors, crash reports.  ``cli.main`` uses it for every command, and the
`opsctl validate` fast path (``cli.validate_fast``, which imports no Typer) too."""

from __future__ import annotations

import contextlib
import os
import sys


class _Masked:
    """stdout/stderr that mask every registered secret (errors.mask) whatever prints them."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from opsctl.errors import mask

        return self._stream.write(mask(text))  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def hostile_streams() -> None:
    """PYTHONIOENCODING=ascii or a C locale: never a UnicodeEncodeError (unprintable characters
    become escapes); closed streams: nothing to write to; and secrets masked everywhere."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
            continue
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")
        if not isinstance(stream, _Masked):
            setattr(sys, name, _Masked(stream))


def quiet_exit(signum: int, frame: object) -> None:
    """SIGINT before the command runs (imports) or after it ended: exit 130, no traceback."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write("interrupted\n")
    os._exit(130)


def crash() -> int:
    """An unexpected exception (being handled): one line on stderr, the traceback in a file."""
    import traceback

    from opsctl.audit import write_crash
    from opsctl.errors import mask

    saved = write_crash(traceback.format_exc() + "\n")
    where = f"the traceback could not be saved ({saved})" if saved.startswith("not saved") \
        else f"the traceback is in {saved}"
    exc = sys.exc_info()[1]
    _stderr(mask(f"internal error: {type(exc).__name__}: {exc} ({where}; please report it)"))
    return 1


def _stderr(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
