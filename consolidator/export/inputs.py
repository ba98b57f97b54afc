"""What an export reads: one stream from the journal on into the live ring, up to "now".

"Now" is the ring's tail when the export starts (the journal's end when there is no ring), so an
export of a running feed ends. Items are the history reader's: numpy batches (trades, quotes),
lists of `VarRecord` (depth, events) and `Loss` items.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np

from consolidator.errors import RingError
from consolidator.journal.files import stream_dir
from consolidator.journal.history import HistoryReader, Item
from consolidator.journal.recovery import next_seq
from consolidator.ring.reader import Loss
from consolidator.streams import open_stream_reader, ring_path

__all__ = ["SEEK_MARGIN_NS", "StreamInput", "stream_exists"]

SEEK_MARGIN_NS: Final = 600 * 1_000_000_000
"""How far before ``since`` (exchange time) to start reading by commit time: a record committed
more than this before its own exchange time (a clock that far off) would be missed."""
STALL_S: Final = 30.0


def stream_exists(shm_dir: Path, state_dir: Path, feed: str, stream: str) -> bool:
    """True when the stream has a ring or a journal directory."""
    return ring_path(shm_dir, feed, stream).exists() or stream_dir(state_dir, feed, stream).is_dir()


def _end_seq(shm_dir: Path, state_dir: Path, feed: str, stream: str) -> int:
    if ring_path(shm_dir, feed, stream).exists():
        try:
            with open_stream_reader(shm_dir, feed, stream) as reader:
                return reader.tail()
        except RingError:
            pass
    return next_seq(state_dir, feed, stream)


class StreamInput:
    """One stream of a feed from the journal's beginning (or near ``since_ns``) to now.

    Args:
        since_ns: start near this exchange time (by commit time, `SEEK_MARGIN_NS` earlier);
            None: the beginning.
    """

    def __init__(
        self, shm_dir: Path, state_dir: Path, feed: str, stream: str, since_ns: int | None = None
    ) -> None:
        self.stream = stream
        self.end = _end_seq(shm_dir, state_dir, feed, stream)
        self.ring_file = ring_path(shm_dir, feed, stream)
        seek = None if since_ns is None else since_ns - SEEK_MARGIN_NS
        self.reader = HistoryReader(state_dir, shm_dir, feed, stream, since_ns=seek, live=True)
        self.start = self.reader.position
        self.losses: list[Loss] = []

    @property
    def fraction(self) -> float:
        """How much of the range has been read (0..1)."""
        span = self.end - self.start
        return 1.0 if span <= 0 else min(1.0, max(0.0, (self.reader.position - self.start) / span))

    def items(self) -> Iterator[Item]:
        """Every item up to the end sequence number (the last batch cut there)."""
        reader = self.reader
        stalled = time.monotonic()
        while reader.position < self.end:
            item = reader.read()
            if item is None:
                if not self.ring_file.exists() or time.monotonic() - stalled > STALL_S:
                    return  # the journal ended and there is no ring to go on in
                reader.wait(0.01)
                continue
            stalled = time.monotonic()
            if isinstance(item, Loss):
                self.losses.append(item)
                yield item
                continue
            if reader.position > self.end:
                end = self.end
                if isinstance(item, np.ndarray):
                    item = item[item["seq"] < end]
                else:
                    item = [r for r in item if r.seq < end]
            if len(item):
                yield item

    def close(self) -> None:
        """Close the journal and the ring."""
        self.reader.close()
