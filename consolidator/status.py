"""What mdstat reports: one row per feed and stream, read from shared memory only.

Sources: the ring headers (writer pid, heartbeat, state, sequence, capacity), the oldest record
still held (how far back the ring reaches in time), the flusher's durable positions (durable lag,
losses), the feed's events ring (gaps, resyncs, parse errors, reconnects and the connection
state since the writer last started), and the reader registry (each registered reader's position,
hence the slowest live reader's lag, and readers that died without leaving), and, with redundant
connections, each leg's open connections, wins, duplicates and lag per channel (the writer's
counters file). Nothing here writes or waits.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from consolidator.counters import CountersSnapshot, read_counters
from consolidator.errors import ConsolidatorError
from consolidator.journal.position import DurablePosition, durable_lag_ns, read_positions
from consolidator.payloads import decode_event
from consolidator.records import EventKind
from consolidator.ring.layout import WriterState
from consolidator.ring.reader import FixedRingReader, RingReader, VariableRingReader
from consolidator.ring.registry import NO_POSITION, ReaderInfo, list_readers
from consolidator.streams import feed_streams, open_stream_reader

__all__ = [
    "EventTally",
    "LegStatus",
    "ReaderStatus",
    "StreamStatus",
    "counted_events",
    "feed_status",
    "tally_events",
]


@dataclass
class EventTally:
    """Counts since the writer's last start (its counters file, else its events ring)."""

    gaps: int = 0
    resyncs: int = 0
    parse_errors: int = 0
    reconnects: int = 0
    connections_up: int = 0


@dataclass
class ReaderStatus:
    """One registered reader of a stream, as mdstat shows it."""

    name: str
    pid: int
    alive: bool
    position: int | None
    lag: int | None
    lost: int
    heartbeat_age_s: float

    @classmethod
    def of(cls, info: ReaderInfo, tail: int, now_ns: int) -> ReaderStatus:
        """``lag``: records between the reader's position and the ring's tail (None before its
        first report)."""
        known = info.position != NO_POSITION
        return cls(
            name=info.name,
            pid=info.pid,
            alive=info.alive,
            position=info.position if known else None,
            lag=max(0, tail - info.position) if known else None,
            lost=info.lost,
            heartbeat_age_s=round((now_ns - info.heartbeat_ns) / 1e9, 3),
        )


@dataclass
class LegStatus:
    """One leg of redundant connections, for one stream (channel), as mdstat shows it.

    ``wins``: records taken from the leg (its copy came first); ``duplicates``: its copies
    dropped (another came first); ``lag_s``: the mean lag of its copies behind the first copy
    over the writer's last second (0 for a win).
    """

    leg: str
    connections: int
    wins: int
    duplicates: int
    lag_s: float

    @classmethod
    def of_stream(cls, snap: CountersSnapshot | None, stream: str) -> list[LegStatus]:
        """Every leg's values for ``stream`` (a channel); empty without legs."""
        if snap is None:
            return []
        wins = snap.family("consolidator_leg_wins_total")
        if stream not in {dict(m.labels).get("channel") for m in wins}:
            return []
        legs = [dict(m.labels)["leg"] for m in snap.family("consolidator_leg_connections")]
        return [
            cls(
                leg=leg,
                connections=snap.value("consolidator_leg_connections", leg=leg),
                wins=snap.value("consolidator_leg_wins_total", leg=leg, channel=stream),
                duplicates=snap.value("consolidator_leg_duplicates_total", leg=leg, channel=stream),
                lag_s=snap.value("consolidator_leg_lag_seconds", leg=leg, channel=stream) / 1e9,
            )
            for leg in sorted(legs)
        ]


@dataclass
class StreamStatus:
    """One mdstat row. ``slowest_reader*``: the live registered reader furthest behind the tail;
    ``reader_list``: every registered reader, dead ones included (json only); ``legs``: with
    redundant connections, each leg on this channel (trades, quotes, depth rows)."""

    feed: str
    stream: str
    writer: str
    pid: int
    heartbeat_age_s: float
    seq: int
    rate_per_s: float
    capacity: int
    reach_s: float | None
    last_publish_age_s: float | None
    durable_lag_s: float | None
    flusher_lost: int | None
    gaps: int
    resyncs: int
    parse_errors: int
    reconnects: int
    connections_up: int
    readers: int = 0
    dead_readers: int = 0
    slowest_reader: str | None = None
    slowest_reader_pid: int | None = None
    slowest_reader_lag: int | None = None
    reader_list: list[ReaderStatus] = field(default_factory=list)
    legs: list[LegStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return asdict(self)


def _commit_time(reader: RingReader, seq: int) -> int | None:
    """ts_commit of record ``seq`` if the ring still holds it."""
    reader.position = seq
    if isinstance(reader, FixedRingReader):
        batch = reader.read_batch(1)
        return int(batch["ts_commit"][0]) if len(batch) else None
    if isinstance(reader, VariableRingReader):
        records = reader.read_batch(1)
        return records[0].ts_commit if records else None
    return None


def tally_events(shm_dir: Path, feed: str) -> EventTally:
    """Gaps, resyncs, parse errors, reconnects and open connections since the last WRITER_START."""
    tally = EventTally()
    try:
        reader = open_stream_reader(shm_dir, feed, "events", start="oldest")
    except ConsolidatorError:  # no events ring (yet): nothing to count
        return tally
    assert isinstance(reader, VariableRingReader)
    with reader:
        while records := reader.read_batch():
            for record in records:
                event = decode_event(record.payload)
                kind = event.kind
                if kind == EventKind.WRITER_START:
                    tally = EventTally()
                elif kind == EventKind.GAP:
                    tally.gaps += 1
                elif kind == EventKind.RESYNC:
                    tally.resyncs += 1
                elif kind == EventKind.PARSE_ERROR:
                    tally.parse_errors += _parse_error_count(event.detail)
                elif kind == EventKind.CONNECT:
                    tally.connections_up += 1
                elif kind == EventKind.DISCONNECT:
                    tally.connections_up = max(0, tally.connections_up - 1)
                    tally.reconnects += 1
    return tally


def counted_events(shm_dir: Path, feed: str, snap: CountersSnapshot | None = None) -> EventTally:
    """The writer's own counters when its counters file is there (exact however long it has run),
    else `tally_events` (a writer without one, or an events ring read after it stopped).
    ``snap``: the counters file already read."""
    if snap is None:
        snap = read_counters(shm_dir, feed)
    if snap is None:
        return tally_events(shm_dir, feed)
    return EventTally(
        gaps=snap.value("consolidator_gaps_total"),
        resyncs=snap.value("consolidator_resyncs_total"),
        parse_errors=sum(m.value for m in snap.family("consolidator_parse_errors_total")),
        reconnects=sum(m.value for m in snap.family("consolidator_reconnects_total")),
        connections_up=snap.value("consolidator_connections", state="open"),
    )


def _parse_error_count(detail: str) -> int:
    try:
        value = json.loads(detail).get("count", 1)
    except (ValueError, AttributeError):
        return 1
    return value if isinstance(value, int) and value > 0 else 1


def _row(
    feed: str,
    stream: str,
    reader: RingReader,
    rate: float,
    tally: EventTally,
    positions: DurablePosition | None,
    registered: list[ReaderInfo],
    counters: CountersSnapshot | None,
) -> StreamStatus:
    now = time.time_ns()
    info = reader.writer_info()
    tail = reader.tail()
    held = tail > reader.first_seq
    oldest = _commit_time(reader, reader.oldest()) if held else None
    newest = _commit_time(reader, tail - 1) if held else None
    slot = positions.streams.get(stream) if positions is not None else None
    present = slot is not None and slot.present
    lag = durable_lag_ns(slot, now) / 1e9 if slot is not None and present else None
    readers = [ReaderStatus.of(r, tail, now) for r in registered if r.stream == stream]
    live = [r for r in readers if r.alive and r.lag is not None]
    slowest = max(live, key=lambda r: r.lag or 0) if live else None
    return StreamStatus(
        feed=feed,
        stream=stream,
        writer="alive" if reader.writer_alive() else WriterState(info.state).name.lower(),
        pid=info.pid,
        heartbeat_age_s=round((now - info.heartbeat_ns) / 1e9, 3),
        seq=tail,
        rate_per_s=round(rate, 1),
        capacity=reader.capacity,
        reach_s=None if oldest is None else round((now - oldest) / 1e9, 3),
        last_publish_age_s=None if newest is None else round((now - newest) / 1e9, 3),
        durable_lag_s=None if lag is None else round(lag, 3),
        flusher_lost=slot.lost_records if slot is not None and present else None,
        gaps=tally.gaps,
        resyncs=tally.resyncs,
        parse_errors=tally.parse_errors,
        reconnects=tally.reconnects,
        connections_up=tally.connections_up,
        readers=sum(r.alive for r in readers),
        dead_readers=sum(not r.alive for r in readers),
        slowest_reader=None if slowest is None else slowest.name,
        slowest_reader_pid=None if slowest is None else slowest.pid,
        slowest_reader_lag=None if slowest is None else slowest.lag,
        reader_list=readers,
        legs=LegStatus.of_stream(counters, stream),
    )


def feed_status(shm_dir: Path, feed: str, rate_window_s: float) -> list[StreamStatus]:
    """Rows for every stream of ``feed``; rates over one ``rate_window_s`` shared by all."""
    readers = {s: open_stream_reader(shm_dir, feed, s) for s in feed_streams(shm_dir, feed)}
    try:
        before = {s: r.tail() for s, r in readers.items()}
        start = time.monotonic()
        if rate_window_s > 0:
            time.sleep(rate_window_s)
        elapsed = time.monotonic() - start
        rates = {
            s: (r.tail() - before[s]) / elapsed if elapsed > 0 else 0.0 for s, r in readers.items()
        }
        positions = read_positions(shm_dir, feed)
        registered = list_readers(shm_dir, feed)
        counters = read_counters(shm_dir, feed)
        tally = counted_events(shm_dir, feed, counters)
        return [
            _row(feed, s, r, rates[s], tally, positions, registered, counters)
            for s, r in readers.items()
        ]
    finally:
        for reader in readers.values():
            reader.close()
