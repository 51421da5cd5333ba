"""The CLI's error boundary without Typer: streams that never raise and mask secrets, the one-line
messages and exit codes of errors, crash reports.  ``cli.main`` runs every Typer command inside
``boundary``, and the fast paths (``cli.fastpath``, which build no Typer command) do too."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn


def boundary(command: Callable[[], object],
             other: Callable[[Exception], int | None] = lambda e: None, *,
             exit_now: bool = False) -> NoReturn:
    """Run a command and exit with its code; every error becomes one message and an exit code
    (see errors.ExitCode).  ``other`` answers the exceptions of the caller's framework (Typer's
    Exit, Abort, usage errors): their exit code, or None for a crash.  ``exit_now``: the command
    leaves nothing to clean up (its files are written and closed), so the process ends without the
    interpreter's teardown, which frees the loaded engine object by object (~40 ms of a 0.12 s
    `opsctl validate` of one file)."""
    from opsctl.errors import ExitCode, OpsctlError, ValidationFailed, caused_by_ctrl_c

    hostile_streams()
    sys.unraisablehook = _unraisable
    try:
        # from here on Ctrl-C is a KeyboardInterrupt again (opsctl.__main__ exits quietly before)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = command()
    except ValidationFailed as e:
        for err in e.errors:
            _stderr(str(err))
        _stderr(f"{len(e.errors)} error(s); fix the runbook (`opsctl validate` checks it)")
        code = e.exit_code
        _json_error(code, "invalid", str(e), [err.as_dict() for err in e.errors])
    except OpsctlError as e:
        _stderr(f"error: {e}")
        code = e.exit_code
        _json_error(code, "backend_error" if code == ExitCode.BACKEND else "invalid", str(e))
    except KeyboardInterrupt:
        _stderr("interrupted")
        code = ExitCode.INTERRUPTED
    except Exception as e:
        if caused_by_ctrl_c(e):  # Python wrapped it: a Ctrl-C, not a crash
            _stderr("interrupted")
            code = ExitCode.INTERRUPTED
        else:
            handled = other(e)
            code = crash() if handled is None else handled
    # a Ctrl-C from now on (interpreter shutdown) must not print a traceback either
    signal.signal(signal.SIGINT, quiet_exit)
    code = code if isinstance(code, int) else 0
    if exit_now:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _json_error(code: int, status: str, message: str, errors: list[dict[str, object]] | None = None) -> None:
    """With `run -o json`, automation gets a JSON document even when the run never started."""
    argv = sys.argv[1:]
    wants_json = any(a in ("--output=json", "-ojson") for a in argv) or any(
        a in ("-o", "--output") and b == "json" for a, b in zip(argv, argv[1:], strict=False))
    if wants_json and argv[:1] in (["run"], ["plan"], ["apply"]):
        import json

        doc: dict[str, object] = {"status": status, "exit_code": code, "message": message}
        if errors:
            doc["errors"] = errors
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            sys.stdout.flush()


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


_default_unraisable = sys.unraisablehook


def _unraisable(unraisable: object) -> None:
    """A Ctrl-C that landed in a callback Python cannot raise from (a weakref callback of the
    import machinery: "Exception ignored in ... KeyboardInterrupt") is delivered again to the main
    thread instead of being lost (the run went on for its whole length and exited 0)."""
    exc_type = getattr(unraisable, "exc_type", None)
    if isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt):
        import threading

        # the signal again, to the main thread (a blocking call there wakes up), from another
        # thread a moment later: raised here, in the hook, it would be lost again
        main = threading.main_thread().ident or 0
        timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGINT))
        timer.daemon = True
        timer.start()
        return
    _default_unraisable(unraisable)  # type: ignore[arg-type]


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
