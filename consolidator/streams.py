"""The streams of a feed and the ring layout of each (DESIGN.md "Streams and records").

``trades`` and ``quotes`` are fixed-record rings (numpy batch reads); ``depth``, ``raw`` and
``events`` are variable rings. Capacities are defaults; configuration may scale them.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from consolidator.errors import ConfigError
from consolidator.records import QUOTE, QUOTE_DTYPE, TRADE, TRADE_DTYPE, RecordType
from consolidator.ring.layout import DESCRIPTOR, RingKind, RingLayout
from consolidator.ring.reader import FixedRingReader, RingReader, VariableRingReader
from consolidator.ring.registry import make_registry_dir
from consolidator.ring.writer import FixedRingWriter, RingWriter, VariableRingWriter

__all__ = [
    "STREAMS",
    "StreamSpec",
    "feed_streams",
    "feeds",
    "open_stream_reader",
    "open_stream_writer",
    "read_feed_meta",
    "ring_path",
    "write_feed_meta",
]


@dataclass(frozen=True)
class StreamSpec:
    """What kind of ring a stream lives in, and its default size."""

    name: str
    kind: RingKind
    record_type: int
    capacity: int
    heap_size: int = 0
    record: struct.Struct | None = None
    dtype: np.dtype[np.void] | None = None

    def layout(self, feed: str, scale: int = 1) -> RingLayout:
        """This stream's ring layout for ``feed``, ``scale`` (a power of two) times the size."""
        if scale < 1 or scale & (scale - 1):
            raise ConfigError(f"ring scale must be a power of two: {scale}")
        slot = self.dtype.itemsize if self.dtype is not None else DESCRIPTOR.size
        return RingLayout(
            self.kind,
            self.record_type if self.kind is RingKind.FIXED else 0,
            slot,
            self.capacity * scale,
            self.heap_size * scale,
            feed,
            self.name,
        )


STREAMS: Final[dict[str, StreamSpec]] = {
    "trades": StreamSpec(
        "trades", RingKind.FIXED, RecordType.TRADE, 1 << 20, 0, TRADE, TRADE_DTYPE
    ),
    "quotes": StreamSpec(
        "quotes", RingKind.FIXED, RecordType.QUOTE, 1 << 20, 0, QUOTE, QUOTE_DTYPE
    ),
    "depth": StreamSpec("depth", RingKind.VARIABLE, RecordType.DEPTH, 1 << 18, 1 << 28),
    "raw": StreamSpec("raw", RingKind.VARIABLE, RecordType.RAW, 1 << 18, 1 << 28),
    "events": StreamSpec("events", RingKind.VARIABLE, RecordType.EVENT, 1 << 14, 1 << 22),
}


def ring_path(shm_dir: Path, feed: str, stream: str) -> Path:
    """``{shm_dir}/{feed}/{stream}.ring``."""
    return shm_dir / feed / f"{stream}.ring"


def _spec(stream: str) -> StreamSpec:
    try:
        return STREAMS[stream]
    except KeyError:
        raise ConfigError(f"unknown stream {stream!r} (streams: {', '.join(STREAMS)})") from None


def open_stream_writer(
    shm_dir: Path, feed: str, stream: str, *, first_seq: int = 0, scale: int = 1
) -> RingWriter:
    """Create or reopen the ring of ``stream`` for writing."""
    spec = _spec(stream)
    path = ring_path(shm_dir, feed, stream)
    layout = spec.layout(feed, scale)
    if spec.dtype is not None and spec.record is not None:
        return FixedRingWriter(path, layout, spec.record.pack_into, spec.dtype, first_seq=first_seq)
    return VariableRingWriter(path, layout, first_seq=first_seq)


def open_stream_reader(
    shm_dir: Path, feed: str, stream: str, *, start: str | int = "tail"
) -> RingReader:
    """Open the ring of ``stream`` for reading."""
    spec = _spec(stream)
    path = ring_path(shm_dir, feed, stream)
    if spec.dtype is not None:
        return FixedRingReader(path, spec.dtype, spec.record, start=start)
    return VariableRingReader(path, start=start)


def write_feed_meta(shm_dir: Path, feed: str, venue: str) -> None:
    """Write ``{shm_dir}/{feed}/feed.json`` (venue and streams), atomically, mode 0640.

    Also creates the feed's reader registry (`consolidator.ring.registry`).
    """
    directory = shm_dir / feed
    directory.mkdir(parents=True, exist_ok=True)
    make_registry_dir(shm_dir, feed)
    tmp = directory / f".feed.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"feed": feed, "venue": venue}) + "\n")
    tmp.chmod(0o640)
    tmp.rename(directory / "feed.json")


def read_feed_meta(shm_dir: Path, feed: str) -> dict[str, str]:
    """The feed's metadata; a clear error if the feed has never been written here."""
    path = shm_dir / feed / "feed.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no feed {feed!r} under {shm_dir} (is its writer running?)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable feed metadata: {exc}") from None
    return {str(k): str(v) for k, v in data.items()}


def feeds(shm_dir: Path) -> list[str]:
    """Feeds with rings under ``shm_dir``."""
    if not shm_dir.is_dir():
        return []
    return sorted(d.name for d in shm_dir.iterdir() if d.is_dir() and (d / "feed.json").exists())


def feed_streams(shm_dir: Path, feed: str) -> list[str]:
    """Streams of ``feed`` that have a ring now, in the canonical order."""
    return [s for s in STREAMS if ring_path(shm_dir, feed, s).exists()]
