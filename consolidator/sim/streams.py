"""Stream names and WebSocket URL paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from consolidator.sim.config import VenueProfile

__all__ = [
    "StreamKey",
    "WsTarget",
    "is_valid_stream",
    "parse_stream",
    "parse_ws_path",
]

_STREAM_RE = re.compile(
    r"^(?:[a-z0-9_.\-]+|![A-Za-z0-9_]+)(?:@[A-Za-z0-9_.\-]+)+$|^![A-Za-z0-9_]+$"
)


def is_valid_stream(name: str) -> bool:
    """Syntactic check: lowercase symbol part, ``@``-separated kind and options."""
    return len(name) <= 200 and _STREAM_RE.match(name) is not None


@dataclass(frozen=True, slots=True)
class StreamKey:
    """A parsed stream name.

    Attributes:
        name: The full stream name as subscribed.
        symbol: Uppercase symbol ("" for all-market ``!`` streams).
        kind: ``trade``, ``aggTrade``, ``bookTicker``, ``depth``, ``kline_1m``, ...
        interval_ms: Diff-depth interval for known diff-depth streams, else None.
    """

    name: str
    symbol: str
    kind: str
    interval_ms: int | None


def parse_stream(name: str, profile: VenueProfile) -> StreamKey:
    """Parse a (syntactically valid) stream name."""
    head, _, rest = name.partition("@")
    if head.startswith("!"):
        return StreamKey(name, "", head, None)
    kind, _, option = rest.partition("@")
    interval: int | None = None
    if kind == "depth":
        interval = profile.depth_intervals.get(option)
    return StreamKey(name, head.upper(), kind, interval)


@dataclass(frozen=True, slots=True)
class WsTarget:
    """What a WebSocket URL asks for.

    Attributes:
        route: Routed prefix ("" when none, "/public" or "/market" on USD-M).
        combined: Whether events are wrapped in ``{"stream":..,"data":..}``.
        streams: Streams named in the URL.
    """

    route: str
    combined: bool
    streams: tuple[str, ...]


def parse_ws_path(target: str, profile: VenueProfile) -> WsTarget | str:
    """Parse a WebSocket request target, or return an error text for an HTTP 4xx.

    Accepted: ``[route]/ws``, ``[route]/ws/<s1>/<s2>``, ``[route]/stream?streams=<s1>/<s2>``.
    """
    parts = urlsplit(target)
    path = unquote(parts.path).rstrip("/") or "/"
    route = ""
    for candidate in profile.ws_routes:
        if candidate and (path == candidate or path.startswith(candidate + "/")):
            route = candidate
            path = path[len(candidate) :] or "/"
            break
    if route == "" and "" not in profile.ws_routes:
        return "not found"
    if path == "/ws" or path.startswith("/ws/"):
        combined = False
        raw = path[4:]
        names = [s for s in raw.split("/") if s]
    elif path == "/stream":
        combined = True
        query = parse_qs(parts.query, keep_blank_values=True)
        names = [s for value in query.get("streams", []) for s in value.split("/") if s]
    else:
        return "not found"
    for name in names:
        if not is_valid_stream(name):
            return f"invalid stream {name!r}"
    return WsTarget(route, combined, tuple(dict.fromkeys(names)))
