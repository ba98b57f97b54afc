"""The counters of one feed writer, in its shared-memory counters file, and its one-line status.

Every value lives in ``{shm_dir}/{feed}/counters`` (`consolidator.counters`), where the exporter
and mdstat read them while the writer runs; an update is a plain 8-byte store. Names and labels
are the Prometheus metrics of DESIGN.md. The hot path (`Publisher`) resolves its slots once and
stores into `CountersFile.words`; the rest of the writer uses the dict-like families and the
integer attributes here. ``Counters()`` without a file keeps the same values in private memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, overload

from consolidator.counters import FILE_NAMES, CountersFile, Family, Histogram, Kind, Unit

__all__ = [
    "CHANNELS",
    "CONNECTION_STATES",
    "EXCHANGE_TO_RECEIVE_BOUNDS_NS",
    "RECEIVE_TO_COMMIT_BOUNDS_NS",
    "Counters",
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

    def move(self, old: str | None, new: str | None) -> None:
        """One connection went from state ``old`` to ``new`` (None: not counted)."""
        if old is not None:
            self.connections[old] -= 1
        if new is not None:
            self.connections[new] += 1

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
        return "; ".join(parts)


def _pairs(counts: Mapping[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
