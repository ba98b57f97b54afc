"""The per-feed symbol table: a small append-only mmap file that the writer and all readers share.

Records carry a ``symbol_id`` (u32); this table maps it to the venue's symbol name. Ids are assigned
in order of first sight and never change or get reused, so the table survives writer restarts (the
writer reopens it and continues). Layout (all little-endian)::

    0      8        12          16         24       32                4096
    +------+--------+-----------+----------+--------+-- ... pad ----+-------------------------+
    |magic |version |entry_size |capacity  | count  |               | entry 0 | entry 1 | ... |
    +------+--------+-----------+----------+--------+---------------+-------------------------+

    entry (64 bytes): u16 length, then the UTF-8 name (at most 62 bytes), zero padded

The writer stores an entry, then ``count`` (one aligned 8-byte store through a ``memoryview`` cast,
never ``struct.pack_into``, which zero-fills first; x86-64 keeps stores in order),
so a reader that sees ``count = n`` can read entries ``0..n-1`` safely. Magic is written last when
the file is created.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path
from typing import Final

from consolidator.errors import SymbolTableError
from consolidator.shmfile import create_mapped

__all__ = ["SymbolTable", "SymbolTableReader"]

MAGIC: Final = int.from_bytes(b"CNSLSYMS", "little")
VERSION: Final = 1
HEADER_SIZE: Final = 4096
ENTRY_SIZE: Final = 64
MAX_NAME_BYTES: Final = ENTRY_SIZE - 2
DEFAULT_CAPACITY: Final = 65536
_HEAD: Final = struct.Struct("<QIIQ")  # magic, version, entry_size, capacity
_COUNT_OFF: Final = 24
_U64: Final = struct.Struct("<Q")
_LEN: Final = struct.Struct("<H")


def _read_header(mm: mmap.mmap, path: Path) -> tuple[int, int]:
    if len(mm) < HEADER_SIZE:
        raise SymbolTableError(f"{path}: too small to be a symbol table ({len(mm)} bytes)")
    magic, version, entry_size, capacity = _HEAD.unpack_from(mm, 0)
    if magic != MAGIC:
        raise SymbolTableError(f"{path}: not a consolidator symbol table (bad magic)")
    if version != VERSION:
        raise SymbolTableError(
            f"{path}: symbol table version {version}, this build reads {VERSION}"
        )
    if entry_size != ENTRY_SIZE or len(mm) < HEADER_SIZE + capacity * ENTRY_SIZE:
        raise SymbolTableError(f"{path}: inconsistent symbol table layout")
    (count,) = _U64.unpack_from(mm, _COUNT_OFF)
    if count > capacity:
        raise SymbolTableError(f"{path}: symbol count {count} exceeds capacity {capacity}")
    return capacity, count


def _entry(mm: mmap.mmap, index: int) -> str:
    offset = HEADER_SIZE + index * ENTRY_SIZE
    (length,) = _LEN.unpack_from(mm, offset)
    return mm[offset + 2 : offset + 2 + min(length, MAX_NAME_BYTES)].decode("utf-8", "replace")


class SymbolTable:
    """The writer's side: interns symbol names into stable ids."""

    def __init__(self, path: Path, capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            self._create(path, capacity)
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SymbolTableError(f"{path}: another writer holds this symbol table") from None
        self._fd = fd
        self._mm = mmap.mmap(fd, os.fstat(fd).st_size)
        self._words = memoryview(self._mm).cast("Q")
        self._capacity, count = _read_header(self._mm, path)
        self._names = [_entry(self._mm, i) for i in range(count)]
        self._ids = {name: i for i, name in enumerate(self._names)}

    @staticmethod
    def _create(path: Path, capacity: int) -> None:
        size = HEADER_SIZE + capacity * ENTRY_SIZE

        def fill(_fd: int, mm: mmap.mmap) -> None:
            _HEAD.pack_into(mm, 0, 0, VERSION, ENTRY_SIZE, capacity)
            _U64.pack_into(mm, 0, MAGIC)

        try:
            fd, mm = create_mapped(path, size, fill)
        except OSError as exc:
            raise SymbolTableError(f"{path}: cannot create ({size} bytes): {exc}") from None
        mm.close()
        os.close(fd)

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        """All names, in id order."""
        return list(self._names)

    def get(self, name: str) -> int | None:
        """The id of ``name`` if it has one."""
        return self._ids.get(name)

    def intern(self, name: str) -> int:
        """The id of ``name``, assigning the next one on first sight.

        Raises:
            SymbolTableError: the name is longer than 62 UTF-8 bytes or the table is full.
        """
        found = self._ids.get(name)
        if found is not None:
            return found
        encoded = name.encode()
        if not encoded or len(encoded) > MAX_NAME_BYTES:
            raise SymbolTableError(f"symbol name must be 1 to {MAX_NAME_BYTES} bytes: {name!r}")
        index = len(self._names)
        if index >= self._capacity:
            raise SymbolTableError(f"{self.path}: symbol table full ({self._capacity} symbols)")
        offset = HEADER_SIZE + index * ENTRY_SIZE
        self._mm[offset + 2 : offset + 2 + len(encoded)] = encoded
        _LEN.pack_into(self._mm, offset, len(encoded))
        self._words[_COUNT_OFF // 8] = index + 1
        self._names.append(name)
        self._ids[name] = index
        return index

    def close(self) -> None:
        """Unmap and release the writer lock."""
        self._words.release()
        self._mm.close()
        os.close(self._fd)


class SymbolTableReader:
    """A reader's view: ``name(id)``, refreshing from the shared file on a miss."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise SymbolTableError(f"{path}: no symbol table (has the writer run?)") from None
        try:
            self._mm = mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        _read_header(self._mm, path)
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        self.refresh()

    def refresh(self) -> None:
        """Pick up names the writer added since the last look."""
        (count,) = _U64.unpack_from(self._mm, _COUNT_OFF)
        for index in range(len(self._names), count):
            name = _entry(self._mm, index)
            self._names.append(name)
            self._ids[name] = index

    def name(self, symbol_id: int) -> str:
        """The name of ``symbol_id``; ``"?<id>"`` if the table does not have it (never raises)."""
        if symbol_id >= len(self._names):
            self.refresh()
            if symbol_id >= len(self._names):
                return f"?{symbol_id}"
        return self._names[symbol_id]

    def id(self, name: str) -> int | None:
        """The id of ``name``, or None if the writer has never seen it."""
        if name not in self._ids:
            self.refresh()
        return self._ids.get(name)

    def names(self) -> list[str]:
        """All names known now, in id order."""
        self.refresh()
        return list(self._names)

    def close(self) -> None:
        """Unmap the table."""
        self._mm.close()
