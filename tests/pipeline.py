"""The whole pipeline as real processes for tests: simulator -> writer -> flusher."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from consolidator.journal.history import HistoryReader
from consolidator.journal.position import read_positions
from consolidator.records import EventKind
from consolidator.ring.reader import Loss
from consolidator.streams import open_stream_reader
from tests.feed.checks import synced
from tests.feed.helpers import REPO, Feed, Rings, Sim, Writer, wait_until

STREAMS = ("trades", "quotes", "depth", "raw", "events")


class Flusher:
    """``consolidator flusher`` as a subprocess."""

    def __init__(self, feed: Feed, env: dict[str, str] | None = None) -> None:
        self.log = feed.root / "flusher.log"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consolidator.cli.main", "flusher",
                 "--config-dir", str(feed.root)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env,
            )  # fmt: skip

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return self.proc.returncode


def tails(feed: Feed) -> dict[str, int]:
    """Every stream's ring tail now."""
    out = {}
    for stream in STREAMS:
        with open_stream_reader(feed.shm_dir, feed.name, stream) as reader:
            out[stream] = reader.tail()
    return out


def firsts(feed: Feed) -> dict[str, int]:
    """Every stream's ring first_seq (where the current ring file started)."""
    out = {}
    for stream in STREAMS:
        with open_stream_reader(feed.shm_dir, feed.name, stream) as reader:
            out[stream] = reader.first_seq
    return out


def journal_items(
    state: Path, feed: str, stream: str
) -> tuple[list[int], list[object], list[Loss]]:
    """A stream's journal (no live ring): every sequence number, every record, every loss."""
    seqs: list[int] = []
    items: list[object] = []
    losses: list[Loss] = []
    with HistoryReader(state, Path("/nonexistent"), feed, stream, live=False) as reader:
        for item in reader.items():
            if isinstance(item, Loss):
                losses.append(item)
            elif isinstance(item, np.ndarray):
                seqs.extend(int(s) for s in item["seq"])
                items.extend(item.tolist())
            else:
                seqs.extend(r.seq for r in item)
                items.extend(item)
    return seqs, items, losses


def wait_rings(feed: Feed) -> None:
    """Until the writer has created its rings."""
    wait_until(lambda: (feed.shm_dir / feed.name / "events.ring").exists(), 30, "rings")


def fsyncs(feed: Feed, stream: str = "trades") -> int:
    """How many fdatasyncs of new ``stream`` records the flushers have published (0: none yet).

    Each flusher adds to the count it finds in the position file, and only when it made records
    durable: a count above one read before a flusher started is that flusher's progress.
    """
    pos = read_positions(feed.shm_dir, feed.name)
    return 0 if pos is None else pos.streams[stream].fsyncs


def wait_flusher_progress(feed: Feed, stream: str = "trades") -> None:
    """Until the running flusher has made more ``stream`` records durable (one fdatasync more)."""
    before = fsyncs(feed, stream)
    wait_until(lambda: fsyncs(feed, stream) > before, 60, f"the flusher to sync {stream}")


def _books_synced(rings: Rings, symbols: list[str]) -> bool:
    """Every symbol's book synchronized by the running writer (events since its start)."""
    if not rings.ready():
        return False
    ids = {name: i for i, name in rings.names().items()}
    events = rings.events()
    starts = [i for i, e in enumerate(events) if e.kind == EventKind.WRITER_START]
    since = events[starts[-1] :] if starts else []
    return all(s in ids for s in symbols) and synced(since, [ids[s] for s in symbols])


def _depth_at(rings: Rings, targets: dict[str, int]) -> bool:
    """Whether each symbol's newest depth record (diff or snapshot) is at its target update id."""
    names = rings.names()
    last: dict[str, int] = {}
    for depth in rings.depth():
        last[names.get(depth.symbol_id, "")] = depth.last_update_id
    return all(last.get(symbol, -1) >= target for symbol, target in targets.items())


def pause_delivered(p: Pipeline, timeout: float = 60.0) -> dict[str, Any]:
    """Pause the simulator; return once the writer has published everything sent before it.

    First every book is synchronized (so no snapshot is pending, fetched over REST outside the
    stream's order). The pause then sends every pending depth diff, and reports each symbol's
    update id. Every trade and bookTicker changed its symbol's book, so a diff of that symbol
    follows it on the writer's one connection: once each symbol's depth is at the reported id,
    the writer has received (and published, in order) all that was sent. Returns the pause reply.
    """
    rings = Rings(p.feed)
    symbols = list(p.sim.info["symbols"])
    wait_until(lambda: _books_synced(rings, symbols), timeout, "every book synchronized")
    paused: dict[str, Any] = p.sim.control(action="pause")
    targets = {s: int(paused["symbols"][s]["update_id"]) for s in symbols}
    wait_until(lambda: _depth_at(rings, targets), timeout, f"the writer to reach {targets}")
    return paused


@dataclass
class Pipeline:
    """A running simulator, its feed, the writer and the flusher (both replaceable)."""

    sim: Sim
    feed: Feed
    writer: Writer
    flusher: Flusher


@contextlib.contextmanager
def pipeline(tmp: Path, *sim_args: str) -> Iterator[Pipeline]:
    """Start simulator, writer and flusher; stop whatever still runs and clean up afterwards."""
    sim = Sim(tmp, *sim_args)
    feed = Feed(tmp)
    running: Pipeline | None = None
    try:
        feed.write(venue="binance", symbols=list(sim.info["symbols"]), ws_url=sim.ws_url,
                   rest_url=sim.rest_url)  # fmt: skip
        writer = Writer(feed)
        wait_rings(feed)
        running = Pipeline(sim, feed, writer, Flusher(feed))
        yield running
    finally:
        if running is not None:
            if running.writer.alive():
                running.writer.stop()
            if running.flusher.proc.poll() is None:
                running.flusher.stop()
        sim.stop()
        feed.remove()
