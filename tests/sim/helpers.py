"""Test helpers: async HTTP, a raw WebSocket client, a reference book builder, subprocesses."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import selectors
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection

from consolidator.process import stop_process
from consolidator.sim.config import Venue
from tests.wait import DEADLINE_S, async_wait_until

if TYPE_CHECKING:
    from consolidator.sim.server import SimServer

REPO = Path(__file__).resolve().parents[2]


def run(coro: Awaitable[Any], timeout: float = 120.0) -> Any:
    """Run ``coro`` in a fresh event loop with an overall timeout."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http(method: str, url: str, body: Any = None) -> HttpResult:
    """One HTTP/1.1 request over a fresh connection (``Connection: close``)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    payload = b"" if body is None else json.dumps(body).encode()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    raw = await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    head_bytes, _, content = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResult(int(lines[0].split()[1]), headers, content)


async def get_json(url: str) -> Any:
    result = await http("GET", url)
    assert result.status == 200, (url, result.status, result.body[:200])
    return result.json()


async def control(rest_url: str, **body: Any) -> Any:
    result = await http("POST", rest_url + "/sim/control", body)
    assert result.status == 200, result.body
    return result.json()


class RawWs:
    """Minimal WebSocket client exposing every frame (pings included), never auto-replying."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str) -> RawWs:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0], head
        return cls(reader, writer)

    async def recv_frame(self) -> tuple[int, bytes]:
        """Next frame as (opcode, payload)."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return b0 & 0x0F, await self.reader.readexactly(n)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        else:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def _levels(rows: list[list[str]]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in rows}


@dataclass
class RefBook:
    """Reference local book following the venue's documented procedure.

    Spot: buffer, snapshot (retry while ``lastUpdateId < first U``), drop ``u <= L``, apply;
    a gap is ``U > local + 1``. USD-M: drop ``u < L``, first applied event must have
    ``U <= L <= u``, then every event's ``pu`` must equal the previous ``u``.
    """

    symbol: str
    usdm: bool
    fetch: Callable[[str], Awaitable[dict[str, Any]]]
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    local: int | None = None
    prev_u: int | None = None
    buffer: list[dict[str, Any]] = field(default_factory=list)
    gaps: int = 0
    syncs: int = 0
    applied: int = 0

    async def on_event(self, event: dict[str, Any]) -> None:
        if self.local is None:
            self.buffer.append(event)
            await self._sync()
            return
        self._live(event)

    def _apply(self, event: dict[str, Any]) -> None:
        for side, rows in ((self.bids, event["b"]), (self.asks, event["a"])):
            for price, qty in rows:
                p, q = Decimal(price), Decimal(qty)
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.local = event["u"]
        self.prev_u = event["u"]
        self.applied += 1

    def _gap(self) -> None:
        self.gaps += 1
        self.local = None
        self.prev_u = None
        self.buffer.clear()

    def _live(self, event: dict[str, Any]) -> None:
        assert self.local is not None
        if self.usdm:
            if self.prev_u is None:
                if event["u"] < self.local:
                    return
                if not event["U"] <= self.local <= event["u"]:
                    self._gap()
                    return
            elif event["pu"] != self.prev_u:
                self._gap()
                return
            self._apply(event)
            return
        if event["u"] < self.local:
            return
        if event["U"] > self.local + 1:
            self._gap()
            return
        self._apply(event)

    async def _sync(self) -> None:
        snap: dict[str, Any] = {}

        async def caught_up() -> bool:  # spot: retry while the snapshot is older than the stream
            nonlocal snap
            snap = await self.fetch(self.symbol)
            return self.usdm or snap["lastUpdateId"] >= self.buffer[0]["U"]

        await async_wait_until(caught_up, what="a snapshot caught up with the stream")
        last = snap["lastUpdateId"]
        self.bids = _levels(snap["bids"])
        self.asks = _levels(snap["asks"])
        self.local = last
        self.prev_u = None
        self.syncs += 1
        pending = [e for e in self.buffer if (e["u"] >= last if self.usdm else e["u"] > last)]
        self.buffer.clear()
        for event in pending:
            self._live(event)
            if self.local is None:
                return

    def matches(self, truth: dict[str, Any]) -> bool:
        return self.bids == _levels(truth["bids"]) and self.asks == _levels(truth["asks"])


def rest_prefix(venue: Venue) -> str:
    return "/fapi/v1" if venue is Venue.USDM else "/api/v3"


async def consume_depth(ws: ClientConnection, books: dict[str, RefBook]) -> None:
    async for raw in ws:
        _, data = unwrap(raw)
        if data.get("e") == "depthUpdate":
            await books[data["s"]].on_event(data)


async def wait_for(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    await async_wait_until(predicate, timeout)


async def checkpoint(sim: SimServer, books: dict[str, RefBook]) -> None:
    """Pause, wait until every reference book reached the counter, compare, resume."""
    paused = await control(sim.rest_url, action="pause")
    for symbol, book in books.items():
        target = paused["symbols"][symbol]["update_id"]
        await wait_for(lambda b=book, t=target: b.local == t)
        truth = await get_json(f"{sim.rest_url}/sim/book?symbol={symbol}")
        assert truth["lastUpdateId"] == target
        assert book.matches(truth), symbol
    await control(sim.rest_url, action="resume")


def books_for(sim: SimServer, symbols: list[str], usdm: bool) -> dict[str, RefBook]:
    limit = 1000 if usdm else 5000
    prefix = rest_prefix(sim.config.venue)

    async def fetch(symbol: str) -> dict[str, Any]:
        result: dict[str, Any] = await get_json(
            f"{sim.rest_url}{prefix}/depth?symbol={symbol}&limit={limit}"
        )
        return result

    return {s: RefBook(s, usdm, fetch) for s in symbols}


def unwrap(raw: str | bytes) -> tuple[str | None, dict[str, Any]]:
    message = json.loads(raw)
    if isinstance(message, dict) and "stream" in message and "data" in message:
        return message["stream"], message["data"]
    return None, message


@contextlib.contextmanager
def spawn_sim(
    *args: str, timeout: float = 60.0
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """Start ``python -m consolidator.sim.cli ARGS``; yield (process, first-line JSON)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "consolidator.sim.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError("simulator printed nothing")
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else b""
        yield proc, json.loads(line)
    finally:
        stop_process(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
