"""Venue-neutral outputs of the sans-I/O venue protocols, and the control-message pacer.

A venue protocol (``consolidator.venues.binance``, later ``deribit``) is fed bytes and receive
times by the I/O driver and returns a list of outputs. Besides the record values of
`consolidator.payloads` (`Trade`, `Quote`, `Depth`, `Event`), it returns the requests and notices
defined here; the driver acts on them by type:

================  =================================================================================
`ConnectionPlan`  open a connection to ``ws_url + path``, then send ``subscribe_frames`` (paced)
`SendFrame`       send ``data`` as a text frame on connection ``conn_id`` (paced, `ControlPacer`)
`FetchSnapshot`   GET the venue's order-book snapshot for ``symbol`` and hand the body back
                  (``on_snapshot``) or report the failure (``on_snapshot_failed``); the driver
                  coalesces it with a request for the same symbol already queued or in flight
`Reconnect`       replace connection ``conn_id`` make-before-break (``plan_rotation``)
`ParseError`      the peer sent something the protocol cannot use (counted, sampled, skipped)
`Dropped`         messages dropped on purpose (copies from overlapping connections or legs, stale
                  diffs), counted
================  =================================================================================

`ConnectionTable` keeps the connections and subscriptions, `ControlPacer` paces control frames.
With redundant connections (``redundancy = 2``) every stream is carried by one connection of each
*leg* (`LEG_NAMES`; a plan says which); `LegCounts` is what arbitration between the legs' copies
counted.
Errors are split as in h11: a misbehaving peer (bad JSON, unknown events, wrong field types) never
raises, it yields `ParseError`; only misuse of the API by the caller raises `VenueUsageError`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from consolidator.errors import ConsolidatorError
from consolidator.payloads import Depth, Event, Level, Quote, Trade
from consolidator.records import NO_SYMBOL, EventKind, encode_decimal

__all__ = [
    "LEG_NAMES",
    "SAMPLE_BYTES",
    "ConnectionPlan",
    "ConnectionTable",
    "ControlPacer",
    "Dropped",
    "FetchSnapshot",
    "LegCounts",
    "Output",
    "ParseError",
    "Reconnect",
    "SendFrame",
    "VenueUsageError",
    "checked_frame",
    "clear_decimal_memo",
    "decimal",
    "decimal_memo",
    "make_event",
    "ms_to_ns",
    "parse_error",
    "price_levels",
    "scalar",
    "uint",
]

SAMPLE_BYTES: Final = 256
"""At most this many leading bytes of a bad frame are kept in `ParseError.sample`."""

LEG_NAMES: Final = ("a", "b")
"""The legs of redundant connections, by index (`ConnectionPlan.leg`)."""

_NS_PER_S: Final = 1_000_000_000
_MAX_MS: Final = (2**63 - 1) // 1_000_000


class VenueUsageError(ConsolidatorError, ValueError):
    """The caller misused a venue protocol (bad arguments, unknown connection, wrong order)."""


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """A connection to open: ``ws_url + path``, then ``subscribe_frames`` in order, paced.

    Attributes:
        conn_id: the protocol's id for this connection; pass it to every ``on_*`` call.
        path: the URL path to append to the feed's ``ws_url``, e.g. ``"/stream"``.
        streams: the venue stream names this connection carries.
        subscribe_frames: the JSON control frames that subscribe ``streams`` (UTF-8; send
            them as text frames: websockets sends ``bytes`` as binary frames).
        leg: the leg (index into `LEG_NAMES`) of a redundant connection: leg 1 goes to the
            feed's second URL (``ws_url_b``); 0 without redundancy.
    """

    conn_id: int
    path: str
    streams: tuple[str, ...]
    subscribe_frames: tuple[bytes, ...]
    leg: int = 0


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send ``data`` (UTF-8 JSON) as a text frame on ``conn_id``; a control message: pace it."""

    conn_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FetchSnapshot:
    """Fetch the REST order-book snapshot of ``symbol`` with ``limit`` levels (costs ``weight``)."""

    symbol: str
    limit: int
    weight: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Replace connection ``conn_id`` make-before-break (e.g. the venue announced a shutdown)."""

    conn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ParseError:
    """The peer sent something unusable; ``sample`` holds its first bytes.

    ``kind`` is a short label for the ``consolidator_parse_errors_total`` counter: ``json``,
    ``unknown_event``, ``missing_field``, ``field_type``, ``too_large``, ``error_reply``,
    ``unknown_reply``, ``snapshot_json``, ``snapshot_field``. ``conn_id`` is None for REST bodies.
    """

    kind: str
    sample: bytes
    conn_id: int | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """``count`` messages dropped on purpose for ``reason`` (never an error, always counted)."""

    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class LegCounts:
    """Arbitration between the copies of each stream, per leg and channel.

    Every list is indexed ``leg * len(channels) + channel`` (`LEG_NAMES`, ``channels``), and only
    grows; the protocol updates them in place, the driver reads them when it likes.

    Attributes:
        channels: the channel names, in index order.
        wins: copies accepted: the first copy of a record, from this leg.
        duplicates: copies dropped because another copy (from any connection) came first.
        lag_ns: the sum of the lags of this leg's copies: how long after the first copy each
            arrived (0 for a win; for a duplicate ``ts_recv`` minus that of the last record
            accepted on the stream, exact when the two are copies of one record, a lower bound
            otherwise).
    """

    channels: tuple[str, ...]
    wins: list[int]
    duplicates: list[int]
    lag_ns: list[int]

    @classmethod
    def zero(cls, legs: int, channels: tuple[str, ...]) -> LegCounts:
        """All zero for ``legs`` legs."""
        size = legs * len(channels)
        return cls(channels, [0] * size, [0] * size, [0] * size)

    @property
    def legs(self) -> int:
        """How many legs are counted."""
        return len(self.wins) // len(self.channels)


Output = (
    Trade
    | Quote
    | Depth
    | Event
    | ConnectionPlan
    | SendFrame
    | FetchSnapshot
    | Reconnect
    | ParseError
    | Dropped
)
"""Everything a venue protocol returns."""


def make_event(
    kind: EventKind, detail: Mapping[str, object], symbol_id: int = NO_SYMBOL, ts_event: int = 0
) -> Event:
    """An `Event` whose ``detail`` is ``detail`` serialized as compact JSON."""
    return Event(kind, orjson.dumps(detail).decode(), symbol_id, ts_event)


def parse_error(kind: str, frame: bytes | str, conn_id: int | None) -> ParseError:
    """A `ParseError` carrying at most `SAMPLE_BYTES` leading bytes of ``frame``."""
    if isinstance(frame, str):
        sample = frame[:SAMPLE_BYTES].encode("utf-8", "replace")[:SAMPLE_BYTES]
    else:
        sample = bytes(frame[:SAMPLE_BYTES])
    return ParseError(kind, sample, conn_id)


def checked_frame(frame: object) -> bytes | str:
    """``frame`` if it is bytes-like or str (what a parser may be fed).

    Raises:
        VenueUsageError: anything else.
    """
    if not isinstance(frame, bytes | bytearray | memoryview | str):
        raise VenueUsageError(f"a frame is bytes or str, not {type(frame).__name__}")
    return frame


def scalar(value: object) -> object:
    """A JSON value made safe for an event detail: ints, bools and None as they are, else a
    string of at most 200 characters."""
    if value is None or type(value) in (int, bool):
        return value
    return str(value)[:200]


def uint(value: object) -> int:
    """A JSON unsigned integer (ids): anything else, bools included, raises TypeError."""
    if type(value) is not int or value < 0:
        raise TypeError("not an unsigned integer")
    return value


def ms_to_ns(value: object) -> int:
    """A JSON time in ms as int64 ns; anything else (or out of range) raises TypeError."""
    if type(value) is not int or not 0 <= value <= _MAX_MS:
        raise TypeError("not a time in ms")
    return value * 1_000_000


_DECIMALS: dict[str, tuple[int, int]] = {}
_DECIMALS_MAX: Final = 1 << 16


def decimal(text: object) -> tuple[int, int]:
    """`records.encode_decimal`, memoized for strings (prices and sizes repeat a lot).

    The memo holds at most 65536 strings and is emptied when full.

    Raises:
        DecimalCodecError: as `encode_decimal` (a ValueError); TypeError if unhashable.
    """
    found: tuple[int, int] | None = _DECIMALS.get(text)  # type: ignore[call-overload]
    if found is not None:
        return found
    return _remember(text)


def _remember(text: object) -> tuple[int, int]:
    """`records.encode_decimal` of ``text``, kept in the memo if it is a string."""
    value = encode_decimal(text)  # type: ignore[arg-type]
    if type(text) is str:
        if len(_DECIMALS) >= _DECIMALS_MAX:
            _DECIMALS.clear()
        _DECIMALS[text] = value
    return value


def decimal_memo() -> (
    tuple[Callable[[object], tuple[int, int] | None], Callable[[object], tuple[int, int]]]
):
    """``(lookup, remember)`` for parsers that inline `decimal` on their hot path:
    ``lookup(text) or remember(text)`` is ``decimal(text)`` without one function call."""
    return _DECIMALS.get, _remember  # type: ignore[return-value]


def clear_decimal_memo() -> None:
    """Empty the memo of `decimal` (for benchmarks and tests)."""
    _DECIMALS.clear()


def price_levels(raw: object) -> list[Level]:
    """``[[price, qty], ...]`` (decimal strings) as levels; TypeError/ValueError if malformed."""
    if type(raw) is not list:
        raise TypeError("levels must be a list")
    get = _DECIMALS.get
    remember = _remember
    return [(get(price) or remember(price)) + (get(qty) or remember(qty)) for price, qty in raw]


class ControlPacer:
    """A pure token bucket for the control frames of one connection (GCRA, integer ns).

    `allow` says whether a frame may be sent at ``now_ns`` (and takes the token if so);
    `next_time` says when the next one may be sent. In any window of one second at most
    ``burst + rate_per_s`` frames are allowed. Build it with `for_limit` from the venue's
    incoming-message limit: that keeps one message per second spare for the pongs the websocket
    library sends on its own, which count toward the same limit.
    """

    __slots__ = ("_interval", "_tat", "_tolerance")

    def __init__(self, rate_per_s: int, burst: int = 1) -> None:
        """Allow ``rate_per_s`` frames per second on average, ``burst`` at once.

        Raises:
            VenueUsageError: ``rate_per_s`` or ``burst`` below 1.
        """
        if rate_per_s < 1 or burst < 1:
            raise VenueUsageError(f"pacer needs rate >= 1 and burst >= 1: {rate_per_s}, {burst}")
        self._interval = _NS_PER_S // rate_per_s
        self._tolerance = (burst - 1) * self._interval
        self._tat = -(1 << 62)

    @classmethod
    def for_limit(cls, limit_per_s: int, headroom: int = 1) -> ControlPacer:
        """A pacer that sends at most ``limit_per_s - headroom`` frames in any second.

        Raises:
            VenueUsageError: the limit leaves fewer than 2 frames per second.
        """
        budget = limit_per_s - headroom
        if budget < 2:
            raise VenueUsageError(f"control limit {limit_per_s}/s leaves no room to pace")
        return cls(rate_per_s=budget - 1, burst=1)

    def allow(self, now_ns: int) -> bool:
        """Take a token if one is available at ``now_ns``; False means wait for `next_time`."""
        tat = max(self._tat, now_ns)
        if tat - now_ns > self._tolerance:
            return False
        self._tat = tat + self._interval
        return True

    def next_time(self, now_ns: int) -> int:
        """The earliest time (ns, >= ``now_ns``) at which `allow` will succeed."""
        return max(now_ns, self._tat - self._tolerance)


_PLANNED, _OPEN, _CLOSED = 0, 1, 2


class _Conn:
    __slots__ = ("acked", "conn_id", "leg", "path", "retiring", "shutdown", "state", "streams")

    def __init__(self, conn_id: int, path: str, streams: Iterable[str], leg: int) -> None:
        self.conn_id = conn_id
        self.leg = leg
        self.path = path
        self.streams = dict.fromkeys(streams)
        self.acked: set[str] = set()
        self.state = _PLANNED
        self.retiring = False
        self.shutdown = False


class ConnectionTable:
    """Which connection carries which streams, and which the venue has acknowledged.

    Venue-neutral bookkeeping behind a protocol's ``plan_*``, ``add_symbols``, ``remove_symbols``,
    ``on_connected`` and ``on_disconnect``. Connections are planned per URL path with at most
    ``max_streams`` streams each, balanced; (un)subscribe frames carry at most ``max_params``
    streams and a request id from ``frame(subscribe, streams, request_id)``. A stream is covered by
    a connection once the venue acknowledged the frame that subscribed it there (`ack`).

    Lifecycle of a connection: planned -> open (`connected`) -> closed (`disconnected`). A closed
    connection keeps its streams until `rotate` hands them to a replacement; a connection being
    replaced is "retiring": it takes no new streams and is forgotten once closed.

    With ``legs = 2`` (redundant connections) every stream is carried once per leg: `plan` plans
    one leg, `add` subscribes new streams on each leg, `rotate` keeps the leg. A stream is lost
    only when no open connection of any leg covers it.
    """

    def __init__(
        self,
        max_streams: int,
        max_params: int,
        frame: Callable[[bool, list[str], int], bytes],
        legs: int = 1,
    ) -> None:
        if max_streams < 1 or max_params < 1:
            raise VenueUsageError("stream and parameter limits must be at least 1")
        if not 1 <= legs <= len(LEG_NAMES):
            raise VenueUsageError(f"legs must be 1 to {len(LEG_NAMES)}: {legs}")
        self.legs: Final = legs
        self._max_streams = max_streams
        self._max_params = max_params
        self._frame = frame
        self._conns: dict[int, _Conn] = {}
        self._pending: dict[int, tuple[int, bool, tuple[str, ...]]] = {}
        self._next_conn = 1
        self._next_request = 1

    def streams(self, conn_id: int) -> tuple[str, ...]:
        """The streams assigned to ``conn_id`` (empty if unknown)."""
        conn = self._conns.get(conn_id)
        return () if conn is None else tuple(conn.streams)

    def leg(self, conn_id: int) -> int:
        """The leg of ``conn_id`` (0 if unknown)."""
        conn = self._conns.get(conn_id)
        return 0 if conn is None else conn.leg

    def plan(self, streams: Iterable[tuple[str, str]], leg: int = 0) -> list[ConnectionPlan]:
        """New connections of ``leg`` for ``(stream, path)`` pairs: per path, balanced, within
        the limit.

        Raises:
            VenueUsageError: a leg the table does not have.
        """
        if not 0 <= leg < self.legs:
            raise VenueUsageError(f"no leg {leg} (legs: {self.legs})")
        by_path: dict[str, list[str]] = {}
        for stream, path in streams:
            by_path.setdefault(path, []).append(stream)
        plans = []
        for path, names in by_path.items():
            count = -(-len(names) // self._max_streams)
            size, extra = divmod(len(names), count)
            start = 0
            for index in range(count):
                end = start + size + (index < extra)
                plans.append(self._plan(self._new(path, names[start:end], leg)))
                start = end
        return plans

    def rotate(self, conn_id: int) -> ConnectionPlan:
        """A replacement for ``conn_id``: a new id with the same path and streams.

        Raises:
            VenueUsageError: ``conn_id`` is unknown (or closed and already replaced).
        """
        old = self._conns.get(conn_id)
        if old is None:
            raise VenueUsageError(f"no connection {conn_id} to rotate")
        if old.state == _CLOSED:
            del self._conns[conn_id]
        old.retiring = True
        return self._plan(self._new(old.path, old.streams, old.leg))

    def add(self, streams: Iterable[tuple[str, str]]) -> list[SendFrame | ConnectionPlan]:
        """Subscribe ``(stream, path)`` pairs on open connections with room, else on new ones
        (on every leg)."""
        pairs = list(streams)
        out: list[SendFrame | ConnectionPlan] = []
        for leg in range(self.legs):
            out.extend(self._add(pairs, leg))
        return out

    def _add(self, todo: list[tuple[str, str]], leg: int) -> list[SendFrame | ConnectionPlan]:
        out: list[SendFrame | ConnectionPlan] = []
        for conn in self._conns.values():
            room = self._max_streams - len(conn.streams)
            if conn.state != _OPEN or conn.retiring or room <= 0 or conn.leg != leg:
                continue
            chosen = [s for s, path in todo if path == conn.path][:room]
            if chosen:
                conn.streams.update(dict.fromkeys(chosen))
                out.extend(self._send(conn, True, chosen))
                taken = set(chosen)
                todo = [item for item in todo if item[0] not in taken]
        out.extend(self.plan(todo, leg))
        return out

    def remove(self, streams: Collection[str]) -> list[SendFrame]:
        """Take ``streams`` off every connection; UNSUBSCRIBE on the open ones."""
        out: list[SendFrame] = []
        for conn in self._conns.values():
            dropped = [s for s in conn.streams if s in streams]
            for stream in dropped:
                del conn.streams[stream]
                conn.acked.discard(stream)
            if dropped and conn.state == _OPEN:
                out.extend(self._send(conn, False, dropped))
        return out

    def connected(self, conn_id: int) -> None:
        """``conn_id`` is open.

        Raises:
            VenueUsageError: ``conn_id`` is unknown or closed.
        """
        conn = self._conns.get(conn_id)
        if conn is None or conn.state == _CLOSED:
            raise VenueUsageError(f"connection {conn_id} is not planned")
        conn.state = _OPEN

    def forget(self, conn_id: int, keeps: int | None = None) -> None:
        """Drop ``conn_id`` and its pending requests (a replacement that failed: its streams
        stay with ``keeps``, the connection it was to replace, which is no longer retiring)."""
        self._conns.pop(conn_id, None)
        kept = None if keeps is None else self._conns.get(keeps)
        if kept is not None:
            kept.retiring = False
        for request_id in [r for r, p in self._pending.items() if p[0] == conn_id]:
            del self._pending[request_id]

    def disconnected(self, conn_id: int) -> list[tuple[str, bool]]:
        """Close ``conn_id``; its streams no other open connection covers, each with whether
        the venue had acknowledged it on ``conn_id``. Empty if unknown or already closed."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.state == _CLOSED:
            return []
        conn.state = _CLOSED
        for request_id in [r for r, p in self._pending.items() if p[0] == conn_id]:
            del self._pending[request_id]
        covered: set[str] = set()
        for other in self._conns.values():
            if other is not conn and other.state == _OPEN:
                covered |= other.acked
        lost = [(s, s in conn.acked) for s in conn.streams if s not in covered]
        conn.acked.clear()
        if conn.retiring:
            del self._conns[conn_id]
        return lost

    def reply(
        self, conn_id: int, request_id: object, error: object, frame: bytes | str
    ) -> list[Output]:
        """Settle the reply to request ``request_id``; ``error`` is None on success, else the
        venue's error (a dict with ``code`` and ``msg``, or anything else).

        A successful subscribe makes its streams covered on the connection. Yields a SUBSCRIBE
        event; an error also yields ``ParseError("error_reply")``, a success for a request we
        never sent ``ParseError("unknown_reply")`` alone.
        """
        found = self._pending.pop(request_id, None) if type(request_id) is int else None
        detail: dict[str, object] = {"conn_id": conn_id, "id": scalar(request_id)}
        detail["ok"] = error is None
        if found is not None:
            conn = self._conns.get(found[0])
            if error is None and found[1] and conn is not None:
                conn.acked.update(s for s in found[2] if s in conn.streams)
            detail["method"] = "subscribe" if found[1] else "unsubscribe"
            detail["streams"] = len(found[2])
        if error is None:
            if found is None:
                return [parse_error("unknown_reply", frame, conn_id)]
            return [make_event(EventKind.SUBSCRIBE, detail)]
        if type(error) is dict:
            detail["code"] = scalar(error.get("code"))
            detail["msg"] = scalar(error.get("msg"))
        else:
            detail["msg"] = scalar(error)
        return [parse_error("error_reply", frame, conn_id), make_event(EventKind.SUBSCRIBE, detail)]

    def shutdown(self, conn_id: int, ts_event: int) -> list[Output]:
        """The venue announced it will close ``conn_id``: a SERVER_SHUTDOWN event, and the
        first time a `Reconnect`."""
        out: list[Output] = [
            make_event(EventKind.SERVER_SHUTDOWN, {"conn_id": conn_id}, NO_SYMBOL, ts_event)
        ]
        conn = self._conns.get(conn_id)
        if conn is None or not conn.shutdown:
            out.append(Reconnect(conn_id, "server_shutdown"))
        if conn is not None:
            conn.shutdown = True
        return out

    def _new(self, path: str, streams: Iterable[str], leg: int) -> _Conn:
        conn = _Conn(self._next_conn, path, streams, leg)
        self._next_conn += 1
        self._conns[conn.conn_id] = conn
        return conn

    def _plan(self, conn: _Conn) -> ConnectionPlan:
        streams = tuple(conn.streams)
        frames = tuple(self._frames(conn, True, streams))
        return ConnectionPlan(conn.conn_id, conn.path, streams, frames, conn.leg)

    def _send(self, conn: _Conn, subscribe: bool, streams: Sequence[str]) -> list[SendFrame]:
        return [SendFrame(conn.conn_id, f) for f in self._frames(conn, subscribe, streams)]

    def _frames(self, conn: _Conn, subscribe: bool, streams: Sequence[str]) -> list[bytes]:
        frames = []
        step = self._max_params
        for start in range(0, len(streams), step):
            chunk = list(streams[start : start + step])
            request_id = self._next_request
            self._next_request += 1
            self._pending[request_id] = (conn.conn_id, subscribe, tuple(chunk))
            frames.append(self._frame(subscribe, chunk, request_id))
        return frames
