"""The feed's symbol table, persisted next to its journal so names survive reboots.

The writer's table (`consolidator.symbols`, ``{shm_dir}/{feed}/symbols``) lives in shared memory
and is lost with it. The flusher copies every new name into ``{state_dir}/journal/{feed}/symbols``
and fdatasyncs it *before* the records read in the same cycle (a record's symbol is interned before
the record is published, so every id a journaled record uses is persisted first). After a reboot
`restore_symbols` rebuilds the shared table from it, ids unchanged. Layout, little-endian::

    header (32 bytes):  0 magic "CNSLJSYM"   8 version u4   12 entry_size u4 (72)   16 reserved
    entry i at 32 + 72 * i:
        0 length u2    2 name[62] UTF-8, zero padded    64 crc u4 (zlib.crc32 of bytes 0..63)
       68 reserved u4

Append-only; a torn last entry (short, or CRC mismatch) is cut when the file is next opened for
appending. Entry ``i`` is the name of symbol id ``i``.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Final

from consolidator.errors import SymbolTableError
from consolidator.journal.files import fsync_dir
from consolidator.journal.segment import JournalError, JournalFormatError
from consolidator.symbols import MAX_NAME_BYTES, SymbolTable, SymbolTableReader

__all__ = ["SymbolJournal", "copy_symbols", "load_symbols", "restore_symbols", "symbols_path"]

log = logging.getLogger("consolidator.journal")

MAGIC: Final = b"CNSLJSYM"
VERSION: Final = 1
HEADER: Final = struct.Struct("<8sII16x")
ENTRY: Final = struct.Struct("<H62sII")
ENTRY_BODY: Final = struct.Struct("<H62s")


def symbols_path(state_dir: Path, feed: str) -> Path:
    """``{state_dir}/journal/{feed}/symbols``."""
    return state_dir / "journal" / feed / "symbols"


def _encode(name: str) -> bytes:
    raw = name.encode()
    body = ENTRY_BODY.pack(len(raw), raw)
    return ENTRY.pack(len(raw), raw, zlib.crc32(body), 0)


def _parse(data: bytes, path: Path) -> tuple[list[str], int]:
    """Names and the byte length of the valid prefix."""
    if len(data) < HEADER.size:
        return [], 0
    magic, version, entry_size = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or entry_size != ENTRY.size:
        raise JournalFormatError(
            f"{path}: offset 0: not a journal symbol file of version {VERSION}"
        )
    names: list[str] = []
    offset = HEADER.size
    while offset + ENTRY.size <= len(data):
        length, raw, crc, _ = ENTRY.unpack_from(data, offset)
        if (
            length == 0
            or length > MAX_NAME_BYTES
            or crc != zlib.crc32(data[offset : offset + ENTRY_BODY.size])
        ):
            break
        names.append(raw[:length].decode("utf-8", "replace"))
        offset += ENTRY.size
    return names, offset


def load_symbols(path: Path) -> list[str]:
    """The names persisted in a journal symbol file (id order); [] if there is none.

    Raises:
        JournalFormatError: the file is not a journal symbol file.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return _parse(data, path)[0]


class SymbolJournal:
    """The flusher's copy of one feed's symbol table."""

    def __init__(self, path: Path, shm_table: Path) -> None:
        self.path = path
        self.shm_table = shm_table
        self.names = load_symbols(path)
        self._reader: SymbolTableReader | None = None
        self._inode = 0
        self._fd = -1
        self.diverged = False

    def _open(self) -> int:
        if self._fd >= 0:
            return self._fd
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            size = HEADER.size + len(self.names) * ENTRY.size
            have = os.fstat(fd).st_size
            if created or have < HEADER.size:
                os.pwrite(fd, HEADER.pack(MAGIC, VERSION, ENTRY.size), 0)
            elif have > size:
                log.warning(
                    "%s: cut %d bytes after the last valid entry at offset %d (torn or corrupt); "
                    "names from id %d on are copied again from %s",
                    self.path, have - size, size, len(self.names), self.shm_table,
                )  # fmt: skip
            os.ftruncate(fd, size)
            os.fdatasync(fd)
            if created:
                fsync_dir(self.path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _table(self) -> SymbolTableReader | None:
        try:
            inode = os.stat(self.shm_table).st_ino
        except FileNotFoundError:
            return self._reader
        if self._reader is None or inode != self._inode:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            try:
                self._reader = SymbolTableReader(self.shm_table)
            except SymbolTableError:
                return None
            self._inode = inode
            self.diverged = False
        return self._reader

    def poll(self) -> list[str]:
        """New names in the shared table not yet persisted (call after reading the rings)."""
        table = self._table()
        if table is None or self.diverged:
            return []
        current = table.names()
        known = len(self.names)
        if current[:known] != self.names[: len(current)]:
            first = next(
                i for i, (a, b) in enumerate(zip(current, self.names, strict=False)) if a != b
            )
            self.diverged = True
            log.error(
                "%s: the symbol table diverges from the journal's %s at id %d (%r, journal has "
                "%r): was it recreated without restore_symbols? New names are not persisted",
                self.shm_table,
                self.path,
                first,
                current[first],
                self.names[first],
            )
            return []
        return current[known:]

    def persist(self, names: list[str], fsync: bool = True) -> None:
        """Append ``names`` and fdatasync.

        Raises:
            OSError: the write or the fdatasync failed (nothing is counted as persisted).
        """
        if not names:
            return
        fd = self._open()
        offset = HEADER.size + len(self.names) * ENTRY.size
        data = b"".join(_encode(n) for n in names)
        try:
            written = os.pwrite(fd, data, offset)
            if written != len(data):
                raise OSError(28, "short write")
            if fsync:
                os.fdatasync(fd)
        except OSError:
            try:
                os.ftruncate(fd, offset)
            except OSError:
                os.close(fd)
                self._fd = -1
            raise
        self.names.extend(names)

    def close(self) -> None:
        """Close the file and the shared table."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def restore_symbols(state_dir: Path, shm_dir: Path, feed: str) -> int:
    """Rebuild ``{shm_dir}/{feed}/symbols`` from the journal's copy, ids unchanged.

    Call before the writer opens its `SymbolTable`. A table that already holds the journal's names
    (as a prefix) is left as it is. Returns the number of names added.

    Raises:
        JournalError: the shared table holds other names under the same ids.
    """
    names = load_symbols(symbols_path(state_dir, feed))
    return copy_symbols(names, shm_dir / feed / "symbols")


def copy_symbols(names: list[str], table_path: Path) -> int:
    """Intern ``names`` in order into the symbol table at ``table_path``; ids must match."""
    if not names and table_path.exists():
        return 0
    table = SymbolTable(table_path)
    try:
        existing = table.names()
        for i, (have, want) in enumerate(zip(existing, names, strict=False)):
            if have != want:
                raise JournalError(
                    f"{table_path}: symbol id {i} is {have!r} but the journal has {want!r}"
                )
        added = 0
        for name in names[len(existing) :]:
            table.intern(name)
            added += 1
        return added
    finally:
        table.close()
