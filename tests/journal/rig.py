"""An in-process writer and flusher on private directories, stepped by the test (deterministic)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consolidator.config import FlusherConfig, GlobalConfig
from consolidator.journal.flusher import Flusher
from consolidator.records import TRADE, TRADE_DTYPE
from consolidator.ring import FixedRingWriter, VariableRingWriter
from consolidator.streams import ring_path, write_feed_meta
from consolidator.symbols import SymbolTable
from tests.journal.helpers import FEED
from tests.journal.proc import publish, raw_layout, trades_layout


class Rig:
    """Rings of feed FEED (trades, raw) with a writer, and a `Flusher` object on them."""

    def __init__(
        self,
        root: Path,
        *,
        capacity: int = 1 << 14,
        fsync: Callable[[int], None] = os.fdatasync,
        **settings: Any,
    ) -> None:
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
        self.shm = base / f"jrig-{os.getpid()}-{root.name}"
        self.state = root / "state"
        flusher = FlusherConfig(**{"fsync_interval_ms": 1, "compress": False, **settings})
        self.config = GlobalConfig(root, self.shm, self.state, flusher)
        write_feed_meta(self.shm, FEED, "test")
        self.symbols = SymbolTable(self.shm / FEED / "symbols")
        self.trades = FixedRingWriter(
            ring_path(self.shm, FEED, "trades"),
            trades_layout(FEED, capacity),
            TRADE.pack_into,
            TRADE_DTYPE,
        )
        self.raw = VariableRingWriter(ring_path(self.shm, FEED, "raw"), raw_layout(FEED, capacity))
        self.fsync = fsync
        self.flusher: Flusher | None = None

    def start_flusher(self) -> Flusher:
        self.flusher = Flusher(self.config, poll_s=0.0, fsync=self.fsync)
        self.flusher.start()
        return self.flusher

    def stop_flusher(self) -> None:
        if self.flusher is not None:
            self.flusher.drain()
            self.flusher.close()
            self.flusher = None

    def publish(self, n: int) -> None:
        publish(self.trades, self.raw, self.symbols, n)

    @property
    def ends(self) -> dict[str, int]:
        return {"trades": self.trades.next_seq, "raw": self.raw.next_seq}

    def flush(self, max_steps: int = 10_000) -> None:
        """Step the flusher until it has journaled and synced what the rings hold."""
        flusher = self.flusher
        assert flusher is not None
        for _ in range(max_steps):
            flusher.step()
            flusher.sync()
            tasks = flusher.tasks.values()
            if len(tasks) == 2 and all(t.journal.durable_seq == self.ends[t.stream] for t in tasks):
                return
        raise AssertionError("the flusher did not catch up")

    def close(self) -> None:
        if self.flusher is not None:
            self.flusher.close()
        self.trades.close()
        self.raw.close()
        self.symbols.close()
        shutil.rmtree(self.shm, ignore_errors=True)
