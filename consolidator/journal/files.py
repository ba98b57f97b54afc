"""Where the journal lives, how its segments are listed, and sequential reading of one segment.

``{state_dir}/journal/{feed}/{stream}/{first_seq:020d}.seg`` (or ``.seg.zst`` once compressed),
plus ``{state_dir}/journal/{feed}/symbols`` and ``feed.json``. Temporary files start with ``.``
and end in ``.tmp``; recovery removes them.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol

import zstandard

from consolidator.journal.segment import (
    BLOCK_HEADER_SIZE,
    BLOCK_MAGIC,
    SEGMENT_HEADER_SIZE,
    BlockHeader,
    JournalError,
    JournalFormatError,
    SegmentHeader,
    block_ok,
    crc_ok,
    padded,
    parse_block_header,
)

__all__ = [
    "Block",
    "End",
    "SegmentFile",
    "SegmentSource",
    "find_next_block",
    "fsync_dir",
    "journal_root",
    "list_segments",
    "list_streams",
    "segment_path",
    "stream_dir",
]

PLAIN: Final = ".seg"
COMPRESSED: Final = ".seg.zst"


def journal_root(state_dir: Path) -> Path:
    """``{state_dir}/journal``."""
    return state_dir / "journal"


def stream_dir(state_dir: Path, feed: str, stream: str) -> Path:
    """``{state_dir}/journal/{feed}/{stream}``."""
    return state_dir / "journal" / feed / stream


def segment_path(directory: Path, first_seq: int, *, compressed: bool = False) -> Path:
    """The file name of the segment starting at ``first_seq``."""
    return directory / f"{first_seq:020d}{COMPRESSED if compressed else PLAIN}"


@dataclass(frozen=True, order=True)
class SegmentFile:
    """One segment of a stream's journal, as listed (plain or compressed)."""

    first_seq: int
    path: Path
    compressed: bool


def list_segments(directory: Path) -> list[SegmentFile]:
    """The segments of a stream directory, in sequence order; a compressed copy wins.

    (Both exist only between the rename of the ``.zst`` and the removal of the plain file; the
    ``.zst`` is complete once renamed.)
    """
    found: dict[int, SegmentFile] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise JournalError(f"cannot list {directory}: {exc.strerror}") from None
    for name in names:
        if name.endswith(COMPRESSED):
            stem, compressed = name[: -len(COMPRESSED)], True
        elif name.endswith(PLAIN):
            stem, compressed = name[: -len(PLAIN)], False
        else:
            continue
        if len(stem) != 20 or not stem.isdigit():
            continue
        seq = int(stem)
        if seq in found and found[seq].compressed:
            continue
        found[seq] = SegmentFile(seq, directory / name, compressed)
    return [found[k] for k in sorted(found)]


def list_streams(state_dir: Path) -> list[tuple[str, str]]:
    """Every ``(feed, stream)`` that has a journal directory."""
    root = journal_root(state_dir)
    out: list[tuple[str, str]] = []
    with contextlib.suppress(FileNotFoundError):
        for feed in sorted(os.listdir(root)):
            fdir = root / feed
            if feed.startswith(".") or not fdir.is_dir():
                continue
            out.extend((feed, s) for s in sorted(os.listdir(fdir)) if (fdir / s).is_dir())
    return out


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that creations, renames and removals in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Reading


class _Reader(Protocol):
    def readinto(self, b: bytearray | memoryview, /) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Block:
    """A CRC-checked block: its offset in the (uncompressed) segment, header and payload."""

    offset: int
    header: BlockHeader
    payload: bytearray


@dataclass(frozen=True, slots=True)
class End:
    """No valid block at ``offset``: the clean end of the data (``reason`` None) or why not."""

    offset: int
    reason: str | None


class SegmentSource:
    """Reads the blocks of one segment in order: a plain file (which may still be growing) or a
    compressed one.

    Raises:
        JournalFormatError: the segment header is unreadable.
        FileNotFoundError: the file is gone (a plain segment replaced by its compressed copy).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.compressed = path.name.endswith(COMPRESSED)
        self._fd = -1
        self._stream: _Reader | None = None
        self._raw: IO[bytes] | None = None
        self.offset = 0
        if self.compressed:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
            self._stream = zstandard.ZstdDecompressor().stream_reader(self._raw)
        else:
            self._fd = os.open(path, os.O_RDONLY)
        try:
            head = self._read(SEGMENT_HEADER_SIZE)
            self.header = SegmentHeader.unpack(head, path)
        except BaseException:
            self.close()
            raise
        self.offset = SEGMENT_HEADER_SIZE

    def _read(self, n: int) -> bytearray:
        buf = bytearray(n)
        if self._stream is not None:
            got = 0
            view = memoryview(buf)
            try:
                while got < n:
                    k = self._stream.readinto(view[got:])
                    if not k:
                        break
                    got += k
            except zstandard.ZstdError as exc:
                raise JournalFormatError(
                    f"{self.path}: corrupt compressed data near uncompressed offset "
                    f"{self.offset + got}: {exc}"
                ) from None
            finally:
                view.release()
            del buf[got:]
            return buf
        got = os.preadv(self._fd, [buf], self.offset)
        del buf[got:]
        return buf

    def next(self) -> Block | End:
        """The next valid block, advancing; or where and why there is none (not advancing).

        A plain file may grow: call again later to see blocks appended since. A compressed
        source cannot go back, so after an `End` with a reason it stays at its end.

        Raises:
            JournalFormatError: a compressed segment's data is corrupt (zstd checksum).
        """
        start = self.offset
        head = self._read(BLOCK_HEADER_SIZE)
        if not head:
            return End(start, None)
        header = parse_block_header(head)
        if isinstance(header, str):
            self._rewind(start)
            return End(start, header)
        self.offset = start + BLOCK_HEADER_SIZE
        payload = self._read(padded(header.length))
        if len(payload) < padded(header.length) or not crc_ok(head, payload, header):
            self._rewind(start)
            why = "truncated block" if len(payload) < padded(header.length) else "CRC mismatch"
            return End(start, why)
        del payload[header.length :]
        self.offset = start + header.size
        return Block(start, header, payload)

    def _rewind(self, offset: int) -> None:
        if self._stream is None:
            self.offset = offset

    def seek(self, offset: int) -> None:
        """Continue at ``offset`` (plain files only; compressed ones can only skip forward)."""
        if self._stream is not None:
            if offset < self.offset:
                raise JournalError(f"{self.path}: cannot seek back in a compressed segment")
            while self.offset < offset:
                chunk = self._read(min(1 << 20, offset - self.offset))
                if not chunk:
                    break
                self.offset += len(chunk)
        else:
            self.offset = offset

    def size(self) -> int:
        """Current size of a plain file (compressed: -1)."""
        return os.fstat(self._fd).st_size if self._fd >= 0 else -1

    def close(self) -> None:
        """Close the file."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SegmentSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_next_block(path: Path, offset: int) -> tuple[int, BlockHeader] | None:
    """The first valid block (magic, header and CRC) of a plain segment after ``offset``.

    Blocks start at multiples of 8, so corruption is skipped by searching for the block magic at
    aligned offsets; a match must also pass its CRC to count.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= offset + BLOCK_HEADER_SIZE:
            return None
        with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as mm:
            i = offset + 8
            while True:
                i = mm.find(BLOCK_MAGIC, i)
                if i < 0:
                    return None
                if i % 8 == 0:
                    header = parse_block_header(mm, i)
                    if not isinstance(header, str) and block_ok(mm, header, i):
                        return i, header
                i += 1
