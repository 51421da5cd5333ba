"""Ctrl-C at a confirmation prompt, at the moments that used to lose it.

The plain test (test_executor: ^C as soon as the prompt shows) lost its Ctrl-C a few times in a dozen
under CPU load: the main thread, preempted inside the builtin input(), took the SIGINT while input()
called the Python streams (cli.guard's masking stdout/stderr, their flush/fileno) and input()
discarded the KeyboardInterrupt (PyErr_Clear) before it sat down in read().  These tests put the
SIGINT exactly there, and at the other moment a wake-up can be lost (taken by a thread that does not
block it while the main thread waits), with a sitecustomize on the child's PYTHONPATH.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.engine.helpers import events, rb, run_logs, run_pty
from tests.timing import budget

# SIGINT raised in the main thread by the first call of stdin's fileno() made while Rich's prompt is
# reading its answer: the handler runs in that very call, as it did in input()'s own stream calls
_WHILE_READING = '''
import os, signal, sys

class _Stdin:
    def __init__(self, stream):
        self._stream, self._fired = stream, False

    def fileno(self):
        frame = sys._getframe(1)
        while frame is not None and not self._fired:
            if frame.f_code.co_name == "input" and "rich" in frame.f_code.co_filename:
                self._fired = True
                os.kill(os.getpid(), signal.SIGINT)
            frame = frame.f_back
        return self._stream.fileno()

    def __getattr__(self, name):
        return getattr(self._stream, name)

sys.stdin = _Stdin(sys.stdin)
'''

# a thread started before opsctl blocks SIGINT anywhere (as a library's could be) takes the SIGINT
# once the main thread has been waiting at the prompt for a moment: nothing interrupts that wait but
# the wake-up Python's handler writes
_OTHER_THREAD = '''
import signal, sys, threading, time

def _take_it():
    main = threading.main_thread().ident
    while True:
        time.sleep(0.05)
        frame = sys._current_frames().get(main)
        while frame is not None and not (frame.f_code.co_name == "input"
                                         and "rich" in frame.f_code.co_filename):
            frame = frame.f_back
        if frame is not None:
            time.sleep(0.5)  # the main thread is down in its wait by now
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            return

threading.Thread(target=_take_it, daemon=True).start()
'''


def _interrupted_at_prompt(opsctl_env: dict[str, str], tmp_path: Path, site: str) -> None:
    hook = tmp_path / "site"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(site)
    target = tmp_path / "flag"
    env = {**opsctl_env, "PYTHONPATH": str(hook)}
    try:  # nothing is typed at the prompt: only the SIGINT can end it
        r = run_pty(["run", rb("rb-401"), "-p", f"target={target}"], env, tmp_path, [("[y/n]", "")],
                    timeout=budget(10.0))
    except subprocess.TimeoutExpired:
        pytest.fail("the prompt was still waiting for an answer: the Ctrl-C was lost")
    assert r.answered, r.output  # the prompt was shown
    assert r.code == 130, r.output
    assert not target.exists()
    assert "Traceback" not in r.output
    [log] = run_logs(opsctl_env)
    evs = events(log)
    assert (evs[-1]["event"], evs[-1]["status"]) == ("run_end", "interrupted")


def test_ctrl_c_taken_as_the_prompt_starts_reading_is_not_lost(opsctl_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    _interrupted_at_prompt(opsctl_env, tmp_path, _WHILE_READING)


def test_ctrl_c_taken_by_another_thread_wakes_the_prompt(opsctl_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    _interrupted_at_prompt(opsctl_env, tmp_path, _OTHER_THREAD)
