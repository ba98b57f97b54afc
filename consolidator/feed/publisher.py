"""From venue-protocol outputs to the feed's rings; the writer's hot path.

`Publisher` owns the rings of one feed (created at start, so readers can attach before the venue
answers). `Publisher.on_message` takes one received message: counts it, keeps it in the raw
ring, runs the venue protocol and dispatches the outputs: records to their rings, events to the
events ring, drops and parse errors to the counters, and the protocol's requests (snapshots,
control frames, connections) to the writer through `Requests`.

Latency histograms are observed once per batch and stream, not per record: a batch is what one
socket read delivered (the connection calls `Publisher.end_batch` after each), or one `handle`
call (snapshots). See `end_batch` for what is observed.

Bad input never raises here. A parse error is counted; its kind is logged once with a sample and
becomes a PARSE_ERROR event, the first of each kind at once and later ones summarized at most once
per `PARSE_EVENT_INTERVAL_S` per kind, so a venue sending garbage cannot flood the events ring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

import orjson

from consolidator.counters import Histogram
from consolidator.errors import RecordError
from consolidator.feed.counters import CHANNELS, Counters
from consolidator.payloads import (
    RAW_HEADER,
    Depth,
    Event,
    Quote,
    Trade,
    encode_depth,
    encode_event,
)
from consolidator.records import NO_SYMBOL, EventKind, RecordType
from consolidator.ring.writer import FixedRingWriter, RingWriter, VariableRingWriter
from consolidator.streams import open_stream_writer
from consolidator.venues.base import (
    ConnectionPlan,
    Dropped,
    FetchSnapshot,
    Output,
    ParseError,
    Reconnect,
    SendFrame,
)

__all__ = ["PARSE_EVENT_INTERVAL_S", "Publisher", "Requests", "open_rings"]

_log = logging.getLogger(__name__)

PARSE_EVENT_INTERVAL_S: Final = 10.0
_HEAD: Final = 64
_STREAM_PREFIX: Final = b'{"stream"'
_CHANNEL_OF: Final = {b"t": "trades", b"a": "trades", b"b": "quotes", b"d": "depth"}
_DEPTH_T: Final = int(RecordType.DEPTH)
_SNAPSHOT_T: Final = int(RecordType.SNAPSHOT)
_EVENT_T: Final = int(RecordType.EVENT)
_RAW_T: Final = int(RecordType.RAW)
_GAP: Final = EventKind.GAP
_RESYNC: Final = EventKind.RESYNC
_RAW_HEAD: Final = RAW_HEADER.pack


class Requests(Protocol):
    """What the writer does for the protocol's requests."""

    def fetch_snapshot(self, request: FetchSnapshot) -> None:
        """Queue a snapshot fetch (coalesced per symbol)."""

    def send_frame(self, request: SendFrame) -> None:
        """Send a control frame on an open connection."""

    def reconnect(self, request: Reconnect) -> None:
        """Replace a connection make-before-break."""

    def open_connection(self, plan: ConnectionPlan) -> None:
        """Open a new connection (more symbols than the open ones can carry)."""


def open_rings(
    shm_dir: Path,
    feed: str,
    streams: Sequence[str],
    scale: int,
    first_seq: Callable[[str], int] = lambda _: 0,
) -> dict[str, RingWriter]:
    """Create or reopen the ring of every stream; on failure close those already open.

    ``first_seq(stream)`` is where a ring that has to be created starts (the journal's next
    sequence number after a reboot); a ring that still exists keeps its own tail.
    """
    rings: dict[str, RingWriter] = {}
    try:
        for stream in streams:
            rings[stream] = open_stream_writer(
                shm_dir, feed, stream, first_seq=first_seq(stream), scale=scale
            )
    except BaseException:
        for ring in rings.values():
            ring.close()
        raise
    return rings


class Publisher:
    """Publishes a feed's records and events, counts everything.

    Args:
        rings: the open rings by stream name (from `open_rings`); channels not carried have none.
        on_frame: the venue protocol's ``on_frame``.
        requests: the writer.
        counters: the writer's counters.
    """

    def __init__(
        self,
        rings: Mapping[str, RingWriter],
        on_frame: Callable[[int, bytes, int], list[Output]],
        requests: Requests,
        counters: Counters,
    ) -> None:
        self.rings = dict(rings)
        self.on_frame = on_frame
        """The venue protocol's ``on_frame`` (settable: the protocol may come later)."""
        self._requests = requests
        self.counters = counters
        self._w = counters.words
        self._clock = time.time_ns
        self._events = _variable(rings["events"])
        self._depth = _variable(rings["depth"]) if "depth" in rings else None
        self._raw = _variable(rings["raw"]) if "raw" in rings else None
        self._raw_ts = self._raw_conn = -1
        self._raw_head = b""
        """The raw records' header (receive time, connection) of the current socket read."""
        trades = rings.get("trades")
        quotes = rings.get("quotes")
        self._trades = trades.publish if isinstance(trades, FixedRingWriter) else None
        self._quotes = quotes.publish if isinstance(quotes, FixedRingWriter) else None
        published = {s: counters.records_published.slot(s) for s in rings}
        self._n_trades = published.get("trades", 0)  # 0: the scratch slot (no such ring)
        self._n_quotes = published.get("quotes", 0)
        self._n_depth = published.get("depth", 0)
        self._n_raw = published.get("raw", 0)
        self._n_events = published["events"]
        self._n_bytes = counters.slot("bytes_received")
        received, last = counters.messages_received, counters.last_message_ns
        slots = {ch: (received.slot(ch), last.slot(ch)) for ch in CHANNELS}
        self._channel_slots = {tag: slots[ch] for tag, ch in _CHANNEL_OF.items()}
        self._other_slots = slots["other"]
        self._latency = {
            s: (counters.receive_to_commit(s), counters.exchange_to_receive(s))
            for s in ("trades", "quotes", "depth")
            if s in rings
        }
        self._first_trade: Trade | None = None  # the first record of the batch, per stream
        self._first_quote: Quote | None = None
        self._first_depth: Depth | None = None
        self.exchange_lag_ns: int | None = None
        """Receive time minus the venue's event time of the latest trade or depth batch's first
        record (for the status line; the histograms have the distribution)."""
        self._parse_seen: dict[str, int] = {}
        self._parse_last_event: dict[str, float] = {}
        self._unexpected: set[str] = set()

    def on_message(self, conn_id: int, message: bytes, ts_recv: int) -> None:
        """One complete message received on ``conn_id`` at ``ts_recv`` (ns)."""
        w = self._w
        slots = self._other_slots
        if message.startswith(_STREAM_PREFIX):
            at = message.find(b"@", 9, _HEAD)
            if at >= 0:
                slots = self._channel_slots.get(message[at + 1 : at + 2], slots)
        received, last = slots
        w[received] += 1
        w[last] = ts_recv
        w[self._n_bytes] += len(message)
        raw = self._raw
        if raw is not None:
            if ts_recv != self._raw_ts or conn_id != self._raw_conn:  # a new socket read
                self._raw_ts, self._raw_conn = ts_recv, conn_id
                self._raw_head = _RAW_HEAD(ts_recv, conn_id, 0)
            try:
                raw.publish(_RAW_T, self._raw_head + message)
                w[self._n_raw] += 1
            except RecordError:
                self.counters.drops["raw_too_large"] += 1
        try:
            outputs = self.on_frame(conn_id, message, ts_recv)
        except Exception as exc:  # a protocol bug must not stop the feed
            self._internal_error("on_frame", exc)
            return
        self._dispatch(outputs)

    def handle(self, outputs: Sequence[Output]) -> None:
        """Act on protocol outputs (a batch of their own): publish, count, pass requests on."""
        self._dispatch(outputs)
        self.end_batch()

    def end_batch(self) -> None:
        """A batch is done: observe the latency histograms of each stream it published to.

        Receive->commit: now minus the receive time of the stream's first record in the batch.
        Every message of one socket read has that receive time, so this bounds the latency of
        each of its records (it is exact for the last one). Exchange->receive: of that first
        record, when the venue sent an event time.
        """
        trade, quote, depth = self._first_trade, self._first_quote, self._first_depth
        if trade is None and quote is None and depth is None:
            return
        self._first_trade = self._first_quote = self._first_depth = None
        now = self._clock()
        latency = self._latency
        if trade is not None:
            _observe(latency["trades"], now, trade.ts_recv, trade.ts_event)
            self.exchange_lag_ns = trade.ts_recv - trade.ts_event
        if quote is not None:
            _observe(latency["quotes"], now, quote.ts_recv, quote.ts_event)
        if depth is not None:
            _observe(latency["depth"], now, depth.ts_recv, 0 if depth.snapshot else depth.ts_event)
            if not depth.snapshot and depth.ts_event:
                self.exchange_lag_ns = depth.ts_recv - depth.ts_event

    def _dispatch(self, outputs: Sequence[Output]) -> None:
        w = self._w
        for out in outputs:
            kind = type(out)
            try:
                if kind is Trade:
                    if self._trades is not None:
                        self._trades(*out)  # type: ignore[misc]
                        w[self._n_trades] += 1
                        if self._first_trade is None:
                            self._first_trade = out  # type: ignore[assignment]
                elif kind is Quote:
                    if self._quotes is not None:
                        self._quotes(*out)  # type: ignore[misc]
                        w[self._n_quotes] += 1
                        if self._first_quote is None:
                            self._first_quote = out  # type: ignore[assignment]
                elif kind is Depth:
                    if self._depth is not None:
                        snapshot = out.snapshot  # type: ignore[union-attr]
                        payload = encode_depth(out)  # type: ignore[arg-type]
                        self._depth.publish(_SNAPSHOT_T if snapshot else _DEPTH_T, payload)
                        w[self._n_depth] += 1
                        if self._first_depth is None:
                            self._first_depth = out  # type: ignore[assignment]
                elif kind is Dropped:
                    self.counters.drops[out.reason] += out.count  # type: ignore[union-attr, operator]
                elif kind is Event:
                    self._publish_event(out)  # type: ignore[arg-type]
                elif kind is ParseError:
                    self._parse_error(out)  # type: ignore[arg-type]
                elif kind is FetchSnapshot:
                    self._requests.fetch_snapshot(out)  # type: ignore[arg-type]
                elif kind is SendFrame:
                    self._requests.send_frame(out)  # type: ignore[arg-type]
                elif kind is Reconnect:
                    self._requests.reconnect(out)  # type: ignore[arg-type]
                elif kind is ConnectionPlan:
                    self._requests.open_connection(out)  # type: ignore[arg-type]
                else:
                    self._unexpected_output(out)
            except RecordError as exc:
                self.counters.drops["record_error"] += 1
                self._log_once(f"record:{kind.__name__}", "cannot encode a %s: %s", kind, exc)
            except Exception as exc:  # a bug must not stop the feed
                self._internal_error(kind.__name__, exc)

    def event(
        self,
        kind: EventKind,
        detail: Mapping[str, object],
        symbol_id: int = NO_SYMBOL,
        ts_event: int = 0,
    ) -> None:
        """Publish an event of the writer itself (connect, rotation, writer start/stop...)."""
        self._publish_event(Event(kind, orjson.dumps(detail).decode(), symbol_id, ts_event))

    def heartbeat(self, now_ns: int | None = None) -> None:
        """Tell readers of every ring and of the counters that the writer is alive."""
        now = time.time_ns() if now_ns is None else now_ns
        for ring in self.rings.values():
            ring.heartbeat(now)
        self.counters.heartbeat(now)

    def close(self) -> None:
        """Close every ring (readers see the writer stopped)."""
        for ring in self.rings.values():
            ring.close()

    def flush_parse_errors(self) -> None:
        """Publish the PARSE_ERROR summaries that are due (called from the status timer)."""
        now = time.monotonic()
        for kind, count in list(self._parse_seen.items()):
            if count and now - self._parse_last_event.get(kind, 0.0) >= PARSE_EVENT_INTERVAL_S:
                self._parse_event(kind, count, None, b"")

    def sink_failed(self, exc: Exception) -> None:
        """`on_message` or `end_batch` raised (a bug): counted, logged once, the feed goes on."""
        self._internal_error("message sink", exc)

    def _publish_event(self, event: Event) -> None:
        self._events.publish(_EVENT_T, encode_event(event))
        self._w[self._n_events] += 1
        if event.kind == _GAP:
            self.counters.gaps += 1
        elif event.kind == _RESYNC:
            self.counters.resyncs += 1

    def _parse_error(self, error: ParseError) -> None:
        kind = error.kind
        self.counters.parse_errors[kind] += 1
        first = kind not in self._parse_last_event
        self._parse_seen[kind] = self._parse_seen.get(kind, 0) + 1
        if first:
            _log.warning(
                "parse error %s (conn %s), counting further ones silently; sample: %r",
                kind,
                error.conn_id,
                error.sample,
            )
            self._parse_event(kind, 1, error.conn_id, error.sample)

    def _parse_event(self, kind: str, count: int, conn_id: int | None, sample: bytes) -> None:
        self._parse_last_event[kind] = time.monotonic()
        self._parse_seen[kind] = 0
        detail: dict[str, object] = {"kind": kind, "count": count}
        if conn_id is not None:
            detail["conn_id"] = conn_id
        if sample:
            detail["sample"] = sample.decode("utf-8", "replace")
        self.event(EventKind.PARSE_ERROR, detail)

    def _unexpected_output(self, out: object) -> None:
        self.counters.internal_errors += 1
        self._log_once(f"output:{type(out).__name__}", "unexpected protocol output %r", out)

    def _internal_error(self, where: str, exc: Exception) -> None:
        self.counters.internal_errors += 1
        if where not in self._unexpected:
            self._unexpected.add(where)
            _log.error("internal error in %s (%s: %s), continuing", where, type(exc).__name__, exc)

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._unexpected:
            self._unexpected.add(key)
            _log.error(message, *args)


def _observe(
    histograms: tuple[Histogram, Histogram], now: int, ts_recv: int, ts_event: int
) -> None:
    to_commit, from_exchange = histograms
    to_commit.observe(now - ts_recv)
    if ts_event:  # 0: the venue sent no event time
        from_exchange.observe(max(0, ts_recv - ts_event))


def _variable(ring: RingWriter) -> VariableRingWriter:
    if not isinstance(ring, VariableRingWriter):
        raise TypeError(f"{ring.path} is not a variable ring")
    return ring
