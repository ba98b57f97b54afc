"""A cursor over one stream's journal: items in sequence order from any position, plain and
compressed segments alike, following the active segment as the flusher appends to it.

Every sequence number from the start position on is returned exactly once: as a record of a DATA
block, or inside a `Loss` item (a LOSS block of the journal, or bytes the cursor could not read:
corruption named with file and offset, a torn end of a closed segment). Blocks that a later segment
also holds (the overlap an fsync error leaves) are read from one place only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from consolidator.journal.files import (
    Block,
    End,
    SegmentFile,
    SegmentSource,
    find_next_block,
    list_segments,
)
from consolidator.journal.recovery import journal_end
from consolidator.journal.segment import (
    BlockType,
    JournalFormatError,
    decode_fixed,
    decode_loss,
    decode_variable,
)
from consolidator.ring.reader import Loss, VarRecord

__all__ = ["Item", "JournalCursor", "seq_at_time"]

Item = np.ndarray | list[VarRecord] | Loss
"""What readers return: a batch of fixed records, a list of variable records, or a loss."""


class JournalCursor:
    """Items of one stream's journal from ``start`` on.

    Args:
        directory: the stream's journal directory.
        start: a sequence number, ``"beginning"`` or ``"end"`` (the journal's end now).
        dtype: the record dtype of a fixed stream (None for variable streams).
    """

    def __init__(self, directory: Path, start: int | str, dtype: np.dtype[np.void] | None) -> None:
        self.directory = directory
        self.dtype = dtype
        self.known = True
        if start == "beginning":
            segments = list_segments(directory)
            self.position = segments[0].first_seq if segments else 0
            self.known = bool(segments)
        elif start == "end":
            self.position = journal_end(directory)
        elif isinstance(start, int):
            self.position = start
        else:
            raise ValueError(f"start must be 'beginning', 'end' or a sequence number: {start!r}")
        self._segments: list[SegmentFile] = []
        self._index = -1
        self._src: SegmentSource | None = None
        self._pending: list[Item] = []

    # -- positioning ---------------------------------------------------------------------------

    def skip_to(self, seq: int) -> None:
        """Continue at ``seq`` (forward only), e.g. after reading live records up to it."""
        if seq > self.position or not self.known:
            self.position = seq
            self.known = True
            self._close_src()

    def _close_src(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    def _open(self) -> bool:
        for _ in range(3):
            segments = list_segments(self.directory)
            if not segments:
                return False
            if not self.known:
                self.position, self.known = segments[0].first_seq, True
            if self.position < segments[0].first_seq:
                first = segments[0]
                self._pending.append(
                    Loss(
                        self.position,
                        first.first_seq - self.position,
                        f"before journal (it starts at seq {first.first_seq} in {first.path})",
                    )
                )
                self.position = first.first_seq
            index = max(i for i, s in enumerate(segments) if s.first_seq <= self.position)
            try:
                self._src = SegmentSource(segments[index].path)
            except FileNotFoundError:
                continue  # compressed meanwhile: list again
            self._segments, self._index = segments, index
            return True
        return False

    def _later(self) -> SegmentFile | None:
        """The segment after the current one, listing again if it is not known yet."""
        if self._index + 1 >= len(self._segments):
            current = self._segments[self._index].first_seq
            self._segments = list_segments(self.directory)
            self._index = next(
                (i for i, s in enumerate(self._segments) if s.first_seq == current), -1
            )
            if self._index < 0:
                return None
        if self._index + 1 < len(self._segments):
            return self._segments[self._index + 1]
        return None

    # -- reading -------------------------------------------------------------------------------

    def next(self) -> Item | None:
        """The next item, or None at the journal's current end.

        Raises:
            JournalFormatError: a segment header is unreadable, or the last segment is a
                corrupt compressed file.
        """
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._src is None and not self._open():
                return None
            src = self._src
            assert src is not None
            try:
                got = src.next()
            except JournalFormatError as exc:
                if not self._to_next_segment(f"unreadable: {exc}", -1):
                    raise
                continue
            if isinstance(got, Block):
                item = self._take(got, src)
                if item is not None:
                    return item
                continue
            if not self._at_end(src, got):
                return None

    def _take(self, block: Block, src: SegmentSource) -> Item | None:
        h = block.header
        later = self._segments[self._index + 1] if self._index + 1 < len(self._segments) else None
        limit = later.first_seq if later is not None else None
        if limit is not None and h.first_seq >= limit:
            self._to_next_segment(None, block.offset)  # overlap: the next segment has it
            return None
        end = h.end_seq if limit is None else min(h.end_seq, limit)
        if end <= self.position:
            return None
        if h.first_seq > self.position:
            self._pending.append(
                Loss(
                    self.position,
                    h.first_seq - self.position,
                    f"gap in the journal before {src.path} offset {block.offset}",
                )
            )
            self.position = h.first_seq
        skip = self.position - h.first_seq
        take = end - self.position
        item: Item
        if h.block_type == BlockType.LOSS:
            loss = decode_loss(h, block.payload)
            item = Loss(self.position, take, loss.reason)
        elif self.dtype is not None:
            item = decode_fixed(h, block.payload, self.dtype)[skip : skip + take]
        else:
            item = decode_variable(h, block.payload)[skip : skip + take]
        self.position = end
        if self._pending:
            self._pending.append(item)
            return self._pending.pop(0)
        return item

    def _at_end(self, src: SegmentSource, end: End) -> bool:
        """Handle the end of the current segment's valid blocks; True to keep reading."""
        if end.reason is not None and not src.compressed and self._skip_corruption(src, end):
            return True
        later = self._later()
        if later is None:
            return False  # the live end (or a block being written right now)
        # The segment was complete when the next one was created: read what remains first.
        again = src.next()
        if isinstance(again, Block):
            item = self._take(again, src)
            if item is not None:
                self._pending.append(item)
            return True
        if again.reason is not None and not src.compressed and self._skip_corruption(src, again):
            return True
        why = None if again.reason is None else f"{again.reason} at the end of {src.path}"
        self._to_next_segment(why, again.offset)
        return True

    def _skip_corruption(self, src: SegmentSource, end: End) -> bool:
        """Bad bytes followed by valid blocks: report them as a loss and continue after them."""
        found = find_next_block(src.path, end.offset)
        if found is None:
            return False
        # Blocks are appended one at a time, in order: if this one is valid now, it was being
        # written when it was first read, and it is not corruption.
        again = src.next()
        if isinstance(again, Block):
            item = self._take(again, src)
            if item is not None:
                self._pending.append(item)
            return True
        offset, header = found
        lost = header.first_seq - self.position
        if lost > 0:
            self._pending.append(
                Loss(
                    self.position,
                    lost,
                    f"corrupt journal: {src.path} offset {end.offset}: {end.reason}",
                )
            )
            self.position = header.first_seq
        src.seek(offset)
        return True

    def _to_next_segment(self, why: str | None, offset: int) -> bool:
        src = self._src
        later = self._later()
        if later is None or src is None:
            return False
        if later.first_seq > self.position:
            reason = why or f"journal gap after {src.path} offset {offset}"
            self._pending.append(Loss(self.position, later.first_seq - self.position, reason))
            self.position = later.first_seq
        self._close_src()
        try:
            self._src = SegmentSource(later.path)
        except FileNotFoundError:
            return True  # compressed meanwhile: _open lists again
        self._index += 1
        return True

    def close(self) -> None:
        """Close the open segment."""
        self._close_src()


def seq_at_time(directory: Path, since_ns: int, dtype: np.dtype[np.void] | None) -> int | str:
    """The sequence number of the first record with ``ts_commit >= since_ns`` (or of a loss just
    before it, which may hide such records); the journal's end if there is none."""
    segments = list_segments(directory)
    if not segments:
        return "beginning"

    def first_ts(segment: SegmentFile) -> int | None:
        with (
            contextlib.suppress(FileNotFoundError, JournalFormatError),
            SegmentSource(segment.path) as src,
        ):
            while isinstance(got := src.next(), Block):
                if got.header.block_type == BlockType.DATA:
                    return got.header.ts_min
        return None

    lo, hi = 0, len(segments) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        ts = first_ts(segments[mid])
        if ts is not None and ts <= since_ns:
            lo = mid
        else:
            hi = mid - 1
    cursor = JournalCursor(directory, segments[lo].first_seq, dtype)
    pending: int | None = None
    try:
        while (item := cursor.next()) is not None:
            if isinstance(item, Loss):
                if pending is None:
                    pending = item.first_seq
                continue
            if isinstance(item, np.ndarray):
                hits = np.flatnonzero(item["ts_commit"] >= since_ns)
                if len(hits):
                    return pending if pending is not None else int(item["seq"][hits[0]])
            else:
                for record in item:
                    if record.ts_commit >= since_ns:
                        return pending if pending is not None else record.seq
            pending = None
        return pending if pending is not None else cursor.position
    finally:
        cursor.close()
