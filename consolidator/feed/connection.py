"""One websocket connection of the writer (picows): receive-time stamping, paced control frames,
liveness, the close handshake.

picows parses every socket read in one call and hands each complete frame of it to
`_Listener.on_ws_frame`, the last one flagged ``last_in_buffer``. ``ts_recv`` is therefore one
clock reading per socket read: the first frame of a read (the one after a ``last_in_buffer``
frame) reads ``time.time_ns()``, and every message completed by that read carries the same stamp,
however long the ones before it took to process. A message's stamp is the arrival of its last
bytes. Messages go to the sink synchronously, in order, with no queue and no task switch; after
the last frame of a read the ``batch_done`` hook runs (the publisher's per-read work).

What picows leaves to us, done here:

* fragmented messages: continuation frames are assembled, at most ``max_size`` bytes in all
  (picows checks each frame against the same limit); a larger message, a continuation without a
  start or a new message inside a fragmented one fails the connection (1009 / 1002);
* the close handshake: a CLOSE from the server is answered and its code and reason kept
  (`FeedConnection.close_info`); our own `FeedConnection.close` sends 1000 and waits;
* pings from the server are answered with a pong echoing the payload (by hand, so that they count
  as traffic); pongs need nothing: like every frame they refresh liveness;
* an exception raised by the sink or ``batch_done`` is counted (``sink_errors``, and the
  ``on_sink_error`` hook) and logged once per connection; the connection carries on;
* TLS (``wss://``) verifies against the system CA store (`ssl.create_default_context`);
  no proxy, whatever the environment says.

A frame above ``max_size`` is a protocol error in picows: it sends 1009 and drops the
connection; `close_info` then reports 1009 and the supervisor reconnects (``close_1009``).

Control frames (SUBSCRIBE, UNSUBSCRIBE, our rare pings) are paced by the venue protocol's
`ControlPacer`. Liveness: every socket read that completes a frame refreshes
`FeedConnection.idle_s`; the supervisor pings a quiet connection and replaces a stale one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from consolidator.venues.base import ConnectionPlan, ControlPacer

__all__ = ["ConnectError", "FeedConnection", "MessageSink"]

_log = logging.getLogger(__name__)

MessageSink = Callable[[int, bytes, int], None]
"""``sink(conn_id, message, ts_recv)``: one complete message as received."""

_TEXT: Final = WSMsgType.TEXT
_BINARY: Final = WSMsgType.BINARY
_CONT: Final = WSMsgType.CONTINUATION
_PING: Final = WSMsgType.PING
_CLOSE: Final = WSMsgType.CLOSE
_MARKET_PREFIX: Final = b'{"stream"'
_ECHOED_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})
"""Close codes a client may send back as received (others are answered with 1000)."""
_time_ns = time.time_ns
_monotonic = time.monotonic
_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """One client TLS context per process: the system CA store, hostname checked."""
    global _tls  # noqa: PLW0603 - built once, on the first wss:// connection
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls


class ConnectError(Exception):
    """The connection could not be opened (refused, timeout, TLS or handshake rejected)."""


def _discard(conn_id: int, message: bytes, ts_recv: int) -> None:
    """The sink of a connection that is closing after a failure or the server's close."""


def _nothing() -> None:
    pass


class _Listener(WSListener):
    """The picows side of a `FeedConnection`: stamps reads, assembles, hands messages over."""

    def __init__(self, owner: FeedConnection, max_size: int) -> None:
        super().__init__()
        self.owner = owner
        self.conn_id = owner.conn_id
        self.sink: MessageSink = owner._first_messages
        self.batch_done = owner.batch_done or _nothing
        self.max_size = max_size
        self.transport: WSTransport | None = None
        self.stamp = 0
        self.rx_monotonic = _monotonic()
        self.new_read = True
        self.fragments: list[bytes] | None = None
        self.fragments_size = 0
        self.close_received: tuple[int, str] | None = None
        self.closing = False
        """We started the closing handshake (messages keep coming until the server's CLOSE)."""
        self.failure: tuple[int, str] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.new_read:
            self.stamp = _time_ns()
            self.rx_monotonic = _monotonic()
            if transport.is_close_frame_sent and not self.closing:
                self._after_failure(frame)
        last = frame.last_in_buffer
        self.new_read = last
        try:
            if frame.msg_type is _TEXT and frame.fin and self.fragments is None:
                self.sink(self.conn_id, frame.get_payload_as_bytes(), self.stamp)
            else:
                self._other(transport, frame)
        except Exception as exc:  # the sink's bug must not cost the connection
            self.owner._sink_failed(exc)
        if last:
            try:
                self.batch_done()
            except Exception as exc:
                self.owner._sink_failed(exc)
            if transport.is_close_frame_sent and not self.closing:
                self.sink = _discard  # see _after_failure

    def _after_failure(self, frame: WSFrame) -> None:
        """picows failed the connection (it sent CLOSE on a frame above ``max_size``) and still
        parses: the next read delivers that frame, then what followed it. Frames of the read
        in which it found the error were whole, and delivered; nothing is after it."""
        if frame.payload_size > self.max_size:
            self.sink = _discard

    def _other(self, transport: WSTransport, frame: WSFrame) -> None:
        """Everything but a whole text message: fragments, binary, ping, pong, close."""
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if self.fragments is not None:
                self.fail(transport, 1002, "new message inside a fragmented one")
            elif frame.fin:
                self.sink(self.conn_id, frame.get_payload_as_bytes(), self.stamp)
            else:
                self.fragments = [frame.get_payload_as_bytes()]
                self.fragments_size = frame.payload_size
        elif kind is _CONT:
            fragments = self.fragments
            if fragments is None:
                self.fail(transport, 1002, "continuation frame without a message")
                return
            self.fragments_size += frame.payload_size
            if self.fragments_size > self.max_size:
                self.fail(transport, 1009, f"message above {self.max_size} bytes")
                return
            fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                self.fragments = None
                self.sink(self.conn_id, b"".join(fragments), self.stamp)
        elif kind is _PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif kind is _CLOSE:
            self._close_frame(transport, frame)
        # PONG: nothing to do; the read that brought it refreshed the liveness clock

    def _close_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """The server's CLOSE: keep code and reason, answer (unless we closed first), hang up."""
        code: int = frame.get_close_code().value
        self.close_received = (code or 1005, frame.get_close_reason() or "")
        self.sink = _discard
        self.fragments = None
        if not transport.is_close_frame_sent:
            reply = code if code in _ECHOED_CODES or 3000 <= code <= 4999 else 1000
            transport.send_close(WSCloseCode(reply))
        transport.disconnect()

    def fail(self, transport: WSTransport, code: int, reason: str) -> None:
        """Fail the connection: CLOSE with ``code``, then drop it; nothing more is delivered."""
        if self.failure is None:
            self.failure = (code, reason)
        self.sink = _discard
        self.fragments = None
        transport.send_close(WSCloseCode(code), reason.encode())
        transport.disconnect()

    def go_live(self, sink: MessageSink) -> None:
        """From now on messages go straight to ``sink`` (unless the connection is closing)."""
        if self.sink is not _discard:
            self.sink = sink


class FeedConnection:
    """One planned connection: open, subscribe (paced), deliver messages, close.

    Args:
        plan: the protocol's plan (id, path, streams, subscribe frames).
        base_url: the feed's ``ws_url``.
        sink: where messages go.
        pacer: the protocol's control-frame pacer for this connection.
        max_size: the largest frame, and the largest assembled message, accepted (larger ones
            fail the connection with 1009).
        open_timeout_s: limit for TCP connect, TLS and the opening handshake.
        batch_done: called after the messages of each socket read went to ``sink``.
        on_sink_error: called with an exception raised by ``sink`` or ``batch_done`` (it is
            counted in ``sink_errors`` either way; the connection carries on).
        ssl_context: for ``wss://``; by default the system CA store, hostname checked.
    """

    def __init__(
        self,
        plan: ConnectionPlan,
        base_url: str,
        sink: MessageSink,
        pacer: ControlPacer,
        *,
        max_size: int = 1 << 24,
        open_timeout_s: float = 10.0,
        batch_done: Callable[[], None] | None = None,
        on_sink_error: Callable[[Exception], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.plan = plan
        self.conn_id = plan.conn_id
        self.url = base_url + plan.path
        self._sink = sink
        self._pacer = pacer
        self._max_size = max_size
        self._open_timeout = open_timeout_s
        self.batch_done = batch_done
        self._on_sink_error = on_sink_error
        self._ssl_context = ssl_context
        self.sink_errors = 0
        self.transport: WSTransport | None = None
        self._listener: _Listener | None = None
        self.opened_at = 0.0
        self.ready = asyncio.Event()
        """Set once the venue answered every subscribe frame and sent a market message."""
        self._replies_expected = len(plan.subscribe_frames)
        self._replies = 0
        self._market_seen = False
        self._control: deque[bytes] = deque()
        self._control_wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        """The local failure that dropped the connection, if picows reported one."""

    async def open(self) -> None:
        """Connect; then the subscribe frames go out paced.

        Raises:
            ConnectError: the connection could not be opened.
        """
        listener = self._listener = _Listener(self, self._max_size)
        tls = None
        if self.url.startswith("wss:"):
            tls = self._ssl_context or _tls_context()
        try:
            async with asyncio.timeout(self._open_timeout):
                transport, handler = await ws_connect(
                    lambda _request, _response: listener,
                    self.url,
                    ssl_context=tls,
                    websocket_handshake_timeout=self._open_timeout,
                    enable_auto_ping=False,
                    enable_auto_pong=False,
                    max_frame_size=self._max_size,
                    proxy=None,
                )
        except (OSError, TimeoutError, WSError) as exc:
            raise ConnectError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if handler is None:  # picows returns no listener when the peer hung up mid-handshake
            raise ConnectError(f"{self.url}: connection closed during the opening handshake")
        self.transport = transport
        self.opened_at = time.monotonic()
        listener.rx_monotonic = self.opened_at
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch(transport))
        for frame in self.plan.subscribe_frames:
            self._control.append(frame)
        self._sender = loop.create_task(self._send_control())

    def send_control(self, frame: bytes) -> None:
        """Queue a control frame (sent as text, paced)."""
        self._control.append(frame)
        self._control_wakeup.set()

    @property
    def is_open(self) -> bool:
        """The websocket is open (no close frame sent or received, not dropped)."""
        t = self.transport
        listener = self._listener
        return (
            t is not None
            and listener is not None
            and not t.is_disconnected
            and not t.is_close_frame_sent
            and listener.close_received is None
        )

    def idle_s(self, now: float) -> float:
        """Seconds since a socket read last completed a frame (or since the connection opened)."""
        listener = self._listener
        return 0.0 if listener is None or self.transport is None else now - listener.rx_monotonic

    async def wait_closed(self) -> None:
        """Return when the connection is closed (by either side)."""
        if self.transport is not None:
            await self._closed.wait()

    def close_info(self) -> tuple[int | None, str]:
        """The close code and reason: the server's CLOSE if one came, else the code of a local
        failure (1009 for a message too large, 1002 for a protocol error), else None and ""
        (the TCP connection just dropped)."""
        listener = self._listener
        if listener is not None and listener.close_received is not None:
            return listener.close_received
        if listener is not None and listener.failure is not None:
            return listener.failure
        t = self.transport
        sent = None if t is None or t.close_handshake is None else t.close_handshake.sent
        if sent is not None and sent.code.value != 1000:  # picows failed the connection
            return sent.code.value, sent.reason or ""
        return None, ""

    async def ping(self) -> None:
        """Send a ping if the pacer allows one now (a pong proves the connection is alive)."""
        t = self.transport
        if t is None or not self.is_open or not self._pacer.allow(time.monotonic_ns()):
            return
        t.send_ping()

    async def close(self, timeout_s: float = 1.0) -> None:
        """Close with 1000 (waiting at most ``timeout_s`` for the handshake), else abort."""
        self._stop_sender()
        t = self.transport
        if t is None:
            return
        if not t.is_disconnected and not t.is_close_frame_sent:
            if self._listener is not None:
                self._listener.closing = True
            t.send_close(WSCloseCode.OK)
        try:
            async with asyncio.timeout(timeout_s):
                await self._closed.wait()
        except TimeoutError:
            self.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._closed.wait()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        self._stop_sender()
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    def _stop_sender(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None

    async def _watch(self, transport: WSTransport) -> None:
        """Wait for the end of the connection; keep picows's reason if it failed it."""
        try:
            await transport.wait_disconnected()
        except Exception as exc:  # a local failure (e.g. a frame too large): already reported
            self.error = exc
        finally:
            self._stop_sender()
            self._closed.set()

    def _sink_failed(self, exc: Exception) -> None:
        self.sink_errors += 1
        if self._on_sink_error is not None:
            self._on_sink_error(exc)
        elif self.sink_errors == 1:
            _log.error(
                "connection %d: message sink failed (%s: %s); counting further failures",
                self.conn_id,
                type(exc).__name__,
                exc,
            )

    def _first_messages(self, conn_id: int, message: bytes, ts_recv: int) -> None:
        """Watch for the replies and the first market message, then hand over to the sink."""
        if message.startswith(_MARKET_PREFIX):
            if message.find(b"!", 9, 16) < 0:  # not "!serverShutdown"
                self._market_seen = True
        elif b'"id"' in message:
            self._replies += 1
        if self._market_seen and self._replies >= self._replies_expected:
            self.ready.set()
            if self._listener is not None:
                self._listener.go_live(self._sink)
        self._sink(conn_id, message, ts_recv)

    async def _send_control(self) -> None:
        t = self.transport
        assert t is not None
        while not t.is_disconnected and not t.is_close_frame_sent:
            if not self._control:
                self._control_wakeup.clear()
                await self._control_wakeup.wait()
                continue
            now = time.monotonic_ns()
            if not self._pacer.allow(now):
                await asyncio.sleep(max(0, self._pacer.next_time(now) - now) / 1e9)
                continue
            t.send(_TEXT, self._control.popleft())
