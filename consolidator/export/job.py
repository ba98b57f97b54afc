"""``consolidator export FEED``: a feed's journal (and its live ring up to now) into partitioned
Parquet or CSV files, as records (trades, quotes, depth) or as sampled books and features.

Times given with ``--since``/``--until`` are exchange times (``ts_event``; ``ts_recv`` for a
record without one; ``ts`` for book rows), inclusive at both ends.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from consolidator.book.book import rule_for_venue
from consolidator.errors import ConfigError
from consolidator.export.books import BookExport, load_events
from consolidator.export.columns import (
    depth_columns,
    depth_headers,
    quote_columns,
    trade_columns,
)
from consolidator.export.files import PartitionedWriter
from consolidator.export.inputs import StreamInput, stream_exists
from consolidator.export.progress import Progress
from consolidator.export.schema import RECORD_SCHEMAS, book_schema, features_schema
from consolidator.ring.reader import Loss, VarRecord
from consolidator.sources import feed_venue, since, symbol_names

__all__ = [
    "EXPORT_STREAMS",
    "ExportOptions",
    "ExportSummary",
    "parse_interval",
    "parse_time",
    "run_export",
]

EXPORT_STREAMS: Final = ("trades", "quotes", "depth", "book", "features")
_UNITS: Final = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                 "m": 60_000_000_000, "h": 3_600_000_000_000}  # fmt: skip
_INTERVAL: Final = re.compile(r"(\d+)(ns|us|ms|s|m|h)")
MAX_DEPTH: Final = 99


def parse_time(value: str, option: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or integer nanoseconds since the epoch.

    Raises:
        ConfigError: neither.
    """
    if value.isdigit():
        return int(value)
    try:
        _, ns = since(value, [])
    except ConfigError:
        ns = None
    if ns is None:
        raise ConfigError(f"{option}: expected an ISO-8601 time or nanoseconds, got {value!r}")
    return ns


def parse_interval(value: str) -> int:
    """``100ms``, ``1s``, ``5m``, ... as nanoseconds.

    Raises:
        ConfigError: not a positive whole number of ns, us, ms, s, m or h.
    """
    match = _INTERVAL.fullmatch(value)
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            f"--interval: expected a positive duration like 100ms, 1s or 5m, got {value!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class ExportOptions:
    """What to export, from where, to where."""

    feed: str
    shm_dir: Path
    state_dir: Path
    out: Path
    streams: list[str]  # empty: the record streams (trades, quotes, depth) the feed has
    symbols: list[str] = field(default_factory=list)
    since_ns: int | None = None
    until_ns: int | None = None
    interval_ns: int = 100_000_000
    depth: int = 10
    fmt: str = "parquet"


@dataclass
class ExportSummary:
    """What an export wrote, per stream: rows, files, losses it met."""

    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    gap_rows: int = 0
    late_trades: int = 0


class _Job:
    def __init__(self, options: ExportOptions, progress: Progress) -> None:
        self.o = options
        self.progress = progress
        shm, state, feed = options.shm_dir, options.state_dir, options.feed
        if not any(stream_exists(shm, state, feed, s) for s in ("trades", "quotes", "depth")):
            raise ConfigError(
                f"no feed {feed!r}: no rings under {shm} and no journal under {state}/journal"
            )
        if not options.streams:
            options.streams = [
                s for s in ("trades", "quotes", "depth") if stream_exists(shm, state, feed, s)
            ]
        self.venue = feed_venue(shm, state, feed)
        self.name_of, id_of = symbol_names(shm, state, feed)
        self.symbol_ids: set[int] | None = None
        if options.symbols:
            ids = set()
            for name in options.symbols:
                sid = id_of(name)
                if sid is None:
                    raise ConfigError(f"symbol {name!r} has never been seen on feed {feed!r}")
                ids.add(sid)
            self.symbol_ids = ids
        for stream in options.streams:
            needs = "depth" if stream in ("book", "features") else stream
            if not stream_exists(shm, state, feed, needs):
                raise ConfigError(f"feed {feed!r} has no {needs!r} stream to export {stream}")
        self.summary = ExportSummary()

    def _input(self, stream: str, since_ns: int | None) -> StreamInput | None:
        o = self.o
        if not stream_exists(o.shm_dir, o.state_dir, o.feed, stream):
            return None
        return StreamInput(o.shm_dir, o.state_dir, o.feed, stream, since_ns)

    def run(self) -> ExportSummary:
        for stream in self.o.streams:
            if stream in ("book", "features"):
                self._books(stream)
            else:
                self._records(stream)
        return self.summary

    def _writer(self, stream: str) -> PartitionedWriter:
        o = self.o
        if stream == "book":
            schema = book_schema(o.depth)
        elif stream == "features":
            schema = features_schema(o.depth)
        else:
            schema = RECORD_SCHEMAS[stream]
        return PartitionedWriter(o.out, o.feed, stream, schema, o.fmt)

    def _names(self) -> dict[int, str]:
        return _NameCache(self.name_of)

    def _records(self, stream: str) -> None:
        o = self.o
        source = self._input(stream, o.since_ns)
        assert source is not None
        writer = self._writer(stream)
        names = self._names()
        label = f"{o.feed} {stream}"
        try:
            for item in source.items():
                if isinstance(item, Loss):
                    continue
                if isinstance(item, np.ndarray):
                    self._fixed(stream, item, writer, names)
                else:
                    self._depth(item, writer, names)
                size = writer.written_bytes + writer.pending_bytes()
                self.progress.update(label, source.fraction, writer.rows, size)
            self.summary.files[stream] = writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            source.close()
        self.progress.update(label, 1.0, writer.rows, writer.written_bytes, force=True)
        self.progress.done()
        self.summary.rows[stream] = writer.rows
        self.summary.lost[stream] = sum(loss.count for loss in source.losses)

    def _keep(self, symbol_ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        o = self.o
        keep = np.ones(len(ts), dtype=bool)
        if self.symbol_ids is not None:
            keep &= np.isin(symbol_ids, list(self.symbol_ids))
        if o.since_ns is not None:
            keep &= ts >= o.since_ns
        if o.until_ns is not None:
            keep &= ts <= o.until_ns
        return keep

    def _fixed(
        self, stream: str, batch: np.ndarray, writer: PartitionedWriter, names: dict[int, str]
    ) -> None:
        ts = np.where(batch["ts_event"] != 0, batch["ts_event"], batch["ts_recv"])
        keep = self._keep(batch["symbol_id"], ts)
        if not keep.all():
            batch, ts = batch[keep], ts[keep]
        if not len(batch):
            return
        build = trade_columns if stream == "trades" else quote_columns
        writer.write(build(batch, self.o.feed, self.venue, names), ts)

    def _depth(
        self, records: list[VarRecord], writer: PartitionedWriter, names: dict[int, str]
    ) -> None:
        if not records:
            return
        head = depth_headers(records)
        ts = np.where(head["ts_event"] != 0, head["ts_event"], head["ts_recv"])
        keep = self._keep(head["symbol_id"], ts)
        if not keep.all():
            records = [r for r, k in zip(records, keep.tolist(), strict=True) if k]
            ts = ts[keep]
        if records:
            writer.write(depth_columns(records, self.o.feed, self.venue, names), ts)

    def _books(self, stream: str) -> None:
        o = self.o
        label = f"{o.feed} {stream}"
        writer = self._writer(stream)
        depth = self._input("depth", None)
        assert depth is not None
        events_input = self._input("events", None)
        trades = self._input("trades", o.since_ns) if stream == "features" else None
        inputs = [s for s in (depth, events_input, trades) if s is not None]
        try:
            events = load_events(events_input)

            def write(columns: dict[str, Any], ts: np.ndarray) -> None:
                writer.write(columns, ts)
                size = writer.written_bytes + writer.pending_bytes()
                self.progress.update(label, depth.fraction, writer.rows, size)

            job = BookExport(
                write,
                feed=o.feed,
                venue=self.venue,
                names=self._names().__getitem__,
                rule=rule_for_venue(self.venue),
                interval_ns=o.interval_ns,
                depth=o.depth,
                features=stream == "features",
                symbols=self.symbol_ids,
                since_ns=o.since_ns,
                until_ns=o.until_ns,
            )
            job.run(depth, events, trades)
            self.summary.files[stream] = writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            for source in inputs:
                source.close()
        self.progress.update(label, 1.0, writer.rows, writer.written_bytes, force=True)
        self.progress.done()
        self.summary.rows[stream] = writer.rows
        self.summary.gap_rows += job.gap_rows
        self.summary.late_trades += job.late_trades
        self.summary.lost[stream] = sum(loss.count for loss in depth.losses)


class _NameCache(dict[int, str]):
    """Symbol id -> name, asking the symbol table once per id."""

    def __init__(self, lookup: Callable[[int], str]) -> None:
        super().__init__()
        self.lookup = lookup

    def __missing__(self, key: int) -> str:
        name = self[key] = self.lookup(key)
        return name

    def get(self, key: int, default: Any = None) -> Any:
        return self[key]


def run_export(options: ExportOptions, *, err: TextIO | None = None) -> ExportSummary:
    """Export as ``options`` say; a progress bar on ``err`` (stderr) when it is a terminal.

    Raises:
        ConfigError: an unknown feed, stream or symbol.
        ExportError: a value that the export format cannot hold exactly.
    """
    out = sys.stderr if err is None else err
    progress = Progress(out, enabled=out.isatty())
    return _Job(options, progress).run()
