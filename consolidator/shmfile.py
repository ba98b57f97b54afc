"""The two ways this package maps a shared-memory file.

`create_mapped` makes one: under a temporary name, sized with ``posix_fallocate`` (a full tmpfs
is an error here, never a SIGBUS later), mapped, filled by the owner (magic last), then renamed
into place, so a reader never sees a half-made file and a mapped file is never truncated or
resized. The ring writer, the counters file, a reader-registry entry, the durable positions and
the symbol table are made this way.

`map_readonly` maps another process's small file (counters, registry entry, durable positions)
read-only, without ever hanging or mapping something that is not that file.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["create_mapped", "map_readonly"]


def create_mapped(
    path: Path,
    size: int,
    fill: Callable[[int, mmap.mmap], None],
    *,
    mode: int = 0o640,
    map_flags: int = mmap.MAP_SHARED,
) -> tuple[int, mmap.mmap]:
    """Create ``path`` (``size`` bytes, ``mode`` whatever the umask) and rename it into place.

    The file is made as ``.NAME.tmp-PID`` beside ``path``, allocated, mapped, handed to
    ``fill(fd, mapping)`` (which writes the content, the magic last, and may take a lock on the
    descriptor), then renamed over ``path``. On any failure the temporary file is removed and the
    error propagates; nothing is left behind.

    Returns:
        The open descriptor and the shared read-write mapping; the caller closes both.

    Raises:
        OSError: creating, allocating (ENOSPC, EDQUOT, EFBIG when it does not fit), mapping or
            renaming failed; or whatever ``fill`` raised.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
    mm: mmap.mmap | None = None
    try:
        os.fchmod(fd, mode)
        os.posix_fallocate(fd, 0, size)
        mm = mmap.mmap(fd, size, flags=map_flags)
        fill(fd, mm)
        os.rename(tmp, path)
    except BaseException:
        if mm is not None:
            with contextlib.suppress(BufferError):  # a view ``fill`` still holds
                mm.close()
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return fd, mm


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
