"""Reading a runbook's bytes without hanging on what is not a file (imports nothing heavy: the
warm `opsctl validate` and shell completion use it too)."""

from __future__ import annotations

import errno
import os
import stat


def read_regular(path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of a regular file; OSError for anything else: a FIFO named
    ``x.yaml`` would block `open` until a writer comes (forever, in CI), a device never ends."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            return fh.read(limit)
    finally:
        if fd >= 0:
            os.close(fd)
