"""One websocket connection of the writer: receive-time stamping, paced control frames, liveness.

``ts_recv`` is taken when the bytes leave the socket: `StampedConnection` (a websockets
`ClientConnection`) reads the clock at the start of ``data_received``, before the library parses
the chunk, and hands every complete message to its sink with that stamp from ``process_event``.
A message's stamp is therefore the arrival of its last bytes, not the moment the event loop got
round to it. Messages go to the sink synchronously, in order, without websockets' receive queue:
no task switch per message, and the transport's read loop is the natural back-pressure.

Control frames (SUBSCRIBE, UNSUBSCRIBE, our rare pings) are paced by the venue protocol's
`ControlPacer`; the server's pings are answered by the library. Liveness: every received chunk
(pings included) refreshes `FeedConnection.idle_s`; the supervisor pings a quiet connection and
replaces a stale one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from consolidator.venues.base import ConnectionPlan, ControlPacer

__all__ = ["ConnectError", "FeedConnection", "MessageSink", "StampedConnection"]

_log = logging.getLogger(__name__)

MessageSink = Callable[[int, bytes, int], None]
"""``sink(conn_id, message, ts_recv)``: one complete message as received."""

_TEXT: Final = Opcode.TEXT
_BINARY: Final = Opcode.BINARY
_CONT: Final = Opcode.CONT
_MARKET_PREFIX: Final = b'{"stream"'


class ConnectError(Exception):
    """The connection could not be opened (refused, timeout, handshake rejected)."""


class StampedConnection(ClientConnection):
    """A client connection that stamps each message with its socket receive time.

    ``sink`` receives ``(message, ts_recv)``; messages that complete before a sink is attached
    (possible right after the handshake) are kept and handed over by `attach`.
    """

    sink: Callable[[bytes, int], None] | None = None
    batch_done: Callable[[], None] | None = None
    """Called after the messages of each socket read went to the sink."""
    stamp: int = 0
    rx_monotonic: float = 0.0
    rx_bytes: int = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._fragments: list[bytes] | None = None
        self._early: list[tuple[bytes, int]] = []

    def attach(self, sink: Callable[[bytes, int], None]) -> None:
        """Send every message, from now and those already complete, to ``sink``."""
        self.sink = sink
        early, self._early = self._early, []
        for message, ts in early:
            sink(message, ts)

    def data_received(self, data: bytes) -> None:
        """Stamp the chunk, then let websockets parse it (it calls `process_event`)."""
        self.stamp = time.time_ns()
        self.rx_monotonic = time.monotonic()
        self.rx_bytes += len(data)
        super().data_received(data)
        if self.batch_done is not None:
            self.batch_done()

    def process_event(self, event: Event) -> None:
        """Data frames go to the sink with the chunk's stamp; everything else as usual."""
        if self.response is None or type(event) is not Frame:
            super().process_event(event)
            return
        opcode = event.opcode
        if opcode is not _TEXT and opcode is not _BINARY and opcode is not _CONT:
            super().process_event(event)
            return
        data = event.data
        if type(data) is not bytes:
            data = bytes(data)
        if opcode is _CONT or not event.fin:
            if self._fragments is None:
                self._fragments = []
            self._fragments.append(data)
            if not event.fin:
                return
            data = b"".join(self._fragments)
            self._fragments = None
        sink = self.sink
        if sink is None:
            self._early.append((data, self.stamp))
        else:
            sink(data, self.stamp)


class FeedConnection:
    """One planned connection: open, subscribe (paced), deliver messages, close.

    Args:
        plan: the protocol's plan (id, path, streams, subscribe frames).
        base_url: the feed's ``ws_url``.
        sink: where messages go.
        pacer: the protocol's control-frame pacer for this connection.
        compression: permessage-deflate on or off.
        max_size: the largest message accepted by websockets (larger ones fail the connection).
        open_timeout_s: limit for TCP connect, TLS and the opening handshake.
        batch_done: called after the messages of each socket read went to ``sink``.
    """

    def __init__(
        self,
        plan: ConnectionPlan,
        base_url: str,
        sink: MessageSink,
        pacer: ControlPacer,
        *,
        compression: bool = False,
        max_size: int = 1 << 24,
        open_timeout_s: float = 10.0,
        batch_done: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.conn_id = plan.conn_id
        self.url = base_url + plan.path
        self._sink = sink
        self._pacer = pacer
        self._compression = compression
        self._max_size = max_size
        self._open_timeout = open_timeout_s
        self._batch_done = batch_done
        self.ws: StampedConnection | None = None
        self.opened_at = 0.0
        self.ready = asyncio.Event()
        """Set once the venue answered every subscribe frame and sent a market message."""
        self._replies_expected = len(plan.subscribe_frames)
        self._replies = 0
        self._market_seen = False
        self._control: deque[bytes] = deque()
        self._control_wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect; then the subscribe frames go out paced.

        Raises:
            ConnectError: the connection could not be opened.
        """
        try:
            ws = await connect(
                self.url,
                proxy=None,
                compression="deflate" if self._compression else None,
                max_size=self._max_size,
                ping_interval=None,
                open_timeout=self._open_timeout,
                close_timeout=1.0,
                create_connection=StampedConnection,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            raise ConnectError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        assert isinstance(ws, StampedConnection)
        self.ws = ws
        self.opened_at = time.monotonic()
        ws.rx_monotonic = self.opened_at
        ws.batch_done = self._batch_done
        ws.attach(self._first_messages)
        for frame in self.plan.subscribe_frames:
            self._control.append(frame)
        self._sender = asyncio.get_running_loop().create_task(self._send_control())

    def send_control(self, frame: bytes) -> None:
        """Queue a control frame (sent as text, paced)."""
        self._control.append(frame)
        self._control_wakeup.set()

    @property
    def is_open(self) -> bool:
        """The websocket is open (not closing or closed)."""
        return self.ws is not None and self.ws.protocol.state is State.OPEN

    def idle_s(self, now: float) -> float:
        """Seconds since bytes last arrived (or since the connection opened)."""
        return 0.0 if self.ws is None else now - self.ws.rx_monotonic

    @property
    def rx_bytes(self) -> int:
        """Bytes received on the socket (after TLS, before decompression)."""
        return 0 if self.ws is None else self.ws.rx_bytes

    async def wait_closed(self) -> None:
        """Return when the connection is closed (by either side)."""
        if self.ws is not None:
            await self.ws.wait_closed()

    def close_info(self) -> tuple[int | None, str]:
        """The close code and reason (None and "" when the TCP connection just dropped)."""
        ws = self.ws
        if ws is None:
            return None, ""
        return ws.close_code, ws.close_reason or ""

    async def ping(self) -> None:
        """Send a ping if the pacer allows one now (a pong proves the connection is alive)."""
        ws = self.ws
        if ws is None or not self.is_open or not self._pacer.allow(time.monotonic_ns()):
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.ping()

    async def close(self, timeout_s: float = 1.0) -> None:
        """Close with 1000 (waiting at most ``timeout_s`` for the handshake), else abort."""
        self._stop_sender()
        ws = self.ws
        if ws is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await ws.close()
        except TimeoutError:
            self.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await ws.wait_closed()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        self._stop_sender()
        if self.ws is not None and self.ws.transport is not None:
            self.ws.transport.abort()

    def _stop_sender(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None

    def _first_messages(self, message: bytes, ts_recv: int) -> None:
        """Watch for the replies and the first market message, then hand over to the sink."""
        if message.startswith(_MARKET_PREFIX):
            if message.find(b"!", 9, 16) < 0:  # not "!serverShutdown"
                self._market_seen = True
        elif b'"id"' in message:
            self._replies += 1
        if self._market_seen and self._replies >= self._replies_expected:
            self.ready.set()
            if self.ws is not None:
                self.ws.sink = functools.partial(self._sink, self.conn_id)
        self._sink(self.conn_id, message, ts_recv)

    async def _send_control(self) -> None:
        ws = self.ws
        assert ws is not None
        try:
            while True:
                if not self._control:
                    self._control_wakeup.clear()
                    await self._control_wakeup.wait()
                    continue
                now = time.monotonic_ns()
                if not self._pacer.allow(now):
                    await asyncio.sleep(max(0, self._pacer.next_time(now) - now) / 1e9)
                    continue
                await ws.send(self._control.popleft(), text=True)
        except ConnectionClosed:
            return
