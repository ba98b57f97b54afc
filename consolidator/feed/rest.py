"""Binance REST market data for the writer: exchangeInfo and depth snapshots, within the weight.

Binance counts a REQUEST_WEIGHT per IP in fixed windows aligned to the clock (one minute by
default, the limit is in exchangeInfo's ``rateLimits``) and reports the weight used so far in
every response header ``X-MBX-USED-WEIGHT-<n><unit>``. Going over earns 429 with ``Retry-After``;
sending again before that back-off expires earns 418, an IP ban of minutes to days
(PROTOCOLS.md 1.4). So the writer:

* sends one request at a time (a 429 is seen before the next request leaves);
* charges each request's weight against a local budget of `BUDGET_SHARE` of the limit per window
  before sending, and waits for the next window when it would not fit;
* takes the used weight from the response header when it is higher than its own count (another
  process on the same IP, or a restart within the window);
* on 429/418 stops every request until ``Retry-After`` has passed, and reports it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from consolidator.errors import ConsolidatorError
from consolidator.feed.counters import Counters
from consolidator.feed.http import HttpClient, HttpError, HttpResponse
from consolidator.venues.binance import Market

__all__ = [
    "BUDGET_SHARE",
    "ExchangeInfo",
    "RestClient",
    "RestError",
    "WeightBudget",
    "parse_exchange_info",
]

_log = logging.getLogger(__name__)

BUDGET_SHARE: Final = 0.9
"""The share of the venue's weight limit the writer allows itself per window."""
WINDOW_SLACK_S: Final = 0.25
"""Wait this much past a window boundary: our clock and the venue's differ a little."""
DEFAULT_RETRY_AFTER_S: Final = {429: 60.0, 418: 120.0}
MAX_ATTEMPTS: Final = 3
_UNITS: Final = {"S": 1, "M": 60, "H": 3600, "D": 86400}
_INTERVALS: Final = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
_USED_HEADER: Final = re.compile(r"x-mbx-used-weight-(\d+)([smhd])")
_PATHS: Final = {"spot": "/api/v3", "usdm": "/fapi/v1"}
_INFO_WEIGHT: Final = {"spot": 20, "usdm": 1}


class RestError(ConsolidatorError):
    """A REST request failed (network, timeout, HTTP status, rate limit after retries)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class _Window:
    key: str  # "1M": the header suffix
    length_s: float
    limit: int
    start: float = -1.0
    used: int = 0

    def roll(self, now: float) -> None:
        start = math.floor(now / self.length_s) * self.length_s
        if start != self.start:
            self.start = start
            self.used = 0


class WeightBudget:
    """The request-weight budget of one IP: windows aligned to the wall clock.

    Args:
        limit: REQUEST_WEIGHT per minute until `set_limits` says otherwise.
        share: the part of each limit to use.
        clock: wall-clock seconds.
    """

    def __init__(
        self, limit: int, share: float = BUDGET_SHARE, clock: Callable[[], float] = time.time
    ) -> None:
        self._share = share
        self._clock = clock
        self._windows = [_Window("1M", 60.0, limit)]
        self.blocked_until = 0.0
        self._blocked = False

    @property
    def limits(self) -> list[tuple[str, int]]:
        """``(window, limit)`` pairs in force, e.g. ``[("1M", 6000)]``."""
        return [(w.key, w.limit) for w in self._windows]

    def set_limits(self, limits: list[tuple[str, float, int]]) -> None:
        """Replace the windows with ``(key, length_s, limit)`` triples (usage carries over)."""
        if not limits:
            return
        old = {w.key: w for w in self._windows}
        windows = []
        for key, length_s, limit in limits:
            window = _Window(key, length_s, limit)
            previous = old.get(key)
            if previous is not None:
                window.start, window.used = previous.start, previous.used
            windows.append(window)
        self._windows = windows

    def delay(self, weight: int) -> float:
        """Seconds to wait before ``weight`` fits; 0 means it fits now (and it is charged)."""
        now = self._clock()
        if now < self.blocked_until:
            return self.blocked_until - now
        if self._blocked:
            # The venue said when requests are welcome again: start counting afresh (the next
            # response's header corrects the count).
            self._blocked = False
            for w in self._windows:
                w.roll(now)
                w.used = 0
        wait = 0.0
        for w in self._windows:
            w.roll(now)
            allowed = max(1, int(w.limit * self._share))
            if w.used + weight > allowed and w.used > 0:
                wait = max(wait, w.start + w.length_s + WINDOW_SLACK_S - now)
        if wait > 0:
            return wait
        for w in self._windows:
            w.used += weight
        return 0.0

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the venue's count of used weight from the response headers."""
        now = self._clock()
        for name, value in headers.items():
            match = _USED_HEADER.fullmatch(name)
            if match is None or not value.isdigit():
                continue
            key = f"{match.group(1)}{match.group(2).upper()}"
            for w in self._windows:
                if w.key == key:
                    w.roll(now)
                    w.used = max(w.used, int(value))

    def block(self, seconds: float) -> None:
        """No request for ``seconds`` (a 429 or 418 said so)."""
        self.blocked_until = max(self.blocked_until, self._clock() + seconds)
        self._blocked = True


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """What the writer needs from exchangeInfo: symbol statuses and the weight limits."""

    statuses: dict[str, str]
    weight_limits: list[tuple[str, float, int]]

    @property
    def trading(self) -> list[str]:
        """Symbols whose status is TRADING, in the venue's order."""
        return [s for s, status in self.statuses.items() if status == "TRADING"]


def parse_exchange_info(body: bytes) -> ExchangeInfo:
    """Parse an exchangeInfo body; entries that are not well formed are skipped.

    Raises:
        ValueError: not JSON, or no ``symbols`` list.
    """
    try:
        info = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"exchangeInfo is not JSON: {exc}") from None
    if type(info) is not dict or type(info.get("symbols")) is not list:
        raise ValueError("exchangeInfo has no symbols list")
    statuses: dict[str, str] = {}
    for entry in info["symbols"]:
        if type(entry) is dict and type(entry.get("symbol")) is str:
            statuses[entry["symbol"]] = str(entry.get("status"))
    limits: list[tuple[str, float, int]] = []
    for rule in info.get("rateLimits") or ():
        if type(rule) is not dict or rule.get("rateLimitType") != "REQUEST_WEIGHT":
            continue
        unit = _INTERVALS.get(str(rule.get("interval")))
        num, limit = rule.get("intervalNum"), rule.get("limit")
        if unit and type(num) is int and num > 0 and type(limit) is int and limit > 0:
            limits.append((f"{num}{unit}", float(num * _UNITS[unit]), limit))
    return ExchangeInfo(statuses, limits)


class RestClient:
    """exchangeInfo and depth snapshots of one Binance market, paced by `WeightBudget`.

    Args:
        http: the client of the feed's ``rest_url``.
        market: "spot" or "usdm" (paths and weights).
        default_limit: REQUEST_WEIGHT per minute until exchangeInfo tells.
        counters: the writer's counters.
        on_rate_limited: called with the details of every 429/418 (the writer publishes a
            RATE_LIMITED event).
    """

    def __init__(
        self,
        http: HttpClient,
        market: Market,
        default_limit: int,
        counters: Counters,
        on_rate_limited: Callable[[dict[str, object]], None],
    ) -> None:
        self.http = http
        self.market = market
        self.budget = WeightBudget(default_limit)
        self._counters = counters
        self._on_rate_limited = on_rate_limited
        self._prefix = _PATHS[market]
        self._lock = asyncio.Lock()
        self._waiting_logged = 0.0
        self._probed = False

    async def exchange_info(self) -> ExchangeInfo:
        """Fetch exchangeInfo and adopt its weight limits.

        The first call is preceded by a ping (weight 1): its header tells how much of the
        window's weight is used already (by a writer that ran just before, say), so exchangeInfo
        itself does not overrun the limit.

        Raises:
            RestError: the request failed or the body is unusable.
        """
        if not self._probed:
            self._probed = True
            await self.request("/ping", None, 1)
        response = await self.request("/exchangeInfo", None, _INFO_WEIGHT[self.market])
        try:
            info = parse_exchange_info(response.body)
        except ValueError as exc:
            self._counters.rest_errors["body"] += 1
            raise RestError(str(exc), "body") from None
        self.budget.set_limits(info.weight_limits)
        return info

    async def depth(self, symbol: str, limit: int, weight: int) -> HttpResponse:
        """Fetch the depth snapshot of ``symbol`` (a 200 response).

        Raises:
            RestError: the request failed.
        """
        return await self.request("/depth", {"symbol": symbol, "limit": limit}, weight)

    async def close(self) -> None:
        """Close the HTTP connection."""
        await self.http.close()

    async def request(
        self, path: str, query: Mapping[str, str | int] | None, weight: int
    ) -> HttpResponse:
        """GET ``path`` within the budget; waits out 429/418 and retries (3 attempts).

        Raises:
            RestError: a network error, a status other than 200, or still rate limited.
        """
        full = self._prefix + path
        async with self._lock:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                await self._wait_for(weight, full)
                self._counters.rest_requests += 1
                self._counters.rest_weight += weight
                try:
                    response = await self.http.get(full, query)
                except HttpError as exc:
                    self._counters.rest_errors["network"] += 1
                    raise RestError(str(exc), "network") from None
                self.budget.observe(response.headers)
                if response.status == 200:
                    return response
                if response.status in (418, 429):
                    self._rate_limited(full, response, attempt)
                    continue
                self._counters.rest_errors[str(response.status)] += 1
                message = response.body[:200].decode("utf-8", "replace")
                raise RestError(f"GET {full}: HTTP {response.status}: {message}", "status")
        raise RestError(f"GET {full}: still rate limited after {MAX_ATTEMPTS} attempts", "429")

    async def _wait_for(self, weight: int, path: str) -> None:
        while True:
            delay = self.budget.delay(weight)
            if delay <= 0:
                return
            now = time.monotonic()
            if now - self._waiting_logged > 30.0:
                self._waiting_logged = now
                limits = ", ".join(f"{v}/{k}" for k, v in self.budget.limits)
                _log.info("REST weight budget (%s) in use: %s waits %.1f s", limits, path, delay)
            await asyncio.sleep(delay)

    def _rate_limited(self, path: str, response: HttpResponse, attempt: int) -> None:
        status = response.status
        header = response.headers.get("retry-after", "")
        try:
            retry_after = max(0.0, float(header))
        except ValueError:
            retry_after = DEFAULT_RETRY_AFTER_S[status]
        self.budget.block(retry_after)
        self._counters.rate_limited += 1
        self._counters.rest_errors[str(status)] += 1
        detail: dict[str, object] = {
            "status": status,
            "retry_after_s": retry_after,
            "path": path,
            "attempt": attempt,
            "used_weight": _used(response.headers),
        }
        log = _log.error if status == 418 else _log.warning
        log("REST %s: HTTP %d, waiting %g s (Retry-After)", path, status, retry_after)
        self._on_rate_limited(detail)


def _used(headers: Mapping[str, str]) -> int | None:
    for name, value in headers.items():
        if _USED_HEADER.fullmatch(name) and value.isdigit():
            return int(value)
    return None
