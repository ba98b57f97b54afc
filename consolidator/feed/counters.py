"""The counters of one feed writer, in its shared-memory counters file, and its one-line status.

Every value lives in ``{shm_dir}/{feed}/counters`` (`consolidator.counters`), where the exporter
and mdstat read them while the writer runs; an update is a plain 8-byte store. Names and labels
are the Prometheus metrics of DESIGN.md. The hot path (`Publisher`) resolves its slots once and
stores into `CountersFile.words`; the rest of the writer uses the dict-like families and the
integer attributes here. ``Counters()`` without a file keeps the same values in private memory.
With redundant connections, `LegCounters` adds the metrics of each leg.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, overload

from consolidator.counters import FILE_NAMES, CountersFile, Family, Histogram, Kind, Unit
from consolidator.venues.base import LEG_NAMES, LegCounts

__all__ = [
    "CHANNELS",
    "CONNECTION_STATES",
    "EXCHANGE_TO_RECEIVE_BOUNDS_NS",
    "LAG_WINDOW_S",
    "RECEIVE_TO_COMMIT_BOUNDS_NS",
    "Counters",
    "LegCounters",
]

CHANNELS: Final = ("trades", "quotes", "depth", "other")
"""``messages_received`` keys: the market channels, and ``other`` (replies, notices, junk)."""
CONNECTION_STATES: Final = ("connecting", "open", "closing")
"""``connections`` keys (a closed connection is no longer counted)."""

_US: Final = 1_000
_MS: Final = 1_000_000
RECEIVE_TO_COMMIT_BOUNDS_NS: Final = (
    *(m * _US for m in (1, 2, 5, 10, 20, 50, 100, 200, 500)),
    *(m * _MS for m in (1, 2, 5, 10, 20, 50, 100, 1000)),
)
"""``consolidator_receive_to_commit_seconds`` buckets: 1 µs to 1 s."""
EXCHANGE_TO_RECEIVE_BOUNDS_NS: Final = tuple(
    int(m * _MS) for m in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)
)
"""``consolidator_exchange_to_receive_seconds`` buckets: 0.5 ms to 30 s."""


LAG_WINDOW_S: Final = 1.0
"""``consolidator_leg_lag_seconds`` is the mean lag of a leg's copies over about this long."""


class LegCounters:
    """The metrics of redundant connections, per leg ("a", "b"):

    * ``consolidator_leg_connections{leg}``: its open connections (gauge);
    * ``consolidator_leg_wins_total{leg,channel}``: records taken from it (its copy came first);
    * ``consolidator_leg_duplicates_total{leg,channel}``: its copies dropped (another came first);
    * ``consolidator_leg_lag_seconds{leg,channel}``: the mean lag of its copies behind the first
      copy (0 for a win) over the last `LAG_WINDOW_S`; kept while no copy arrives.

    `update` copies the venue protocol's `LegCounts` (from the writer's loop timer, not per
    message).
    """

    def __init__(self, file: CountersFile, legs: int, channels: tuple[str, ...]) -> None:
        self.names = LEG_NAMES[:legs]
        self.channels = channels
        self.connections = Family(
            file, "consolidator_leg_connections", "leg", kind=Kind.GAUGE, keys=self.names
        )

        def per_leg(name: str, kind: Kind = Kind.COUNTER, unit: Unit = Unit.PLAIN) -> list[Family]:
            return [
                Family(
                    file,
                    name,
                    "channel",
                    kind=kind,
                    unit=unit,
                    keys=channels,
                    const=(("leg", leg),),
                )
                for leg in self.names
            ]

        self.wins = per_leg("consolidator_leg_wins_total")
        self.duplicates = per_leg("consolidator_leg_duplicates_total")
        self.lag_ns = per_leg("consolidator_leg_lag_seconds", Kind.GAUGE, Unit.NANOSECONDS)
        self._window: tuple[float, list[int], list[int]] | None = None  # start, lag sums, copies

    def summary(self) -> str:
        """E.g. "a: 2 conns, 1200 wins, 800 dups; b: 2 conns, 800 wins, 1200 dups"."""
        parts = []
        for leg, name in enumerate(self.names):
            wins = sum(self.wins[leg].values())
            dups = sum(self.duplicates[leg].values())
            conns = self.connections[name]
            parts.append(f"{name}: {conns} conns, {wins} wins, {dups} dups")
        return "; ".join(parts)

    def update(self, counts: LegCounts, now: float) -> None:
        """Copy ``counts``; ``now`` (monotonic seconds) closes a lag window when it is due."""
        width = len(self.channels)
        copies = [w + d for w, d in zip(counts.wins, counts.duplicates, strict=True)]
        for index, (wins, duplicates) in enumerate(
            zip(counts.wins, counts.duplicates, strict=True)
        ):
            leg, channel = divmod(index, width)
            self.wins[leg][self.channels[channel]] = wins
            self.duplicates[leg][self.channels[channel]] = duplicates
        window = self._window
        if window is None:
            self._window = (now, list(counts.lag_ns), copies)
            return
        start, lag_before, copies_before = window
        if now - start < LAG_WINDOW_S:
            return
        for index, lag in enumerate(counts.lag_ns):
            n = copies[index] - copies_before[index]
            if n > 0:
                leg, channel = divmod(index, width)
                self.lag_ns[leg][self.channels[channel]] = (lag - lag_before[index]) // n
        self._window = (now, list(counts.lag_ns), copies)


class _Scalar:
    """An unlabeled counter as an ``int`` attribute of `Counters` (``counters.gaps += 1``)."""

    def __init__(self, metric: str, *, venue_label: bool = False) -> None:
        self.metric = metric
        self.venue_label = venue_label
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Scalar: ...
    @overload
    def __get__(self, obj: Counters, objtype: type | None = None) -> int: ...
    def __get__(self, obj: Counters | None, objtype: type | None = None) -> int | _Scalar:
        if obj is None:
            return self
        value: int = obj.words[obj.slot(self.attr)]
        return value

    def __set__(self, obj: Counters, value: int) -> None:
        obj.words[obj.slot(self.attr)] = value


class Counters:
    """What the writer counts (``consolidator_*`` metrics in DESIGN.md).

    Args:
        file: the counters file (`create`); None keeps the values in private memory.
        venue: the feed's venue (a label of the message and byte counters).
    """

    bytes_received = _Scalar("consolidator_bytes_received_total", venue_label=True)
    gaps = _Scalar("consolidator_gaps_total")
    resyncs = _Scalar("consolidator_resyncs_total")
    rotations = _Scalar("consolidator_rotations_total")
    rest_requests = _Scalar("consolidator_rest_requests_total")
    rest_weight = _Scalar("consolidator_rest_weight_total")
    rate_limited = _Scalar("consolidator_rate_limited_total")
    internal_errors = _Scalar("consolidator_internal_errors_total")

    def __init__(self, file: CountersFile | None = None, venue: str = "") -> None:
        self.file = file if file is not None else CountersFile(None, service="writer")
        self.words = self.file.words
        self.venue = venue
        f = self.file
        v = (("venue", venue),)
        self.messages_received = Family(
            f, "consolidator_messages_received_total", "channel", keys=CHANNELS, const=v
        )
        self.last_message_ns = Family(
            f, "consolidator_last_message_timestamp_seconds", "channel",
            kind=Kind.GAUGE, unit=Unit.NANOSECONDS, keys=CHANNELS,
        )  # fmt: skip
        self.records_published = Family(f, "consolidator_records_published_total", "stream")
        self.parse_errors = Family(f, "consolidator_parse_errors_total", "kind")
        self.reconnects = Family(f, "consolidator_reconnects_total", "reason")
        self.drops = Family(f, "consolidator_drops_total", "reason")
        self.connections = Family(
            f, "consolidator_connections", "state", kind=Kind.GAUGE, keys=CONNECTION_STATES
        )
        self.rest_errors = Family(f, "consolidator_rest_errors_total", "kind")
        self.snapshots = Family(f, "consolidator_snapshots_total", "result")
        self.legs: LegCounters | None = None
        """The metrics of each leg, with redundant connections (`enable_legs`)."""
        self._scalars: dict[str, int] = {}
        for name, value in vars(Counters).items():
            if isinstance(value, _Scalar):
                self.slot(name)

    @classmethod
    def create(cls, shm_dir: Path, feed: str, venue: str) -> Counters:
        """Counters in a new ``{shm_dir}/{feed}/counters`` (replacing the last run's).

        Raises:
            CountersError: the file cannot be created.
        """
        path = shm_dir / feed / FILE_NAMES["writer"]
        return cls(CountersFile(path, service="writer", feed=feed), venue)

    def slot(self, attr: str) -> int:
        """The value slot of an integer attribute (``"bytes_received"``), for the hot path."""
        index = self._scalars.get(attr)
        if index is None:
            scalar = vars(Counters)[attr]
            assert isinstance(scalar, _Scalar)
            labels = (("venue", self.venue),) if scalar.venue_label else ()
            index = self._scalars[attr] = self.file.slot(scalar.metric, labels)
        return index

    def receive_to_commit(self, stream: str) -> Histogram:
        """``consolidator_receive_to_commit_seconds`` of ``stream`` (ns)."""
        return self.file.histogram(
            "consolidator_receive_to_commit_seconds",
            RECEIVE_TO_COMMIT_BOUNDS_NS,
            (("stream", stream),),
        )

    def exchange_to_receive(self, channel: str) -> Histogram:
        """``consolidator_exchange_to_receive_seconds`` of ``channel`` (ns)."""
        return self.file.histogram(
            "consolidator_exchange_to_receive_seconds",
            EXCHANGE_TO_RECEIVE_BOUNDS_NS,
            (("channel", channel),),
        )

    def heartbeat(self, now_ns: int) -> None:
        """Tell readers of the counters file the writer is alive."""
        self.file.heartbeat(now_ns)

    def close(self) -> None:
        """Mark the counters file stopped (values stay readable)."""
        self.file.close()

    def enable_legs(self, legs: int, channels: tuple[str, ...]) -> LegCounters:
        """Count redundant connections' ``legs`` (metrics allocated now, at 0)."""
        self.legs = LegCounters(self.file, legs, channels)
        return self.legs

    def move(self, old: str | None, new: str | None) -> None:
        """One connection went from state ``old`` to ``new`` (None: not counted)."""
        if old is not None:
            self.connections[old] -= 1
        if new is not None:
            self.connections[new] += 1

    def leg_moved(self, leg: int, delta: int) -> None:
        """A connection of ``leg`` opened (+1) or closed (-1); nothing without legs."""
        if self.legs is not None:
            self.legs.connections[self.legs.names[leg]] += delta

    def total_messages(self) -> int:
        """Messages received on every channel."""
        return sum(self.messages_received.values())

    def status(self, previous_total: int, interval_s: float) -> str:
        """The periodic status line; ``previous_total`` is `total_messages` of the last one."""
        total = self.total_messages()
        rate = (total - previous_total) / interval_s if interval_s > 0 else 0.0
        published = " ".join(f"{k}={v}" for k, v in self.records_published.items())
        parts = [
            f"conns open={self.connections['open']} connecting={self.connections['connecting']}",
            f"msgs={total} ({rate:.0f}/s) bytes={self.bytes_received}",
            f"published {published}",
            f"gaps={self.gaps} resyncs={self.resyncs} rotations={self.rotations}",
        ]
        if self.parse_errors:
            parts.append(f"parse_errors {_pairs(self.parse_errors)}")
        if self.reconnects:
            parts.append(f"reconnects {_pairs(self.reconnects)}")
        if self.drops:
            parts.append(f"drops {_pairs(self.drops)}")
        if self.rate_limited or self.rest_errors:
            parts.append(f"rate_limited={self.rate_limited} rest_errors {_pairs(self.rest_errors)}")
        if self.internal_errors:
            parts.append(f"internal_errors={self.internal_errors}")
        if self.legs is not None:
            parts.append(f"legs {self.legs.summary()}")
        return "; ".join(parts)


def _pairs(counts: Mapping[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
