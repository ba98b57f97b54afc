"""The whole pipeline as real processes for tests: simulator -> writer -> flusher."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from consolidator.journal.history import HistoryReader
from consolidator.ring.reader import Loss
from consolidator.streams import open_stream_reader
from tests.feed.helpers import REPO, Feed, Sim, Writer, wait_until

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
