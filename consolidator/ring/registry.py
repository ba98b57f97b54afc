"""The reader registry: who reads a feed's rings, how far each has got, and whether it still runs.

Every ring reader that wants to be seen (mdtail, the flusher, batch consumers) registers one small
shared-memory file and stores its read position into it after each batch; mdstat and the exporter
list the files to show the slowest reader's lag. The writer never looks at the registry: readers
stay invisible to the hot path.

Directory ``{shm_dir}/{feed}/readers/``, created by the feed's writer (`make_registry_dir`) with
mode 2770: group-writable so that any user in the ``consolidator`` group can register, setgid so
that every entry belongs to that group whoever created it. A user who cannot write there (or a
feed whose writer made no such directory) reads the rings all the same, unregistered:
`register_reader` returns None and says nothing.

One file per registered reader, ``{stream}.{pid}.{token}``, mode 0640, 256 bytes, created under a
temporary name and renamed into place. Integers little-endian::

    offset  size  field             meaning
    ------  ----  ----------------  --------------------------------------------------------------
       0      8   magic "CNSLREAD"  written LAST (then renamed in): never seen half-written
       8      4   version           REGISTRY_VERSION; listers skip any other
      12      4   (reserved)
      16      8   pid               the registering process
      24      8   pid_start_ticks   its start time (``/proc/PID/stat`` field 22, clock ticks since
                                    boot): with the pid it identifies the process across pid reuse
      32      8   registered_ns     wall time of registration
      40     24   (reserved)
      64     32   stream            UTF-8, NUL padded
      96     64   name              UTF-8, NUL padded (truncated to 64 bytes)
     --- hot words, one cache line, stored by the registered reader only ---------------------------
     192      8   position          the next sequence number it will read (-1: not reported yet)
     200      8   lost              records it has lost (lapped, ring replaced), in total
     208      8   heartbeat_ns      wall time of its last `ReaderSlot.update`
     216     40   (padding to 256)

The hot words are stored with plain 8-byte stores through a ``memoryview`` cast to ``'q'`` (one
``memcpy`` of 8 aligned bytes in CPython: a single store on x86-64), never ``struct.pack_into``,
which zero-fills its target and then packs (two stores: a lister could see a transient 0). A lister
loads each word whole; two words may come from different updates, which is harmless here.

**Alive** means the pid exists, is not a zombie, and started at ``pid_start_ticks``: a recycled
pid belongs to another process and the entry is dead. (Listers must share the registering
process's pid namespace and see its ``/proc`` entry; ``hidepid`` mounts make others' readers look
dead, which is why pruning also waits for the heartbeat to age.)

**Dead entries** stay listed, with ``alive=False``, so mdstat and the exporter show a reader that
died without closing (``kill -9``, a crash). An entry is deleted by `ReaderSlot.close` (an orderly
exit), or by `prune_readers` once its process is gone *and* its heartbeat is older than
`PRUNE_AFTER_NS` (one minute): the next reader that registers on the feed prunes, and so does the
feed's writer when it starts. Listing never deletes anything (mdstat may run as a read-only user).
"""

from __future__ import annotations

import logging
import mmap
import os
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consolidator.shmfile import create_mapped, map_readonly

__all__ = [
    "DIR_MODE",
    "NO_POSITION",
    "PRUNE_AFTER_NS",
    "READERS_DIR",
    "REGISTRY_VERSION",
    "ReaderInfo",
    "ReaderSlot",
    "list_readers",
    "make_registry_dir",
    "process_start_ticks",
    "prune_readers",
    "register_reader",
]

log = logging.getLogger(__name__)

READERS_DIR: Final = "readers"
DIR_MODE: Final = 0o2770
FILE_MODE: Final = 0o640
FILE_SIZE: Final = 256
REGISTRY_VERSION: Final = 1
MAGIC: Final = int.from_bytes(b"CNSLREAD", "little", signed=True)
NO_POSITION: Final = -1
PRUNE_AFTER_NS: Final = 60_000_000_000
NAME_BYTES: Final = 64
STREAM_BYTES: Final = 32

OFF_POSITION: Final = 192
OFF_LOST: Final = 200
OFF_HEARTBEAT: Final = 208

W_MAGIC: Final = 0
W_PID: Final = 16 // 8
W_PID_START: Final = 24 // 8
W_REGISTERED: Final = 32 // 8
W_POSITION: Final = OFF_POSITION // 8
W_LOST: Final = OFF_LOST // 8
W_HEARTBEAT: Final = OFF_HEARTBEAT // 8

_VERSION: Final = struct.Struct("<I")
_TEXT: Final = struct.Struct(f"<{STREAM_BYTES}s{NAME_BYTES}s")
OFF_VERSION: Final = 8
OFF_TEXT: Final = 64


@dataclass(frozen=True)
class ReaderInfo:
    """One registry entry, as listed.

    Attributes:
        name: what the reader calls itself (``mdtail``, ``flusher``, ...).
        pid: its process id.
        stream: the stream it reads.
        position: the next sequence number it will read (`NO_POSITION` before its first report).
        lost: records it has lost so far.
        heartbeat_ns: wall time of its last report.
        alive: its process still runs (same pid *and* start time).
        registered_ns: wall time of registration.
        path: the entry's file.
    """

    name: str
    pid: int
    stream: str
    position: int
    lost: int
    heartbeat_ns: int
    alive: bool
    registered_ns: int = 0
    path: Path | None = None


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after the last ')'. Fields from
    # there on start at field 3 (state), so field 22 (starttime) is at index 19.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[19])


def make_registry_dir(shm_dir: Path, feed: str) -> None:
    """Create ``{shm_dir}/{feed}/readers`` (mode 2770) and prune dead entries: the writer's job.

    The mode is set with chmod after mkdir (mkdir's mode is filtered by the umask, and only chmod
    sets the setgid bit). Failures are logged, not raised: a feed works without its registry.
    """
    directory = shm_dir / feed / READERS_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if directory.stat().st_uid == os.geteuid():
            directory.chmod(DIR_MODE)
    except OSError as exc:
        log.warning("no reader registry at %s: %s", directory, exc.strerror)
        return
    prune_readers(shm_dir, feed)


class ReaderSlot:
    """A registered reader's own entry: store its position after each batch, close on exit."""

    def __init__(self, path: Path, mm: mmap.mmap) -> None:
        self.path = path
        self._mm = mm
        self._w = memoryview(mm).cast("q")
        self._closed = False

    def update(self, position: int, lost: int) -> None:
        """Publish the next sequence number to read and the records lost so far (and a heartbeat).

        Three plain 8-byte stores and a clock read: cheap enough for every batch.
        """
        w = self._w
        w[W_POSITION] = position
        w[W_LOST] = lost
        w[W_HEARTBEAT] = time.time_ns()

    def close(self) -> None:
        """Remove the entry (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._w.release()
        self._mm.close()
        try:
            self.path.unlink()
        except OSError as exc:
            log.debug("cannot remove reader entry %s: %s", self.path, exc.strerror)

    def __enter__(self) -> ReaderSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: str, size: int) -> bytes:
    raw = value.encode()[:size]
    return raw.decode(errors="ignore").encode()  # never cut a UTF-8 sequence in half


def register_reader(shm_dir: Path, feed: str, stream: str, name: str) -> ReaderSlot | None:
    """Add this process as a reader of ``feed``/``stream``; None if the registry is not writable.

    Also prunes the feed's long-dead entries (see the module docstring). Never raises for a
    missing, read-only or full registry: the caller reads the rings unregistered.
    """
    directory = shm_dir / feed / READERS_DIR
    if not os.access(directory, os.W_OK | os.X_OK):
        log.debug("reader registry %s is not writable: reading unregistered", directory)
        return None
    prune_readers(shm_dir, feed)
    pid = os.getpid()
    final = directory / f"{stream}.{pid}.{secrets.token_hex(4)}"

    def fill(_fd: int, mm: mmap.mmap) -> None:
        now = time.time_ns()
        _VERSION.pack_into(mm, OFF_VERSION, REGISTRY_VERSION)
        _TEXT.pack_into(mm, OFF_TEXT, _text(stream, STREAM_BYTES), _text(name, NAME_BYTES))
        with memoryview(mm).cast("q") as w:
            w[W_PID] = pid
            w[W_PID_START] = process_start_ticks(pid) or 0
            w[W_REGISTERED] = now
            w[W_POSITION] = NO_POSITION
            w[W_HEARTBEAT] = now
            w[W_MAGIC] = MAGIC

    try:
        fd, mm = create_mapped(final, FILE_SIZE, fill, mode=FILE_MODE)
    except OSError as exc:
        log.debug("cannot register in %s: %s", directory, exc.strerror)
        return None
    os.close(fd)
    return ReaderSlot(final, mm)


def _read_entry(path: Path) -> ReaderInfo | None:
    try:
        mm = map_readonly(path, FILE_SIZE, FILE_SIZE)
    except OSError:
        return None  # closed meanwhile, or not ours to read
    if mm is None:
        return None
    with mm, memoryview(mm).cast("q") as w:
        if w[W_MAGIC] != MAGIC or _VERSION.unpack_from(mm, OFF_VERSION)[0] != REGISTRY_VERSION:
            return None
        stream, name = (
            b.rstrip(b"\0").decode(errors="replace") for b in _TEXT.unpack_from(mm, OFF_TEXT)
        )
        pid: int = w[W_PID]
        started: int = w[W_PID_START]
        position: int = w[W_POSITION]
        lost: int = w[W_LOST]
        heartbeat: int = w[W_HEARTBEAT]
        registered: int = w[W_REGISTERED]
    alive = started != 0 and process_start_ticks(pid) == started
    return ReaderInfo(name, pid, stream, position, lost, heartbeat, alive, registered, path)


def _entries(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def list_readers(shm_dir: Path, feed: str) -> list[ReaderInfo]:
    """Every registered reader of ``feed``, dead ones included (``alive=False``); never writes.

    Empty when the feed has no registry or this user may not read it.
    """
    directory = shm_dir / feed / READERS_DIR
    out = []
    for entry in _entries(directory):
        if entry.startswith("."):
            continue
        info = _read_entry(directory / entry)
        if info is not None:
            out.append(info)
    return out


def prune_readers(
    shm_dir: Path, feed: str, *, older_than_ns: int = PRUNE_AFTER_NS, now_ns: int | None = None
) -> int:
    """Delete the entries of dead readers whose last heartbeat is older than ``older_than_ns``.

    Also deletes leftover temporary files of registrations that died half-way. Returns how many
    entries went; errors (someone else pruned first, no permission) are ignored.
    """
    now = time.time_ns() if now_ns is None else now_ns
    directory = shm_dir / feed / READERS_DIR
    removed = 0
    for entry in _entries(directory):
        path = directory / entry
        if entry.startswith("."):
            try:
                stale = now - path.stat().st_mtime_ns > older_than_ns
            except OSError:
                continue
        else:
            info = _read_entry(path)
            stale = info is not None and not info.alive and now - info.heartbeat_ns > older_than_ns
        if stale:
            try:
                path.unlink()
            except OSError:
                continue
            removed += 1
    return removed
