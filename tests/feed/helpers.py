"""Real processes for the feed writer tests: the simulator, the writer, and ring readers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from consolidator.payloads import Depth, Event, decode_depth, decode_event
from consolidator.process import stop_process
from consolidator.records import EventKind, RecordType
from consolidator.ring.reader import FixedRingReader, VariableRingReader
from consolidator.streams import open_stream_reader, ring_path
from consolidator.symbols import SymbolTableReader
from tests.wait import wait_until  # noqa: F401 - re-exported, the tests import it from here

REPO = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with _OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


def http_status(url: str) -> tuple[int, dict[str, str]]:
    """GET ``url``; the status and headers (errors included)."""
    try:
        with _OPENER.open(url, timeout=10) as response:
            response.read()
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            exc.read()
            return exc.code, dict(exc.headers)


class Sim:
    """The simulator as a subprocess (``python -m consolidator.sim.cli``)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = tmp / f"sim-{uuid.uuid4().hex[:6]}.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consolidator.sim.cli", "--port", "0", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.stdout.close()
        if not line:
            self.proc.wait(5)
            raise AssertionError(f"simulator did not start: {self.log.read_text()}")
        self.info = json.loads(line)
        self.ws_url: str = self.info["ws_url"]
        self.rest_url: str = self.info["rest_url"]

    def control(self, **body: Any) -> Any:
        reply = http_json("POST", self.rest_url + "/sim/control", body)
        assert reply.get("ok"), reply
        return reply

    def stats(self) -> Any:
        return http_json("GET", self.rest_url + "/sim/stats")

    def book(self, symbol: str) -> Any:
        return http_json("GET", f"{self.rest_url}/sim/book?symbol={symbol}")

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Feed:
    """A private configuration directory and shm_dir for one feed."""

    root: Path
    name: str = "f1"
    shm_dir: Path = field(default_factory=lambda: Path("/dev/shm") / f"feedtest-{uuid.uuid4().hex}")

    def __post_init__(self) -> None:
        (self.root / "feeds").mkdir(parents=True, exist_ok=True)
        (self.root / "consolidator.toml").write_text(
            f'shm_dir = "{self.shm_dir}"\nstate_dir = "{self.root / "state"}"\n'
        )

    def write(self, **keys: Any) -> None:
        lines = []
        for key, value in keys.items():
            lines.append(f"{key} = {json.dumps(value)}")
        (self.root / "feeds" / f"{self.name}.toml").write_text("\n".join(lines) + "\n")

    def remove(self) -> None:
        if os.environ.get("FEEDTEST_KEEP_SHM"):
            print(f"kept {self.shm_dir} (config {self.root})")
            return
        shutil.rmtree(self.shm_dir, ignore_errors=True)


class Writer:
    """``consolidator run FEED`` as a subprocess."""

    def __init__(self, feed: Feed, env: dict[str, str] | None = None) -> None:
        self.feed = feed
        self.log = feed.root / f"writer-{uuid.uuid4().hex[:6]}.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "consolidator.cli.main",
                    "run",
                    feed.name,
                    "--config-dir",
                    str(feed.root),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
                env=env,
            )

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        started = time.monotonic()
        if not stop_process(self.proc, timeout=timeout):
            raise AssertionError(f"writer ignored SIGTERM: {self.stderr()}")
        return self.proc.returncode, time.monotonic() - started

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def running(tmp: Path, sim_args: list[str], **feed_keys: Any) -> Iterator[tuple[Sim, Feed, Writer]]:
    """A simulator, a feed pointing at it and its writer; everything cleaned up afterwards."""
    sim = Sim(tmp, *sim_args)
    feed = Feed(tmp)
    writer: Writer | None = None
    try:
        keys = {"ws_url": sim.ws_url, "rest_url": sim.rest_url, **feed_keys}
        feed.write(**keys)
        writer = Writer(feed)
        yield sim, feed, writer
    finally:
        try:
            if writer is not None:
                writer.stop()
        finally:
            sim.stop()
            feed.remove()


class Rings:
    """Reads a feed's rings from the start (every call re-reads what is there now)."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def ready(self) -> bool:
        return ring_path(self.feed.shm_dir, self.feed.name, "events").exists()

    def names(self) -> dict[int, str]:
        """Symbol id -> name, as the symbol table holds them now."""
        table = SymbolTableReader(self.feed.shm_dir / self.feed.name / "symbols")
        try:
            return dict(enumerate(table.names()))
        finally:
            table.close()

    def fixed(self, stream: str) -> np.ndarray:
        reader = open_stream_reader(self.feed.shm_dir, self.feed.name, stream, start="oldest")
        assert isinstance(reader, FixedRingReader)
        with reader:
            batches = []
            while True:
                batch = reader.read_batch()
                if not len(batch):
                    break
                batches.append(batch)
            assert not reader.drain_losses()
        return np.concatenate(batches) if batches else reader_empty(stream)

    def variable(self, stream: str) -> list[tuple[int, int, bytes]]:
        """``(seq, record_type, payload)`` of every record."""
        reader = open_stream_reader(self.feed.shm_dir, self.feed.name, stream, start="oldest")
        assert isinstance(reader, VariableRingReader)
        out: list[tuple[int, int, bytes]] = []
        with reader:
            while True:
                batch = reader.read_batch()
                if not batch:
                    break
                out.extend((r.seq, r.record_type, bytes(r.payload)) for r in batch)
            assert not reader.drain_losses()
        return out

    def events(self) -> list[Event]:
        return [decode_event(p) for _, t, p in self.variable("events") if t == RecordType.EVENT]

    def event_kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events()]

    def depth(self) -> list[Depth]:
        out = []
        for _, record_type, payload in self.variable("depth"):
            out.append(decode_depth(payload, snapshot=record_type == RecordType.SNAPSHOT))
        return out


def reader_empty(stream: str) -> np.ndarray:
    from consolidator.streams import STREAMS

    dtype = STREAMS[stream].dtype
    assert dtype is not None
    return np.zeros(0, dtype)


@dataclass
class Book:
    """A book rebuilt from the depth stream (snapshot, then diffs)."""

    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    last_id: int = -1


def rebuild(records: list[Depth], symbol_name: Callable[[int], str]) -> dict[str, Book]:
    """Apply each symbol's snapshots and diffs in order, as a reader of the feed would."""
    from consolidator.records import decode_decimal

    books: dict[str, Book] = {}
    for depth in records:
        name = symbol_name(depth.symbol_id)
        if depth.snapshot:
            book = books[name] = Book(last_id=depth.last_update_id)
        else:
            book = books.setdefault(name, Book())
            book.last_id = depth.last_update_id
        for side, levels in ((book.bids, depth.bids), (book.asks, depth.asks)):
            for price_m, price_e, qty_m, qty_e in levels:
                price = Decimal(decode_decimal(price_m, price_e))
                qty = Decimal(decode_decimal(qty_m, qty_e))
                if qty == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
    return books


def truth_levels(rows: list[list[str]]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in rows}


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
