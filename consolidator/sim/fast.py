"""Fast mode (``consolidator sim --mode fast``): pre-encoded frames at well over 1 M frames/s.

The market is a `Cycle` of pre-encoded events (see `fast_cycle`), replayed round after round
with shifted ids. Each distinct subscription set (and framing: raw ``/ws`` or combined
``/stream``) gets a `Template`: the whole cycle as one buffer of WebSocket frames with the byte
positions of every id and time field. Sending events ``[a, b)`` of round ``r`` rewrites those
fields in place (numpy, a few vector operations per block) and writes the slice with one
``transport.write``: no per-message work in Python, no websockets framing.

There is one market position for every connection (as on a venue, two connections subscribed
to a stream receive the same messages), so the REST snapshot of a symbol is the book after the
last diff sent (`SymbolCycle.book_at`), with that diff's ``u`` as ``lastUpdateId``. Blocks go
out as fast as the slowest subscribed connection drains (the transport's flow control: a venue
would instead drop the slow client) or, with a finite ``rate`` (events/s, counted over the
whole cycle), each block when it is due. Connection faults apply; frame faults and
``drop-depth`` do not (frames are never re-encoded, the cycle is fixed), nor do the truth logs.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from consolidator.sim.config import SimConfig
from consolidator.sim.exchange_info import exchange_info
from consolidator.sim.fast_cycle import (
    ID_DIGITS,
    TIME_DIGITS,
    Cycle,
    SymbolCycle,
    build_cycle,
)
from consolidator.sim.frames import ws_text_frame
from consolidator.sim.pacing import Pacer
from consolidator.sim.payloads import depth_snapshot
from consolidator.sim.session import Session
from consolidator.sim.streams import StreamKey
from consolidator.sim.symbols import build_specs

__all__ = ["FastMarket", "Template", "cycle_events"]

_BLOCK: Final = 2048
"""Events per block at the unlimited rate."""
_DRAIN_TIMEOUT_S: Final = 10.0
"""A connection that takes no bytes for this long is dropped as a slow consumer."""
_STREAM_KINDS: Final = frozenset({"trade", "aggTrade", "bookTicker", "depth"})
_LUT4: Final = np.array([list(b"%04d" % i) for i in range(10_000)], dtype=np.uint8)
_ID_COLS: Final = np.arange(ID_DIGITS, dtype=np.int64)
_TIME_COLS: Final = np.arange(TIME_DIGITS, dtype=np.int64)

I64 = npt.NDArray[np.int64]


def cycle_events(symbols: int) -> int:
    """Events in the cycle for ``symbols`` symbols (about 128 per symbol, 8 Ki to 256 Ki)."""
    return min(max(128 * symbols, 8_192), 262_144)


def _id_digits(values: I64) -> npt.NDArray[np.uint8]:
    """Rows of `ID_DIGITS` ASCII digits of ``values`` (each in [10**10, 10**11))."""
    out = np.empty((len(values), ID_DIGITS), dtype=np.uint8)
    out[:, 7:] = _LUT4[values % 10_000]
    out[:, 3:7] = _LUT4[(values // 10_000) % 10_000]
    out[:, :3] = _LUT4[values // 100_000_000][:, 1:]
    return out


class Template:
    """The cycle framed for one subscription set: a buffer of frames and its field positions.

    Args:
        cycle: The market's cycle.
        names: ``(symbol index, stream kind)`` to the subscribed stream names.
        combined: Wrap payloads as ``{"stream":..,"data":..}`` (``/stream`` connections).
    """

    def __init__(
        self, cycle: Cycle, names: dict[tuple[int, str], list[str]], combined: bool
    ) -> None:
        parts: list[bytes] = []
        ev_off = [0]
        ev_ids = [0]
        ev_times = [0]
        ev_frames = [0]
        id_pos: list[int] = []
        id_base: list[int] = []
        id_inc: list[int] = []
        time_pos: list[int] = []
        size = 0
        frames = 0
        prefixes = {
            n: b'{"stream":"' + n.encode() + b'","data":' for v in names.values() for n in v
        }
        symbols = cycle.symbols
        for sym_index, payloads in zip(cycle.event_symbol, cycle.payloads, strict=True):
            sym = symbols[sym_index]
            for kind, payload in payloads:
                for name in names.get((sym_index, kind), ()):
                    data = prefixes[name] + payload.data + b"}" if combined else payload.data
                    frame = ws_text_frame(data)
                    start = size + len(frame) - len(data) + (len(prefixes[name]) if combined else 0)
                    for offset, id_kind, value in payload.ids:
                        id_pos.append(start + offset)
                        id_base.append(value)
                        id_inc.append(sym.span(id_kind))
                    time_pos.extend(start + offset for offset in payload.times)
                    parts.append(frame)
                    size += len(frame)
                    frames += 1
            ev_off.append(size)
            ev_ids.append(len(id_pos))
            ev_times.append(len(time_pos))
            ev_frames.append(frames)
        self.buffer = np.frombuffer(bytearray(b"".join(parts)), dtype=np.uint8)
        self.ev_off = np.array(ev_off, dtype=np.int64)
        self.ev_ids = np.array(ev_ids, dtype=np.int64)
        self.ev_times = np.array(ev_times, dtype=np.int64)
        self.ev_frames = np.array(ev_frames, dtype=np.int64)
        # Byte index of every digit, computed once (int32: a template is well under 2 GiB).
        self.id_index = (np.array(id_pos, dtype=np.int64)[:, None] + _ID_COLS).astype(np.int32)
        self.id_base = np.array(id_base, dtype=np.int64)
        self.id_inc = np.array(id_inc, dtype=np.int64)
        self.time_index = (np.array(time_pos, dtype=np.int64)[:, None] + _TIME_COLS).astype(
            np.int32
        )

    @property
    def frames(self) -> int:
        """Frames per cycle."""
        return int(self.ev_frames[-1])

    def render(self, start: int, stop: int, rnd: int, now_ms: int) -> tuple[bytes, int]:
        """The frames of events ``[start, stop)`` of round ``rnd``, times ``now_ms``; and their
        count."""
        buf = self.buffer
        a, b = self.ev_ids[start], self.ev_ids[stop]
        if b > a:
            values = self.id_base[a:b] + rnd * self.id_inc[a:b]
            buf[self.id_index[a:b]] = _id_digits(values)
        a, b = self.ev_times[start], self.ev_times[stop]
        if b > a:
            digits = np.frombuffer(b"%013d" % now_ms, dtype=np.uint8)
            buf[self.time_index[a:b]] = digits
        data = buf[self.ev_off[start] : self.ev_off[stop]].tobytes()
        return data, int(self.ev_frames[stop] - self.ev_frames[start])


class FastMarket:
    """The fast market of one venue: a `Feed` for the sessions and `MarketData` for REST.

    Args:
        config: Simulator configuration (venue, symbols, seed, rate, book levels).
    """

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._usdm = config.profile.is_usdm
        specs = build_specs(
            config.venue, config.symbols, config.symbol_count, config.seed,
            config.profile.fixed_decimals,
        )  # fmt: skip
        self.cycle = build_cycle(
            specs, self._usdm, cycle_events(len(specs)), config.seed, config.book_levels
        )
        self._index = {s.spec.symbol: i for i, s in enumerate(self.cycle.symbols)}
        self._status = dict.fromkeys(self._index, "TRADING")
        self.rate = config.rate
        self.position = 0
        self.round = 0
        self.events_sent = 0
        self.frames_sent = 0
        self.blocks_sent = 0
        self._sessions: dict[int, Session] = {}
        self._session_template: dict[int, tuple[frozenset[str], bool] | None] = {}
        self._templates: dict[tuple[frozenset[str], bool], Template] = {}
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._paused = False

    # Feed protocol

    def subscribe(self, session: Session, key: StreamKey) -> None:
        """Deliver ``key`` to ``session`` from the next block on."""
        self._sessions[session.id] = session
        self._dirty.add(session.id)
        self._wake.set()

    def unsubscribe(self, session: Session, key: StreamKey) -> None:
        """Stop delivering ``key`` to ``session`` from the next block on."""
        self._dirty.add(session.id)

    def session_closed(self, session: Session) -> None:
        """Forget ``session``."""
        self._sessions.pop(session.id, None)
        self._session_template.pop(session.id, None)
        self._dirty.discard(session.id)
        self._drop_unused_templates()

    # Templates

    def _servable(self, key: StreamKey) -> bool:
        return key.kind in _STREAM_KINDS and key.symbol in self._index

    def _refresh(self) -> None:
        for sid in self._dirty:
            session = self._sessions.get(sid)
            if session is None:
                continue
            names = frozenset(n for n in session.live if self._servable(session.subs[n]))
            tkey = (names, session.combined) if names else None
            if tkey is not None and tkey not in self._templates:
                wanted: dict[tuple[int, str], list[str]] = {}
                for name in sorted(names):
                    key = session.subs[name]
                    wanted.setdefault((self._index[key.symbol], key.kind), []).append(name)
                self._templates[tkey] = Template(self.cycle, wanted, session.combined)
            self._session_template[sid] = tkey
        self._dirty.clear()
        self._drop_unused_templates()

    def _drop_unused_templates(self) -> None:
        used = set(self._session_template.values())
        for tkey in [k for k in self._templates if k not in used]:
            del self._templates[tkey]

    def _groups(self) -> list[tuple[Template, list[Session]]]:
        if self._dirty:
            self._refresh()
        groups: dict[tuple[frozenset[str], bool], list[Session]] = {}
        for sid, tkey in self._session_template.items():
            if tkey is not None:
                groups.setdefault(tkey, []).append(self._sessions[sid])
        return [(self._templates[k], sessions) for k, sessions in groups.items()]

    # Sending

    def send_block(self, count: int) -> int:
        """Send the next ``count`` events (fewer at the cycle's end) to every subscribed session;
        returns the events sent (0 when nobody is subscribed)."""
        groups = self._groups()
        if not groups:
            return 0
        start = self.position
        stop = min(start + count, len(self.cycle))
        now_ms = time.time_ns() // 1_000_000
        for template, sessions in groups:
            data, frames = template.render(start, stop, self.round, now_ms)
            if not frames:
                continue
            for session in sessions:
                session.write_block(data, frames)
            self.frames_sent += frames * len(sessions)
        if stop == len(self.cycle):
            self.position = 0
            self.round += 1
        else:
            self.position = stop
        self.events_sent += stop - start
        self.blocks_sent += 1
        return stop - start

    async def _drain(self) -> bool:
        """Wait until every session's transport is below its high-water mark; True if waited."""
        waited = False
        for session in list(self._sessions.values()):
            conn = session.conn
            if not conn.paused or session.stalled or not session.is_open:
                continue
            waited = True
            try:
                await asyncio.wait_for(conn.drain(), _DRAIN_TIMEOUT_S)
            except TimeoutError:
                session.abort("slow consumer")
            except ConnectionError:
                continue
        return waited

    async def run(self) -> None:
        """Send blocks until cancelled: as fast as the connections drain, or at ``rate``."""
        pacer = Pacer()
        try:
            await self._run(pacer)
        finally:
            pacer.close()

    async def _run(self, pacer: Pacer) -> None:
        t0 = time.monotonic()
        done = 0
        while True:
            if self._paused or not self._sessions:
                self._wake.clear()
                await self._wake.wait()
                t0, done = time.monotonic(), 0
                continue
            rate = self.rate
            if math.isinf(rate) or rate <= 0:
                if not self.send_block(_BLOCK):
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if not await self._drain():
                    await asyncio.sleep(0)
                continue
            now = time.monotonic()
            due = int((now - t0) * rate) - done
            if due > rate:  # more than a second behind: do not try to catch up
                t0, done, due = now - 1 / rate, 0, 1
            if due <= 0:
                await pacer.sleep_until(int((t0 + (done + 1) / rate) * 1e9))
                continue
            sent = self.send_block(min(due, _BLOCK))
            if not sent:
                self._wake.clear()
                await self._wake.wait()
                t0, done = time.monotonic(), 0
                continue
            done += sent
            if not await self._drain():
                await asyncio.sleep(0)

    # Market data (REST) and control

    def symbol_names(self) -> list[str]:
        """Every symbol."""
        return list(self._index)

    def exchange_info(self, symbols: list[str] | None) -> bytes:
        """exchangeInfo body (all symbols or the given ones; unknown raise KeyError)."""
        names = list(self._index) if symbols is None else symbols
        entries = [(self.cycle.symbols[self._index[n]].spec, self._status[n]) for n in names]
        body = exchange_info(
            self._usdm, entries, self._config.eff_weight_limit, time.time_ns() // 1_000_000
        )
        return orjson.dumps(body)

    def _book(
        self, sym: SymbolCycle, limit: int | None
    ) -> tuple[int, list[list[str]], list[list[str]]]:
        last_id, k = sym.last_update_id(self.round, self.position)
        bids, asks = sym.book_at(self.round, k)
        spec = sym.spec
        top_bids = sorted(bids, reverse=True)[:limit]
        top_asks = sorted(asks)[:limit]
        return (
            last_id,
            [[spec.price(p), spec.qty(bids[p])] for p in top_bids],
            [[spec.price(p), spec.qty(asks[p])] for p in top_asks],
        )

    def depth(self, symbol: str, limit: int) -> bytes | None:
        """The REST snapshot: the book after the last diff sent, ``lastUpdateId`` its ``u``."""
        index = self._index.get(symbol)
        if index is None:
            return None
        last_id, bids, asks = self._book(self.cycle.symbols[index], limit)
        now_ms = time.time_ns() // 1_000_000
        return depth_snapshot(self._usdm, last_id, now_ms, now_ms, bids, asks)

    def truth_book(self, symbol: str) -> dict[str, Any] | None:
        """The whole book of ``symbol`` now, with its update id and last trade id."""
        index = self._index.get(symbol)
        if index is None:
            return None
        sym = self.cycle.symbols[index]
        last_id, bids, asks = self._book(sym, None)
        return {
            "symbol": symbol,
            "lastUpdateId": last_id,
            "lastTradeId": sym.last_trade_id(self.round, self.position),
            "bids": bids,
            "asks": asks,
        }

    def counters(self) -> dict[str, dict[str, int]]:
        """Per symbol: the last update id, trade id and aggregate trade id sent."""
        out = {}
        for name, index in self._index.items():
            sym = self.cycle.symbols[index]
            last_trade = sym.last_trade_id(self.round, self.position)
            out[name] = {
                "update_id": sym.last_update_id(self.round, self.position)[0],
                "last_trade_id": last_trade,
                "last_agg_id": last_trade - sym.trade_start + sym.agg_start,
            }
        return out

    def pause(self) -> dict[str, Any]:
        """Stop sending (after the block in flight) and report the counters."""
        self._paused = True
        return {"paused": True, "symbols": self.counters()}

    def resume(self) -> dict[str, Any]:
        """Resume sending."""
        self._paused = False
        self._wake.set()
        return {"paused": False}

    def set_status(self, symbol: str, status: str) -> dict[str, Any]:
        """Change a symbol's exchangeInfo status (its streams keep flowing)."""
        if symbol not in self._status:
            raise KeyError(symbol)
        self._status[symbol] = status
        return {"symbol": symbol, "status": status}

    def stats(self) -> dict[str, Any]:
        """Counters: per symbol ids, and the cycle's position and totals."""
        counters = self.counters()
        return {
            "paused": self._paused,
            "rate": None if math.isinf(self.rate) else self.rate,
            "symbols": {
                name: {"status": self._status[name], **counters[name]} for name in self._index
            },
            "fast": {
                "cycle_events": len(self.cycle),
                "position": self.position,
                "round": self.round,
                "events_sent": self.events_sent,
                "frames_sent": self.frames_sent,
                "blocks_sent": self.blocks_sent,
                "templates": len(self._templates),
            },
        }
