"""``mdtail FEED``: print a feed's records as they arrive, like ``tail -f`` for market data.

mdtail registers as a reader of each stream it follows (``consolidator.ring.registry``; silently
not, when the registry is not writable for this user) so mdstat can show how far behind it is,
and leaves the registry on any orderly exit: end of input, Ctrl-C, SIGTERM, a closed pipe.
"""

from __future__ import annotations

import argparse
import csv
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import orjson

from consolidator.errors import ConfigError
from consolidator.process import global_config, parser, run_main
from consolidator.render import CSV_COLUMNS, Renderer, format_text, loss_object, use_color
from consolidator.ring.reader import FixedRingReader, RingReader, VariableRingReader, VarRecord
from consolidator.ring.registry import register_reader
from consolidator.sources import (
    HistorySource,
    RingSource,
    Source,
    available_streams,
    feed_venue,
    since,
    symbol_names,
)
from consolidator.streams import STREAMS, open_stream_reader, read_feed_meta

__all__ = ["main"]

DEFAULT_STREAMS = ("trades", "quotes", "depth", "events")
IDLE_SLEEP_S = 0.001


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser("mdtail", "Print the records of a feed, following new ones as they arrive.")
    p.add_argument("feed", help="feed name (a file in feeds/ of the configuration)")
    p.add_argument("--stream", action="append", choices=list(STREAMS), help="repeatable")
    p.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    p.add_argument("-n", type=int, metavar="N", help="start with the last N records of each stream")
    p.add_argument("--since", help="beginning | SEQ | ISO-8601 time (reads the journal first)")
    p.add_argument("--no-follow", action="store_true", help="print what exists and exit")
    p.add_argument("--format", choices=["text", "json", "csv"], default="text")
    p.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the text format (auto: on a terminal, unless NO_COLOR is set)",
    )
    args = p.parse_args(argv)
    if args.n is not None and args.n < 0:
        p.error(f"-n must be >= 0: {args.n}")
    return args


class _Tail:
    def __init__(self, args: argparse.Namespace) -> None:
        config = global_config(args)
        self.feed = feed = args.feed
        shm, state = config.shm_dir, config.state_dir
        history = args.since is not None
        if history and args.n is not None:
            raise ConfigError("-n and --since cannot be combined")
        existing = available_streams(shm, state, feed, history)
        if not existing:
            read_feed_meta(shm, feed)  # the clear "no feed" error
        wanted = list(dict.fromkeys(args.stream or DEFAULT_STREAMS))
        if args.stream:
            for stream in wanted:
                if stream not in existing:
                    raise ConfigError(
                        f"feed {feed!r} has no {stream!r} stream "
                        f"(it has: {', '.join(existing) or 'none'})"
                    )
        self.streams = [s for s in wanted if s in existing]
        name_of, id_of = symbol_names(shm, state, feed)
        self.symbol_ids: set[int] | None = None
        self.symbol_names: set[str] = set()
        if args.symbol:
            ids = set()
            for name in args.symbol:
                sid = id_of(name)
                if sid is None:
                    raise ConfigError(f"symbol {name!r} has never been seen on feed {feed!r}")
                ids.add(sid)
            self.symbol_ids = ids
            self.symbol_names = set(args.symbol)
        self.render = Renderer(feed, feed_venue(shm, state, feed), name_of)
        self.sources: dict[str, Source] = {}
        try:
            if history:
                start, since_ns = since(args.since, self.streams)
                for stream in self.streams:
                    self.sources[stream] = HistorySource(
                        state, shm, feed, stream, start, since_ns,
                        register_reader(shm, feed, stream, "mdtail"),
                    )  # fmt: skip
            else:
                for stream in self.streams:
                    reader = open_stream_reader(shm, feed, stream, start="tail")
                    if args.n is not None:
                        reader.position = self._last(stream, reader, args.n)
                    elif args.no_follow:
                        reader.position = reader.oldest()
                    slot = register_reader(shm, feed, stream, "mdtail")
                    self.sources[stream] = RingSource(reader, slot)
        except BaseException:
            self.close()
            raise
        self.format = args.format
        self.color = args.format == "text" and use_color(
            args.color, sys.stdout.isatty(), os.environ
        )
        self.out: TextIO = sys.stdout
        self.csv = csv.DictWriter(self.out, CSV_COLUMNS, extrasaction="ignore")
        if self.format == "csv":
            self.csv.writeheader()

    def _last(self, stream: str, reader: RingReader, n: int) -> int:
        """Where to start reading so that the last ``n`` records shown are the ones printed.

        Without a symbol filter that is simply ``n`` records back; with one, the ring is scanned
        backwards (in growing steps) until ``n`` records of the chosen symbols are found.
        """
        tail, oldest = reader.tail(), reader.oldest()
        if self.symbol_ids is None or n == 0:
            return max(oldest, tail - n)
        ids = list(self.symbol_ids)
        end, step, found = tail, 4096, list[int]()
        while len(found) < n and end > oldest:
            start = max(reader.oldest(), end - step)
            reader.position = start
            seqs: list[int] = []
            while start <= reader.position < end:
                if isinstance(reader, FixedRingReader):
                    batch = reader.read_batch(min(65536, end - reader.position))
                    seqs += batch["seq"][np.isin(batch["symbol_id"], ids)].tolist()
                elif isinstance(reader, VariableRingReader):
                    records = reader.read_batch(min(4096, end - reader.position))
                    seqs += [obj["seq"] for obj in self._objects(stream, records)]
                if not reader.available():
                    break
            found = seqs + found
            end, step = start, step * 4
        reader.drain_losses()  # records lapped while looking back are not this reader's loss
        return found[-n] if len(found) >= n else max(reader.oldest(), end)

    def _objects(self, stream: str, batch: np.ndarray | list[VarRecord]) -> list[dict[str, Any]]:
        if isinstance(batch, np.ndarray):
            if self.symbol_ids is not None and len(batch):
                batch = batch[np.isin(batch["symbol_id"], list(self.symbol_ids))]
            return self.render.trades(batch) if stream == "trades" else self.render.quotes(batch)
        objs = []
        for record in batch:
            obj = self.render.variable(record)
            if obj is None:
                continue
            if self.symbol_ids is not None and obj.get("symbol") not in self.symbol_names:
                continue
            objs.append(obj)
        return objs

    def _emit(self, obj: dict[str, Any]) -> None:
        if self.format == "json":
            self.out.write(orjson.dumps(obj).decode() + "\n")
        elif self.format == "csv":
            row = dict(obj)
            for key in ("bids", "asks"):
                row.pop(key, None)
            self.csv.writerow(row)
        else:
            self.out.write(format_text(obj, color=self.color) + "\n")

    def poll(self) -> int:
        """Read what is new on every stream, print it in commit order; returns records printed."""
        objs: list[dict[str, Any]] = []
        for stream, source in self.sources.items():
            batch, losses = source.read()
            for loss in losses:
                print(
                    f"mdtail: lost {loss.count} {stream} records from seq {loss.first_seq} "
                    f"({loss.reason})",
                    file=sys.stderr,
                )
                if self.format == "json":
                    objs.append({**loss_object(self.feed, stream, loss), "ts_commit": 0})
            objs.extend(self._objects(stream, batch))
        objs.sort(key=lambda o: o["ts_commit"])
        for obj in objs:
            if obj["type"] == "loss":
                obj.pop("ts_commit")
            self._emit(obj)
        if objs:
            self.out.flush()
        return len(objs)

    def caught_up(self) -> bool:
        return all(source.caught_up() for source in self.sources.values())

    def refresh(self) -> None:
        for source in self.sources.values():
            source.refresh()

    def close(self) -> None:
        """Leave the reader registry, close the rings and journals."""
        for source in self.sources.values():
            source.close()
        self.sources = {}


class _OutputWatch:
    """Notices a reader that went away (``mdtail | head``) while there is nothing to write.

    Like GNU ``tail -f``: a closed pipe only shows as EPIPE on the next write, which may never come
    on a quiet feed, so poll stdout for POLLERR/POLLHUP when idle.
    """

    def __init__(self, fd: int) -> None:
        self._poll: select.poll | None = None
        if stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode):
            self._poll = select.poll()
            self._poll.register(fd, select.POLLERR | select.POLLHUP)

    def closed(self) -> bool:
        return self._poll is not None and bool(self._poll.poll(0))


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a quiet exit that still runs the cleanup (leave the registry)


def _main(argv: Sequence[str] | None) -> int:
    args = _args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    tail = _Tail(args)
    try:
        watch = _OutputWatch(sys.stdout.fileno())
        while True:
            printed = tail.poll()
            if args.no_follow and tail.caught_up():
                return 0
            if not printed:
                if watch.closed():
                    raise BrokenPipeError
                tail.refresh()
                time.sleep(IDLE_SLEEP_S)
    finally:
        tail.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mdtail``."""
    return run_main("mdtail", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
