"""WebSocket front: URL routing, control messages, pings, lifetime cut, shutdown notice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from consolidator.sim import payloads
from consolidator.sim.config import SimConfig
from consolidator.sim.control import handle_control
from consolidator.sim.session import Session, SessionContext, SimConnection
from consolidator.sim.streams import WsTarget, parse_ws_path

__all__ = ["WsFront"]

_log = logging.getLogger(__name__)

SHUTDOWN_STREAM = "!serverShutdown"


class WsFront:
    """Accepts WebSocket clients and runs one :class:`Session` per connection.

    Args:
        config: Simulator configuration (limits, ping, lifetime).
        ctx: Shared session dependencies.
    """

    def __init__(self, config: SimConfig, ctx: SessionContext) -> None:
        self._config = config
        self._ctx = ctx
        self._server: Server | None = None
        self._next_id = 0
        self._background: set[asyncio.Task[Any]] = set()
        self.sessions: dict[int, Session] = {}
        self.total = 0
        self.closed: Counter[str] = Counter()
        self.frames_sent = 0
        self.frames_discarded = 0
        self.inbound_frames = 0
        self.shutdown_notices = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self._server = await serve(
            self._handler,
            host,
            port,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
            close_timeout=self._config.close_timeout,
            max_queue=64,
            write_limit=4 * 1024 * 1024,
            create_connection=SimConnection,
        )
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Close every connection (1001) and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a tracked background task."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        target = parse_ws_path(request.path, self._config.profile)
        if isinstance(target, str):
            status = 404 if target == "not found" else 400
            return conn.respond(status, target + "\n")
        if len(target.streams) > self._config.eff_max_streams:
            return conn.respond(400, "too many streams\n")
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        assert isinstance(conn, SimConnection)
        assert conn.request is not None
        target = parse_ws_path(conn.request.path, self._config.profile)
        assert isinstance(target, WsTarget)
        self._next_id += 1
        session = Session(self._next_id, conn, target, self._ctx)
        self.sessions[session.id] = session
        self.total += 1
        conn.msg_limit = self._config.eff_msg_rate_limit
        conn.on_limit = lambda: self.spawn(
            session.close(1008, "Too many messages", "message rate limit")
        )
        session.add_streams(list(target.streams))
        tasks = [
            asyncio.create_task(self._keepalive(session)),
            asyncio.create_task(self._lifetime(session)),
        ]
        max_streams = self._config.eff_max_streams
        nested = self._config.nested_errors
        try:
            async for message in conn:
                # Frames queued before this message go out before its reply (a venue's stream is
                # ordered; SET_PROPERTY combined applies to what follows the reply).
                session.flush()
                reply = handle_control(session, message, max_streams, nested)
                await conn.send(reply, text=True)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            session.drop_all()
            self._ctx.feed.session_closed(session)
            del self.sessions[session.id]
            self.closed[session.close_reason or self._close_kind(conn)] += 1
            self.frames_sent += session.frames_sent
            self.frames_discarded += session.frames_discarded
            self.inbound_frames += conn.inbound_frames

    @staticmethod
    def _close_kind(conn: ServerConnection) -> str:
        code = conn.close_code
        return "client closed" if code in (1000, 1001) else f"closed {code}"

    async def _keepalive(self, session: Session) -> None:
        """Ping every interval; close if the oldest unanswered ping exceeds the timeout."""
        loop = asyncio.get_running_loop()
        interval = self._config.eff_ping_interval
        timeout = self._config.eff_pong_timeout
        pending: deque[tuple[float, asyncio.Future[float]]] = deque()
        next_ping = loop.time() + interval
        try:
            while True:
                deadline = pending[0][0] + timeout if pending else float("inf")
                await asyncio.sleep(max(0.0, min(next_ping, deadline) - loop.time()))
                now = loop.time()
                if session.stalled:
                    pending.clear()
                    next_ping = now + interval
                    continue
                while pending and pending[0][1].done():
                    pending.popleft()
                if pending and pending[0][0] + timeout <= now:
                    await session.close(1008, "Pong timeout", "pong timeout")
                    return
                if now >= next_ping:
                    payload = str(time.time_ns() // 1_000_000).encode()
                    pending.append((now, asyncio.ensure_future(await session.conn.ping(payload))))
                    next_ping = now + interval
        except ConnectionClosed:
            return

    async def _lifetime(self, session: Session) -> None:
        """Cut the connection at the maximum age, optionally announcing it first."""
        age = self._config.max_conn_age
        notice = self._config.shutdown_notice
        try:
            if notice is not None and 0 < notice < age:
                await asyncio.sleep(age - notice)
                self.notify_shutdown(session)
                await asyncio.sleep(notice)
            else:
                await asyncio.sleep(age)
            await session.close(1001, "Connection lifetime exceeded", "max connection age")
        except ConnectionClosed:
            return

    def notify_shutdown(self, session: Session) -> None:
        """Send the ``serverShutdown`` event to one session."""
        if session.is_open and not session.stalled:
            session.send_event(
                SHUTDOWN_STREAM, payloads.server_shutdown(time.time_ns() // 1_000_000)
            )
            self.shutdown_notices += 1

    def shutdown_all(self, close_after: float | None) -> int:
        """Send ``serverShutdown`` to every session; optionally close them after a delay."""
        sessions = list(self.sessions.values())
        for session in sessions:
            self.notify_shutdown(session)
        if close_after is not None:

            async def close_later() -> None:
                await asyncio.sleep(close_after)
                for session in sessions:
                    await session.close(1001, "Server shutdown", "server shutdown")

            self.spawn(close_later())
        return len(sessions)

    def disconnect_all(self, code: int) -> int:
        """Close every session with ``code``."""
        sessions = list(self.sessions.values())
        for session in sessions:
            self.spawn(session.close(code, "Disconnected by simulator", "control disconnect"))
        return len(sessions)

    def stats(self) -> dict[str, Any]:
        """Connection counters."""
        live = self.sessions.values()
        return {
            "open": len(self.sessions),
            "total": self.total,
            "closed": dict(self.closed),
            "frames_sent": self.frames_sent + sum(s.frames_sent for s in live),
            "frames_discarded": self.frames_discarded + sum(s.frames_discarded for s in live),
            "inbound_frames": self.inbound_frames + sum(s.conn.inbound_frames for s in live),
            "shutdown_notices": self.shutdown_notices,
            "sessions": [
                {
                    "id": s.id,
                    "route": s.route,
                    "combined": s.combined,
                    "streams": len(s.subs),
                    "stalled": s.stalled,
                    "age_s": round(asyncio.get_running_loop().time() - s.opened_at, 3),
                }
                for s in live
            ],
        }
