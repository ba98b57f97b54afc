"""Venue profiles (spot, USD-M) and the simulator configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from consolidator.sim.faults import FaultSpec

__all__ = [
    "Mode",
    "SimConfig",
    "Venue",
    "VenueProfile",
    "profile_for",
]


class Venue(StrEnum):
    """Simulated venue."""

    SPOT = "binance"
    USDM = "binance-usdm"


class Mode(StrEnum):
    """Where market data comes from."""

    SYNTHETIC = "synthetic"
    REPLAY = "replay"
    FAST = "fast"


@dataclass(frozen=True, slots=True)
class VenueProfile:
    """Static per-venue behaviour: limits, paths, payload conventions.

    Attributes:
        venue: The venue.
        ping_interval: Default seconds between server pings.
        pong_timeout: Default seconds to wait for a pong before disconnecting.
        max_streams: Default maximum streams per connection.
        msg_rate_limit: Default incoming messages per second per connection.
        weight_limit: Default REST request weight per minute.
        rest_prefix: Path prefix of the REST market-data endpoints.
        ws_routes: Accepted WebSocket route prefixes ("" = no routed path).
        depth_intervals: Diff-depth stream suffix (after ``@depth``) to interval in ms.
        exchange_info_weight: Weight of exchangeInfo.
        default_depth_limit: ``limit`` used when the depth request has none.
        max_depth_limit: Largest served ``limit``.
        fixed_decimals: Decimals of every price/qty string (spot: 8), or None to use the
            symbol's own precision (USD-M).
        hidden_update_ids: Whether the book counter may skip ids between diff events.
        replay_prefix: Default recorded-file prefix for replay mode.
    """

    venue: Venue
    ping_interval: float
    pong_timeout: float
    max_streams: int
    msg_rate_limit: int
    weight_limit: int
    rest_prefix: str
    ws_routes: tuple[str, ...]
    depth_intervals: Mapping[str, int]
    exchange_info_weight: int
    default_depth_limit: int
    max_depth_limit: int
    fixed_decimals: int | None
    hidden_update_ids: bool
    replay_prefix: str

    @property
    def is_usdm(self) -> bool:
        """True for USD-M futures."""
        return self.venue is Venue.USDM

    def depth_weight(self, limit: int) -> int:
        """REST weight of a depth request with this ``limit``."""
        if self.venue is Venue.SPOT:
            if limit <= 100:
                return 5
            if limit <= 500:
                return 25
            if limit <= 1000:
                return 50
            return 250
        if limit <= 50:
            return 2
        if limit <= 100:
            return 5
        if limit <= 500:
            return 10
        return 20

    def route_of(self, kind: str) -> str:
        """The routed WebSocket path ("" for spot) that carries streams of ``kind``."""
        if self.venue is Venue.SPOT:
            return ""
        if kind.startswith(("depth", "rpiDepth")) or kind in ("bookTicker", "trade"):
            return "/public"
        return "/market"


_SPOT = VenueProfile(
    venue=Venue.SPOT,
    ping_interval=20.0,
    pong_timeout=60.0,
    max_streams=1024,
    msg_rate_limit=5,
    weight_limit=6000,
    rest_prefix="/api/v3",
    ws_routes=("",),
    depth_intervals=MappingProxyType({"": 1000, "1000ms": 1000, "100ms": 100}),
    exchange_info_weight=20,
    default_depth_limit=100,
    max_depth_limit=5000,
    fixed_decimals=8,
    hidden_update_ids=False,
    replay_prefix="BINANCE",
)

_USDM = VenueProfile(
    venue=Venue.USDM,
    ping_interval=180.0,
    pong_timeout=600.0,
    max_streams=200,
    msg_rate_limit=10,
    weight_limit=2400,
    rest_prefix="/fapi/v1",
    ws_routes=("/public", "/market", ""),
    depth_intervals=MappingProxyType({"": 250, "250ms": 250, "500ms": 500, "100ms": 100, "0ms": 0}),
    exchange_info_weight=1,
    default_depth_limit=500,
    max_depth_limit=1000,
    fixed_decimals=None,
    hidden_update_ids=True,
    replay_prefix="BINANCE_FUTURES",
)


def profile_for(venue: Venue) -> VenueProfile:
    """The static profile of ``venue``."""
    return _SPOT if venue is Venue.SPOT else _USDM


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Complete simulator configuration (built by the CLI or by tests).

    ``None`` for a limit means "the venue default"; read the effective values through the
    ``eff_*`` properties. Fields mirror the CLI options; the less obvious ones:

    Attributes:
        rest_port: REST port; None = ``port + 1`` when ``port`` is set, else ephemeral.
        speed: Replay speed factor (``inf`` = as fast as possible).
        symbols: Explicit synthetic symbols; when empty, ``symbol_count`` are generated.
        rate: Synthetic trade + aggTrade + bookTicker events per second (``inf`` = max); in
            fast mode, events of the cycle per second (trades, tickers and depth updates).
        weight_window: REST weight window in seconds (the real venue: 60).
        ban_seconds: First 418 ban length (doubles on each further ban).
        max_send_buffer: Bytes queued for a client before it is dropped as too slow.
        close_timeout: Seconds to wait for a closing handshake before aborting.
        nested_errors: WebSocket error replies as ``{"error":{...},"id":..}``.
        book_levels: Initial price levels per side of each synthetic book.
    """

    venue: Venue = Venue.SPOT
    host: str = "127.0.0.1"
    port: int = 0
    rest_port: int | None = None
    mode: Mode = Mode.SYNTHETIC
    replay_dir: Path | None = None
    replay_prefix: str | None = None
    speed: float = 1.0
    symbols: tuple[str, ...] = ()
    symbol_count: int = 8
    rate: float = 1000.0
    seed: int = 1
    ping_interval: float | None = None
    pong_timeout: float | None = None
    max_conn_age: float = 86400.0
    shutdown_notice: float | None = None
    weight_limit: int | None = None
    weight_window: float = 60.0
    ban_seconds: float = 120.0
    max_streams: int | None = None
    msg_rate_limit: int | None = None
    faults: tuple[FaultSpec, ...] = ()
    duration: float | None = None
    truth_log: Path | None = None
    quote_log: Path | None = None
    max_send_buffer: int = 64 * 1024 * 1024
    close_timeout: float = 2.0
    nested_errors: bool = False
    book_levels: int = 150

    @property
    def profile(self) -> VenueProfile:
        """The venue profile."""
        return profile_for(self.venue)

    @property
    def eff_ping_interval(self) -> float:
        """Seconds between server pings."""
        return self.profile.ping_interval if self.ping_interval is None else self.ping_interval

    @property
    def eff_pong_timeout(self) -> float:
        """Seconds to wait for a pong."""
        return self.profile.pong_timeout if self.pong_timeout is None else self.pong_timeout

    @property
    def eff_max_streams(self) -> int:
        """Maximum streams per connection."""
        return self.profile.max_streams if self.max_streams is None else self.max_streams

    @property
    def eff_msg_rate_limit(self) -> int:
        """Incoming messages per second per connection."""
        return self.profile.msg_rate_limit if self.msg_rate_limit is None else self.msg_rate_limit

    @property
    def eff_weight_limit(self) -> int:
        """REST request weight per window."""
        return self.profile.weight_limit if self.weight_limit is None else self.weight_limit

    @property
    def eff_replay_prefix(self) -> str:
        """Recorded-file prefix."""
        return self.replay_prefix or self.profile.replay_prefix

    @property
    def max_speed(self) -> bool:
        """Replay as fast as possible."""
        return math.isinf(self.speed)
