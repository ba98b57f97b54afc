"""The fast mode's market: one cycle of pre-encoded events, replayed round after round.

The cycle is generated once, at start, from the seed: ``passes`` passes over the symbols in a
random order; each event is a trade, a book ticker or a diff-depth update, drawn in the shares of
the recorded traffic (`RecordedMix`, counted from ``tests/data/recorded``), a depth update
changing as many levels as a recorded one did. Every payload is encoded once with its ids and
times as fixed-width decimal fields (`ID_DIGITS`, `TIME_DIGITS`) whose byte offsets are kept.

Round ``r`` of the cycle is round 0 with every id of symbol S raised by ``r`` times S's span (its
update ids, trade ids, aggregate ids consumed in one cycle), and every time set to the time of
sending. The spans make the rounds join: per symbol, trade ids increase by one per trade, the
book ticker ``u`` increases, and the depth ids are continuous across the cycle's end as within
it (spot ``U = previous u + 1``; USD-M ``pu = previous u``, ``U`` the first visible update, ids
hidden in between sometimes, as on the venue).

A depth diff sets absolute quantities, and every diff of a symbol recurs once per cycle, so the
book after the diff at position ``p`` of round ``r >= 1`` is the initial book with the symbol's
diffs of one whole cycle applied, in order, ending at ``p``: `SymbolCycle.book_at` computes the
snapshot that a REST request at any moment must return, exactly. Book tickers and trades quote
prices near the reference price; they are plausible, not derived from that book.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from consolidator.sim.market_state import SymbolState
from consolidator.sim.symbols import SymbolSpec

__all__ = [
    "ID_DIGITS",
    "SPOT_MIX",
    "TIME_DIGITS",
    "USDM_MIX",
    "Cycle",
    "EventKind",
    "IdKind",
    "Payload",
    "RecordedMix",
    "SymbolCycle",
    "build_cycle",
]

ID_DIGITS: Final = 11
"""Every id is written with 11 digits (values in [10**10, 10**11))."""
TIME_DIGITS: Final = 13
"""Every time is milliseconds since the epoch, 13 digits."""
_ID_LOW: Final = 10**10 + 10**8
_ID_RANGE: Final = 10**9


class EventKind(IntEnum):
    """What a cycle event is."""

    TRADE = 0
    TICKER = 1
    DEPTH = 2


class IdKind(IntEnum):
    """Which counter an id field belongs to (decides its per-round increment)."""

    UPDATE = 0
    TRADE = 1
    AGG = 2


@dataclass(frozen=True, slots=True)
class RecordedMix:
    """Message counts of a recording (kline frames left out: the writer does not take them).

    Attributes:
        trades: aggTrade frames.
        tickers: bookTicker frames.
        depths: diff-depth frames.
        levels: (levels changed in one diff, bids + asks; how many diffs) pairs.
    """

    trades: int
    tickers: int
    depths: int
    levels: tuple[tuple[int, int], ...]


SPOT_MIX: Final = RecordedMix(
    trades=2,
    tickers=84,
    depths=177,
    levels=((1, 80), (2, 41), (3, 18), (4, 18), (5, 8), (6, 3), (7, 5), (8, 1), (9, 1), (11, 1),
            (13, 1)),
)  # fmt: skip
"""``BINANCE.ws.1.0`` (4 symbols, 30 s)."""

USDM_MIX: Final = RecordedMix(
    trades=91,
    tickers=613,
    depths=764,
    levels=((1, 89), (2, 120), (3, 90), (4, 73), (5, 58), (6, 41), (7, 30), (8, 30), (9, 29),
            (10, 19), (11, 19), (12, 16), (13, 12), (14, 7), (15, 10), (16, 9), (17, 10),
            (18, 14), (19, 8), (20, 10), (21, 4), (22, 2), (23, 4), (24, 3), (25, 5), (26, 2),
            (27, 5), (28, 5), (29, 6), (30, 6), (31, 2), (32, 4), (34, 2), (35, 2), (36, 2),
            (37, 2), (38, 2), (42, 1), (43, 2), (46, 1), (48, 1), (49, 1), (51, 3), (55, 1),
            (58, 1), (61, 1)),
)  # fmt: skip
"""``BINANCE_FUTURES.ws.1.0`` (4 symbols, 30 s)."""


@dataclass(frozen=True, slots=True)
class Payload:
    """One encoded event payload (the ``data`` of a frame).

    Attributes:
        data: The JSON bytes of round 0 (times zero).
        ids: ``(offset, IdKind, round-0 value)`` of each id field.
        times: Offsets of the time fields.
    """

    data: bytes
    ids: tuple[tuple[int, int, int], ...]
    times: tuple[int, ...]


class _Json:
    """Builds a payload, keeping the offsets of its id and time fields."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.ids: list[tuple[int, int, int]] = []
        self.times: list[int] = []

    def raw(self, data: bytes) -> _Json:
        self.parts.append(data)
        self.size += len(data)
        return self

    def id(self, kind: IdKind, value: int) -> _Json:
        self.ids.append((self.size, int(kind), value))
        return self.raw(b"%011d" % value)

    def time(self) -> _Json:
        self.times.append(self.size)
        return self.raw(b"0" * TIME_DIGITS)

    def text(self, value: str) -> _Json:
        return self.raw(b'"' + value.encode() + b'"')

    def payload(self) -> Payload:
        return Payload(b"".join(self.parts), tuple(self.ids), tuple(self.times))


Level = tuple[bool, int, int]
"""(is bid, price in ticks, quantity in steps; 0 removes the level)."""


@dataclass(slots=True)
class SymbolCycle:
    """One symbol's share of the cycle: its counters, spans and depth diffs.

    Attributes:
        spec: The symbol.
        initial_bids: Price (ticks) to quantity (steps) of the book before round 0.
        initial_asks: Same for asks.
        update_start: The update id before round 0.
        trade_start: The first trade id of round 0 (also the first aggregate id's offset).
        agg_start: The first aggregate trade id of round 0.
        update_span: Update ids consumed per cycle.
        trade_span: Trades (= aggregate trades) per cycle.
        depth_pos: Cycle positions of the symbol's depth events, ascending.
        depth_u: Round-0 ``u`` of each depth event.
        depth_levels: Levels set by each depth event.
        trade_pos: Cycle positions of the symbol's trade events, ascending.
    """

    spec: SymbolSpec
    initial_bids: dict[int, int]
    initial_asks: dict[int, int]
    update_start: int
    trade_start: int
    agg_start: int
    update_span: int = 0
    trade_span: int = 0
    depth_pos: list[int] = field(default_factory=list)
    depth_u: list[int] = field(default_factory=list)
    depth_levels: list[tuple[Level, ...]] = field(default_factory=list)
    trade_pos: list[int] = field(default_factory=list)

    def span(self, kind: int) -> int:
        """Per-round increment of an id of ``kind``."""
        return self.update_span if kind == IdKind.UPDATE else self.trade_span

    def last_update_id(self, rnd: int, pos: int) -> tuple[int, int]:
        """``(lastUpdateId, k)`` once the events before ``pos`` of round ``rnd`` are sent:
        the ``u`` of the last depth event sent and its index in `depth_pos` (-1: none yet in
        this round, the previous round's last one counts)."""
        k = bisect.bisect_left(self.depth_pos, pos) - 1
        if k >= 0:
            return self.depth_u[k] + rnd * self.update_span, k
        return self.depth_u[-1] + (rnd - 1) * self.update_span, -1

    def last_trade_id(self, rnd: int, pos: int) -> int:
        """The last trade id sent once the events before ``pos`` of round ``rnd`` are sent."""
        before = bisect.bisect_left(self.trade_pos, pos)
        return self.trade_start - 1 + rnd * self.trade_span + before

    def book_at(self, rnd: int, k: int) -> tuple[dict[int, int], dict[int, int]]:
        """Bids and asks (ticks to steps, no zeros) after depth event ``k`` of round ``rnd``
        (``k = -1``: before the first one of that round)."""
        bids = dict(self.initial_bids)
        asks = dict(self.initial_asks)
        diffs = self.depth_levels
        window = diffs[: k + 1] if rnd == 0 else diffs[k + 1 :] + diffs[: k + 1]
        for levels in window:
            for is_bid, price, qty in levels:
                side = bids if is_bid else asks
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        return bids, asks


@dataclass(frozen=True, slots=True)
class Cycle:
    """The generated cycle.

    Attributes:
        symbols: Per-symbol facts, in symbol order.
        event_symbol: Symbol index of each event.
        event_kind: `EventKind` of each event.
        payloads: Per event, ``(stream kind, payload)`` pairs: a trade has a ``trade`` and an
            ``aggTrade`` payload, a ticker a ``bookTicker`` one, a depth update a ``depth`` one.
    """

    symbols: tuple[SymbolCycle, ...]
    event_symbol: tuple[int, ...]
    event_kind: tuple[int, ...]
    payloads: tuple[tuple[tuple[str, Payload], ...], ...]

    def __len__(self) -> int:
        return len(self.event_kind)


def _levels_sampler(mix: RecordedMix, rng: random.Random) -> list[int]:
    population = [n for n, _ in mix.levels]
    weights = [w for _, w in mix.levels]
    return rng.choices(population, weights, k=4096)


def _depth_levels(rng: random.Random, st: SymbolState, ref: int, n: int, depth: int) -> list[Level]:
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for _ in range(n):
        is_bid = rng.random() < 0.5
        k = min(int(rng.expovariate(0.25)), depth - 1)
        qty = 0 if rng.random() < 0.15 else max(1, int(rng.expovariate(1.0) * st.mean_qty))
        if is_bid:
            bids[ref - 1 - k] = qty
        else:
            asks[ref + 1 + k] = qty
    return [(True, p, bids[p]) for p in sorted(bids, reverse=True)] + [
        (False, p, asks[p]) for p in sorted(asks)
    ]


def build_cycle(
    specs: list[SymbolSpec], usdm: bool, events: int, seed: int, book_levels: int
) -> Cycle:
    """Generate a cycle of about ``events`` events (whole passes over ``specs``)."""
    rng = random.Random(seed)
    mix = USDM_MIX if usdm else SPOT_MIX
    total = mix.trades + mix.tickers + mix.depths
    p_trade = mix.trades / total
    p_ticker = (mix.trades + mix.tickers) / total
    sizes = _levels_sampler(mix, rng)
    depth = max(book_levels, 20)
    states = [SymbolState(spec, rng, depth) for spec in specs]
    symbols = tuple(
        SymbolCycle(
            spec,
            dict(st.book.bids.levels),
            dict(st.book.asks.levels),
            _ID_LOW + rng.randrange(_ID_RANGE),
            _ID_LOW + rng.randrange(_ID_RANGE),
            _ID_LOW + rng.randrange(_ID_RANGE),
        )
        for spec, st in zip(specs, states, strict=True)
    )
    n = len(specs)
    passes = max(1, -(-events // n))
    order: list[int] = []
    for _ in range(passes):
        perm = list(range(n))
        rng.shuffle(perm)
        order.extend(perm)
    # Pass 1: kinds, counters and depth contents.
    counter = [s.update_start for s in symbols]
    trades = [0] * n
    kinds: list[int] = []
    facts: list[tuple[int, ...]] = []
    depth_first: list[list[int]] = [[] for _ in range(n)]
    for pos, i in enumerate(order):
        sym = symbols[i]
        r = rng.random()
        kind = (
            EventKind.TRADE
            if r < p_trade
            else EventKind.TICKER
            if r < p_ticker
            else EventKind.DEPTH
        )
        if pos < n and not sym.depth_pos:
            kind = EventKind.DEPTH  # every symbol has a depth event in every cycle
        kinds.append(kind)
        if kind == EventKind.TRADE:
            sym.trade_pos.append(pos)
            facts.append((trades[i],))
            trades[i] += 1
        elif kind == EventKind.TICKER:
            counter[i] += 1
            facts.append((counter[i],))
        else:
            if usdm and rng.random() < 0.05:
                counter[i] += rng.randint(1, 3)  # ids of updates the stream does not show
            levels = _depth_levels(
                rng, states[i], sym.spec.ref_ticks, sizes[pos % len(sizes)], depth
            )
            depth_first[i].append(counter[i] + 1)
            counter[i] += len(levels)
            sym.depth_pos.append(pos)
            sym.depth_u.append(counter[i])
            sym.depth_levels.append(tuple(levels))
            facts.append((len(sym.depth_pos) - 1,))
    for i, sym in enumerate(symbols):
        sym.update_span = counter[i] - sym.update_start
        sym.trade_span = trades[i]
    # Pass 2: payloads (the spans are known, so the first diff can point into the previous round).
    payloads = tuple(
        _encode(usdm, symbols[i], EventKind(kind), fact, depth_first[i], rng)
        for i, kind, fact in zip(order, kinds, facts, strict=True)
    )
    return Cycle(symbols, tuple(order), tuple(kinds), payloads)


def _encode(
    usdm: bool,
    sym: SymbolCycle,
    kind: EventKind,
    fact: tuple[int, ...],
    depth_first: list[int],
    rng: random.Random,
) -> tuple[tuple[str, Payload], ...]:
    spec = sym.spec
    ref = spec.ref_ticks
    if kind == EventKind.TRADE:
        (nth,) = fact
        tid = sym.trade_start + nth
        aid = sym.agg_start + nth
        price = spec.price(ref + rng.randint(-1, 1))
        qty = spec.qty(max(1, int(rng.expovariate(1.0) * 5)))
        maker = b"true" if rng.random() < 0.5 else b"false"
        return (("trade", _trade(usdm, spec.symbol, tid, price, qty, maker)),
                ("aggTrade", _agg(usdm, spec.symbol, aid, tid, price, qty, maker)))  # fmt: skip
    if kind == EventKind.TICKER:
        (u,) = fact
        bid = spec.price(ref - 1 - rng.choice((0, 0, 0, 1, 2)))
        ask = spec.price(ref + 1 + rng.choice((0, 0, 0, 1, 2)))
        bid_qty = spec.qty(rng.randint(1, 500))
        ask_qty = spec.qty(rng.randint(1, 500))
        j = _Json().raw(b'{"e":"bookTicker","u":' if usdm else b'{"u":').id(IdKind.UPDATE, u)
        j.raw(b',"s":').text(spec.symbol).raw(b',"b":').text(bid).raw(b',"B":').text(bid_qty)
        j.raw(b',"a":').text(ask).raw(b',"A":').text(ask_qty)
        if usdm:
            j.raw(b',"T":').time().raw(b',"E":').time()
        return (("bookTicker", j.raw(b"}").payload()),)
    (k,) = fact
    u = sym.depth_u[k]
    prev = sym.depth_u[k - 1] if k else sym.depth_u[-1] - sym.update_span
    first = depth_first[k] if usdm else prev + 1
    j = _Json().raw(b'{"e":"depthUpdate","E":').time()
    if usdm:
        j.raw(b',"T":').time()
    j.raw(b',"s":').text(spec.symbol).raw(b',"U":').id(IdKind.UPDATE, first)
    j.raw(b',"u":').id(IdKind.UPDATE, u)
    if usdm:
        j.raw(b',"pu":').id(IdKind.UPDATE, prev)
    levels = sym.depth_levels[k]
    for tag, want in ((b',"b":[', True), (b'],"a":[', False)):
        j.raw(tag)
        side = [(p, q) for is_bid, p, q in levels if is_bid is want]
        j.raw(b",".join(b'["%s","%s"]' % (spec.price(p).encode(), spec.qty(q).encode())
                        for p, q in side))  # fmt: skip
    return (("depth", j.raw(b"]}").payload()),)


def _trade(usdm: bool, symbol: str, tid: int, price: str, qty: str, maker: bytes) -> Payload:
    j = _Json().raw(b'{"e":"trade","E":').time()
    if usdm:
        j.raw(b',"T":').time()
    j.raw(b',"s":').text(symbol).raw(b',"t":').id(IdKind.TRADE, tid)
    j.raw(b',"p":').text(price).raw(b',"q":').text(qty)
    if usdm:
        j.raw(b',"X":"MARKET","m":' + maker + b"}")
    else:
        j.raw(b',"T":').time().raw(b',"m":' + maker + b',"M":true}')
    return j.payload()


def _agg(
    usdm: bool, symbol: str, aid: int, tid: int, price: str, qty: str, maker: bytes
) -> Payload:
    j = _Json().raw(b'{"e":"aggTrade","E":').time()
    j.raw(b',"s":').text(symbol).raw(b',"a":').id(IdKind.AGG, aid)
    j.raw(b',"p":').text(price).raw(b',"q":').text(qty)
    if usdm:
        j.raw(b',"nq":').text(qty)
    j.raw(b',"f":').id(IdKind.TRADE, tid).raw(b',"l":').id(IdKind.TRADE, tid)
    j.raw(b',"T":').time().raw(b',"m":' + maker + (b"}" if usdm else b',"M":true}'))
    return j.payload()
