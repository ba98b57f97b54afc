"""One WebSocket client connection: subscriptions, outgoing batches, inbound rate limit."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from consolidator.sim.config import VenueProfile
from consolidator.sim.faults import FaultKind, FaultManager, OutFrame
from consolidator.sim.frames import ws_text_frame
from consolidator.sim.streams import StreamKey, WsTarget, parse_stream

if TYPE_CHECKING:
    from websockets.protocol import Event

__all__ = ["Feed", "Session", "SessionContext", "SimConnection"]

_COUNTED = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG})


class SimConnection(ServerConnection):
    """A websockets server connection that counts inbound frames against a rate limit.

    Text, binary, continuation, ping and pong frames all count. When more than
    ``msg_limit`` frames arrive within one second, further frames are discarded and
    ``on_limit`` is called once (the session then closes the connection).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.msg_limit = 0
        self.on_limit: Callable[[], None] | None = None
        self.limit_hit = False
        self.inbound_frames = 0
        self._recent: deque[float] = deque()

    def process_event(self, event: Event) -> None:
        """Count data/ping/pong frames, enforce the limit, then process as usual."""
        if self.request is not None and isinstance(event, Frame) and event.opcode in _COUNTED:
            self.inbound_frames += 1
            if self.limit_hit:
                return
            if self.msg_limit > 0:
                now = self.loop.time()
                recent = self._recent
                recent.append(now)
                while recent and recent[0] <= now - 1.0:
                    recent.popleft()
                if len(recent) > self.msg_limit:
                    self.limit_hit = True
                    if self.on_limit is not None:
                        self.on_limit()
                    return
        super().process_event(event)


class Feed(Protocol):
    """Source of market frames for subscribed streams."""

    def subscribe(self, session: Session, key: StreamKey) -> None:
        """Start delivering ``key`` to ``session``."""

    def unsubscribe(self, session: Session, key: StreamKey) -> None:
        """Stop delivering ``key`` to ``session``."""

    def session_closed(self, session: Session) -> None:
        """Forget ``session`` (its streams were already unsubscribed)."""


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Shared dependencies of all sessions."""

    profile: VenueProfile
    feed: Feed
    faults: FaultManager
    max_send_buffer: int


class Session:
    """State of one client connection.

    Args:
        sid: Connection id (unique per process).
        conn: The websockets connection.
        target: Parsed request URL.
        ctx: Shared dependencies.
    """

    def __init__(
        self, sid: int, conn: SimConnection, target: WsTarget, ctx: SessionContext
    ) -> None:
        self.id = sid
        self.conn = conn
        self.route = target.route
        self.combined = target.combined
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.opened_at = self.loop.time()
        self.subs: dict[str, StreamKey] = {}
        self.live: set[str] = set()
        self.outbox: list[OutFrame] = []
        self.stalled = False
        self.frames_sent = 0
        self.frames_discarded = 0
        self.close_reason: str | None = None
        self._flush_pending = False

    # Subscriptions (used by the control-message handler)

    def stream_names(self) -> list[str]:
        """Subscribed stream names in subscription order."""
        return list(self.subs)

    def _routable(self, key: StreamKey) -> bool:
        profile = self.ctx.profile
        if not profile.is_usdm:
            return True
        return profile.route_of(key.kind) == (self.route or "/public")

    def add_streams(self, names: list[str]) -> None:
        """Subscribe to ``names`` (already validated); known ones are ignored."""
        for name in names:
            if name in self.subs:
                continue
            key = parse_stream(name, self.ctx.profile)
            self.subs[name] = key
            if self._routable(key):
                self.live.add(name)
                self.ctx.feed.subscribe(self, key)

    def remove_streams(self, names: list[str]) -> None:
        """Unsubscribe from ``names``; unknown ones are ignored."""
        for name in names:
            key = self.subs.pop(name, None)
            if key is not None and name in self.live:
                self.live.discard(name)
                self.ctx.feed.unsubscribe(self, key)

    def drop_all(self) -> None:
        """Unsubscribe from everything (connection closed)."""
        self.remove_streams(list(self.subs))

    def symbols(self) -> set[str]:
        """Uppercase symbols of the subscribed streams."""
        return {key.symbol for key in self.subs.values() if key.symbol}

    # Outgoing data

    def enqueue(self, frame: bytes, stream: str) -> None:
        """Queue an encoded frame; the batch is written at the end of this loop turn."""
        self.outbox.append((frame, stream))
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush)

    def send_event(self, stream: str, payload: bytes) -> None:
        """Queue an event payload, wrapped for combined connections."""
        if self.combined:
            payload = b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"
        self.enqueue(ws_text_frame(payload), stream)

    @property
    def is_open(self) -> bool:
        """Whether the WebSocket is open (not closing or closed)."""
        return self.conn.protocol.state is State.OPEN

    def buffered_bytes(self) -> int:
        """Bytes waiting in the transport's write buffer."""
        transport = self.conn.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size()

    def flush(self) -> None:
        """Write the queued batch in one transport write (after frame faults)."""
        self._flush_pending = False
        frames = self.outbox
        if not frames:
            return
        self.outbox = []
        transport = self.conn.transport
        if self.stalled or not self.is_open or transport.is_closing():
            self.frames_discarded += len(frames)
            return
        faults = self.ctx.faults
        if faults.drops_armed:
            frames = faults.withhold(self.id, frames, self.loop.time())
        if faults.frame_faults_armed:
            frames = faults.mutate(frames, self.combined, self.loop.time())
        transport.write(b"".join([f[0] for f in frames]))
        self.frames_sent += len(frames)
        if transport.get_write_buffer_size() > self.ctx.max_send_buffer:
            self.abort("slow consumer")

    def write_block(self, data: bytes, frames: int) -> None:
        """Write ``frames`` pre-encoded frames (``data``) at once, bypassing the outbox and the
        frame faults (the fast mode's path)."""
        transport = self.conn.transport
        if self.stalled or not self.is_open or transport.is_closing():
            self.frames_discarded += frames
            return
        transport.write(data)
        self.frames_sent += frames

    # Connection-level actions

    def stall(self, duration: float | None) -> None:
        """Stop sending and reading (so pings go unanswered) without closing."""
        if self.stalled or not self.is_open:
            return
        self.stalled = True
        self.conn.transport.pause_reading()
        if duration is not None:
            self.loop.call_later(duration, self.unstall)

    def unstall(self) -> None:
        """End a stall."""
        if self.stalled:
            self.stalled = False
            if not self.conn.transport.is_closing():
                self.conn.transport.resume_reading()

    def abort(self, reason: str, rst: bool = False) -> None:
        """Drop the TCP connection at once; with ``rst`` send a TCP RST (SO_LINGER 0)."""
        transport = self.conn.transport
        if transport.is_closing():
            return
        self.close_reason = self.close_reason or reason
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def apply_fault(self, kind: FaultKind, duration: float | None) -> None:
        """Apply a connection fault (stall or reset)."""
        if kind is FaultKind.STALL:
            self.stall(duration)
        elif kind is FaultKind.RESET:
            self.abort("reset fault", rst=True)

    async def close(self, code: int, reason: str, why: str) -> None:
        """Close the WebSocket with ``code``/``reason``; ``why`` is recorded in stats."""
        self.close_reason = self.close_reason or why
        await self.conn.close(code, reason)
