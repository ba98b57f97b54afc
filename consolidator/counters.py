"""Shared-memory counters, gauges and histograms (like Aeron's counters in its cnc file).

One process owns a counters file and updates its values with plain 8-byte stores: no lock, no
thread, no system call. Any number of readers (the exporter, mdstat) map it read-only and copy the
values whenever they like; the owner never knows. Files:

- ``{shm_dir}/{feed}/counters``: the feed's writer (`consolidator.feed.counters`);
- ``{shm_dir}/{feed}/flusher.counters``: the flusher's values for that feed.

One owner per file, so two processes never share a file's lifecycle, and values stored by
different processes are in different files (never in one cache line). The owner creates a new file
at each start, under a temporary name renamed into place (a mapped file is never truncated);
`read_counters` opens the path on every call, so readers follow a replaced file.

Layout, little-endian; the file is ``HEADER_SIZE + capacity * DESCRIPTOR_SIZE + 8 * words``::

    offset  size  field                meaning
    ------  ----  -------------------  ----------------------------------------------------------
       0      8   magic "CNSLCNTR"     written LAST on creation (before the rename)
       8      4   version              COUNTERS_VERSION; readers skip any other
      12      4   header_size          256
      16      4   descriptor_size      512
      20      4   capacity             descriptors the file can hold
      24      4   value_words          8-byte value slots the file can hold
      28      4   (reserved)
      32      8   pid                  the owner
      40      8   pid_start_ticks      its start time (/proc/PID/stat field 22): pid + this identify
                                       the process across pid reuse (`ring.registry`)
      48      8   start_ns             wall time the file was created
      56      8   (reserved)
      64     32   service              "writer", "flusher" (UTF-8, NUL padded)
      96     32   feed                 UTF-8, NUL padded
     --- owner-updated words ---------------------------------------------------------------------
     128      8   descriptor_count     descriptors [0, count) are complete and immutable
     136      8   words_used           value slots allocated
     144      8   heartbeat_ns         refreshed by the owner's loop (not per update)
     152      8   state                0 none, 1 live, 2 stopped cleanly
     256           descriptors[capacity]
     256 + capacity * 512               values[value_words]: aligned signed 8-byte slots

    descriptor (512 bytes)
       0   4  kind          1 counter, 2 gauge, 3 histogram
       4   4  unit          0 plain number, 1 nanoseconds (exported in seconds)
       8   4  first_word    index of its first value slot
      12   4  bucket_count  histograms: upper bounds that follow (at most MAX_BUCKETS); else 0
      16   4  key_length    bytes of key
      20  12  (reserved)
      32 224  key           metric name, then "\\0label=value" per label, UTF-8
     256 256  bounds        histograms: bucket_count int64 upper bounds (inclusive, in ``unit``)

    values of a counter or gauge: 1 slot. Values of a histogram: bucket_count + 1 slots counting
    the observations of each bucket (the last is +Inf; not cumulative), then 1 slot with the sum.
    Value slot 0 is the owner's scratch slot: no descriptor points at it.

**Allocation** happens on first use of a metric and label set, in the owner (rare, off the fast
path: a new parse-error kind, a new reconnect reason). The owner writes the descriptor, then
stores ``descriptor_count + 1``: a reader that loads the count and then the descriptors below it
sees each one complete. That needs stores to become visible in program order and loads not to pass
earlier loads, which x86-64 (TSO) guarantees; this runs on x86-64. A full file (or a key too long)
is not an error for the owner: the update goes to a scratch slot that is never published, and it
is logged once.

**Updates** are single stores through ``memoryview(mm).cast("q")``: CPython copies an item with one
8-byte ``memcpy``, a single store. ``struct.pack_into`` must not be used for values: it zero-fills
its target and then packs (two stores; a reader could see a transient 0). Readers load each value
the same way, one item at a time (``tolist``), never with a bulk copy that might split a word. Two
values read one after the other may come from different updates; a histogram's count is the sum of
its buckets as read, so it always matches them.
"""

from __future__ import annotations

import bisect
import enum
import logging
import mmap
import os
import struct
import time
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consolidator.errors import ConsolidatorError
from consolidator.ring.registry import process_start_ticks
from consolidator.shmfile import create_mapped, map_readonly

__all__ = [
    "COUNTERS_VERSION",
    "FILE_NAMES",
    "MAX_BUCKETS",
    "CountersError",
    "CountersFile",
    "CountersSnapshot",
    "Family",
    "Histogram",
    "Kind",
    "Metric",
    "State",
    "Unit",
    "read_counters",
    "read_counters_file",
]

log = logging.getLogger(__name__)

MAGIC: Final = int.from_bytes(b"CNSLCNTR", "little", signed=True)
COUNTERS_VERSION: Final = 1
HEADER_SIZE: Final = 256
DESCRIPTOR_SIZE: Final = 512
KEY_OFFSET: Final = 32
KEY_BYTES: Final = 224
BOUNDS_OFFSET: Final = 256
MAX_BUCKETS: Final = 32
DEFAULT_CAPACITY: Final = 256
DEFAULT_WORDS: Final = 8192
FILE_MODE: Final = 0o640
FILE_NAMES: Final = {"writer": "counters", "flusher": "flusher.counters"}
"""The counters file of each owning service, under ``{shm_dir}/{feed}/``."""

W_MAGIC: Final = 0
W_PID: Final = 32 // 8
W_PID_START: Final = 40 // 8
W_START: Final = 48 // 8
W_COUNT: Final = 128 // 8
W_USED: Final = 136 // 8
W_HEARTBEAT: Final = 144 // 8
W_STATE: Final = 152 // 8

_STATIC: Final = struct.Struct("<IIIII4x")  # version .. reserved, at offset 8
_NAMES: Final = struct.Struct("<32s32s")  # service, feed, at offset 64
_DESCRIPTOR: Final = struct.Struct("<IIIII12x")
_KEY_SEP: Final = "\0"


class CountersError(ConsolidatorError):
    """A counters file cannot be created."""


class Kind(enum.IntEnum):
    """What a metric is (the descriptor's ``kind``)."""

    COUNTER = 1
    GAUGE = 2
    HISTOGRAM = 3


class Unit(enum.IntEnum):
    """The unit of a metric's stored integers (the descriptor's ``unit``)."""

    PLAIN = 0
    NANOSECONDS = 1


class State(enum.IntEnum):
    """The header's ``state`` word."""

    NONE = 0
    LIVE = 1
    STOPPED = 2


Labels = tuple[tuple[str, str], ...]


def _key(name: str, labels: Labels) -> bytes:
    return _KEY_SEP.join([name, *(f"{k}={v}" for k, v in labels)]).encode()


def _parse_key(raw: bytes) -> tuple[str, Labels]:
    name, *pairs = raw.decode("utf-8", "replace").split(_KEY_SEP)
    labels = []
    for pair in pairs:
        label, _, value = pair.partition("=")
        labels.append((label, value))
    return name, tuple(labels)


class Histogram:
    """A histogram's slots: `observe` is a bisect and two stores.

    Bucket ``i`` counts values ``v`` with ``bounds[i-1] < v <= bounds[i]`` (Prometheus ``le``);
    the last one everything above the largest bound.
    """

    __slots__ = ("_base", "_bounds", "_sum", "_words")

    def __init__(self, words: memoryview, first_word: int, bounds: Sequence[int]) -> None:
        self._words = words
        self._base = first_word
        self._bounds = list(bounds)
        self._sum = first_word + len(bounds) + 1

    def observe(self, value: int) -> None:
        """Count one observation (in the histogram's unit)."""
        w = self._words
        w[self._base + bisect.bisect_left(self._bounds, value)] += 1
        try:
            w[self._sum] += value
        except ValueError:  # beyond int64 (absurd timestamps): restart it, readers see a reset
            w[self._sum] = 0


class CountersFile:
    """The owner's side of a counters file: allocate metrics, update their slots.

    Args:
        path: the file to create (replacing any previous one); None for private memory (tests,
            or a writer whose counters nobody needs to read).
        service: who owns it (``"writer"``, ``"flusher"``).
        feed: the feed it counts.
        capacity: descriptors the file can hold.
        value_words: 8-byte value slots the file can hold.

    Raises:
        CountersError: the file cannot be created (no space, no permission).

    Attributes:
        words: the values as a ``memoryview`` of signed 8-byte slots; ``words[i] += 1`` on a slot
            index from `slot` is the fast path.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        service: str,
        feed: str = "",
        capacity: int = DEFAULT_CAPACITY,
        value_words: int = DEFAULT_WORDS,
    ) -> None:
        if not 0 < capacity < 1 << 20 or not 0 < value_words < 1 << 24:
            raise CountersError(f"bad counters file size: {capacity} metrics, {value_words} words")
        self.path = path
        self.capacity = capacity
        self.value_words = value_words
        self._values_offset = HEADER_SIZE + capacity * DESCRIPTOR_SIZE
        size = self._values_offset + 8 * value_words
        self._mm = self._create(path, size, service, feed) if path else mmap.mmap(-1, size)
        self._header = memoryview(self._mm).cast("q")
        self.words = memoryview(self._mm)[self._values_offset :].cast("q")
        self._slots: dict[tuple[str, Labels], int] = {}
        self._histograms: dict[tuple[str, Labels], Histogram] = {}
        self._count = 0
        self._used = 1  # word 0 is the scratch slot: never described, never read
        self._full_logged = False
        if path is None:
            self._init_header(self._mm, service, feed)
        self._header[W_USED] = self._used
        self._header[W_STATE] = State.LIVE

    @staticmethod
    def _init_header(mm: mmap.mmap, service: str, feed: str) -> None:
        """Everything but the magic (stored last by the caller)."""
        pid = os.getpid()
        _NAMES.pack_into(mm, 64, service.encode()[:32], feed.encode()[:32])
        with memoryview(mm).cast("q") as w:
            w[W_PID] = pid
            w[W_PID_START] = process_start_ticks(pid) or 0
            now = time.time_ns()
            w[W_START] = now
            w[W_HEARTBEAT] = now

    def _create(self, path: Path, size: int, service: str, feed: str) -> mmap.mmap:
        def fill(_fd: int, mm: mmap.mmap) -> None:
            _STATIC.pack_into(
                mm, 8, COUNTERS_VERSION, HEADER_SIZE, DESCRIPTOR_SIZE, self.capacity,
                self.value_words,
            )  # fmt: skip
            self._init_header(mm, service, feed)
            with memoryview(mm).cast("q") as w:
                w[W_MAGIC] = MAGIC

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, mm = create_mapped(path, size, fill, mode=FILE_MODE)
        except OSError as exc:
            raise CountersError(f"cannot create {path}: {exc.strerror}") from None
        os.close(fd)
        return mm

    # -- allocation (rare: first use of a metric and label set) --------------------------------

    def slot(
        self,
        name: str,
        labels: Labels = (),
        kind: Kind = Kind.COUNTER,
        unit: Unit = Unit.PLAIN,
    ) -> int:
        """The value slot of a counter or gauge, allocated on first use (0: the scratch slot)."""
        key = (name, labels)
        index = self._slots.get(key)
        if index is None:
            index = self._slots[key] = self._allocate(name, labels, kind, unit, ())
        return index

    def histogram(
        self, name: str, bounds: Sequence[int], labels: Labels = (), unit: Unit = Unit.NANOSECONDS
    ) -> Histogram:
        """A histogram with these upper bucket bounds (ascending), allocated on first use."""
        key = (name, labels)
        hist = self._histograms.get(key)
        if hist is None:
            bounds = list(bounds)
            if len(bounds) > MAX_BUCKETS or bounds != sorted(set(bounds)):
                raise ValueError(f"{name}: bounds must ascend, at most {MAX_BUCKETS}: {bounds}")
            first = self._allocate(name, labels, Kind.HISTOGRAM, unit, bounds)
            words = self.words if first else memoryview(bytearray(8 * len(bounds) + 16)).cast("q")
            hist = Histogram(words, first, bounds)  # unpublished if the file is full
            self._histograms[key] = hist
        return hist

    def _allocate(
        self, name: str, labels: Labels, kind: Kind, unit: Unit, bounds: Sequence[int]
    ) -> int:
        key = _key(name, labels)
        need = len(bounds) + 2 if kind is Kind.HISTOGRAM else 1
        if (
            len(key) > KEY_BYTES
            or self._count >= self.capacity
            or self._used + need > self.value_words
        ):
            if not self._full_logged:
                self._full_logged = True
                log.error(
                    "%s: no room for metric %r %s (key %d bytes, %d metrics): not published",
                    self.path or "counters", name, dict(labels), len(key), self._count,
                )  # fmt: skip
            return 0
        first = self._used
        at = HEADER_SIZE + self._count * DESCRIPTOR_SIZE
        mm = self._mm
        _DESCRIPTOR.pack_into(mm, at, kind, unit, first, len(bounds), len(key))
        mm[at + KEY_OFFSET : at + KEY_OFFSET + len(key)] = key
        if bounds:
            struct.pack_into(f"<{len(bounds)}q", mm, at + BOUNDS_OFFSET, *bounds)
        self._used += need
        self._count += 1
        self._header[W_USED] = self._used
        self._header[W_COUNT] = self._count  # publishes the descriptor (see the module docstring)
        return first

    # -- the owner's loop -----------------------------------------------------------------------

    def heartbeat(self, now_ns: int | None = None) -> None:
        """Tell readers the owner is alive (from its loop, not per update)."""
        self._header[W_HEARTBEAT] = time.time_ns() if now_ns is None else now_ns

    def close(self) -> None:
        """Mark the file stopped; its values stay readable.

        The mapping is left to the garbage collector, so a late update or the final status line
        (both read and write the slots) never meets an unmapped file.
        """
        self._header[W_HEARTBEAT] = time.time_ns()
        self._header[W_STATE] = State.STOPPED


class Family(MutableMapping[str, int]):
    """One metric with one varying label, as a dict: ``family["open"] += 1``.

    Keys are allocated on first store; reading a missing key gives 0 without allocating (like
    `collections.Counter`). Deleting is not supported. For the hot path, resolve `slot` once and
    update ``file.words[slot]`` directly.

    Args:
        file: the counters file.
        name: the metric name (``consolidator_..._total`` for counters).
        label: the varying label's name.
        keys: label values allocated at once (exported as 0 before their first update).
        const: labels every key carries (e.g. the venue).
    """

    def __init__(
        self,
        file: CountersFile,
        name: str,
        label: str,
        *,
        kind: Kind = Kind.COUNTER,
        unit: Unit = Unit.PLAIN,
        keys: Sequence[str] = (),
        const: Labels = (),
    ) -> None:
        self._file = file
        self._words = file.words
        self.name = name
        self._label = label
        self._kind = kind
        self._unit = unit
        self._const = const
        self._slots: dict[str, int] = {}
        for key in keys:
            self.slot(key)

    def slot(self, key: str) -> int:
        """The value slot of ``key`` (allocated on first use)."""
        index = self._slots.get(key)
        if index is None:
            labels = (*self._const, (self._label, key))
            index = self._slots[key] = self._file.slot(self.name, labels, self._kind, self._unit)
        return index

    def __getitem__(self, key: str) -> int:
        index = self._slots.get(key)
        if index is None:
            return 0
        value: int = self._words[index]
        return value

    def __setitem__(self, key: str, value: int) -> None:
        self._words[self.slot(key)] = value

    def setdefault(self, key: str, default: int = 0) -> int:
        """Allocate ``key`` (with ``default``) unless it is there; its value."""
        if key not in self._slots:
            self[key] = default
        return self[key]

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"{self.name}: shared-memory counters cannot be deleted")

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def __iter__(self) -> Iterator[str]:
        return iter(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __repr__(self) -> str:
        return f"Family({self.name!r}, {dict(self)!r})"


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric and label set, as read.

    Attributes:
        value: a counter's or gauge's value; a histogram's count.
        buckets: histograms: observations per bucket (not cumulative; the last is +Inf).
        bounds: histograms: the buckets' upper bounds.
        sum: histograms: the sum of the observations.
    """

    name: str
    kind: Kind
    unit: Unit
    labels: Labels
    value: int
    buckets: tuple[int, ...] = ()
    bounds: tuple[int, ...] = ()
    sum: int = 0


@dataclass(frozen=True)
class CountersSnapshot:
    """A counters file, as read."""

    path: Path
    service: str
    feed: str
    pid: int
    pid_start_ticks: int
    start_ns: int
    heartbeat_ns: int
    state: State
    metrics: tuple[Metric, ...]

    def alive(self) -> bool:
        """The owner is live and still the same process (pid and start time)."""
        return (
            self.state is State.LIVE
            and self.pid_start_ticks != 0
            and process_start_ticks(self.pid) == self.pid_start_ticks
        )

    def value(self, name: str, **labels: str) -> int:
        """The value of ``name`` with exactly ``labels`` (0 if it was never allocated)."""
        want = sorted(labels.items())
        for metric in self.metrics:
            if metric.name == name and sorted(metric.labels) == want:
                return metric.value
        return 0

    def family(self, name: str) -> list[Metric]:
        """Every label set of ``name``."""
        return [m for m in self.metrics if m.name == name]


def read_counters(shm_dir: Path, feed: str, service: str = "writer") -> CountersSnapshot | None:
    """The counters of ``feed`` kept by ``service`` (see `FILE_NAMES`); None if there are none."""
    return read_counters_file(shm_dir / feed / FILE_NAMES[service])


def read_counters_file(path: Path) -> CountersSnapshot | None:
    """A counters file, or None if it does not exist or is not (yet) a readable counters file."""
    try:
        mm = map_readonly(path, HEADER_SIZE)
    except OSError:
        return None
    if mm is None:
        return None
    with mm:
        return _parse(path, mm, len(mm))


def _parse(path: Path, mm: mmap.mmap, size: int) -> CountersSnapshot | None:
    with memoryview(mm)[:HEADER_SIZE].cast("q") as header:
        if header[W_MAGIC] != MAGIC:
            return None
        version, header_size, descriptor_size, capacity, value_words = _STATIC.unpack_from(mm, 8)
        values_offset = HEADER_SIZE + capacity * DESCRIPTOR_SIZE
        sizes = (header_size, descriptor_size, values_offset + 8 * value_words)
        if version != COUNTERS_VERSION or sizes[:2] != (HEADER_SIZE, DESCRIPTOR_SIZE):
            return None
        if size < sizes[2]:
            return None
        count = min(int(header[W_COUNT]), capacity)
        pid, start_ticks, start_ns = header[W_PID], header[W_PID_START], header[W_START]
        heartbeat, state_word = header[W_HEARTBEAT], header[W_STATE]
    service, feed = (b.rstrip(b"\0").decode("utf-8", "replace") for b in _NAMES.unpack_from(mm, 64))
    descriptors = [_descriptor(mm, HEADER_SIZE + i * DESCRIPTOR_SIZE) for i in range(count)]
    with memoryview(mm)[values_offset : values_offset + 8 * value_words].cast("q") as words:
        read = [_metric(d, words) for d in descriptors if d is not None]
    metrics = tuple(m for m in read if m is not None)
    try:
        state = State(state_word)
    except ValueError:
        state = State.NONE
    return CountersSnapshot(
        path, service, feed, pid, start_ticks, start_ns, heartbeat, state, metrics
    )


@dataclass(frozen=True)
class _Descriptor:
    name: str
    labels: Labels
    kind: Kind
    unit: Unit
    first_word: int
    bounds: tuple[int, ...]


def _descriptor(mm: mmap.mmap, at: int) -> _Descriptor | None:
    kind, unit, first, buckets, key_length = _DESCRIPTOR.unpack_from(mm, at)
    try:
        kind, unit = Kind(kind), Unit(unit)
    except ValueError:
        return None
    if buckets > MAX_BUCKETS or key_length > KEY_BYTES:
        return None
    name, labels = _parse_key(mm[at + KEY_OFFSET : at + KEY_OFFSET + key_length])
    bounds = struct.unpack_from(f"<{buckets}q", mm, at + BOUNDS_OFFSET) if buckets else ()
    return _Descriptor(name, labels, kind, unit, first, tuple(bounds))


def _metric(d: _Descriptor, words: memoryview) -> Metric | None:
    need = len(d.bounds) + 2 if d.kind is Kind.HISTOGRAM else 1
    if not 0 < d.first_word <= len(words) - need:
        return None
    if d.kind is not Kind.HISTOGRAM:
        value: int = words[d.first_word]
        return Metric(d.name, d.kind, d.unit, d.labels, value)
    n = len(d.bounds) + 1
    values: list[int] = words[d.first_word : d.first_word + n + 1].tolist()
    buckets = tuple(values[:n])
    return Metric(d.name, d.kind, d.unit, d.labels, sum(buckets), buckets, d.bounds, values[n])
