"""REST endpoints: venue market data (exchangeInfo, depth, ping, time) and ``/sim/*``.

Ground-truth and control endpoints (never weighted or rate limited):

* ``GET /sim/book?symbol=X`` - full book of X (synthetic mode only).
* ``GET /sim/stats`` - counters (see :meth:`SimServer.stats`).
* ``POST /sim/control`` - JSON body with an ``action`` (see :meth:`SimServer.control`).
"""

from __future__ import annotations

import re
import time
from typing import Any, Protocol

import orjson

from consolidator.sim.config import VenueProfile
from consolidator.sim.httpd import HttpRequest, HttpResponse
from consolidator.sim.weights import WeightLimiter

__all__ = ["MarketData", "RestApp", "SimControl"]

_SYMBOL_RE = re.compile(r"^[A-Z0-9\-_.]{1,20}$")


class MarketData(Protocol):
    """What the REST side needs from a market (synthetic or replay)."""

    def symbol_names(self) -> list[str]:
        """Known symbols."""

    def exchange_info(self, symbols: list[str] | None) -> bytes:
        """exchangeInfo body; raises KeyError for an unknown symbol."""

    def depth(self, symbol: str, limit: int) -> bytes | None:
        """Depth body or None when the symbol is unknown."""


class SimControl(Protocol):
    """Ground truth and control (implemented by the server)."""

    def stats(self) -> dict[str, Any]:
        """``/sim/stats`` body."""

    def truth_book(self, symbol: str) -> dict[str, Any] | None:
        """``/sim/book`` body, None if unknown."""

    def control(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a control action; raises ValueError on a bad request."""


def _error(
    status: int, code: int, msg: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"code": code, "msg": msg}), headers)


def _json(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(body))


class RestApp:
    """Request handler for the REST port.

    Args:
        profile: Venue profile (paths, weights, limits).
        market: Market-data source.
        limiter: Request-weight limiter.
        sim: Ground-truth/control implementation.
    """

    def __init__(
        self, profile: VenueProfile, market: MarketData, limiter: WeightLimiter, sim: SimControl
    ) -> None:
        self._profile = profile
        self._market = market
        self._limiter = limiter
        self._sim = sim
        prefix = profile.rest_prefix
        self._routes = {
            f"{prefix}/ping": (1, self._ping),
            f"{prefix}/time": (1, self._time),
            f"{prefix}/exchangeInfo": (profile.exchange_info_weight, self._exchange_info),
            f"{prefix}/depth": (0, self._depth),
        }

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Dispatch one request."""
        if request.path.startswith("/sim/"):
            return self._sim_route(request)
        route = self._routes.get(request.path)
        if route is None:
            return _error(404, -1, "Unknown endpoint.")
        weight, handler = route
        if weight == 0:
            weight = self._profile.depth_weight(self._limit(request) or 1)
        now = time.time()
        verdict = self._limiter.charge(request.peer, weight, now)
        used = ("X-MBX-USED-WEIGHT-1M", str(verdict.used))
        if verdict.status == 429:
            return _error(
                429,
                -1003,
                f"Too much request weight used; current limit is {self._limiter.limit} request "
                "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                "polling the API.",
                (used, ("Retry-After", str(verdict.retry_after))),
            )
        if verdict.status == 418:
            until = int((now + verdict.retry_after) * 1000)
            return _error(
                418,
                -1003,
                f"Way too much request weight used; IP banned until {until}. Please use "
                "WebSocket Streams for live updates to avoid bans.",
                (used, ("Retry-After", str(verdict.retry_after))),
            )
        if request.method != "GET":
            return _error(405, -1, "Method not allowed.", (used,))
        response = handler(request)
        return HttpResponse(response.status, response.body, (*response.headers, used))

    # Venue endpoints

    def _limit(self, request: HttpRequest) -> int | None:
        raw = request.query.get("limit")
        if raw is None or raw == "":
            return self._profile.default_depth_limit
        if not raw.isdigit() or len(raw) > 20:
            return None
        return min(int(raw), self._profile.max_depth_limit)

    @staticmethod
    def _ping(request: HttpRequest) -> HttpResponse:
        return _json({})

    @staticmethod
    def _time(request: HttpRequest) -> HttpResponse:
        return _json({"serverTime": time.time_ns() // 1_000_000})

    def _symbol_param(self, value: str) -> str | HttpResponse:
        if not _SYMBOL_RE.match(value):
            return _error(
                400,
                -1100,
                "Illegal characters found in parameter 'symbol'; legal range is "
                "'^[A-Z0-9-_.]{1,20}$'.",
            )
        if value not in self._market.symbol_names():
            return _error(400, -1121, "Invalid symbol.")
        return value

    def _exchange_info(self, request: HttpRequest) -> HttpResponse:
        symbol = request.query.get("symbol")
        raw_list = request.query.get("symbols")
        if symbol is not None and raw_list is not None:
            return _error(400, -1128, "Combination of optional parameters invalid.")
        names: list[str] | None = None
        if symbol is not None:
            names = [symbol]
        elif raw_list is not None:
            try:
                parsed = orjson.loads(raw_list)
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                return _error(400, -1100, "Illegal characters found in parameter 'symbols'.")
            names = list(parsed)
        for name in names or []:
            checked = self._symbol_param(name)
            if isinstance(checked, HttpResponse):
                return checked
        return HttpResponse(200, self._market.exchange_info(names))

    def _depth(self, request: HttpRequest) -> HttpResponse:
        symbol = request.query.get("symbol")
        if not symbol:
            return _error(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        checked = self._symbol_param(symbol)
        if isinstance(checked, HttpResponse):
            return checked
        limit = self._limit(request)
        if limit is None or limit < 1:
            return _error(
                400,
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
            )
        body = self._market.depth(symbol, limit)
        if body is None:
            return _error(400, -1121, "Invalid symbol.")
        return HttpResponse(200, body)

    # Ground truth and control

    def _sim_route(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/sim/stats" and request.method == "GET":
            return _json(self._sim.stats())
        if request.path == "/sim/book" and request.method == "GET":
            book = self._sim.truth_book(request.query.get("symbol", ""))
            if book is None:
                return _json({"error": "unknown symbol or not available in this mode"}, 404)
            return _json(book)
        if request.path == "/sim/control" and request.method == "POST":
            try:
                body = orjson.loads(request.body or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                return _json({"ok": True, **self._sim.control(body)})
            except (ValueError, KeyError) as exc:
                message = str(exc) if isinstance(exc, ValueError) else f"unknown {exc}"
                return _json({"ok": False, "error": message}, 400)
        return _json({"error": "unknown /sim endpoint"}, 404)
