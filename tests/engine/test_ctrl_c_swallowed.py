"""Ctrl-C at the moments where Python itself would lose it or dress it up as a crash.

Found by sending SIGINT at random moments of `opsctl run --dry-run`'s first quarter second under
CPU load (tests/engine/test_secrets_hostile.py's early Ctrl-C test, which failed now and then):

* while a class was being created (`platform` imported lazily): Python 3.11 wraps the
  KeyboardInterrupt in "RuntimeError: Error calling __set_name__", which the boundary reported as
  an internal error, exit 1;
* inside a weakref callback of the import machinery: "Exception ignored in ... KeyboardInterrupt",
  and the run went on to its end and exited 0.

Both moments are reproduced here exactly, in a child process running `cli.guard.boundary`.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.timing import budget

WRAPPED = """
from opsctl.cli.guard import boundary

class Interrupting:
    def __set_name__(self, owner, name):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the class was being created

def command():
    class Created:
        field = Interrupting()
    return 0

boundary(command)
"""

IN_A_CALLBACK = """
import time, weakref
from opsctl.cli.guard import boundary

class Thing:
    pass

def callback(ref):
    raise KeyboardInterrupt  # as if Ctrl-C arrived while the callback ran: Python cannot raise it

def command():
    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing  # the callback runs here
    time.sleep(30)  # the rest of a run: must not be reached
    return 0

boundary(command)
"""


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=budget(60))


def test_ctrl_c_wrapped_by_python_is_an_interruption_not_a_crash() -> None:
    out = _child(WRAPPED)
    assert out.returncode == 130, out.stderr
    assert out.stderr.strip() == "interrupted"


def test_ctrl_c_inside_a_callback_is_delivered_not_lost() -> None:
    start = time.monotonic()
    out = _child(IN_A_CALLBACK)
    assert time.monotonic() - start < budget(20)  # the 30 s sleep was cut short
    assert out.returncode == 130, out.stderr
    assert out.stderr.strip() == "interrupted"  # no "Exception ignored", no traceback


def test_ctrl_c_while_a_runbook_is_checked_is_not_a_broken_runbook(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same wrapped Ctrl-C inside the check of a runbook (a dataclass module imported lazily)
    was reported as "internal error while checking this file", exit 2: it is a Ctrl-C."""
    from opsctl import catalog

    def interrupted(*args: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'errors'") from e

    monkeypatch.setattr(catalog, "_check", interrupted)
    with pytest.raises(KeyboardInterrupt):  # (a bug is still that file's error: test_validate_limits)
        catalog.check_bytes(b"id: rb-001\n", "rb-001-x.yaml")
