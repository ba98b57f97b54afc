"""Mapping another process's small shared-memory file (counters, registry entry, durable
positions) read-only, without ever hanging or mapping something that is not that file."""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

__all__ = ["map_readonly"]


def map_readonly(path: Path, min_size: int, length: int = 0) -> mmap.mmap | None:
    """``path`` mapped read-only, if it is a regular file of at least ``min_size`` bytes.

    ``length`` bytes are mapped (0: the whole file). Anything else at the path (a directory, a
    FIFO - opened non-blocking, so it cannot hang the caller -, a file still being sized) is None.

    Raises:
        OSError: the path cannot be opened or mapped (FileNotFoundError when it is absent).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < min_size:
            return None
        return mmap.mmap(fd, length or st.st_size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
