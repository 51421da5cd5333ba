"""Ctrl-C must reach the main thread, and the prompt waiting there.

A process-directed SIGINT goes to any thread that does not block it.  Python runs the handler in
the main thread anyway, but a main thread blocked in a system call (``input()`` at a confirmation
prompt) is woken only by a signal delivered to that very thread: if a worker thread takes it, the
prompt stays blocked and Ctrl-C does nothing.  Threads inherit the signal mask of the thread that
starts them, so every thread opsctl (or Rich, for its live display) starts from the main thread is
started with SIGINT blocked: they and the threads they start never take it.

A confirmation prompt does not read its answer with the builtin input(), which swallows a Ctrl-C
taken while it calls the (Python) output streams: see TerminalLine.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TextIO


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in the calling (main) thread for the duration; threads started meanwhile keep
    it blocked for good.  A Ctrl-C pressed meanwhile is delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class TerminalLine:
    """What Rich's prompts read the answer from (their ``stream``), instead of the builtin input().

    input() first flushes sys.stdout and sys.stderr and asks for their fileno(), and throws away
    any exception raised meanwhile (``PyErr_Clear``).  opsctl's stdout and stderr are Python objects
    (cli.guard masks secrets in them), so a Ctrl-C landing during those calls became a
    KeyboardInterrupt that input() discarded before it sat down in read() for a line: the prompt
    stayed, the step thread kept waiting for its answer.  Under CPU load the main thread is easily
    preempted there, right after the prompt was printed.  Here the flushes are ordinary calls (a
    KeyboardInterrupt propagates), and the wait for the line is a select() that any signal wakes
    (signal.set_wakeup_fd): a Ctrl-C taken just before the wait began, or by another thread, is not
    slept through either.  The line itself is read by the terminal's line discipline as before
    (canonical mode: Enter's ``\\r`` ends it) and returned as input() returns it: without its
    newline (a bare Enter is "", the prompt's default), EOFError at the end of input.
    """

    def readline(self) -> str:
        for out in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError, AttributeError):
                out.flush()
        _wait_for_line(sys.stdin)
        line = sys.stdin.readline()
        if not line:
            raise EOFError("end of input at a prompt")
        return line.removesuffix("\n")  # as input() returns it: Rich takes "" for the default


def _wait_for_line(stream: TextIO) -> None:
    """Return once `stream` (a terminal) has a line to read; a signal's Python handler runs meanwhile,
    so Ctrl-C raises KeyboardInterrupt here.  Not a terminal, not the main thread, or not POSIX (where
    select() takes only sockets): nothing to wait for here (the read that follows waits)."""
    if threading.current_thread() is not threading.main_thread() or os.name != "posix":
        return
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    if not os.isatty(fd):  # a pipe's lines may already sit in the stream's buffer, unseen by select()
        return
    woken, wake = os.pipe()
    os.set_blocking(woken, False)
    os.set_blocking(wake, False)
    previous = signal.set_wakeup_fd(wake)
    try:
        # a terminal in canonical mode is readable once a whole line (or end of input) is there
        while fd not in select.select([fd, woken], [], [])[0]:
            with suppress(BlockingIOError):
                os.read(woken, 512)  # a signal woke us: its handler has run (Ctrl-C raised) by now
    finally:
        signal.set_wakeup_fd(previous)
        os.close(woken)
        os.close(wake)
