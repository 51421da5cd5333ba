"""Ctrl-C must reach the main thread.

A process-directed SIGINT goes to any thread that does not block it.  Python runs the handler in
the main thread anyway, but a main thread blocked in a system call (``input()`` at a confirmation
prompt) is woken only by a signal delivered to that very thread: if a worker thread takes it, the
prompt stays blocked and Ctrl-C does nothing.  Threads inherit the signal mask of the thread that
starts them, so every thread opsctl (or Rich, for its live display) starts from the main thread is
started with SIGINT blocked: they and the threads they start never take it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
