"""One symbol's book followed live from a feed's rings: what ``mdbook`` shows.

The depth ring is read from its oldest record (the symbol's snapshot is usually there), the
events ring alongside it, and the trades ring from a little before its tail (the last trades).
Depth and events are merged in commit order: each poll reads the depth ring first, then the
events ring, so every event committed before a depth record read is already in hand; an event
committed after the last depth record read waits one poll (a depth record committed before it
may not have been read yet). GAP and RESYNC of the symbol (or feed-wide ones about depth),
writer start/stop, and a lapped read of either ring make the book invalid until the next
snapshot. The book is never shown as valid when it is not.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consolidator.book.book import OrderBook, SyncRule
from consolidator.book.features import OfiTracker, Rolling
from consolidator.payloads import decode_depth, decode_event
from consolidator.records import NO_SYMBOL, EventKind, RecordType
from consolidator.ring.reader import (
    FixedRingReader,
    Loss,
    RingReader,
    VariableRingReader,
    VarRecord,
)
from consolidator.streams import open_stream_reader, ring_path

__all__ = ["LastTrade", "LiveBook"]

TRADES_BACK: Final = 65_536
"""How far before the trades ring's tail to look for the symbol's last trades."""
OFI_WINDOW: Final = 10
_SYMBOL_AT: Final = struct.Struct("<I")
_INVALIDATING: Final = frozenset(
    {EventKind.GAP, EventKind.RESYNC, EventKind.WRITER_START, EventKind.WRITER_STOP, EventKind.LOSS}
)


@dataclass(frozen=True)
class LastTrade:
    """A trade of the symbol: exchange time (ns), price and size (mantissa, exponent), side."""

    ts_event: int
    price_m: int
    price_e: int
    qty_m: int
    qty_e: int
    side: int


class LiveBook:
    """The book of ``symbol_id`` on ``feed``, brought up to date by `poll`.

    Args:
        trades: how many last trades to keep (0: do not read the trades ring).
    """

    def __init__(
        self,
        shm_dir: Path,
        feed: str,
        symbol_id: int,
        rule: SyncRule,
        *,
        trades: int = 10,
    ) -> None:
        self.symbol_id = symbol_id
        self.book = OrderBook(rule)
        self.ofi = OfiTracker(levels=1)
        self.ofi_window = Rolling(OFI_WINDOW)
        self.ts_event = 0  # of the last depth record applied
        self.lost = 0
        self.keep_trades = max(trades, 1)
        self.trades: deque[LastTrade] = deque(maxlen=self.keep_trades)
        self._readers: list[RingReader] = []
        self._depth = self._open(shm_dir, feed, "depth", "oldest")
        self._events = self._open(shm_dir, feed, "events", "oldest")
        self._trades: FixedRingReader | None = None
        if trades and ring_path(shm_dir, feed, "trades").exists():
            reader = open_stream_reader(shm_dir, feed, "trades", start="tail")
            assert isinstance(reader, FixedRingReader)
            reader.position = max(reader.oldest(), reader.tail() - TRADES_BACK)
            self._readers.append(reader)
            self._trades = reader
        self._held: list[tuple[int, VarRecord]] = []  # events waiting for the depth to catch up
        self._poll = 0

    def _open(self, shm_dir: Path, feed: str, stream: str, start: str) -> VariableRingReader | None:
        if not ring_path(shm_dir, feed, stream).exists():
            return None
        reader = open_stream_reader(shm_dir, feed, stream, start=start)
        assert isinstance(reader, VariableRingReader)
        self._readers.append(reader)
        return reader

    @property
    def valid(self) -> bool:
        """True when the book is known to be the venue's book."""
        return self.book.valid

    def poll(self) -> int:
        """Read what is new; returns how many records of the symbol were taken."""
        self._poll += 1
        taken = 0
        depth = self._read(self._depth)
        events_lost = False
        for record in self._read(self._events):
            if isinstance(record, Loss):
                events_lost = True
            else:
                self._held.append((self._poll, record))
        held = self._held
        h = 0
        for record in depth:
            if isinstance(record, Loss):
                self._invalidate(f"lost {record.count} depth records (lapped)")
                continue
            while h < len(held) and held[h][1].ts_commit <= record.ts_commit:
                self._event(held[h][1])
                h += 1
            if _SYMBOL_AT.unpack_from(record.payload, 40)[0] == self.symbol_id:
                self._depth_record(record)
                taken += 1
        # Events read in an earlier poll are older than any depth read since: release them.
        while h < len(held) and held[h][0] < self._poll:
            self._event(held[h][1])
            h += 1
        self._held = held[h:]
        if events_lost:  # where in the depth they fell is unknown: invalid from now on
            self._invalidate("lost events records (lapped)")
        return taken + self._read_trades()

    def _read(self, reader: VariableRingReader | None) -> list[VarRecord | Loss]:
        """Everything new, with `Loss` items where records were lapped."""
        if reader is None:
            return []
        out: list[VarRecord | Loss] = []
        while True:
            batch = reader.read_batch(4096)
            for loss in reader.drain_losses():
                self.lost += loss.count
                out.append(loss)
            if not batch:
                if reader.position >= reader.tail():
                    reader.refresh()
                return out
            out.extend(batch)

    def _depth_record(self, record: VarRecord) -> None:
        snapshot = record.record_type == RecordType.SNAPSHOT
        if not snapshot and record.record_type != RecordType.DEPTH:
            return
        depth = decode_depth(record.payload, snapshot)
        book = self.book
        if book.apply(depth):
            if snapshot:
                self.ofi.reset(book)
            else:
                self.ofi.update(book)
            self.ts_event = depth.ts_event or depth.ts_recv
        elif not book.valid:
            self.ofi.reset(None)

    def _event(self, record: VarRecord) -> None:
        if record.record_type != RecordType.EVENT:
            return
        event = decode_event(record.payload)
        if event.kind not in _INVALIDATING:
            return
        if event.symbol_id == NO_SYMBOL:
            if event.kind in (EventKind.GAP, EventKind.RESYNC) and "depth" not in event.detail:
                return
        elif event.symbol_id != self.symbol_id:
            return
        name = event.kind.name.lower() if isinstance(event.kind, EventKind) else str(event.kind)
        self._invalidate(f"{name} event")

    def _invalidate(self, reason: str) -> None:
        self.book.invalidate(reason)
        self.ofi.reset(None)

    def _read_trades(self) -> int:
        reader = self._trades
        if reader is None:
            return 0
        taken = 0
        while True:
            batch = reader.read_batch(65536)
            reader.drain_losses()  # a lapped trades read only thins the "last trades" list
            if not len(batch):
                if reader.position >= reader.tail():
                    reader.refresh()
                return taken
            mine = batch[batch["symbol_id"] == self.symbol_id]
            taken += len(mine)
            for ts, pm, pe, qm, qe, side in mine[
                ["ts_event", "price_m", "price_e", "qty_m", "qty_e", "side"]
            ][-self.keep_trades :].tolist():
                self.trades.append(LastTrade(ts, pm, pe, qm, qe, side))

    def take_ofi(self) -> tuple[float, float | None]:
        """(OFI since the last call, rolling sum of the last `OFI_WINDOW` calls' OFI)."""
        ofi, _ = self.ofi.take()
        value = ofi if self.book.valid else None
        self.ofi_window.push(value)
        return ofi, self.ofi_window.sum()

    def close(self) -> None:
        """Unmap the rings."""
        for reader in self._readers:
            reader.close()
        self._readers = []
