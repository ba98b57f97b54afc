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

Copies. A stream may arrive on several connections at once: a make-before-break replacement and
the connection it replaces, or the two legs of redundant connections (``redundancy=2``: every
planned connection has a twin on leg "b"). Per symbol and channel, the connections *in sync* on
the stream are "live": a record from a live connection is accepted if its id is past the last
accepted one (trade id, quote update id; depth through the book sync), so the first copy wins and
keeps its ``ts_recv``, and later copies are dropped as duplicates. A connection that starts
delivering while another is live (a replacement, a leg that (re)connected) is *joining*: its
records are held until its stream overlaps what was accepted (each connection's stream is gapless
and in order, so from there on nothing is lost), then it becomes live and what it held goes
through the same id filter. A live connection that closes simply leaves; when the last one leaves,
a joining connection takes over at once (the one holding the oldest record), and a trade id jump
at that seam is a GAP event (depth jumps are caught by the book sync). A connection that is behind
has all its copies dropped until it leads again. `LegCounts` counts, per leg and channel, the
copies won and dropped and their lag behind the first copy.
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
    LegCounts,
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
    "LEG_CHANNELS",
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
LEG_CHANNELS: Final = _CHANNEL_OF
"""The channels of `BinanceProtocol.leg_counts`, in index order."""
_BUY: Final = int(Side.BUY)
_SELL: Final = int(Side.SELL)
_OFF_BOOK: Final = int(TradeFlag.OFF_BOOK)
_DUP_TRADE: Final = Dropped("duplicate_trade", 1)
_DUP_QUOTE: Final = Dropped("duplicate_quote", 1)
_UNSUBSCRIBED: Final = Dropped("unsubscribed_stream", 1)
_UNEXPECTED_SNAPSHOT: Final = Dropped("unexpected_snapshot", 1)
_STALE_DEPTH: Final = Dropped("stale_depth", 1)
_CLOSED: Final = Dropped("closed_connection", 1)
MAX_HELD: Final = 10_000
"""Records held per stream from a joining connection before it joins regardless."""
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
    # Per channel kind (the module's "Copies"): the live connections; the records held from each
    # joining connection; ts_recv of the last record accepted (the lag of later copies); and
    # whether the stream owes no continuity to the next connection that takes it over (nothing
    # accepted yet, or its loss was already reported as a GAP).
    live: list[tuple[int, ...]] = dataclasses.field(default_factory=lambda: [(), (), ()])
    held: list[dict[int, list[_Record]]] = dataclasses.field(default_factory=lambda: [{}, {}, {}])
    last_ts: list[int] = dataclasses.field(default_factory=lambda: [0, 0, 0])
    fresh: list[bool] = dataclasses.field(default_factory=lambda: [True, True, True])


class BinanceProtocol:
    """The sans-I/O protocol of one Binance feed (spot or USD-M).

    Args:
        market: "spot" or "usdm".
        symbols: the venue's symbol names (``BTCUSDT``); stream names are lowercased.
        channels: a non-empty subset of `CHANNELS`.
        intern: maps a symbol name to its symbol_id (the feed's symbol table).
        limits: defaults to `SPOT_LIMITS` or `USDM_LIMITS`.
        redundancy: 2 plans every connection twice, once per leg (`LEG_NAMES`).

    Raises:
        VenueUsageError: an unknown market or channel, a bad or repeated symbol, bad limits,
            a redundancy other than 1 or 2.

    Attributes:
        leg_counts: copies won and dropped per leg and channel (`LegCounts`, channels in the
            order trades, quotes, depth).
    """

    def __init__(
        self,
        market: Market,
        symbols: Sequence[str],
        channels: Collection[str],
        intern: Callable[[str], int],
        *,
        limits: BinanceLimits | None = None,
        redundancy: int = 1,
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
        if redundancy not in (1, 2):
            raise VenueUsageError(f"redundancy must be 1 or 2: {redundancy!r}")
        self.market: Final = market
        self.redundancy: Final = redundancy
        self._redundant = redundancy > 1
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
        self._id_keys = (self._trade_id_key, "u", "u")  # the venue id of each channel's events
        self._symbols: dict[str, _Symbol] = {}
        self._routes: dict[str, tuple[int, _Symbol]] = {}
        self._table = ConnectionTable(
            limits.max_streams_per_connection,
            limits.max_params_per_frame,
            _control_frame,
            legs=redundancy,
        )
        self._planned = False
        self._replaces: dict[int, int] = {}  # replacement conn_id -> the conn_id it replaces
        self._closed: set[int] = set()
        self._leg_at: dict[int, int] = {}  # open conn_id -> its leg * 3: the base index of counts
        self.leg_counts: Final = LegCounts.zero(redundancy, _CHANNEL_OF)
        self._wins = self.leg_counts.wins
        self._duplicates = self.leg_counts.duplicates
        self._lag_ns = self.leg_counts.lag_ns
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
        """The initial connections: every stream, balanced, at most the stream limit each; with
        redundancy, the same plan again for leg "b".

        Raises:
            VenueUsageError: called a second time.
        """
        if self._planned:
            raise VenueUsageError("plan_connections() may be called once")
        self._planned = True
        pairs = [(s, p) for e in self._symbols.values() for s, p, _ in e.streams]
        return [plan for leg in range(self.redundancy) for plan in self._table.plan(pairs, leg)]

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
        self._leg_at[conn_id] = self._table.leg(conn_id) * len(_CHANNEL_OF)
        return []

    def on_disconnect(self, conn_id: int, ts: int) -> list[Output]:
        """Connection ``conn_id`` closed, or failed to open, at ``ts`` (ns).

        It leaves every stream it was live on (a joining connection takes over a stream it was
        the last live one of) and what it held is forgotten. Its streams that no other open
        connection (of any leg) has subscribed lost updates: each such depth symbol
        resynchronizes (GAP, RESYNC; the next diff on a replacement starts a new sync with a
        snapshot), and the lost trades and quotes streams get one feed-wide GAP event.
        """
        out: list[Output] = []
        self._leg_at.pop(conn_id, None)
        predecessor = self._replaces.get(conn_id)
        if predecessor is not None and predecessor not in self._closed:
            # A replacement that failed while the connection it was to replace still runs: that
            # one keeps its streams (nothing was missed); forget the replacement and what it held.
            del self._replaces[conn_id]
            self._table.forget(conn_id, predecessor)
            self._closed.add(conn_id)
            self._leave(conn_id, out)
            return out
        self._closed.add(conn_id)
        self._leave(conn_id, out)
        for new in [c for c, old in self._replaces.items() if old == conn_id]:
            del self._replaces[new]
        channels: set[str] = set()
        count = 0
        for stream, acked in self._table.disconnected(conn_id):
            route = self._routes.get(stream)
            if route is None:
                continue
            kind, entry = route
            entry.fresh[kind] = True  # reported here: the next take-over owes no continuity
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
        channel, entry = route
        if self._redundant and conn_id in entry.live[channel]:
            # A copy of what the other leg delivered already is dropped on its id alone: it
            # would cost a full parse (without legs, copies are rare: rotation overlaps).
            ident = data.get(self._id_keys[channel])
            taken = (
                entry.last_trade
                if channel == _TRADE
                else entry.last_quote
                if channel == _QUOTE
                else entry.book.stale_up_to  # type: ignore[union-attr]
            )
            if type(ident) is int and 0 <= ident <= taken:
                at = self._leg_at.get(conn_id, 0) + channel
                self._duplicate(entry, channel, ts_recv, at)
                return [
                    _DUP_TRADE
                    if channel == _TRADE
                    else _DUP_QUOTE
                    if channel == _QUOTE
                    else _STALE_DEPTH
                ]
        out: list[Output] = []
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
        if conn_id in entry.live[channel]:
            self._accept(channel, entry, record, self._leg_at.get(conn_id, 0) + channel, out)
            if entry.held[channel]:
                self._join_overlapping(channel, entry, out)
        else:
            self._arrive(conn_id, channel, entry, record, out)
        return out

    # -- copies: live and joining connections (the module's "Copies") ---------------------------

    def _accept(
        self, kind: int, entry: _Symbol, record: _Record, at: int, out: list[Output]
    ) -> None:
        """Publish ``record`` unless an earlier copy was; depth goes through the book sync.

        ``at`` indexes `leg_counts` (the delivering leg and ``kind``): a win or a duplicate.
        """
        if kind == _TRADE:
            trade_id = record[2]
            if trade_id <= entry.last_trade:
                out.append(_DUP_TRADE)
                self._duplicate(entry, kind, record[1], at)
                return
            entry.last_trade = trade_id
            out.append(record)
        elif kind == _QUOTE:
            update_id = record[2]
            if update_id <= entry.last_quote:
                out.append(_DUP_QUOTE)
                self._duplicate(entry, kind, record[1], at)
                return
            entry.last_quote = update_id
            out.append(record)
        elif not entry.book.on_diff(record, out):  # type: ignore[union-attr, arg-type]
            self._duplicate(entry, kind, record[1], at)
            return
        entry.last_ts[kind] = record[1]
        self._wins[at] += 1

    def _duplicate(self, entry: _Symbol, kind: int, ts_recv: int, at: int) -> None:
        self._duplicates[at] += 1
        lag = ts_recv - entry.last_ts[kind]
        if lag > 0:
            self._lag_ns[at] += lag

    def _arrive(
        self, conn_id: int, kind: int, entry: _Symbol, record: _Record, out: list[Output]
    ) -> None:
        """A record from a connection that is not live on the stream: it takes the stream over
        if no connection is live, else it is held until the two streams overlap."""
        if conn_id in self._closed:
            out.append(_CLOSED)  # reported closed; a last frame from its buffer
            return
        held = entry.held[kind].setdefault(conn_id, [])
        held.append(record)
        if not entry.live[kind]:
            predecessor = self._replaces.get(conn_id)
            if predecessor is None or predecessor in self._closed:
                self._join(kind, entry, conn_id, "failover", out)
                return
            # The replacement of a connection that still runs: that one keeps the stream until
            # the two overlap (it may still deliver records older than the replacement's first).
            entry.live[kind] = (predecessor,)
        if self._overlaps(kind, entry, held[0]):
            self._join(kind, entry, conn_id, "", out)
        elif len(held) >= MAX_HELD:
            self._join(kind, entry, conn_id, "lagging", out)

    def _overlaps(self, kind: int, entry: _Symbol, first: _Record) -> bool:
        """Whether the live connections reached ``first`` (a joining connection's first held
        record), or the stream has nothing to continue.

        Each connection's stream is gapless and in order, so once the live ones have reached the
        record the joining one's first continues from, taking its records loses nothing and
        duplicates are filtered by id. Trade ids are consecutive: being one short is enough.
        A diff continues from ``U - 1`` (spot) or ``pu`` (USD-M): compared with the newest diff
        published or buffered by the book sync. Quote ids are not consecutive: the live ones
        must have delivered it.
        """
        if kind == _TRADE:
            return entry.last_trade >= first[2] - 1
        if kind == _QUOTE:
            return entry.last_quote >= first[2]
        last = None if entry.book is None else entry.book.last_id
        if last is None:
            return True
        prev = first.prev_update_id  # type: ignore[union-attr]
        return last >= (first.first_update_id - 1 if prev is None else prev)  # type: ignore[union-attr]

    def _join_overlapping(self, kind: int, entry: _Symbol, out: list[Output]) -> None:
        held = entry.held[kind]
        for conn_id, records in list(held.items()):
            if conn_id in held and self._overlaps(kind, entry, records[0]):
                self._join(kind, entry, conn_id, "", out)

    def _join(
        self, kind: int, entry: _Symbol, conn_id: int, reason: str, out: list[Output]
    ) -> None:
        """Make ``conn_id`` live on the stream and take what it held, duplicates dropped.

        Unless the stream is fresh, a trade id jump at the seam is a real loss (the live
        connections left, or lag more than `MAX_HELD` records behind, before the streams
        overlapped): a GAP event with ``reason`` ("rotation": it replaces the connection that
        left; "failover": another one left; "lagging"). Depth jumps are caught by the book sync.
        """
        held = entry.held[kind].pop(conn_id, [])
        entry.live[kind] = (*entry.live[kind], conn_id)
        if kind == _TRADE and held and not entry.fresh[kind]:
            last, got = entry.last_trade, held[0][2]
            if 0 <= last < got - 1:
                detail = {"stream": "trades", "reason": reason, "expected": last + 1, "got": got}
                out.append(make_event(EventKind.GAP, detail, entry.symbol_id))
        entry.fresh[kind] = False
        at = self._leg_at.get(conn_id, 0) + kind
        for record in held:
            self._accept(kind, entry, record, at, out)

    def _leave(self, conn_id: int, out: list[Output]) -> None:
        """``conn_id`` is gone: forget what it held; where it was the last live connection, the
        joining one holding the oldest record takes over (the others join once they overlap)."""
        for entry in self._symbols.values():
            for kind in (_TRADE, _QUOTE, _DEPTH):
                held = entry.held[kind]
                if held:
                    held.pop(conn_id, None)
                live = entry.live[kind]
                if conn_id not in live:
                    continue
                live = entry.live[kind] = tuple(c for c in live if c != conn_id)
                if not live and held:
                    first = min(held, key=lambda c: _record_id(kind, held[c][0]))
                    rotated = self._replaces.get(first) == conn_id
                    self._join(kind, entry, first, "rotation" if rotated else "failover", out)
                    if held:
                        self._join_overlapping(kind, entry, out)

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


def _record_id(kind: int, record: _Record) -> int:
    """The venue id of a record: trade id, quote update id, depth last update id."""
    return record.last_update_id if kind == _DEPTH else record[2]  # type: ignore[union-attr]


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
