"""The reference connections: the comparator's own WebSocket client, one task per connection,
reconnecting with back-off. Their disconnects are the reference's gaps: reported, and the ids
they hid are holes on the reference side (`Matcher.disconnected`), never blamed on the writer.

Each connection is websockets' sans-I/O client protocol (`websockets.client.ClientProtocol`:
handshake, framing, answering the venue's pings) over a plain asyncio transport: frames are
stamped with the receive time as their bytes leave the socket, as the writer stamps ``ts_recv``,
and handed to the parser without the per-message queueing of a ``recv()`` API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

from websockets.client import ClientProtocol
from websockets.exceptions import WebSocketException
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from consolidator.compare.binance_ref import BinanceReference, Connection
from consolidator.compare.matcher import REF, Matcher

__all__ = ["ReferenceClient"]

_log = logging.getLogger(__name__)

BACKOFF_S: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
OPEN_TIMEOUT_S: Final = 10.0
MAX_FRAME_BYTES: Final = 1 << 24

OnText = Callable[[bytes, int], None]


class _Receiver(asyncio.Protocol):
    """One WebSocket connection: bytes in, text messages (with their receive time) out."""

    def __init__(self, ws: ClientProtocol, on_text: OnText, clock: Callable[[], int]) -> None:
        loop = asyncio.get_running_loop()
        self.ws = ws
        self.on_text = on_text
        self.clock = clock
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._parts: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ts_recv = self.clock()
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._frame(event, ts_recv)
            elif isinstance(event, Response) and not self.opened.done():
                if ws.handshake_exc is not None:
                    self.opened.set_exception(ws.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()

    def _frame(self, frame: Frame, ts_recv: int) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self.on_text(frame.data, ts_recv)
            else:
                self._parts = [frame.data]
        elif opcode is Opcode.CONT:
            self._parts.append(frame.data)
            if frame.fin:
                self.on_text(b"".join(self._parts), ts_recv)
                self._parts = []

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.ws.state is State.CLOSED:
            transport.close()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            reason = f"{type(exc).__name__}: {exc}"
        elif self.ws.state is State.CLOSED:
            reason = str(self.ws.close_exc)
        else:
            reason = "connection closed without a close frame"
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {reason}"))
        if not self.closed.done():
            self.closed.set_result(reason)


class ReferenceClient:
    """Runs the planned reference connections until ``stop`` is set.

    Args:
        base_url: the venue's WebSocket base URL (``ws://127.0.0.1:9000``).
        plan: the connections (`BinanceReference.plan`).
        parser: the reference parser.
        matcher: receives every parsed record as side `REF`.
        clock: the receive clock (ns since the epoch; the host clock the writer uses too).
    """

    def __init__(
        self,
        base_url: str,
        plan: list[Connection],
        parser: BinanceReference,
        matcher: Matcher,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.plan = plan
        self.parser = parser
        self.matcher = matcher
        self.clock = clock
        self.messages = 0
        self.connects = 0
        self.connected: set[str] = set()
        self.first_recv_ns: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Every connection, until ``stop``."""
        tasks = [
            asyncio.create_task(self._connection(path, lanes, stop)) for path, lanes in self.plan
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _open(self, url: str, on_text: OnText) -> _Receiver:
        uri = parse_uri(url)
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if uri.secure else None
        ws = ClientProtocol(uri, max_size=MAX_FRAME_BYTES)
        transport, receiver = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Receiver(ws, on_text, self.clock), uri.host, uri.port, ssl=context
            ),
            OPEN_TIMEOUT_S,
        )
        try:
            await asyncio.wait_for(asyncio.shield(receiver.opened), OPEN_TIMEOUT_S)
        except BaseException:
            transport.abort()
            raise
        return receiver

    async def _connection(
        self, path: str, lanes: list[tuple[str, str]], stop: asyncio.Event
    ) -> None:
        url = self.base_url + path
        failures = 0
        gap: dict[str, Any] | None = None
        matcher, parse, add = self.matcher, self.parser.parse, self.matcher.add

        def on_text(frame: bytes, ts_recv: int) -> None:
            nonlocal gap
            self.messages += 1
            if gap is not None:
                gap["to_ns"] = ts_recv
                gap = None
            parsed = parse(frame, ts_recv)
            if parsed is not None:
                if self.first_recv_ns is None:
                    self.first_recv_ns = ts_recv
                add(REF, *parsed)

        while not stop.is_set():
            receiver: _Receiver | None = None
            try:
                receiver = await self._open(url, on_text)
                self.connects += 1
                self.connected.add(path)
                failures = 0
                reason = await receiver.closed
            except (OSError, WebSocketException, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                if receiver is not None and receiver.transport is not None:
                    receiver.transport.abort()
            self.connected.discard(path)
            if stop.is_set():
                return
            if gap is None:
                gap = {"kind": "disconnect", "url": path, "from_ns": self.clock(),
                       "to_ns": None, "reason": reason}  # fmt: skip
                matcher.reference_gaps.append(gap)
                matcher.disconnected(REF, lanes)
                _log.warning("reference connection %s lost (%s); reconnecting", path, reason)
            delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
