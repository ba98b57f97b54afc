"""Seeded synthetic market: per-symbol books mutated by adds, cancels and aggressive orders.

Every level change increments the symbol's update-ID counter. Diff-depth streams carry the
net level changes of their interval (spot ``U = previous u + 1``; USD-M ``pu = previous u``
with ``U`` the first visible update, as the counter may skip ids for hidden updates), the
book ticker is emitted whenever the best levels change, and trades consume liquidity.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import orjson

from consolidator.sim import payloads
from consolidator.sim.config import SimConfig
from consolidator.sim.exchange_info import exchange_info
from consolidator.sim.faults import FaultKind, FaultManager
from consolidator.sim.hub import Hub
from consolidator.sim.market_state import DepthTracker, SymbolState
from consolidator.sim.pacing import Pacer
from consolidator.sim.streams import StreamKey
from consolidator.sim.symbols import build_specs, spec_for_name
from consolidator.sim.truth import TruthLog

__all__ = ["SyntheticMarket"]

_P_TRADE = 0.12
_P_CANCEL = 0.42
_MIN_LEVELS = 10
_DEPTH_PHASES = 10


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SyntheticMarket:
    """The synthetic market of one venue.

    Args:
        config: Simulator configuration (symbols, rate, seed, book size).
        hub: Fan-out hub; the market listens to it for depth-stream activations.
        faults: Fault manager (``drop-depth`` is applied here).
        truth: Trade ground-truth log.
    """

    def __init__(self, config: SimConfig, hub: Hub, faults: FaultManager, truth: TruthLog) -> None:
        self._config = config
        self._profile = config.profile
        self._usdm = config.profile.is_usdm
        self._hub = hub
        self._faults = faults
        self._truth = truth
        self._rng = random.Random(config.seed)
        self._levels = max(config.book_levels, 2 * _MIN_LEVELS)
        self._states: dict[str, SymbolState] = {}
        self._active: list[SymbolState] = []
        self._trackers: dict[int, list[DepthTracker]] = {}
        self._due: dict[int, float] = {}
        self._phase: dict[int, int] = {}
        self._paused = False
        self._resumed = asyncio.Event()
        self.rate = config.rate
        fixed = config.profile.fixed_decimals
        for spec in build_specs(
            config.venue, config.symbols, config.symbol_count, config.seed, fixed
        ):
            self._states[spec.symbol] = SymbolState(spec, self._rng, self._levels)
        self._refresh_active()
        hub.add_listener(self._on_stream)

    # Subscriptions and depth trackers

    def _refresh_active(self) -> None:
        self._active = [s for s in self._states.values() if s.status == "TRADING"]

    def _on_stream(self, key: StreamKey, active: bool) -> None:
        if key.interval_ms is None:
            return
        state = self._states.get(key.symbol)
        if state is None:
            return
        tracker = next((t for t in state.trackers if t.interval_ms == key.interval_ms), None)
        if active:
            if tracker is None:
                tracker = DepthTracker(state, key.interval_ms, state.update_id)
                state.trackers.append(tracker)
                self._trackers.setdefault(key.interval_ms, []).append(tracker)
                if key.interval_ms not in self._due:
                    now = time.monotonic()
                    self._due[key.interval_ms] = now + key.interval_ms / 1000
            tracker.names.append(key.name)
        elif tracker is not None and key.name in tracker.names:
            tracker.names.remove(key.name)
            if not tracker.names:
                state.trackers.remove(tracker)
                group = self._trackers[key.interval_ms]
                group.remove(tracker)
                if not group:
                    del self._trackers[key.interval_ms]
                    del self._due[key.interval_ms]

    # Book mutation (hot path)

    def _set(self, st: SymbolState, is_bid: bool, price: int, qty: int) -> None:
        if self._usdm and self._rng.random() < 0.05:
            st.update_id += self._rng.randint(1, 3)
        st.update_id += 1
        uid = st.update_id
        if is_bid:
            st.book.bids.set(price, qty)
            for tr in st.trackers:
                tr.bids.add(price)
                if not tr.first_id:
                    tr.first_id = uid
        else:
            st.book.asks.set(price, qty)
            for tr in st.trackers:
                tr.asks.add(price)
                if not tr.first_id:
                    tr.first_id = uid

    def _draw_qty(self, st: SymbolState) -> int:
        return max(1, int(self._rng.expovariate(1.0) * st.mean_qty))

    def _add(self, st: SymbolState) -> None:
        rng = self._rng
        is_bid = rng.random() < 0.5
        bids = st.book.bids
        asks = st.book.asks
        bb = bids.prices[-1]
        ba = asks.prices[0]
        spread = ba - bb
        r = rng.random()
        if spread > 1 and r < 0.3:
            step = rng.randint(1, spread - 1)
            price = bb + step if is_bid else ba - step
        else:
            depth = rng.randrange(self._levels) if r > 0.9 else int(rng.expovariate(0.3))
            price = bb - depth if is_bid else ba + depth
            if price < 1:
                return
        side = bids if is_bid else asks
        qty = min(side.levels.get(price, 0) + self._draw_qty(st), st.max_qty)
        self._set(st, is_bid, price, qty)

    def _cancel(self, st: SymbolState) -> None:
        rng = self._rng
        is_bid = rng.random() < 0.5
        side = st.book.bids if is_bid else st.book.asks
        n = len(side)
        if n > self._levels * 1.3:
            worst = side.worst()
            assert worst is not None
            self._set(st, is_bid, worst, 0)
            return
        price = side.at_depth(min(int(rng.expovariate(0.25)), n - 1))
        qty = side.levels[price]
        if qty > 1 and (n <= _MIN_LEVELS or rng.random() < 0.6):
            self._set(st, is_bid, price, rng.randint(1, qty - 1))
        elif n > _MIN_LEVELS:
            self._set(st, is_bid, price, 0)

    def _trade(self, st: SymbolState, now_ms: int) -> int:
        rng = self._rng
        bids = st.book.bids
        asks = st.book.asks
        ref = st.spec.ref_ticks
        deviation = ((bids.prices[-1] + asks.prices[0]) / 2 - ref) / ref
        buy = rng.random() < 0.5 - max(-0.4, min(0.4, deviation * 8))
        side = asks if buy else bids
        maker_is_bid = not buy
        fills: list[tuple[int, int]] = []
        sweeps = 0 if rng.random() < 0.8 else min(rng.randint(1, 3), len(side) - 3)
        for _ in range(max(sweeps, 0)):
            price = side.at_depth(0)
            fills.append((price, side.levels[price]))
            self._set(st, maker_is_bid, price, 0)
        price = side.at_depth(0)
        have = side.levels[price]
        take = rng.randint(1, have)
        if take == have and len(side) <= 3:
            take = have - 1
        if take > 0:
            fills.append((price, take))
            self._set(st, maker_is_bid, price, have - take)
        while len(side) < _MIN_LEVELS:
            worst = side.worst()
            assert worst is not None
            far = worst - rng.randint(1, 3) if maker_is_bid else worst + rng.randint(1, 3)
            if far < 1:
                break
            self._set(st, maker_is_bid, far, self._draw_qty(st))
        return self._emit_trades(st, fills, buy, now_ms)

    def _emit_trades(
        self, st: SymbolState, fills: list[tuple[int, int]], buy: bool, now_ms: int
    ) -> int:
        spec = st.spec
        hub = self._hub
        truth = self._truth
        want_trade = hub.has(st.s_trade)
        want_agg = hub.has(st.s_agg)
        maker = not buy
        events = 0
        rng = self._rng
        for price, qty in fills:
            parts = 1 if qty == 1 else min(qty, rng.choice((1, 1, 2, 3)))
            first = st.trade_id + 1
            price_text = spec.price(price) if (want_trade or want_agg or truth.enabled) else ""
            remaining = qty
            for k in range(parts):
                part = remaining if k == parts - 1 else rng.randint(1, remaining - (parts - 1 - k))
                remaining -= part
                st.trade_id += 1
                if want_trade:
                    payload = payloads.trade(
                        self._usdm,
                        now_ms,
                        spec.symbol,
                        st.trade_id,
                        price_text,
                        spec.qty(part),
                        now_ms,
                        maker,
                    )
                    st.sent["trade"] += hub.publish(st.s_trade, payload)
                if truth.enabled:
                    truth.trade(
                        spec.symbol,
                        st.trade_id,
                        st.agg_id + 1,
                        price_text,
                        spec.qty(part),
                        buy,
                        now_ms,
                    )
            st.agg_id += 1
            events += parts + 1
            st.events["trade"] += parts
            st.events["aggTrade"] += 1
            if want_agg:
                payload = payloads.agg_trade(
                    self._usdm,
                    now_ms,
                    spec.symbol,
                    st.agg_id,
                    price_text,
                    spec.qty(qty),
                    first,
                    st.trade_id,
                    now_ms,
                    maker,
                )
                st.sent["aggTrade"] += hub.publish(st.s_agg, payload)
        return events

    def _book_ticker(self, st: SymbolState, now_ms: int) -> int:
        bids = st.book.bids
        asks = st.book.asks
        bb = bids.prices[-1]
        ba = asks.prices[0]
        bbo = (bb, bids.levels[bb], ba, asks.levels[ba])
        if bbo == st.bbo:
            return 0
        st.bbo = bbo
        st.events["bookTicker"] += 1
        if self._hub.has(st.s_bt):
            spec = st.spec
            prices = (spec.price(bb), spec.qty(bbo[1]), spec.price(ba), spec.qty(bbo[3]))
            payload = payloads.book_ticker(
                self._usdm, st.update_id, spec.symbol, *prices, now_ms, now_ms
            )
            st.sent["bookTicker"] += self._hub.publish(st.s_bt, payload)
            if self._truth.quotes_enabled:
                self._truth.quote(spec.symbol, st.update_id, prices, now_ms)
        return 1

    def step(self, st: SymbolState, now_ms: int) -> int:
        """Apply one random market action to ``st``; returns the number of events."""
        r = self._rng.random()
        st.last_txn_ms = now_ms
        events = 0
        if r < _P_TRADE:
            events = self._trade(st, now_ms)
        elif r < _P_TRADE + _P_CANCEL:
            self._cancel(st)
        else:
            self._add(st)
        return events + self._book_ticker(st, now_ms)

    # Depth emission

    def _emit_depth(self, tr: DepthTracker, now_ms: int, loop_now: float) -> None:
        if not tr.first_id:
            return
        st = tr.state
        spec = st.spec
        final = st.update_id
        first = tr.first_id if self._usdm else tr.last_u + 1
        prev = tr.last_u
        bid_levels = st.book.bids.levels
        ask_levels = st.book.asks.levels
        price = spec.price
        qty = spec.qty
        bids = [[price(p), qty(bid_levels.get(p, 0))] for p in sorted(tr.bids, reverse=True)]
        asks = [[price(p), qty(ask_levels.get(p, 0))] for p in sorted(tr.asks)]
        tr.bids.clear()
        tr.asks.clear()
        tr.first_id = 0
        tr.last_u = final
        st.events["depthUpdate"] += 1
        if self._faults.take(FaultKind.DROP_DEPTH, spec.symbol, loop_now):
            return
        payload = payloads.depth_update(
            self._usdm, now_ms, st.last_txn_ms, spec.symbol, first, final, prev, bids, asks
        )
        for name in tr.names:
            st.sent["depthUpdate"] += self._hub.publish(name, payload)

    def flush_depth(self, loop_now: float, force: bool = False) -> None:
        """Emit the diff events that are due (all when ``force``).

        A venue's per-symbol timers are not aligned, so each interval is split into
        `_DEPTH_PHASES` sub-ticks and each sub-tick emits its share of the symbols: every symbol
        still gets one diff per interval, but they do not all leave in one burst.
        """
        now_ms = _now_ms()
        for interval, trackers in self._trackers.items():
            if force:
                for tr in trackers:
                    self._emit_depth(tr, now_ms, loop_now)
                continue
            due = self._due[interval]
            if loop_now < due:
                continue
            phases = _DEPTH_PHASES if interval else 1
            step = interval / 1000 / phases
            phase = self._phase.get(interval, 0)
            self._phase[interval] = (phase + 1) % phases
            due += step
            self._due[interval] = due if due > loop_now else loop_now + step
            for tr in trackers[phase::phases]:
                self._emit_depth(tr, now_ms, loop_now)

    # Main loop

    async def run(self) -> None:
        """Generate market events at ``rate`` events/s until cancelled.

        At a finite rate each event is generated when it is due (a `Pacer` wakes the loop with
        sub-millisecond precision), so the sessions write it at once: a turn of the loop carries
        the events due by then, one event when the market keeps up, a small group when it is
        behind (never more than 2 ms of events). At the unlimited rate, batches of 2,000 events.
        Times are ``time.monotonic()`` (the loop's own clock has millisecond resolution).
        """
        pacer = Pacer()
        try:
            await self._run(pacer)
        finally:
            pacer.close()

    async def _run(self, pacer: Pacer) -> None:
        rng = self._rng
        t0 = time.monotonic()
        done = 0
        while True:
            if self._paused:
                await self._resumed.wait()
                t0 = time.monotonic()
                done = 0
                continue
            rate = self.rate
            unlimited = math.isinf(rate) or rate <= 0
            max_batch = 2000.0 if unlimited else max(1.0, rate * 0.002)
            now = time.monotonic()
            behind = True
            if self._active:
                target = max_batch if unlimited else (now - t0) * rate - done
                if target > max_batch:
                    target = max_batch
                else:
                    behind = unlimited
                now_ms = _now_ms()
                states = self._active
                count = len(states)
                produced = 0
                steps = 0
                limit = 4 * target + 100
                while produced < target and steps < limit:
                    produced += self.step(states[int(rng.random() * count)], now_ms)
                    steps += 1
                done += produced
                if not unlimited and (now - t0) * rate - done > rate:
                    t0 = now - done / rate
            self.flush_depth(now)
            self._truth.flush()
            if behind and self._active:
                await asyncio.sleep(0)
                continue
            wake = min(self._due.values(), default=now + 0.05)
            if self._active and not unlimited:
                wake = min(wake, t0 + (done + 1) / rate)
            await pacer.sleep_until(int(wake * 1e9))

    # Control and ground truth

    @property
    def paused(self) -> bool:
        """Whether the market is paused."""
        return self._paused

    def pause(self) -> dict[str, Any]:
        """Stop mutating books; flush every pending diff now and report the counters."""
        self._paused = True
        self._resumed.clear()
        self.flush_depth(time.monotonic(), force=True)
        self._truth.flush()
        return {"paused": True, "symbols": self.counters()}

    def resume(self) -> dict[str, Any]:
        """Resume mutating books."""
        self._paused = False
        self._resumed.set()
        return {"paused": False}

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-symbol update id, last trade id and last aggregate trade id."""
        return {
            sym: {"update_id": st.update_id, "last_trade_id": st.trade_id, "last_agg_id": st.agg_id}
            for sym, st in self._states.items()
        }

    def symbol_names(self) -> list[str]:
        """All known symbols (any status)."""
        return list(self._states)

    def set_status(self, symbol: str, status: str) -> dict[str, Any]:
        """Change a symbol's status; listing an unknown symbol creates it."""
        st = self._states.get(symbol)
        if st is None:
            if status != "TRADING":
                raise KeyError(symbol)
            spec = spec_for_name(
                symbol, self._config.venue, self._config.seed, self._profile.fixed_decimals
            )
            st = self._states[symbol] = SymbolState(spec, self._rng, self._levels)
            for key in self._hub.active_keys(symbol):
                self._on_stream(key, True)
        st.status = status
        self._refresh_active()
        return {"symbol": symbol, "status": status}

    def exchange_info(self, symbols: list[str] | None) -> bytes:
        """exchangeInfo body (all symbols or the given ones; unknown raise KeyError)."""
        names = list(self._states) if symbols is None else symbols
        entries = [(self._states[n].spec, self._states[n].status) for n in names]
        body = exchange_info(self._usdm, entries, self._config.eff_weight_limit, _now_ms())
        return orjson.dumps(body)

    def depth(self, symbol: str, limit: int) -> bytes | None:
        """REST depth body for ``symbol`` truncated to ``limit`` levels, or None if unknown."""
        st = self._states.get(symbol)
        if st is None:
            return None
        spec = st.spec
        bids = [[spec.price(p), spec.qty(q)] for p, q in st.book.bids.top(limit)]
        asks = [[spec.price(p), spec.qty(q)] for p, q in st.book.asks.top(limit)]
        return payloads.depth_snapshot(
            self._usdm, st.update_id, _now_ms(), st.last_txn_ms, bids, asks
        )

    def truth_book(self, symbol: str) -> dict[str, Any] | None:
        """The full book of ``symbol`` (no truncation) with its update id."""
        st = self._states.get(symbol)
        if st is None:
            return None
        spec = st.spec
        return {
            "symbol": symbol,
            "lastUpdateId": st.update_id,
            "lastTradeId": st.trade_id,
            "bids": [[spec.price(p), spec.qty(q)] for p, q in st.book.bids.top()],
            "asks": [[spec.price(p), spec.qty(q)] for p, q in st.book.asks.top()],
        }

    def stats(self) -> dict[str, Any]:
        """Per-symbol counters."""
        return {
            "paused": self._paused,
            "rate": None if math.isinf(self.rate) else self.rate,
            "symbols": {
                sym: {
                    "status": st.status,
                    "update_id": st.update_id,
                    "last_trade_id": st.trade_id,
                    "last_agg_id": st.agg_id,
                    "events": dict(st.events),
                    "sent": dict(st.sent),
                }
                for sym, st in self._states.items()
            },
        }
