"""``consolidator replay FEED``: publish a range of the journal into the rings of another feed.

``--stream S`` (repeatable; default: every stream the feed's journal has), ``--from`` and ``--to``
(a sequence number, or an ISO-8601 time; ``--from`` is inclusive, ``--to`` exclusive; a sequence
number needs exactly one ``--stream``), ``--speed recorded`` (keep the ``ts_commit`` spacing) or
``max``, and ``--target-feed NAME`` (required, not the source feed: live data is not disturbed).

Streams are merged in ``ts_commit`` order. Replayed records get the target rings' own sequence
numbers and commit times; ``ts_event``, ``ts_recv`` and payloads are kept, and the source feed's
symbol table is copied to the target so symbol ids keep their names. Losses in the journal are
reported on stderr (they cannot be replayed).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

import numpy as np

from consolidator.config import GlobalConfig, check_feed_name
from consolidator.errors import ConfigError
from consolidator.journal.files import journal_root, list_streams
from consolidator.journal.history import HistoryReader, Item
from consolidator.journal.symbols import copy_symbols, load_symbols, symbols_path
from consolidator.process import global_config, parser, setup_logging
from consolidator.ring.reader import Loss, VarRecord
from consolidator.ring.writer import FixedRingWriter, RingWriter, VariableRingWriter
from consolidator.streams import STREAMS, open_stream_writer, write_feed_meta

__all__ = ["Point", "parse_point", "replay", "replay_main"]

log = logging.getLogger("consolidator.replay")


@dataclass(frozen=True)
class Point:
    """A position in a stream: a sequence number or a time (ns since the epoch)."""

    seq: int | None = None
    time_ns: int | None = None


def parse_point(text: str, option: str) -> Point:
    """A sequence number or an ISO-8601 time (naive times are UTC).

    Raises:
        ConfigError: neither.
    """
    if text.isdigit():
        return Point(seq=int(text))
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option}: expected a sequence number or an ISO-8601 time, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Point(time_ns=int(when.timestamp() * 1_000_000) * 1000)


class _Source:
    """One stream's reader, its current batch, and how far into it we are."""

    def __init__(self, stream: str, reader: HistoryReader, end: Point) -> None:
        self.stream = stream
        self.reader = reader
        self.end = end
        self.item: np.ndarray | list[VarRecord] | None = None
        self.ts: np.ndarray = np.empty(0, np.int64)
        self.index = 0
        self.last = False
        """No batch after the current one (the end point is in it, or the journal ended)."""
        self.replayed = 0
        self.lost = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None

    def head_ts(self) -> int | None:
        """ts_commit of the next record to replay, loading the next batch if needed."""
        while self.item is None or self.index >= len(self.ts):
            if self.last:
                return None
            self._load()
        return int(self.ts[self.index])

    def _load(self) -> None:
        got: Item | None = self.reader.read()
        if got is None:
            self.last = True
            return
        if isinstance(got, Loss):
            if self.end.seq is not None and got.first_seq >= self.end.seq:
                self.last = True
                return
            self.lost += got.count
            log.warning(
                "%s: %d records missing from the journal at seq %d..%d (%s)",
                self.stream, got.count, got.first_seq, got.first_seq + got.count - 1, got.reason,
            )  # fmt: skip
            return
        if isinstance(got, np.ndarray):
            seqs, ts = got["seq"].astype(np.int64), got["ts_commit"].astype(np.int64)
        else:
            seqs = np.fromiter((r.seq for r in got), np.int64, len(got))
            ts = np.fromiter((r.ts_commit for r in got), np.int64, len(got))
        keep = len(ts)
        if self.end.seq is not None:
            keep = int(np.searchsorted(seqs, self.end.seq))
        if self.end.time_ns is not None:
            late = np.flatnonzero(ts >= self.end.time_ns)
            if len(late):
                keep = min(keep, int(late[0]))
        if keep < len(ts):
            self.last = True
        self.item, self.ts, self.index = got[:keep], ts[:keep], 0
        if keep == 0:
            self.item = None

    def take(self, upto_ts: int | None) -> np.ndarray | list[VarRecord]:
        """Records from the current one through ``upto_ts`` (at least one)."""
        assert self.item is not None
        stop = len(self.ts) if upto_ts is None else int(np.searchsorted(self.ts, upto_ts, "right"))
        stop = max(stop, self.index + 1)
        out = self.item[self.index : stop]
        self.index = stop
        return out


def replay(
    config: GlobalConfig,
    feed: str,
    streams: Sequence[str],
    start: Point,
    end: Point,
    speed: str,
    target: str,
    stop: list[bool] | None = None,
) -> dict[str, dict[str, int | None]]:
    """Replay ``streams`` of ``feed``'s journal into ``target``'s rings; per-stream stats."""
    stop = stop if stop is not None else [False]
    names = load_symbols(symbols_path(config.state_dir, feed))
    copy_symbols(names, config.shm_dir / target / "symbols")
    venue = "replay"
    try:
        meta = json.loads((journal_root(config.state_dir) / feed / "feed.json").read_text())
        venue = str(meta.get("venue", venue))
    except (OSError, ValueError):
        pass
    write_feed_meta(config.shm_dir, target, venue)
    sources: list[_Source] = []
    writers: dict[str, RingWriter] = {}
    try:
        for stream in streams:
            reader = HistoryReader(
                config.state_dir, config.shm_dir, feed, stream, live=False,
                start=start.seq if start.seq is not None else "beginning",
                since_ns=start.time_ns,
            )  # fmt: skip
            sources.append(_Source(stream, reader, end))
            writers[stream] = open_stream_writer(config.shm_dir, target, stream)
        _run(sources, writers, speed, stop)
    finally:
        for source in sources:
            source.reader.close()
        for writer in writers.values():
            writer.close()
    return {
        s.stream: {"replayed": s.replayed, "lost": s.lost, "first_seq": s.first_seq,
                   "last_seq": s.last_seq}
        for s in sources
    }  # fmt: skip


def _run(
    sources: list[_Source], writers: dict[str, RingWriter], speed: str, stop: list[bool]
) -> None:
    t0: float | None = None
    ts0 = 0
    last_beat = time.monotonic()
    while not stop[0]:
        heads = [(ts, s) for s in sources if (ts := s.head_ts()) is not None]
        if not heads:
            return
        heads.sort(key=lambda h: h[0])
        ts, source = heads[0]
        bound = heads[1][0] if len(heads) > 1 else None
        if speed == "recorded":
            now = time.monotonic()
            if t0 is None:
                t0, ts0 = now, ts
            due = t0 + (ts - ts0) / 1e9
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            horizon = ts0 + int((now - t0) * 1e9)
            bound = horizon if bound is None else min(bound, horizon)
        chunk = source.take(bound)
        writer = writers[source.stream]
        if isinstance(chunk, np.ndarray):
            assert isinstance(writer, FixedRingWriter)
            first, last = int(chunk["seq"][0]), int(chunk["seq"][-1])
            writer.publish_batch(np.ascontiguousarray(chunk))
        else:
            assert isinstance(writer, VariableRingWriter)
            first, last = chunk[0].seq, chunk[-1].seq
            for record in chunk:
                writer.publish(record.record_type, record.payload, record.flags)
        source.replayed += len(chunk)
        source.first_seq = first if source.first_seq is None else source.first_seq
        source.last_seq = last
        if time.monotonic() - last_beat > 0.5:
            last_beat = time.monotonic()
            for w in writers.values():
                w.heartbeat()


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(
        "consolidator replay", "Replay a range of a feed's journal into another feed's rings."
    )
    p.add_argument("feed", help="the feed whose journal is replayed")
    p.add_argument("--stream", action="append", choices=list(STREAMS), help="repeatable")
    p.add_argument(
        "--from", dest="start", metavar="SEQ|TIME", help="inclusive (default: beginning)"
    )
    p.add_argument("--to", dest="end", metavar="SEQ|TIME", help="exclusive (default: journal end)")
    p.add_argument("--speed", choices=["recorded", "max"], default="recorded")
    p.add_argument("--target-feed", required=True, metavar="NAME", help="the feed to publish into")
    return p.parse_args(argv)


def replay_main(argv: Sequence[str] | None) -> int:
    """``consolidator replay``."""
    args = _args(argv)
    config = global_config(args)
    setup_logging()
    check_feed_name(args.feed)
    check_feed_name(args.target_feed)
    if args.target_feed == args.feed:
        raise ConfigError(f"--target-feed must differ from the source feed {args.feed!r}")
    have = [s for f, s in list_streams(config.state_dir) if f == args.feed and s in STREAMS]
    if not have:
        raise ConfigError(
            f"no journal for feed {args.feed!r} under {journal_root(config.state_dir)}"
        )
    streams = list(dict.fromkeys(args.stream or have))
    missing = [s for s in streams if s not in have]
    if missing:
        raise ConfigError(
            f"feed {args.feed!r} has no journal for stream {missing[0]!r} "
            f"(it has: {', '.join(have)})"
        )
    start = parse_point(args.start, "--from") if args.start else Point()
    end = parse_point(args.end, "--to") if args.end else Point()
    if (start.seq is not None or end.seq is not None) and len(streams) != 1:
        raise ConfigError(
            "--from/--to SEQ need exactly one --stream (sequence numbers are per stream)"
        )
    stop = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = replay(config, args.feed, streams, start, end, args.speed, args.target_feed, stop)
    for stream, st in stats.items():
        print(
            f"replay: {args.feed}/{stream}: {st['replayed']} records (seq {st['first_seq']}.."
            f"{st['last_seq']}) into {args.target_feed}/{stream}; {st['lost']} missing",
            file=sys.stderr,
        )
    return 0
