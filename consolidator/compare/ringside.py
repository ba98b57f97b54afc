"""A feed's rings (or its journal, then rings) as one side of a comparison.

Reads the chosen streams plus ``events`` as a registered reader named ``mdcompare`` (mdstat shows
how far behind it is), in batches, and hands every record of the chosen symbols to the
`Matcher` as a `Rec`. Depth snapshots become the side's resync windows and the writer's depth
GAP events its declared holes (`Matcher.snapshot`, `Matcher.hole`); being lapped becomes
`Matcher.lost`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np

from consolidator.compare.matcher import Matcher
from consolidator.compare.model import Rec
from consolidator.errors import ConfigError
from consolidator.payloads import decode_depth, decode_event
from consolidator.records import NO_SYMBOL, EventKind, RecordType, Side
from consolidator.ring.reader import VarRecord
from consolidator.ring.registry import register_reader
from consolidator.sources import (
    HistorySource,
    RingSource,
    Source,
    available_streams,
    feed_venue,
    symbol_names,
)
from consolidator.streams import open_stream_reader

__all__ = ["RingSide"]

_SIDES: Final = {int(Side.BUY): "buy", int(Side.SELL): "sell", int(Side.UNKNOWN): "unknown"}
_TRADE_COLUMNS: Final = ("trade_id", "ts_event", "ts_recv", "ts_commit", "price_m", "price_e",
                         "qty_m", "qty_e", "side", "symbol_id")  # fmt: skip
_QUOTE_COLUMNS: Final = ("update_id", "ts_event", "ts_recv", "ts_commit", "bid_px_m", "bid_px_e",
                         "bid_qty_m", "bid_qty_e", "ask_px_m", "ask_px_e", "ask_qty_m",
                         "ask_qty_e", "symbol_id")  # fmt: skip


class RingSide:
    """One feed's streams, read live from the rings or from the journal onwards.

    Args:
        shm_dir, state_dir: the configuration's directories.
        feed: the feed's name.
        streams: the compared streams (``events`` is read besides).
        symbols: only these symbols (None: all).
        side: the matcher side these records belong to.
        history: ``(start, since_ns)`` to read the journal from there (then the live ring).

    Raises:
        ConfigError: no such feed, or it lacks a compared stream.
    """

    def __init__(
        self,
        shm_dir: Path,
        state_dir: Path,
        feed: str,
        streams: Iterable[str],
        symbols: Iterable[str] | None,
        side: int,
        history: tuple[int | str, int | None] | None = None,
    ) -> None:
        self.feed = feed
        self.side = side
        existing = available_streams(shm_dir, state_dir, feed, history is not None)
        if not existing:
            raise ConfigError(f"no feed {feed!r} under {shm_dir} (is its writer running?)")
        self.streams = list(streams)
        for stream in self.streams:
            if stream not in existing:
                raise ConfigError(
                    f"feed {feed!r} has no {stream!r} stream (it has: {', '.join(existing)})"
                )
        self.venue = feed_venue(shm_dir, state_dir, feed)
        self._name_of, _ = symbol_names(shm_dir, state_dir, feed)
        self._names: dict[int, str] = {}
        self.wanted: set[str] | None = None if symbols is None else set(symbols)
        self.sources: dict[str, Source] = {}
        self.lost: dict[str, int] = {}
        self.events: dict[str, int] = {}

        wanted = [*self.streams, *(["events"] if "events" in existing else [])]
        try:
            for stream in wanted:
                slot = register_reader(shm_dir, feed, stream, "mdcompare")
                if history is not None:
                    start, since_ns = history
                    self.sources[stream] = HistorySource(
                        state_dir, shm_dir, feed, stream, start, since_ns, slot
                    )
                else:
                    reader = open_stream_reader(shm_dir, feed, stream, start="tail")
                    self.sources[stream] = RingSource(reader, slot)
        except BaseException:
            self.close()
            raise

    def _symbol(self, symbol_id: int) -> str | None:
        name = self._names.get(symbol_id)
        if name is None:
            name = self._name_of(symbol_id)
            if name.startswith("?"):
                return None  # not in the table yet: never published with that id
            self._names[symbol_id] = name
        if self.wanted is not None and name not in self.wanted:
            return None
        return name

    def poll(self, matcher: Matcher, until_ns: int | None = None) -> int:
        """Read what is new on every stream into ``matcher``; returns records read."""
        total = 0
        for stream, source in self.sources.items():
            batch, losses = source.read()
            for loss in losses:
                self.lost[stream] = self.lost.get(stream, 0) + loss.count
                if stream != "events":
                    matcher.lost(stream)
            if len(batch) == 0:
                continue
            total += len(batch)
            if stream == "trades":
                self._trades(matcher, batch, until_ns)  # type: ignore[arg-type]
            elif stream == "quotes":
                self._quotes(matcher, batch, until_ns)  # type: ignore[arg-type]
            elif stream == "depth":
                self._depth(matcher, batch, until_ns)  # type: ignore[arg-type]
            else:
                self._events(matcher, batch)  # type: ignore[arg-type]
        return total

    def _trades(self, matcher: Matcher, batch: np.ndarray, until_ns: int | None) -> None:
        add, side, symbol = matcher.add, self.side, self._symbol
        columns = _canonical(batch, _TRADE_COLUMNS)
        rows = zip(*columns, strict=True)
        for tid, ts_event, ts_recv, ts_commit, pm, pe, qm, qe, sd, sid in rows:
            name = symbol(sid)
            if name is None or (until_ns is not None and ts_recv > until_ns):
                continue
            values = ((pm, pe), (qm, qe), _SIDES.get(sd, "unknown"))
            add(side, "trades", name, Rec(tid, tid, ts_event, ts_recv, ts_commit, values))

    def _quotes(self, matcher: Matcher, batch: np.ndarray, until_ns: int | None) -> None:
        add, side, symbol = matcher.add, self.side, self._symbol
        columns = _canonical(batch, _QUOTE_COLUMNS)
        for uid, ts_event, ts_recv, ts_commit, bm, be, bqm, bqe, am, ae, aqm, aqe, sid in zip(
            *columns, strict=True
        ):
            name = symbol(sid)
            if name is None or (until_ns is not None and ts_recv > until_ns):
                continue
            values = ((bm, be), (bqm, bqe), (am, ae), (aqm, aqe))
            add(side, "quotes", name, Rec(uid, uid, ts_event, ts_recv, ts_commit, values))

    def _depth(self, matcher: Matcher, batch: list[VarRecord], until_ns: int | None) -> None:
        dec = _pair
        for record in batch:
            if record.record_type not in (RecordType.DEPTH, RecordType.SNAPSHOT):
                continue
            depth = decode_depth(record.payload, record.record_type == RecordType.SNAPSHOT)
            name = self._symbol(depth.symbol_id)
            if name is None or (until_ns is not None and depth.ts_recv > until_ns):
                continue
            if depth.snapshot:
                matcher.snapshot(self.side, "depth", name, depth.last_update_id)
                continue
            bids = tuple((dec(pm, pe), dec(qm, qe)) for pm, pe, qm, qe in depth.bids)
            asks = tuple((dec(pm, pe), dec(qm, qe)) for pm, pe, qm, qe in depth.asks)
            first, key = depth.first_update_id, depth.last_update_id
            values = (first, depth.prev_update_id, bids, asks)
            rec = Rec(key, first, depth.ts_event, depth.ts_recv, record.ts_commit, values)
            matcher.add(self.side, "depth", name, rec)

    def _events(self, matcher: Matcher, batch: list[VarRecord]) -> None:
        for record in batch:
            if record.record_type != RecordType.EVENT:
                continue
            event = decode_event(record.payload)
            kind = event.kind.name.lower() if isinstance(event.kind, EventKind) else "other"
            self.events[kind] = self.events.get(kind, 0) + 1
            if event.kind != EventKind.GAP or event.symbol_id == NO_SYMBOL:
                continue
            name = self._symbol(event.symbol_id)
            if name is None or "depth" not in self.streams:
                continue
            _declared_hole(matcher, self.side, name, _detail(event.detail))

    def caught_up(self) -> bool:
        """Nothing more to read now on any stream."""
        return all(source.caught_up() for source in self.sources.values())

    def refresh(self) -> None:
        """Follow ring replacements (call when idle)."""
        for source in self.sources.values():
            source.refresh()

    def close(self) -> None:
        """Leave the reader registry, close rings and journals."""
        for source in self.sources.values():
            source.close()
        self.sources = {}


def _canonical(batch: np.ndarray, columns: tuple[str, ...]) -> list[list[int]]:
    """The columns as lists, each ``*_m``/``*_e`` pair (mantissa, exponent) made canonical
    (`model.Pair`: no trailing zero in the mantissa; 0 as (0, 0)) for the whole batch at once."""
    out = {name: batch[name] for name in columns}
    for name in columns:
        if not name.endswith("_m"):
            continue
        exp_name = name[:-2] + "_e"
        mantissa = out[name].astype(np.int64)
        exponent = out[exp_name].astype(np.int64)
        zero = mantissa == 0
        exponent[zero] = 0
        for _ in range(19):
            strip = (mantissa % 10 == 0) & ~zero
            if not strip.any():
                break
            mantissa[strip] //= 10
            exponent[strip] += 1
        out[name], out[exp_name] = mantissa, exponent
    return [out[name].tolist() for name in columns]


def _pair(mantissa: int, exponent: int) -> tuple[int, int]:
    """One canonical pair (see `_canonical`)."""
    if mantissa == 0:
        return 0, 0
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    return mantissa, exponent


def _detail(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _declared_hole(matcher: Matcher, side: int, symbol: str, detail: dict[str, Any]) -> None:
    """The ids a depth GAP event says the writer never received (or dropped on a reset)."""
    expected, got = detail.get("expected"), detail.get("got")
    rule: Callable[[int, int], tuple[int, int]] | None = {
        "U/u": lambda e, g: (e, g - 1),  # expected U <= local + 1, got a later U
        "pu": lambda e, g: (e + 1, g),  # expected pu == local, got the pu of a later diff
        "prev": lambda e, g: (e + 1, g),
    }.get(str(detail.get("rule")))
    if rule is not None and isinstance(expected, int) and isinstance(got, int):
        lo, hi = rule(expected, got)
        matcher.hole(side, "depth", symbol, lo, hi)
    elif isinstance(detail.get("last_update_id"), int):
        # A reset (the connection was lost): everything after the book's id until the next
        # snapshot is the writer's loss.
        matcher.hole(side, "depth", symbol, detail["last_update_id"] + 1, None)
