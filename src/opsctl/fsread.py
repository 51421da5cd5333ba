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
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        # sized by the file, not by the limit: a 256 KiB buffer per read cost ~60 us of a 13 KB
        # runbook's check (allocated, then shrunk); a file that grew meanwhile is read on, to the limit
        chunks = [os.read(fd, min(limit, st.st_size + 1))]
        total = len(chunks[0])
        while chunks[-1] and total < limit:
            chunks.append(os.read(fd, min(limit - total, 1 << 16)))
            total += len(chunks[-1])
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)
