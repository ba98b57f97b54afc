"""Binance spot and USD-M futures market data, sans I/O (PROTOCOLS.md sections 1 and 2).

`BinanceProtocol` plans the connections (combined ``/stream`` endpoints, SUBSCRIBE frames), turns
received frames into records and requests, and sequences each symbol's order book with
`consolidator.venues.book_sync` (spot: `UpdateIdRule`, USD-M: `FuturesRule`).

Streams: trades ``<sym>@trade`` (spot) or ``<sym>@aggTrade`` (USD-M; flagged AGGREGATED; either
market may use either), quotes ``<sym>@bookTicker``, depth ``<sym>@depth@100ms`` (``depth_speed``
picks another interval of `DEPTH_STREAMS`). USD-M carries depth and bookTicker on ``/public``,
aggTrade on ``/market`` (PROTOCOLS.md 2.1).

Frames are routed by the combined-stream wrapper's ``stream`` name (the payload's ``s`` is not
read). A frame of a stream not carried (``kline_1m`` in the recordings, a stream just unsubscribed)
is ``Dropped("unsubscribed_stream")``; a wrong event type on a carried stream is
``ParseError("unknown_event")``. Unwrapped ``/ws``-style market payloads are not supported;
unwrapped replies and ``serverShutdown`` are. Unknown fields are ignored.

The driver reports ``on_connected`` when a planned connection is open and ``on_disconnect`` when
it closed or failed to open; a closed connection keeps its streams until ``plan_rotation`` moves
them to a replacement. A stream is covered by a connection once its SUBSCRIBE was acknowledged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

import orjson

from consolidator.payloads import Depth, Quote, Trade
from consolidator.records import EventKind, Side, TradeFlag
from consolidator.venues.base import (
    ConnectionPlan,
    ConnectionTable,
    ControlPacer,
    Dropped,
    FetchSnapshot,
    Output,
    VenueUsageError,
    checked_frame,
    decimal_memo,
    make_event,
    ms_to_ns,
    parse_error,
    price_levels,
    uint,
)
from consolidator.venues.book_sync import BookSync, FuturesRule, SyncState, UpdateIdRule

__all__ = [
    "CHANNELS",
    "DEPTH_STREAMS",
    "SPOT_LIMITS",
    "USDM_LIMITS",
    "BinanceLimits",
    "BinanceProtocol",
    "Market",
    "depth_snapshot_weight",
    "depth_stream",
]

Market = Literal["spot", "usdm"]
CHANNELS: Final = frozenset({"trades", "quotes", "depth"})

_TRADE, _QUOTE, _DEPTH = 0, 1, 2
_CHANNEL_OF: Final = ("trades", "quotes", "depth")
_BUY: Final = int(Side.BUY)
_SELL: Final = int(Side.SELL)
_OFF_BOOK: Final = int(TradeFlag.OFF_BOOK)
_DUP_TRADE: Final = Dropped("duplicate_trade", 1)
_DUP_QUOTE: Final = Dropped("duplicate_quote", 1)
_UNSUBSCRIBED: Final = Dropped("unsubscribed_stream", 1)
_UNEXPECTED_SNAPSHOT: Final = Dropped("unexpected_snapshot", 1)
_RETIRED: Final = Dropped("retired_connection", 1)
MAX_HELD: Final = 10_000
"""Records held per stream from a replacement connection before it takes over regardless."""
_USDM_WEIGHTS: Final = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
DEPTH_STREAMS: Final[dict[Market, dict[str, str]]] = {
    "spot": {"100ms": "@depth@100ms", "1000ms": "@depth"},
    "usdm": {
        "0ms": "@depth@0ms",
        "100ms": "@depth@100ms",
        "250ms": "@depth",
        "500ms": "@depth@500ms",
    },
}
"""Diff-depth stream suffix by update interval (PROTOCOLS.md 1.3.4, 2.2.4): each market's plain
``@depth`` is its default interval (spot 1000 ms, USD-M 250 ms); USD-M ``@depth@0ms`` is
undocumented but used (real time)."""
_Json = dict[str, object]
_loads = orjson.loads
_lookup, _remember = decimal_memo()  # `decimal(x)` is `_lookup(x) or _remember(x)`
_new = tuple.__new__
"""``_new(Trade, fields)`` is ``Trade(*fields)`` without the NamedTuple's Python ``__new__``."""
_JSONDecodeError = orjson.JSONDecodeError


def depth_stream(market: Market, speed: str) -> str:
    """The diff-depth stream suffix of ``market`` at interval ``speed`` ("@depth@100ms").

    Raises:
        VenueUsageError: an interval the market does not offer.
    """
    suffix = DEPTH_STREAMS.get(market, {}).get(speed)
    if suffix is None:
        offered = ", ".join(DEPTH_STREAMS.get(market, {}))
        raise VenueUsageError(f"no {market} diff-depth stream at {speed!r} ({offered})")
    return suffix


def depth_snapshot_weight(market: Market, limit: int) -> int:
    """The request weight of a depth snapshot of ``limit`` levels (PROTOCOLS.md 1.4.2, 2.3).

    Raises:
        VenueUsageError: a limit the venue does not serve.
    """
    if market == "spot" and 1 <= limit <= 5000:
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    if market == "usdm" and limit in _USDM_WEIGHTS:
        return _USDM_WEIGHTS[limit]
    raise VenueUsageError(f"no {market} depth snapshot with limit={limit}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BinanceLimits:
    """The venue's published limits and our choices for them (PROTOCOLS.md 1.1, 1.4, 2.1, 2.3).

    Attributes:
        max_streams_per_connection: spot 1024 (1.1); USD-M 200 (2.1: the docs say 1024 or 200).
        control_messages_per_second: incoming messages per connection, pongs included: 5 / 10.
        max_frame_bytes: larger frames are refused as ``ParseError("too_large")``.
        snapshot_limit: REST depth levels: 1000 (spot allows up to 5000, at weight 250).
        snapshot_weight: the request weight of one snapshot: spot 50, USD-M 20 at 1000 levels.
        rest_weight_per_minute: REQUEST_WEIGHT budget per IP: spot 6000 (1.4), USD-M 2400 (2.3).
        depth_speed: diff-depth update interval, a key of `DEPTH_STREAMS` for the market.
        trade_stream: "trade" (raw trades) or "aggTrade" (aggregate trades).
        max_params_per_frame: streams per SUBSCRIBE/UNSUBSCRIBE frame.
        max_buffered_diffs: diffs held per symbol while its snapshot is awaited.
    """

    max_streams_per_connection: int
    control_messages_per_second: int
    max_frame_bytes: int = 1 << 20
    snapshot_limit: int = 1000
    snapshot_weight: int
    rest_weight_per_minute: int
    depth_speed: str = "100ms"
    trade_stream: Literal["trade", "aggTrade"]
    max_params_per_frame: int = 200
    max_buffered_diffs: int = 1000

    @classmethod
    def for_market(
        cls, market: Market, snapshot_limit: int | None = None, depth_speed: str | None = None
    ) -> BinanceLimits:
        """The defaults of ``market``, optionally with another snapshot limit (and its weight)
        or diff-depth interval.

        Raises:
            VenueUsageError: a snapshot limit or depth interval the market does not serve.
        """
        base = SPOT_LIMITS if market == "spot" else USDM_LIMITS
        limit = base.snapshot_limit if snapshot_limit is None else snapshot_limit
        weight = depth_snapshot_weight(market, limit)
        speed = base.depth_speed if depth_speed is None else depth_speed
        depth_stream(market, speed)
        return dataclasses.replace(
            base, snapshot_limit=limit, snapshot_weight=weight, depth_speed=speed
        )


SPOT_LIMITS: Final = BinanceLimits(
    max_streams_per_connection=1024,
    control_messages_per_second=5,
    snapshot_weight=50,
    rest_weight_per_minute=6000,
    trade_stream="trade",
)
USDM_LIMITS: Final = BinanceLimits(
    max_streams_per_connection=200,
    control_messages_per_second=10,
    snapshot_weight=20,
    rest_weight_per_minute=2400,
    trade_stream="aggTrade",
)


class _WrongEventError(Exception):
    """A carried stream delivered an event of another type."""


_Record = Trade | Quote | Depth


@dataclass(slots=True, eq=False)
class _Symbol:
    name: str
    symbol_id: int
    streams: tuple[tuple[str, str, int], ...]  # (stream, path, kind)
    book: BookSync | None = None
    last_trade: int = -1
    last_quote: int = -1
    # Per channel kind: the connection whose frames are accepted, and records held from its
    # replacement during a make-before-break rotation until the two streams overlap.
    source: list[int | None] = dataclasses.field(default_factory=lambda: [None, None, None])
    held: list[list[_Record]] = dataclasses.field(default_factory=lambda: [[], [], []])


class BinanceProtocol:
    """The sans-I/O protocol of one Binance feed (spot or USD-M).

    Args:
        market: "spot" or "usdm".
        symbols: the venue's symbol names (``BTCUSDT``); stream names are lowercased.
        channels: a non-empty subset of `CHANNELS`.
        intern: maps a symbol name to its symbol_id (the feed's symbol table).
        limits: defaults to `SPOT_LIMITS` or `USDM_LIMITS`.

    Raises:
        VenueUsageError: an unknown market or channel, a bad or repeated symbol, bad limits.
    """

    def __init__(
        self,
        market: Market,
        symbols: Sequence[str],
        channels: Collection[str],
        intern: Callable[[str], int],
        *,
        limits: BinanceLimits | None = None,
    ) -> None:
        if market not in get_args(Market):
            raise VenueUsageError(f"unknown Binance market {market!r} (spot, usdm)")
        if not channels or not CHANNELS.issuperset(channels):
            raise VenueUsageError(f"channels must be a non-empty subset of {sorted(CHANNELS)}")
        limits = limits or (SPOT_LIMITS if market == "spot" else USDM_LIMITS)
        if limits.trade_stream not in ("trade", "aggTrade") or limits.max_buffered_diffs < 1:
            raise VenueUsageError(f"bad limits: {limits}")
        self._depth_suffix = depth_stream(market, limits.depth_speed)
        if len(set(symbols)) != len(symbols):
            raise VenueUsageError("symbols must not repeat")
        self.market: Final = market
        self.limits: Final = limits
        self.channels: Final = frozenset(channels)
        self._intern = intern
        self._max_frame = limits.max_frame_bytes
        self._rule = UpdateIdRule() if market == "spot" else FuturesRule()
        self._usdm = market == "usdm"
        aggregated = limits.trade_stream == "aggTrade"
        self._trade_event = limits.trade_stream
        self._trade_id_key = "a" if aggregated else "t"
        self._trade_flags = int(TradeFlag.AGGREGATED) if aggregated else 0
        self._symbols: dict[str, _Symbol] = {}
        self._routes: dict[str, tuple[int, _Symbol]] = {}
        self._table = ConnectionTable(
            limits.max_streams_per_connection, limits.max_params_per_frame, _control_frame
        )
        self._planned = False
        self._replaces: dict[int, int] = {}  # replacement conn_id -> the conn_id it replaces
        self._closed: set[int] = set()
        for name in symbols:
            self._add(name)

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols carried now, in order of addition."""
        return tuple(self._symbols)

    def book_state(self, symbol: str) -> SyncState | None:
        """The sync state of ``symbol``'s book (None without the depth channel or symbol)."""
        entry = self._symbols.get(symbol)
        return None if entry is None or entry.book is None else entry.book.state

    def new_pacer(self) -> ControlPacer:
        """A pacer for one connection's control frames, below the venue's message limit."""
        return ControlPacer.for_limit(self.limits.control_messages_per_second)

    def plan_connections(self) -> list[ConnectionPlan]:
        """The initial connections: every stream, balanced, at most the stream limit each.

        Raises:
            VenueUsageError: called a second time.
        """
        if self._planned:
            raise VenueUsageError("plan_connections() may be called once")
        self._planned = True
        return self._table.plan((s, p) for e in self._symbols.values() for s, p, _ in e.streams)

    def plan_rotation(self, conn_id: int) -> ConnectionPlan:
        """A replacement for ``conn_id`` (new id, same streams): for make-before-break rotation,
        and to reconnect a closed connection.

        Raises:
            VenueUsageError: ``conn_id`` is unknown (or closed and already replaced).
        """
        plan = self._table.rotate(conn_id)
        self._replaces[plan.conn_id] = conn_id
        return plan

    def add_symbols(self, names: Iterable[str]) -> list[Output]:
        """Carry more symbols: SYMBOL_ADDED events, SUBSCRIBE `SendFrame`s on open connections
        with room, `ConnectionPlan`s for new connections. Names already carried are ignored.

        Raises:
            VenueUsageError: a name that cannot be a Binance symbol.
        """
        out: list[Output] = []
        streams: list[tuple[str, str]] = []
        for name in dict.fromkeys(names):
            if name not in self._symbols:
                entry = self._add(name)
                streams.extend((s, p) for s, p, _ in entry.streams)
                detail = {"symbol": name, "streams": [s for s, _, _ in entry.streams]}
                out.append(make_event(EventKind.SYMBOL_ADDED, detail, entry.symbol_id))
        if self._planned and streams:
            out.extend(self._table.add(streams))
        return out

    def remove_symbols(self, names: Iterable[str]) -> list[Output]:
        """Stop carrying symbols: SYMBOL_REMOVED events, UNSUBSCRIBE `SendFrame`s; their books
        and duplicate filters are dropped. Unknown names are ignored."""
        out: list[Output] = []
        gone: set[str] = set()
        for name in names:
            entry = self._symbols.pop(name, None)
            if entry is not None:
                for stream, _, _ in entry.streams:
                    del self._routes[stream]
                    gone.add(stream)
                detail = {"symbol": name}
                out.append(make_event(EventKind.SYMBOL_REMOVED, detail, entry.symbol_id))
        out.extend(self._table.remove(gone))
        return out

    def on_connected(self, conn_id: int) -> list[Output]:
        """Connection ``conn_id`` is open (the driver sends its plan's subscribe frames next).

        Raises:
            VenueUsageError: ``conn_id`` is unknown or already closed.
        """
        self._table.connected(conn_id)
        return []

    def on_disconnect(self, conn_id: int, ts: int) -> list[Output]:
        """Connection ``conn_id`` closed, or failed to open, at ``ts`` (ns).

        Its streams that no other open connection has subscribed lost updates: each such depth
        symbol resynchronizes (GAP, RESYNC; the next diff on a replacement starts a new sync with
        a snapshot), and the lost trades and quotes streams get one feed-wide GAP event.
        """
        out: list[Output] = []
        predecessor = self._replaces.get(conn_id)
        if predecessor is not None and predecessor not in self._closed:
            # A replacement that failed while the connection it was to replace still runs: that
            # one keeps its streams (nothing was missed); forget the replacement and what it held.
            del self._replaces[conn_id]
            self._table.forget(conn_id)
            for entry in self._symbols.values():
                for kind in (_TRADE, _QUOTE, _DEPTH):
                    if entry.source[kind] == predecessor:
                        entry.held[kind] = []
            return out
        self._closed.add(conn_id)
        for entry in self._symbols.values():
            for kind in (_TRADE, _QUOTE, _DEPTH):
                if entry.source[kind] == conn_id:
                    self._hand_over(kind, entry, out)
        for new in [c for c, old in self._replaces.items() if old == conn_id]:
            del self._replaces[new]
        channels: set[str] = set()
        count = 0
        for stream, acked in self._table.disconnected(conn_id):
            route = self._routes.get(stream)
            if route is None:
                continue
            kind, entry = route
            if entry.book is not None and kind == _DEPTH:
                entry.book.reset("disconnect", ts, out)
            elif acked:
                channels.add(_CHANNEL_OF[kind])
                count += 1
        if count:
            detail = {"reason": "disconnect", "conn_id": conn_id, "streams": count}
            detail["channels"] = sorted(channels)
            out.append(make_event(EventKind.GAP, detail, ts_event=ts))
        return out

    def on_frame(self, conn_id: int, frame: bytes | str, ts_recv: int) -> list[Output]:
        """The outputs of one frame received on ``conn_id`` at ``ts_recv`` (ns).

        Raises:
            VenueUsageError: ``frame`` is not bytes or str (never for any content).
        """
        if type(frame) is not str and type(frame) is not bytes:
            checked_frame(frame)
        if len(frame) > self._max_frame:
            return [parse_error("too_large", frame, conn_id)]
        try:
            msg = _loads(frame)
        except _JSONDecodeError:
            return [parse_error("json", frame, conn_id)]
        if type(msg) is not dict:
            return [parse_error("unknown_event", frame, conn_id)]
        stream = msg.get("stream")
        if stream is None:
            if "id" in msg:
                error = msg.get("error") if "error" in msg else msg if "code" in msg else None
                if error is not None or "result" in msg:
                    return self._table.reply(conn_id, msg["id"], error, frame)
            if msg.get("e") == "serverShutdown":
                return self._table.shutdown(conn_id, _shutdown_time(msg))
            return [parse_error("unknown_event", frame, conn_id)]
        data = msg.get("data")
        route = self._routes.get(stream) if type(stream) is str else None
        if route is None or type(data) is not dict:
            if type(data) is not dict:
                kind = "field_type" if route is not None else "unknown_event"
                return [parse_error(kind, frame, conn_id)]
            if stream == "!serverShutdown" or data.get("e") == "serverShutdown":
                return self._table.shutdown(conn_id, _shutdown_time(data))
            if type(stream) is not str:
                return [parse_error("unknown_event", frame, conn_id)]
            return [_UNSUBSCRIBED]
        out: list[Output] = []
        channel, entry = route
        try:
            if channel == _DEPTH:
                record: _Record = self._parse_depth(data, entry, ts_recv)
            elif channel == _QUOTE:
                record = self._parse_quote(data, entry, ts_recv)
            else:
                record = self._parse_trade(data, entry, ts_recv)
        except KeyError:
            return [parse_error("missing_field", frame, conn_id)]
        except _WrongEventError:
            return [parse_error("unknown_event", frame, conn_id)]
        except (TypeError, ValueError):
            return [parse_error("field_type", frame, conn_id)]
        source = entry.source[channel]
        if source is None:
            # The first connection to deliver becomes the source, unless it is the replacement
            # of a connection that is still open: that one keeps the stream until they overlap.
            source = self._replaces.get(conn_id)
            if source is None or source in self._closed:
                source = conn_id
            entry.source[channel] = source
        if source == conn_id or source in self._closed:
            entry.source[channel] = conn_id
            self._accept(channel, entry, record, out)
            if entry.held[channel]:
                self._try_hand_over(channel, entry, out)
        elif self._replaces.get(conn_id) == source:
            held = entry.held[channel]
            held.append(record)
            if len(held) >= MAX_HELD or self._overlaps(channel, entry):
                self._hand_over(channel, entry, out)
        elif self._replaces.get(source) == conn_id:
            out.append(_RETIRED)
        else:
            self._accept(channel, entry, record, out)
        return out

    def _accept(self, kind: int, entry: _Symbol, record: _Record, out: list[Output]) -> None:
        """Publish ``record`` unless it is a duplicate; depth goes through the book sync."""
        if kind == _TRADE:
            trade_id = record[2]
            if trade_id <= entry.last_trade:
                out.append(_DUP_TRADE)
                return
            entry.last_trade = trade_id
            out.append(record)
        elif kind == _QUOTE:
            update_id = record[2]
            if update_id <= entry.last_quote:
                out.append(_DUP_QUOTE)
                return
            entry.last_quote = update_id
            out.append(record)
        else:
            entry.book.on_diff(record, out)  # type: ignore[union-attr, arg-type]

    def _last_id(self, kind: int, entry: _Symbol) -> int:
        if kind == _TRADE:
            return entry.last_trade
        if kind == _QUOTE:
            return entry.last_quote
        book = entry.book
        if book is None or book.state is not SyncState.SYNCED or book.local_update_id is None:
            return -1
        return book.local_update_id

    def _overlaps(self, kind: int, entry: _Symbol) -> bool:
        """Whether the old source already delivered the replacement's first held record.

        Each connection's stream is gapless and in order, so once the old one has reached the
        replacement's first id, switching loses nothing and duplicates are filtered by id. Trade
        ids are consecutive, so being one short of it is enough there.
        """
        first = entry.held[kind][0]
        first_id = first[2] if kind != _DEPTH else first.last_update_id  # type: ignore[union-attr]
        if kind == _DEPTH and (entry.book is None or entry.book.state is not SyncState.SYNCED):
            return True  # the book is (re)synchronizing anyway: it buffers and checks ids
        return self._last_id(kind, entry) >= first_id - (1 if kind == _TRADE else 0)

    def _try_hand_over(self, kind: int, entry: _Symbol, out: list[Output]) -> None:
        if self._overlaps(kind, entry):
            self._hand_over(kind, entry, out)

    def _hand_over(self, kind: int, entry: _Symbol, out: list[Output]) -> None:
        """Switch ``entry``'s ``kind`` stream to the replacement and release what it held.

        A trade id jump at the seam is a real loss (the old connection closed before the streams
        overlapped): it becomes a GAP event. Depth jumps are caught by the book sync.
        """
        held = entry.held[kind]
        source = entry.source[kind]
        successor = next((c for c, old in self._replaces.items() if old == source), None)
        if successor is None:
            entry.source[kind] = None
            return
        entry.source[kind] = successor
        entry.held[kind] = []
        if kind == _TRADE and held and 0 <= entry.last_trade < held[0][2] - 1:
            detail = {
                "stream": "trades",
                "reason": "rotation",
                "expected": entry.last_trade + 1,
                "got": held[0][2],
            }
            out.append(make_event(EventKind.GAP, detail, entry.symbol_id))
        for record in held:
            self._accept(kind, entry, record, out)

    def on_snapshot(self, symbol: str, body: bytes, ts_recv: int) -> list[Output]:
        """Take the REST depth snapshot of ``symbol`` (the body as received at ``ts_recv``).

        A body that does not parse yields `ParseError` and a new `FetchSnapshot`.
        """
        entry = self._symbols.get(symbol)
        book = None if entry is None else entry.book
        if entry is None or book is None:
            return [_UNEXPECTED_SNAPSHOT]
        out: list[Output] = []
        try:
            msg = _loads(checked_frame(body))
            last = uint(msg["lastUpdateId"])
            ts_event = _event_time(msg)
            bids = price_levels(msg["bids"])
            asks = price_levels(msg["asks"])
        except _JSONDecodeError:
            out.append(parse_error("snapshot_json", body, None))
            book.on_snapshot_failed(out)
            return out
        except (KeyError, TypeError, ValueError, AttributeError):
            out.append(parse_error("snapshot_field", body, None))
            book.on_snapshot_failed(out)
            return out
        snapshot = Depth(ts_event, ts_recv, entry.symbol_id, last, last, None, bids, asks, True)
        book.on_snapshot(snapshot, out)
        return out

    def on_snapshot_failed(self, symbol: str, reason: str) -> list[Output]:
        """The snapshot of ``symbol`` could not be fetched (``reason``): ask again if needed."""
        entry = self._symbols.get(symbol)
        out: list[Output] = []
        if entry is not None and entry.book is not None:
            entry.book.on_snapshot_failed(out)
        return out

    def _parse_trade(self, data: _Json, entry: _Symbol, ts: int) -> Trade:
        if data.get("e") != self._trade_event:
            raise _WrongEventError
        trade_id = uint(data[self._trade_id_key])
        ts_event = ms_to_ns(data["T"])
        price = data["p"]
        price_m, price_e = _lookup(price) or _remember(price)
        qty = data["q"]
        qty_m, qty_e = _lookup(qty) or _remember(qty)
        maker = data["m"]
        if maker is not True and maker is not False:
            raise TypeError("m must be a boolean")
        flags = self._trade_flags
        origin = data.get("X")
        if origin is not None and origin != "MARKET":
            flags |= _OFF_BOOK
        side = _SELL if maker else _BUY
        fields = (ts_event, ts, trade_id, price_m, qty_m, entry.symbol_id, price_e, qty_e, side,
                  flags)  # fmt: skip
        return _new(Trade, fields)

    def _parse_quote(self, data: _Json, entry: _Symbol, ts: int) -> Quote:
        event = data.get("e")
        if event is not None and event != "bookTicker":
            raise _WrongEventError
        update_id = uint(data["u"])
        text = data["b"]  # each key read just before its decimal: errors classify as before
        bid_m, bid_e = _lookup(text) or _remember(text)
        text = data["B"]
        bid_qty_m, bid_qty_e = _lookup(text) or _remember(text)
        text = data["a"]
        ask_m, ask_e = _lookup(text) or _remember(text)
        text = data["A"]
        ask_qty_m, ask_qty_e = _lookup(text) or _remember(text)
        ts_event = _event_time(data)
        fields = (ts_event, ts, update_id, bid_m, bid_qty_m, ask_m, ask_qty_m, entry.symbol_id,
                  bid_e, bid_qty_e, ask_e, ask_qty_e)  # fmt: skip
        return _new(Quote, fields)

    def _parse_depth(self, data: _Json, entry: _Symbol, ts: int) -> Depth:
        if data.get("e") != "depthUpdate":
            raise _WrongEventError
        first = uint(data["U"])
        last = uint(data["u"])
        if first > last:
            raise ValueError("U above u")
        prev = uint(data["pu"]) if self._usdm else None
        ts_event = _event_time(data) or ms_to_ns(data["E"])
        bids = price_levels(data["b"])
        asks = price_levels(data["a"])
        return Depth(ts_event, ts, entry.symbol_id, first, last, prev, bids, asks)

    def _add(self, name: str) -> _Symbol:
        if not name or not name.isprintable() or any(c in name for c in '/@" '):
            raise VenueUsageError(f"not a Binance symbol name: {name!r}")
        low = name.lower()
        public = "/public/stream" if self._usdm else "/stream"
        trade_path = "/market/stream" if self._usdm and self._trade_event == "aggTrade" else public
        streams: list[tuple[str, str, int]] = []
        if "depth" in self.channels:
            streams.append((low + self._depth_suffix, public, _DEPTH))
        if "quotes" in self.channels:
            streams.append((f"{low}@bookTicker", public, _QUOTE))
        if "trades" in self.channels:
            streams.append((f"{low}@{self._trade_event}", trade_path, _TRADE))
        entry = _Symbol(name, self._intern(name), tuple(streams))
        if "depth" in self.channels:
            limits = self.limits
            fetch = (FetchSnapshot(name, limits.snapshot_limit, limits.snapshot_weight),)
            size = limits.max_buffered_diffs
            entry.book = BookSync(
                name, entry.symbol_id, self._rule, lambda: fetch, max_buffered=size
            )
        self._symbols[name] = entry
        for stream, _, kind in streams:
            self._routes[stream] = (kind, entry)
        return entry


def _event_time(data: _Json) -> int:
    ts = data.get("T")
    if ts is None:
        ts = data.get("E")
    return 0 if ts is None else ms_to_ns(ts)


def _shutdown_time(data: _Json) -> int:
    try:
        return ms_to_ns(data.get("E"))
    except TypeError:
        return 0


def _control_frame(subscribe: bool, streams: list[str], request_id: int) -> bytes:
    method = "SUBSCRIBE" if subscribe else "UNSUBSCRIBE"
    return orjson.dumps({"method": method, "params": streams, "id": request_id})
