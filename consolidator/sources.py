"""Where mdtail reads a stream from: the live ring, or the journal and then the live ring.

Both give batches (a numpy array of fixed records, or a list of `VarRecord`) and `Loss` items, in
sequence order, and report their position after every read to the reader registry when given a
slot (`consolidator.ring.registry`). `since` turns ``--since beginning|SEQ|ISO-8601`` into a
journal starting point.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np

from consolidator.errors import ConfigError
from consolidator.journal.files import journal_root, stream_dir
from consolidator.journal.history import HistoryReader
from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.ring.reader import FixedRingReader, Loss, RingReader, VarRecord
from consolidator.ring.registry import ReaderSlot
from consolidator.streams import STREAMS, feed_streams, read_feed_meta, ring_path
from consolidator.symbols import SymbolTableReader

__all__ = [
    "HistorySource",
    "RingSource",
    "Source",
    "available_streams",
    "feed_venue",
    "since",
    "symbol_names",
]

Batch = np.ndarray | list[VarRecord]
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def since(value: str, streams: list[str]) -> tuple[int | str, int | None]:
    """``--since`` as a HistoryReader start and ``since_ns``.

    Raises:
        ConfigError: not ``beginning``, a sequence number or an ISO-8601 time; or a sequence
            number with more than one stream (sequence numbers are per stream).
    """
    if value == "beginning":
        return "beginning", None
    if value.isdigit():
        if len(streams) != 1:
            raise ConfigError(
                f"--since {value}: a sequence number needs exactly one --stream "
                "(each stream has its own sequence)"
            )
        return int(value), None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since: expected 'beginning', a sequence number or an ISO-8601 time, got {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # times without a zone are UTC, as the records are
    return "beginning", (when - EPOCH) // timedelta(microseconds=1) * 1000


def journal_streams(state_dir: Path, feed: str) -> list[str]:
    """Streams that have a journal directory."""
    return [s for s in STREAMS if stream_dir(state_dir, feed, s).is_dir()]


def available_streams(shm_dir: Path, state_dir: Path, feed: str, history: bool) -> list[str]:
    """Streams with a ring now (and, when reading history, with a journal)."""
    found = set(feed_streams(shm_dir, feed))
    if history:
        found |= set(journal_streams(state_dir, feed))
    return [s for s in STREAMS if s in found]


def feed_venue(shm_dir: Path, state_dir: Path, feed: str) -> str:
    """The feed's venue from its live metadata, else from the journal's copy."""
    copy = journal_root(state_dir) / feed / "feed.json"
    if not (shm_dir / feed / "feed.json").exists() and copy.exists():
        try:
            return str(json.loads(copy.read_text()).get("venue", "?"))
        except (OSError, ValueError):
            return "?"
    return read_feed_meta(shm_dir, feed).get("venue", "?")


def symbol_names(shm_dir: Path, state_dir: Path, feed: str) -> tuple[
    Callable[[int], str], Callable[[str], int | None]
]:  # fmt: skip
    """``name(id)`` and ``id(name)`` from the live symbol table, else the journal's copy."""
    live = shm_dir / feed / "symbols"
    if live.exists():
        table = SymbolTableReader(live)
        return table.name, table.id
    names = load_symbols(symbols_path(state_dir, feed))
    ids = {n: i for i, n in enumerate(names)}
    return (lambda i: names[i] if i < len(names) else f"?{i}"), ids.get


class RingSource:
    """The live ring only."""

    def __init__(self, reader: RingReader, slot: ReaderSlot | None = None) -> None:
        self.reader = reader
        self.slot = slot

    def read(self) -> tuple[Batch, list[Loss]]:
        reader = self.reader
        if isinstance(reader, FixedRingReader):
            batch: Batch = reader.read_batch(4096)
        else:
            batch = reader.read_batch(1024)  # type: ignore[attr-defined]
        if self.slot is not None:
            self.slot.update(reader.position, reader.lost)
        return batch, reader.drain_losses()

    def caught_up(self) -> bool:
        return self.reader.position >= self.reader.tail()

    def refresh(self) -> None:
        self.reader.refresh()

    def close(self) -> None:
        """Leave the registry and unmap the ring."""
        if self.slot is not None:
            self.slot.close()
        self.reader.close()


class HistorySource:
    """The journal from a starting point, then the live ring (no gap, no duplicate)."""

    def __init__(
        self,
        state_dir: Path,
        shm_dir: Path,
        feed: str,
        stream: str,
        start: int | str,
        since_ns: int | None,
        slot: ReaderSlot | None = None,
    ) -> None:
        self.slot = slot
        self.lost = 0
        self.history = HistoryReader(
            state_dir, shm_dir, feed, stream, start=start, since_ns=since_ns, live=True
        )
        self.ring_file = ring_path(shm_dir, feed, stream)
        self.idle = False
        fixed = STREAMS[stream].dtype
        self.empty: Batch = np.empty(0, fixed) if fixed is not None else []

    def read(self) -> tuple[Batch, list[Loss]]:
        item = self.history.read()
        self.idle = item is None
        if isinstance(item, Loss):
            self.lost += item.count
        if self.slot is not None:
            self.slot.update(self.history.position, self.lost)
        if item is None:
            return self.empty, []
        if isinstance(item, Loss):
            return self.empty, [item]
        return item, []

    def caught_up(self) -> bool:
        """Nothing more now: at the live ring's tail (or at the journal's end with no ring)."""
        if not self.idle:
            return False
        ring = self.history.ring
        if self.history.attached and ring is not None:
            return ring.position >= ring.tail()
        return not self.ring_file.exists()

    def refresh(self) -> None:
        """The history reader follows ring replacements itself."""

    def close(self) -> None:
        """Leave the registry and close the journal and ring."""
        if self.slot is not None:
            self.slot.close()
        self.history.close()


Source = RingSource | HistorySource
