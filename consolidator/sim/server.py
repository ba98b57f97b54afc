"""The simulator process: wires market, WebSocket front, REST, faults and ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from consolidator.sim.config import Mode, SimConfig
from consolidator.sim.fast import FastMarket
from consolidator.sim.faults import FaultManager, parse_fault
from consolidator.sim.httpd import HttpServer
from consolidator.sim.hub import Hub
from consolidator.sim.market import SyntheticMarket
from consolidator.sim.replay import ReplayFeed, load_recording
from consolidator.sim.rest import RestApp
from consolidator.sim.session import Feed, SessionContext
from consolidator.sim.truth import TruthLog
from consolidator.sim.weights import WeightLimiter
from consolidator.sim.ws import WsFront

__all__ = ["SimServer", "running_sim"]

_log = logging.getLogger(__name__)

_STATUSES = frozenset(
    {
        "TRADING",
        "END_OF_DAY",
        "HALT",
        "BREAK",
        "CANCEL_ONLY",
        "PENDING_TRADING",
        "PRE_DELIVERING",
        "DELIVERING",
        "DELIVERED",
        "PRE_SETTLE",
        "SETTLING",
        "CLOSE",
    }
)


class SimServer:
    """One simulated venue (WebSocket + REST ports) in the running event loop.

    Args:
        config: Simulator configuration.

    Raises:
        ValueError: If the configuration cannot be served (e.g. missing replay files).
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = FaultManager(config.seed)
        synthetic = config.mode is Mode.SYNTHETIC
        self.truth = TruthLog(
            config.truth_log if synthetic else None, config.quote_log if synthetic else None
        )
        self.market: SyntheticMarket | None = None
        self.replay: ReplayFeed | None = None
        self.fast: FastMarket | None = None
        feed: Feed
        if config.mode is Mode.SYNTHETIC:
            hub = Hub()
            self.market = SyntheticMarket(config, hub, self.faults, self.truth)
            feed = hub
        elif config.mode is Mode.FAST:
            self.fast = FastMarket(config)
            feed = self.fast
        else:
            if config.replay_dir is None:
                raise ValueError("replay mode needs the recordings' directory (--replay DIR)")
            recording = load_recording(config.replay_dir, config.eff_replay_prefix)
            self.replay = ReplayFeed(recording, config, self.faults)
            feed = self.replay
        ctx = SessionContext(config.profile, feed, self.faults, config.max_send_buffer)
        self.ws = WsFront(config, ctx)
        self.limiter = WeightLimiter(
            config.eff_weight_limit, config.weight_window, config.ban_seconds
        )
        market_data = self._market_data()
        self.http = HttpServer(RestApp(config.profile, market_data, self.limiter, self))
        self.ws_port = 0
        self.rest_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0
        self.failed = asyncio.Event()

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL (append the venue path)."""
        return f"ws://{self.config.host}:{self.ws_port}"

    @property
    def rest_url(self) -> str:
        """Base REST URL (append the venue path)."""
        return f"http://{self.config.host}:{self.rest_port}"

    def announcement(self) -> dict[str, Any]:
        """The first-line JSON object printed by the CLI."""
        return {
            "ws_url": self.ws_url,
            "rest_url": self.rest_url,
            "venue": self.config.venue.value,
            "mode": self.config.mode.value,
            "pid": os.getpid(),
            "ws_port": self.ws_port,
            "rest_port": self.rest_port,
            "symbols": (
                self._replay().recorded_symbols()
                if self.replay is not None
                else self._market_data().symbol_names()
            ),
        }

    def _replay(self) -> ReplayFeed:
        assert self.replay is not None
        return self.replay

    def _market_data(self) -> SyntheticMarket | ReplayFeed | FastMarket:
        source = self.market or self.fast or self.replay
        assert source is not None
        return source

    async def start(self) -> None:
        """Bind both ports and start the market and the fault watcher."""
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self.ws_port = await self.ws.start(self.config.host, self.config.port)
        rest_port = self.config.rest_port
        if rest_port is None:
            rest_port = self.config.port + 1 if self.config.port else 0
        try:
            self.rest_port = await self.http.start(self.config.host, rest_port)
        except BaseException:
            await self.ws.close()
            raise
        for spec in self.config.faults:
            self.faults.arm(spec, loop.time())
        generator = self.market or self.fast
        if generator is not None:
            task = loop.create_task(generator.run())
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        self._tasks.append(loop.create_task(self._watch_connection_faults()))

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("market generator crashed", exc_info=task.exception())
            self.failed.set()

    async def stop(self) -> None:
        """Close every connection and port, stop the market, flush the truth log."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.replay is not None:
            await self.replay.close()
        await self.ws.close()
        await self.http.close()
        self.truth.close()

    async def _watch_connection_faults(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.02)
            if not self.faults.has_connection_faults:
                continue
            now = loop.time()
            for session in list(self.ws.sessions.values()):
                if not session.is_open:
                    continue
                for spec in self.faults.due_connection_faults(
                    session.id, session.opened_at, session.symbols(), now
                ):
                    session.apply_fault(spec.kind, spec.duration)

    # Ground truth and control (used by the REST app)

    def stats(self) -> dict[str, Any]:
        """``GET /sim/stats`` body.

        Shape: ``{"venue","mode","uptime_s","paused","symbols":{SYM:{...}},
        "connections":{...},"faults":{"applied":{kind:n},"armed":[...]},"rest":{...}}``
        plus ``"replay"`` in replay mode.
        """
        loop = asyncio.get_running_loop()
        body: dict[str, Any] = {
            "venue": self.config.venue.value,
            "mode": self.config.mode.value,
            "uptime_s": round(loop.time() - self._started, 3),
            "time_ms": time.time_ns() // 1_000_000,
        }
        body.update(self._market_data().stats())
        body["connections"] = self.ws.stats()
        body["faults"] = self.faults.snapshot()
        body["rest"] = {
            **self.limiter.counts,
            "weight_limit": self.limiter.limit,
            "weight_window_s": self.limiter.window,
        }
        return body

    def truth_book(self, symbol: str) -> dict[str, Any] | None:
        """``GET /sim/book`` body (synthetic and fast modes)."""
        return None if self.replay is not None else self._market_data().truth_book(symbol)

    def control(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply ``POST /sim/control``; the reply is ``{"ok": true, ...}``.

        Actions (``{"action": ...}`` plus parameters):

        * ``pause`` -> ``{"paused": true, "symbols": {SYM: {"update_id", "last_trade_id",
          "last_agg_id"}}}``; every pending diff is emitted first. ``resume``.
        * ``fault`` with ``spec`` (same grammar as ``--fault``) -> ``{"armed": {...}}``.
        * ``list`` / ``delist`` / ``status`` with ``symbol`` (and ``status``; defaults
          TRADING / BREAK). Listing an unknown symbol creates it (synthetic mode).
        * ``shutdown`` [``close_after`` seconds] -> ``serverShutdown`` to every connection.
        * ``disconnect`` [``code``, default 1001] closes every connection.
        * ``reset_weights`` clears REST weight usage and bans.
        * ``rate`` with ``rate`` (events/s, 0 = unlimited) changes the synthetic rate.

        Raises:
            ValueError: Unknown action or bad parameters.
            KeyError: Unknown symbol.
        """
        action = body.get("action")
        source = self._market_data()
        if action == "pause":
            return source.pause()
        if action == "resume":
            return source.resume()
        if action == "fault":
            spec = parse_fault(str(body.get("spec", "")))
            self.faults.arm(spec, asyncio.get_running_loop().time())
            return {"armed": spec.describe()}
        if action in ("list", "delist", "status"):
            symbol = body.get("symbol")
            if not isinstance(symbol, str) or not symbol:
                raise ValueError("missing symbol")
            default = {"list": "TRADING", "delist": "BREAK"}.get(str(action))
            status = body.get("status", default)
            if status not in _STATUSES:
                raise ValueError(f"bad status {status!r}")
            return source.set_status(symbol, str(status))
        if action == "shutdown":
            close_after = body.get("close_after")
            if close_after is not None and not isinstance(close_after, int | float):
                raise ValueError("close_after must be a number")
            return {"notified": self.ws.shutdown_all(close_after)}
        if action == "disconnect":
            code = body.get("code", 1001)
            if not isinstance(code, int) or not 1000 <= code <= 4999:
                raise ValueError("bad close code")
            return {"closed": self.ws.disconnect_all(code)}
        if action == "reset_weights":
            self.limiter.reset()
            return {}
        if action == "rate":
            rate = body.get("rate")
            generator = self.market or self.fast
            if generator is None or not isinstance(rate, int | float) or rate < 0:
                raise ValueError("rate needs synthetic or fast mode and a number >= 0")
            generator.rate = float(rate) if rate > 0 else float("inf")
            return {"rate": rate}
        raise ValueError(f"unknown action {action!r}")


@contextlib.asynccontextmanager
async def running_sim(config: SimConfig) -> AsyncIterator[SimServer]:
    """Start a simulator in the current loop for the duration of the block."""
    server = SimServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
