"""History and live as one stream: read a stream's journal from any point, then cross into the ring.

The kdb+ tickerplant handshake: replay the journal to its end and note the next sequence number
``P``; if the ring still holds ``P``, continue there in the ring (no gap, no duplicate: both are
indexed by the same sequence numbers); if it does not (the reader is further behind than a ring),
keep reading the journal while the flusher catches up, and try again. A live reader that is lapped
goes back to the journal at the first sequence number it missed, so the only losses it reports are
those the journal itself records (LOSS blocks, corrupt bytes) - or, when no flusher is running, what
the ring lost.

Items are what the ring readers return: numpy structured arrays for fixed streams (trades,
quotes), lists of `VarRecord` for variable streams, and `Loss` items (``first_seq, count, reason``)
for explicit gaps.

After a reboot the writer continues the sequence and the symbol table from the journal::

    restore_symbols(state_dir, shm_dir, feed)          # before the writer opens its SymbolTable
    open_stream_writer(shm_dir, feed, stream, first_seq=next_seq(state_dir, feed, stream))
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np

from consolidator.errors import RingError
from consolidator.journal.cursor import Item, JournalCursor, seq_at_time
from consolidator.journal.files import stream_dir
from consolidator.journal.position import read_positions
from consolidator.journal.recovery import next_seq
from consolidator.journal.symbols import restore_symbols
from consolidator.ring.reader import FixedRingReader, Loss, RingReader, VariableRingReader
from consolidator.streams import STREAMS, open_stream_reader, ring_path

__all__ = ["HistoryReader", "Item", "next_seq", "restore_symbols"]

ATTACH_RETRY_S: Final = 0.05


class HistoryReader:
    """One stream, from a sequence number or a time in the journal, on into the live ring.

    Args:
        state_dir, shm_dir, feed, stream: where the journal and the ring are.
        start: ``"beginning"`` (the journal's first record), ``"end"`` (its end: live only), or a
            sequence number. Numbers before the journal's first are an explicit loss item.
        since_ns: instead of ``start``, the first record whose ``ts_commit`` is at or after this.
        live: cross into the ring at the journal's end (False: stop at the journal's end).

    ``read()`` returns the next item or None when nothing is available now (the live end, or the
    journal's end without ``live``).
    """

    def __init__(
        self,
        state_dir: Path,
        shm_dir: Path,
        feed: str,
        stream: str,
        *,
        start: int | str = "beginning",
        since_ns: int | None = None,
        live: bool = True,
    ) -> None:
        self.spec = STREAMS[stream]
        self.state_dir = state_dir
        self.shm_dir = shm_dir
        self.feed = feed
        self.stream = stream
        self.live = live
        directory = stream_dir(state_dir, feed, stream)
        self._since = since_ns
        if since_ns is not None:
            position: int | str = seq_at_time(directory, since_ns, self.spec.dtype)
        else:
            position = start
        self.cursor = JournalCursor(directory, position, self.spec.dtype)
        self.position = self.cursor.position
        self.ring: RingReader | None = None
        self.attached = False
        self._accept_ring_loss = False
        self._next_attach = 0.0
        self.from_journal = 0
        self.from_ring = 0

    # -- reading -------------------------------------------------------------------------------

    def read(self) -> Item | None:
        """The next item, or None if there is none now."""
        while True:
            item = self._ring_read() if self.attached else self._journal_read()
            if item is None:
                return None
            if self._since is not None:
                item = self._after_since(item)
                if item is None:
                    continue
            return item

    def _journal_read(self) -> Item | None:
        item = self.cursor.next()
        if item is not None:
            self.position = self.cursor.position
            self.from_journal += 0 if isinstance(item, Loss) else len(item)
            return item
        if self.live and time.monotonic() >= self._next_attach:
            self._next_attach = time.monotonic() + ATTACH_RETRY_S
            return self._attach()
        return None

    def _open_ring(self) -> RingReader | None:
        if self.ring is not None:
            if self.ring.position >= self.ring.tail():
                self.ring.refresh()
            return self.ring
        if not ring_path(self.shm_dir, self.feed, self.stream).exists():
            return None
        try:
            self.ring = open_stream_reader(self.shm_dir, self.feed, self.stream, start="tail")
        except RingError:
            return None
        return self.ring

    def _flusher_alive(self) -> bool:
        positions = read_positions(self.shm_dir, self.feed)
        return positions is not None and positions.flusher_alive()

    def _attach(self) -> Item | None:
        """At the journal's end: continue in the ring if it holds our position."""
        ring = self._open_ring()
        if ring is None:
            return None
        if not self.cursor.known:  # "beginning" of an empty journal: the ring's first record
            self._set_position(ring.first_seq)
        p = self.cursor.position
        if p > ring.tail():
            return None
        if ring.first_seq <= p and p >= ring.oldest():
            ring.position = p
            self.attached = True
            self._accept_ring_loss = False
            return None
        if self._flusher_alive():
            return None  # the flusher journals [p, ...) (data or loss): keep reading the journal
        # No flusher: what the ring lost is lost; say so and go on live.
        self.attached = True
        self._accept_ring_loss = True
        if p < ring.first_seq:
            ring.position = ring.first_seq
            self._set_position(ring.first_seq)
            return Loss(p, ring.first_seq - p, "before ring")
        ring.position = p
        return None

    def _set_position(self, seq: int) -> None:
        self.position = seq
        self.cursor.skip_to(seq)

    def _ring_read(self) -> Item | None:
        ring = self.ring
        assert ring is not None
        batch: np.ndarray | list[object]
        if isinstance(ring, FixedRingReader):
            batch = ring.read_batch(65536)
        else:
            assert isinstance(ring, VariableRingReader)
            batch = ring.read_batch(4096)  # type: ignore[assignment]
        losses = ring.drain_losses()
        if losses:
            first = losses[0]
            if not self._accept_ring_loss and self._flusher_alive():
                # Lapped: the journal has (or will have) what the ring lost. Go back to it.
                self.attached = False
                self._set_position(first.first_seq)
                return None
            # Report the first loss now; what follows it is read again from the ring.
            self._set_position(first.first_seq + first.count)
            ring.position = self.position
            return first
        if not len(batch):
            if ring.position >= ring.tail():
                ring.refresh()
            return None
        self._set_position(ring.position)
        self.from_ring += len(batch)
        return batch  # type: ignore[return-value]

    def _after_since(self, item: Item) -> Item | None:
        """Drop records before ``since_ns`` (only until the first one at or after it)."""
        since = self._since
        assert since is not None
        if isinstance(item, Loss):
            return item
        if isinstance(item, np.ndarray):
            ts = item["ts_commit"]
            if (ts >= since).any():
                k = int(np.argmax(ts >= since))
                self._since = None
                return item[k:]
            return None
        for k, record in enumerate(item):
            if record.ts_commit >= since:
                self._since = None
                return item[k:]
        return None

    # -- conveniences --------------------------------------------------------------------------

    def wait(self, timeout_s: float) -> None:
        """Sleep until records may be available (live: poll the ring; journal: poll the file)."""
        if self.attached and self.ring is not None:
            self.ring.wait(timeout_s)
        else:
            time.sleep(min(timeout_s, 0.005))

    def items(self, *, follow: bool = False, idle_timeout_s: float = 0.0) -> Iterator[Item]:
        """Iterate items; without ``follow``, stop at the first moment nothing is available
        (after ``idle_timeout_s`` of waiting)."""
        deadline = time.monotonic() + idle_timeout_s
        while True:
            item = self.read()
            if item is not None:
                deadline = time.monotonic() + idle_timeout_s
                yield item
                continue
            if not follow and time.monotonic() >= deadline:
                return
            self.wait(0.01)

    def close(self) -> None:
        """Close the journal files and the ring."""
        self.cursor.close()
        if self.ring is not None:
            self.ring.close()
            self.ring = None

    def __enter__(self) -> HistoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
