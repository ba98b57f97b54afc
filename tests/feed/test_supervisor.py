"""A connection slot against a real loopback server: rotation survives a refused replacement."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from consolidator.feed.connection import FeedConnection
from consolidator.feed.counters import Counters
from consolidator.feed.supervisor import ConnectionSlot, SlotSettings
from consolidator.payloads import Event, Trade
from consolidator.records import EventKind
from consolidator.venues.base import ConnectionPlan, ControlPacer, Output
from consolidator.venues.binance import BinanceProtocol


class Host:
    """The writer's side of a slot, around a real protocol; records what it is given."""

    def __init__(self, url: str, max_size: int = 1 << 24) -> None:
        self.url = url
        self.max_size = max_size
        self.received: list[tuple[int, Output]] = []
        self.counters = Counters()
        self.protocol = BinanceProtocol("spot", ["BTCUSDT"], ["trades"], lambda _: 0)
        self.outputs: list[Output] = []
        self.events: list[tuple[EventKind, dict[str, object]]] = []
        self.conns: list[FeedConnection] = []

    def new_connection(self, plan: ConnectionPlan) -> FeedConnection:
        conn = FeedConnection(
            plan, self.url, self.on_message, ControlPacer(rate_per_s=50), max_size=self.max_size
        )
        self.conns.append(conn)
        return conn

    def forget_connection(self, conn: FeedConnection) -> None:
        pass

    def on_connected(self, conn_id: int) -> Sequence[Output]:
        return self.protocol.on_connected(conn_id)

    def on_disconnect(self, conn_id: int, ts: int) -> Sequence[Output]:
        return self.protocol.on_disconnect(conn_id, ts)

    def plan_rotation(self, conn_id: int) -> ConnectionPlan:
        return self.protocol.plan_rotation(conn_id)

    def handle(self, outputs: Sequence[Output]) -> None:
        self.outputs.extend(outputs)

    def event(self, kind: EventKind, detail: dict[str, object]) -> None:
        self.events.append((kind, detail))

    def on_message(self, conn_id: int, message: bytes, ts: int) -> None:
        outputs = self.protocol.on_frame(conn_id, message, ts)
        self.received.extend((conn_id, o) for o in outputs)
        self.handle(outputs)

    def trades(self, conn_id: int) -> list[Trade]:
        """The trades the protocol made of what ``conn_id`` delivered."""
        return [o for c, o in self.received if c == conn_id and isinstance(o, Trade)]


class Market:
    """One trade every 2 ms to every subscribed connection; the second attempt is refused."""

    def __init__(self) -> None:
        self.sessions: set[ServerConnection] = set()
        self.attempts = 0
        self.trade_id = 0

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.attempts += 1
        return conn.respond(503, "busy\n") if self.attempts == 2 else None

    async def handler(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            request = json.loads(await ws.recv())
            await ws.send(json.dumps({"result": None, "id": request["id"]}))
            self.sessions.add(ws)
            await ws.wait_closed()
        self.sessions.discard(ws)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.002)
            self.trade_id += 1
            data = {"e": "trade", "E": 1, "s": "BTCUSDT", "t": self.trade_id}
            data |= {"p": "1", "q": "1", "T": 1, "m": False}
            frame = json.dumps({"stream": "btcusdt@trade", "data": data})
            for ws in list(self.sessions):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame)


def test_rotation_survives_a_refused_replacement() -> None:
    async def main() -> tuple[Host, Market]:
        market = Market()
        async with serve(
            market.handler, "127.0.0.1", 0, process_request=market.process_request
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            host = Host(f"ws://127.0.0.1:{port}")
            (plan,) = host.protocol.plan_connections()
            settings = SlotSettings(
                rotate_after_s=0.3, stale_after_s=5.0, backoff_base_s=0.05, backoff_cap_s=0.1
            )
            slot = ConnectionSlot(host, plan, settings)
            ticker = asyncio.ensure_future(market.run())
            task = asyncio.ensure_future(slot.run())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.6)
            task.cancel()
            ticker.cancel()
            await asyncio.gather(task, ticker, return_exceptions=True)
            for conn in host.conns:
                await conn.close(0.5)
        return host, market

    host, market = asyncio.run(main())
    kinds = [kind for kind, _ in host.events]
    assert market.attempts >= 4
    assert kinds.count(EventKind.ROTATION) >= 2
    refused = [d for k, d in host.events if k == EventKind.DISCONNECT]
    assert [d["reason"] for d in refused] == ["connect_failed"]
    assert not [o for o in host.outputs if isinstance(o, Event) and o.kind == EventKind.GAP]
    ids = [o.trade_id for o in host.outputs if isinstance(o, Trade)]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert len(ids) > 200
    rotations: list[dict[str, Any]] = [d for k, d in host.events if k == EventKind.ROTATION]
    assert all(r["ready"] for r in rotations)


class ClosingMarket(Market):
    """The replacement is refused, and the old connection closed before the refusal: the
    protocol forgot the replacement while the old one ran; the slot must go on from the old."""

    async def process_request(  # type: ignore[override]
        self, conn: ServerConnection, request: Request
    ) -> Response | None:
        self.attempts += 1
        if self.attempts != 2:
            return None
        for ws in list(self.sessions):
            await ws.close(1001, "going away")
        await asyncio.sleep(0.1)  # the slot sees its old connection closed first
        return conn.respond(503, "busy\n")


def test_rotation_survives_a_refused_replacement_and_the_old_one_closing() -> None:
    async def main() -> tuple[Host, asyncio.Future[None]]:
        market = ClosingMarket()
        async with serve(
            market.handler, "127.0.0.1", 0, process_request=market.process_request
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            host = Host(f"ws://127.0.0.1:{port}")
            (plan,) = host.protocol.plan_connections()
            settings = SlotSettings(
                rotate_after_s=0.3, stale_after_s=5.0, backoff_base_s=0.05, backoff_cap_s=0.1
            )
            ticker = asyncio.ensure_future(market.run())
            task = asyncio.ensure_future(ConnectionSlot(host, plan, settings).run())
            deadline = time.monotonic() + 10
            while not (market.attempts >= 3 and len(host.trades(host.conns[-1].conn_id)) > 20):
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "no replacement delivering"
                await asyncio.sleep(0.01)
            task.cancel()
            ticker.cancel()
            await asyncio.gather(task, ticker, return_exceptions=True)
            for conn in host.conns:
                await conn.close(0.5)
        return host, task

    host, task = asyncio.run(main())
    assert task.cancelled(), "the slot ran until cancelled"
    reasons = [d["reason"] for k, d in host.events if k == EventKind.DISCONNECT]
    assert reasons[:1] == ["connect_failed"]
    gaps = [o for o in host.outputs if isinstance(o, Event) and o.kind == EventKind.GAP]
    assert gaps, "the old connection closed before any replacement: trades were lost"
    rotations = [d for k, d in host.events if k == EventKind.ROTATION]
    assert rotations[0]["old_closed_first"]


def test_a_message_above_the_limit_fails_the_connection_and_the_slot_reconnects() -> None:
    """The documented error for a frame above ``max_size``: the connection fails with 1009, the
    loss is a DISCONNECT (reason close_1009) and the slot opens a replacement that delivers."""
    sessions: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            request = json.loads(await ws.recv())
            await ws.send(json.dumps({"result": None, "id": request["id"]}))
            sessions.append(ws)
            trade = {"e": "trade", "E": 1, "s": "BTCUSDT", "p": "1", "q": "1", "T": 1, "m": False}
            for trade_id in range(1, 1000):
                if len(sessions) == 1 and trade_id == 5:
                    await ws.send("x" * 5000)  # above the limit, on the first connection only
                data = {**trade, "t": trade_id}
                await ws.send(json.dumps({"stream": "btcusdt@trade", "data": data}))
                await asyncio.sleep(0.002)
            await ws.wait_closed()

    async def main() -> Host:
        async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            host = Host(f"ws://127.0.0.1:{port}", max_size=4096)
            (plan,) = host.protocol.plan_connections()
            settings = SlotSettings(
                rotate_after_s=60, stale_after_s=5.0, backoff_base_s=0.05, backoff_cap_s=0.1
            )
            task = asyncio.ensure_future(ConnectionSlot(host, plan, settings).run())
            deadline = time.monotonic() + 10
            while not (len(sessions) == 2 and len(host.trades(host.conns[-1].conn_id)) > 20):
                assert time.monotonic() < deadline, "no replacement delivering"
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for conn in host.conns:
                await conn.close(0.5)
        return host

    host = asyncio.run(main())
    first, second = host.conns
    assert first.close_info()[0] == 1009
    assert host.counters.reconnects["close_1009"] == 1
    lost = [d for k, d in host.events if k == EventKind.DISCONNECT]
    assert [(d["conn_id"], d["reason"], d["code"]) for d in lost] == [
        (first.conn_id, "close_1009", 1009)
    ]
    assert [t.trade_id for t in host.trades(first.conn_id)] == [1, 2, 3, 4]
    # The replacement starts again at 1; the protocol drops 1-4 as duplicates: nothing lost.
    assert [t.trade_id for t in host.trades(second.conn_id)][:3] == [5, 6, 7]
