"""The comparator's run: a live reference (or another feed) and the feed's rings read side by
side in one event loop, a live summary every interval, the report at the end.

The ring side is polled in batches every couple of milliseconds, yielding to the reference
connections in between; the reference connections feed the matcher as frames arrive.
``--journal`` reads both sides' journals over a past range instead, as fast as they read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from consolidator.compare import report
from consolidator.compare.binance_ref import BinanceReference
from consolidator.compare.client import ReferenceClient
from consolidator.compare.matcher import REF, RING, Matcher
from consolidator.compare.model import STREAMS
from consolidator.compare.output import OutDir
from consolidator.compare.ringside import RingSide
from consolidator.config import FeedConfig, GlobalConfig, load_feed
from consolidator.errors import ConfigError
from consolidator.sources import EPOCH, since, symbol_names

__all__ = ["MAX_SYMBOLS", "Options", "compare"]

_log = logging.getLogger(__name__)

MAX_SYMBOLS: Final = 50
IDLE_SLEEP_S: Final = 0.001
POLL_S: Final = 0.002
_MARKETS: Final = {"binance": "spot", "binance-usdm": "usdm"}


@dataclass(frozen=True)
class Options:
    """What the command line asked for (validated by the front-end)."""

    feed: str
    streams: tuple[str, ...] | None = None  # None: those of trades, quotes, depth the feed has
    symbols: tuple[str, ...] | None = None
    ws_url: str | None = None
    duration_s: float | None = None
    grace_s: float = 2.0
    interval_s: float = 5.0
    format: str = "text"
    out: Path | None = None
    against: str | None = None
    journal: bool = False
    since: str | None = None
    until: str | None = None


def _until_ns(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--until: expected an ISO-8601 time or nanoseconds, got {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=EPOCH.tzinfo)
    return int((when - EPOCH).total_seconds() * 1e9)


def _feed_config(config: GlobalConfig, feed: str) -> FeedConfig | None:
    path = config.config_dir / "feeds" / f"{feed}.toml"
    return load_feed(config, feed) if path.exists() else None


def _symbols(config: GlobalConfig, opts: Options, feed_config: FeedConfig | None) -> list[str]:
    if opts.symbols:
        _, id_of = symbol_names(config.shm_dir, config.state_dir, opts.feed)
        carried = feed_config.symbols if feed_config is not None else None
        for name in opts.symbols:
            if (carried is not None and name not in carried) or (
                carried is None and id_of(name) is None
            ):
                raise ConfigError(f"--symbol {name}: feed {opts.feed!r} does not carry it")
        return list(opts.symbols)
    if feed_config is not None and feed_config.symbols is not None:
        names = list(feed_config.symbols)
    else:
        name_of, _ = symbol_names(config.shm_dir, config.state_dir, opts.feed)
        names = []
        while len(names) < 10_000 and not (name := name_of(len(names))).startswith("?"):
            names.append(name)
    if not names:
        raise ConfigError(f"feed {opts.feed!r} has no symbols yet: name them with --symbol")
    if len(names) > MAX_SYMBOLS:
        _log.warning("comparing the first %d of %d symbols (choose with --symbol)",
                     MAX_SYMBOLS, len(names))  # fmt: skip
        names = names[:MAX_SYMBOLS]
    return names


class _Run:
    def __init__(self, config: GlobalConfig, opts: Options, live_out: TextIO) -> None:
        self.opts = opts
        self.live_out = live_out
        if opts.against is None:
            feed_config: FeedConfig | None = load_feed(config, opts.feed)
        else:
            feed_config = _feed_config(config, opts.feed)
        if opts.streams is None:
            carried = feed_config.channels if feed_config is not None else STREAMS
            opts = dataclasses.replace(opts, streams=tuple(s for s in STREAMS if s in carried))
            self.opts = opts
        assert opts.streams is not None
        if opts.symbols and feed_config is not None and feed_config.symbols is not None:
            for name in opts.symbols:
                if name not in feed_config.symbols:
                    raise ConfigError(f"--symbol {name}: feed {opts.feed!r} does not carry it")
        self.streams: tuple[str, ...] = opts.streams
        self.until_ns = _until_ns(opts.until)
        history = None
        if opts.journal:
            history = since(opts.since or "beginning", list(self.streams))
        self.matcher = Matcher(
            int(opts.grace_s * 1e9), self.streams, ref_sequenced=opts.against is None
        )
        self.sides: list[RingSide] = []
        self.client: ReferenceClient | None = None
        self.reference: dict[str, Any] | None = None
        try:
            self.ring = RingSide(
                config.shm_dir, config.state_dir, opts.feed, self.streams, None, RING, history
            )
            self.sides.append(self.ring)
            if opts.against is not None:
                self.sides.append(
                    RingSide(
                        config.shm_dir,
                        config.state_dir,
                        opts.against,
                        self.streams,
                        None,
                        REF,
                        history,
                    )  # fmt: skip
                )
            self.symbols = _symbols(config, opts, feed_config)
            for side in self.sides:
                side.wanted = set(self.symbols)
            if opts.against is None:
                self._reference(feed_config)
            self.out = OutDir(opts.out, self.matcher) if opts.out is not None else None
        except BaseException:
            self.close()
            raise

    def _reference(self, feed_config: FeedConfig | None) -> None:
        opts = self.opts
        if feed_config is None:
            raise ConfigError(
                f"feed {opts.feed!r} has no configuration (feeds/{opts.feed}.toml) to take the "
                "venue's streams from: compare it --against another feed"
            )
        market = _MARKETS.get(feed_config.venue)
        if market is None:
            raise ConfigError(f"mdcompare has no reference parser for venue {feed_config.venue!r}")
        trade_stream = feed_config.trade_stream or ("trade" if market == "spot" else "aggTrade")
        depth_speed = str(getattr(feed_config, "depth_speed", "100ms") or "")
        parser = BinanceReference(market, trade_stream, depth_speed)
        plan = parser.plan(self.symbols, self.streams)
        ws_url = (opts.ws_url or feed_config.ws_url).rstrip("/")
        self.client = ReferenceClient(ws_url, plan, parser, self.matcher)
        self.parser = parser
        self.ws_url = ws_url

    async def run(self) -> dict[str, Any]:
        opts = self.opts
        started_ns = time.time_ns()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        client_task = None
        if self.client is not None:
            client_task = asyncio.create_task(self.client.run(stop))
        deadline = None if opts.duration_s is None else time.monotonic() + opts.duration_s
        next_summary = time.monotonic() + opts.interval_s
        next_sweep = time.monotonic() + 0.25
        try:
            while not stop.is_set():
                read = sum(side.poll(self.matcher, self.until_ns) for side in self.sides)
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if opts.journal and not read and all(s.caught_up() for s in self.sides):
                    break
                if not opts.journal and now >= next_sweep:
                    current = not read and self.ring.caught_up()
                    self.matcher.sweep(time.time_ns(), ring_current=current)
                    next_sweep = now + 0.25
                if now >= next_summary:
                    elapsed = (time.time_ns() - started_ns) / 1e9
                    print(report.summary_line(self.matcher, elapsed), file=self.live_out,
                          flush=True)  # fmt: skip
                    next_summary = now + opts.interval_s
                if not read:
                    for side in self.sides:
                        side.refresh()
                    await asyncio.sleep(IDLE_SLEEP_S)
                elif opts.journal:
                    await asyncio.sleep(0)
                else:
                    # Let the reference connections read, and the ring gather a batch: per-batch
                    # costs dominate when every poll finds a record or two.
                    await asyncio.sleep(POLL_S)
        finally:
            stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if client_task is not None:
                await client_task
        # What the ring committed up to now: read it before judging.
        for _ in range(100):
            if not sum(side.poll(self.matcher, self.until_ns) for side in self.sides):
                break
        ended_ns = time.time_ns()
        end = self.until_ns if opts.journal and self.until_ns is not None else ended_ns
        if opts.journal and self.until_ns is None:
            end = max((r.ts_recv for lane in self.matcher.lanes.values()
                       for pending in lane.pending for r in pending.values()),
                      default=ended_ns) + self.matcher.grace_ns + 1  # fmt: skip
        self.matcher.sweep(end, final=True)
        return self._report(started_ns, ended_ns, end)

    def _report(self, started_ns: int, ended_ns: int, end_ns: int) -> dict[str, Any]:
        firsts = [self.matcher.first_recv[side] for side in (REF, RING)]
        overlap_from = None if None in firsts else max(f for f in firsts if f is not None)
        reference = None
        if self.client is not None:
            reference = {
                "url": self.ws_url,
                "connections": [path for path, _ in self.client.plan],
                "connects": self.client.connects,
                "messages": self.client.messages,
                "unparsed": self.parser.unparsed,
            }
        ring = {
            "records": self.matcher.records[RING],
            "reader_lost": dict(self.ring.lost),
            "events": dict(self.ring.events),
        }
        return report.build(
            self.matcher,
            feed=self.opts.feed,
            venue=self.ring.venue,
            started_ns=started_ns,
            ended_ns=ended_ns,
            overlap_ns=(overlap_from, end_ns - self.matcher.grace_ns),
            against=self.opts.against,
            reference=reference,
            ring=ring,
        )

    def close(self) -> None:
        for side in self.sides:
            side.close()
        self.sides = []


def compare(config: GlobalConfig, opts: Options) -> int:
    """Run the comparison, print the report; the exit code (0 all matched, 1 otherwise)."""
    live_out = sys.stderr if opts.format == "json" else sys.stdout
    run = _Run(config, opts, live_out)
    try:
        result = asyncio.run(run.run())
    finally:
        run.close()
    if opts.format == "json":
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        sys.stdout.write(report.text(result) + "\n")
    sys.stdout.flush()
    if run.out is not None:
        run.out.write(result, run.matcher)
    return 0 if result["ok"] else 1
