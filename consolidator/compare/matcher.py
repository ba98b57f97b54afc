"""Exact matching of two sides by the venue's ids, while both run.

Side `REF` is the reference (a live reference connection, or the ``--against`` feed), side
`RING` the feed under test. Records are matched per (stream, symbol) lane by key (`model.Rec`):

- both sides have the key: **matched** when every compared value and ``ts_event`` agree,
  else **mismatched**;
- only the reference has it: **missing** from the ring, unless the ring replaced it by a snapshot
  (a depth diff between the last diff the ring published and the id of its next snapshot, and
  not inside a gap the ring declared): **resynced**;
- only the ring has it: **extra**, unless the reference could not have seen it (its disconnects,
  the holes in its own id sequence, or, against another feed, that feed's declared gaps and
  snapshots): **not_seen_by_reference**;
- the ring has it twice: **duplicates** (the reference's own repeats are counted apart);
- the comparator itself was lapped on the ring there (`Matcher.lost`): **unchecked**.

Only the overlap counts: a lane starts at the later of the two sides' first keys; a record is
classified once it is older than ``grace`` (still in flight until then) and the other side has
moved past its id (so a side read late is not mistaken for a side that lost records), and at the
end records younger than ``grace``, or beyond the other side's progress, are left out
(``in_flight``). A record classified missing or extra whose
counterpart arrives later after all becomes a (late) match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from consolidator.compare.latency import Samples
from consolidator.compare.model import COMPARED, STREAMS, Rec, pair_text

__all__ = ["MAX_IDS", "REF", "RING", "Lane", "Matcher", "StreamCounts"]

REF: Final = 0
RING: Final = 1
MAX_IDS: Final = 10_000
MAX_DETAILS: Final = 100
MAX_FINALIZED: Final = 1 << 20
MAX_DONE: Final = 1 << 20

PairHook = Callable[[str, str, Rec, Rec, bool], None]
RecordHook = Callable[[int, str, str, Rec], None]
Classified = Callable[[str, str, str, int, Rec], None]


@dataclass
class StreamCounts:
    """Per-stream outcome counts and the ids behind the failures."""

    reference: int = 0
    ring: int = 0
    matched: int = 0
    missing: int = 0
    extra: int = 0
    mismatched: int = 0
    duplicates: int = 0
    resynced: int = 0
    not_seen_by_reference: int = 0
    before_overlap: int = 0
    in_flight: int = 0
    unchecked: int = 0
    late: int = 0
    reference_duplicates: int = 0
    missing_ids: list[list[Any]] = field(default_factory=list)
    extra_ids: list[list[Any]] = field(default_factory=list)
    mismatched_ids: list[list[Any]] = field(default_factory=list)
    duplicate_ids: list[list[Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)


_KIND_LIST: Final = {"missing": "missing_ids", "extra": "extra_ids"}


class Lane:
    """The matching state of one (stream, symbol)."""

    __slots__ = (
        "blind",
        "blind_open",
        "counts",
        "covers",
        "done",
        "finalized",
        "first",
        "holes",
        "last",
        "last_diff",
        "open_hole",
        "pending",
        "stream",
        "symbol",
    )

    def __init__(self, stream: str, symbol: str, counts: StreamCounts) -> None:
        self.stream = stream
        self.symbol = symbol
        self.counts = counts
        self.pending: tuple[dict[int, Rec], dict[int, Rec]] = ({}, {})
        self.first: list[int | None] = [None, None]
        self.last = [-1, -1]
        self.last_diff = [-1, -1]
        self.holes: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        self.open_hole: list[int | None] = [None, None]
        self.covers: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        self.blind: list[tuple[int, int]] = []
        self.blind_open: int | None = None
        self.done: set[int] = set()
        self.finalized: dict[int, tuple[int, str, Rec]] = {}

    def start(self) -> int | None:
        """The first key of the overlap, once known (the later of the two sides' first keys)."""
        first_ref, first_ring = self.first
        if first_ref is None or first_ring is None:
            return None
        return max(first_ref, first_ring)

    def in_hole(self, side: int, rec: Rec) -> bool:
        """Whether ``side`` declared (or was seen) not to have the ids of ``rec``."""
        lo_open = self.open_hole[side]
        if lo_open is not None and rec.key >= lo_open:
            return True
        return any(lo <= rec.key and rec.first <= hi for lo, hi in self.holes[side])

    def unchecked(self, rec: Rec) -> bool:
        """Whether the comparator itself lost the ring's records around ``rec`` (lapped)."""
        if self.blind_open is not None and rec.key >= self.blind_open:
            return True
        return any(lo <= rec.key and rec.first <= hi for lo, hi in self.blind)

    def covered(self, side: int, rec: Rec) -> bool:
        """Whether ``side`` replaced ``rec`` by a snapshot (its id lies in a resync window)."""
        return any(prev < rec.key <= snap for prev, snap in self.covers[side])


class Matcher:
    """Matches records of the two sides; see the module docstring.

    Args:
        grace_ns: how long a record may wait for its counterpart before it is classified.
        streams: the streams compared.
        ref_sequenced: the reference's ids have no holes of their own (a live Binance
            reference: trade ids consecutive per symbol, depth chained): a hole there is the
            reference's gap, and the ring's records in it are not blamed.
    """

    def __init__(
        self, grace_ns: int, streams: Iterable[str] = STREAMS, *, ref_sequenced: bool = False
    ) -> None:
        self.grace_ns = grace_ns
        self.streams = tuple(streams)
        self.counts = {stream: StreamCounts() for stream in self.streams}
        self.lanes: dict[tuple[str, str], Lane] = {}
        self.ref_sequenced = ref_sequenced
        self.reference_gaps: list[dict[str, Any]] = []
        self.ring_minus_reference = Samples(timed=True)
        self.exchange_to_ring = Samples()
        self.exchange_to_reference = Samples()
        self.receive_to_commit = Samples()
        self.on_pair: PairHook | None = None
        self.on_record: RecordHook | None = None
        self.on_classified: Classified | None = None
        self.records = [0, 0]
        self.first_recv: list[int | None] = [None, None]

    def lane(self, stream: str, symbol: str) -> Lane:
        """The lane of (stream, symbol), made on first use."""
        lane = self.lanes.get((stream, symbol))
        if lane is None:
            lane = self.lanes[(stream, symbol)] = Lane(stream, symbol, self.counts[stream])
        return lane

    # -- input -----------------------------------------------------------------------------

    def add(self, side: int, stream: str, symbol: str, rec: Rec) -> None:
        """One record of ``side``."""
        lane = self.lanes.get((stream, symbol)) or self.lane(stream, symbol)
        key = rec.key
        self.records[side] += 1
        if self.first_recv[side] is None:
            self.first_recv[side] = rec.ts_recv
        if self.on_record is not None:
            self.on_record(side, stream, symbol, rec)
        if side == RING and rec.ts_commit:
            self.receive_to_commit.add(rec.ts_commit - rec.ts_recv)
        if lane.first[side] is None:
            lane.first[side] = key
        if side == RING and lane.blind_open is not None:
            if rec.first > lane.blind_open:
                lane.blind.append((lane.blind_open, rec.first - 1))
            lane.blind_open = None
        lo_open = lane.open_hole[side]
        if lo_open is not None:
            if rec.first > lo_open:
                lane.holes[side].append((lo_open, rec.first - 1))
            lane.open_hole[side] = None
        elif side == REF and self.ref_sequenced:
            self._sequence(lane, rec)
        lane.last[side] = max(key, lane.last[side])
        if stream == "depth" and key > lane.last_diff[side]:
            lane.last_diff[side] = key
        own = lane.pending[side]
        seen = lane.finalized.get(key)
        if key in own or key in lane.done or (seen is not None and seen[0] == side):
            counts = lane.counts
            if side == RING:
                counts.duplicates += 1
                if len(counts.duplicate_ids) < MAX_IDS:
                    counts.duplicate_ids.append([symbol, key])
            else:
                counts.reference_duplicates += 1
            return
        mate = lane.pending[1 - side].pop(key, None)
        if mate is None and seen is not None:
            del lane.finalized[key]
            self._unclassify(lane, seen[1], seen[2], key)
            lane.counts.late += 1
            mate = seen[2]
        if mate is None:
            own[key] = rec
            return
        if side == REF:
            self._pair(lane, rec, mate)
        else:
            self._pair(lane, mate, rec)

    def _sequence(self, lane: Lane, rec: Rec) -> None:
        """Holes in the reference's own id sequence (its gaps, not the ring's)."""
        last = lane.last[REF]
        if last < 0:
            return
        if lane.stream == "trades":
            lo, hi = last + 1, rec.key - 1
        elif lane.stream == "depth":
            prev = rec.values[1]
            if isinstance(prev, int):
                lo, hi = last + 1, prev
            else:
                lo, hi = last + 1, rec.first - 1
        else:
            return
        if hi >= lo:
            lane.holes[REF].append((lo, hi))
            self.reference_gaps.append(
                {"kind": "sequence", "stream": lane.stream, "symbol": lane.symbol,
                 "from_id": lo, "to_id": hi, "ts_recv": rec.ts_recv}
            )  # fmt: skip

    def _pair(self, lane: Lane, ref: Rec, ring: Rec) -> None:
        key = ref.key
        done = lane.done
        done.add(key)
        if len(done) > MAX_DONE:
            keep = sorted(done)[len(done) // 2 :]
            done.clear()
            done.update(keep)
        counts = lane.counts
        counts.reference += 1
        counts.ring += 1
        same = ref.values == ring.values and ref.ts_event == ring.ts_event
        if same:
            counts.matched += 1
        else:
            counts.mismatched += 1
            if len(counts.mismatched_ids) < MAX_IDS:
                counts.mismatched_ids.append([lane.symbol, key])
            if len(counts.mismatches) < MAX_DETAILS:
                counts.mismatches.append(_difference(lane, ref, ring))
        offset = ring.ts_recv - ref.ts_recv
        self.ring_minus_reference.add(offset, ref.ts_recv)
        if ring.ts_event:
            self.exchange_to_ring.add(ring.ts_recv - ring.ts_event)
        if ref.ts_event:
            self.exchange_to_reference.add(ref.ts_recv - ref.ts_event)
        if self.on_pair is not None:
            self.on_pair(lane.stream, lane.symbol, ref, ring, same)

    # -- what a side did not see -------------------------------------------------------------

    def hole(self, side: int, stream: str, symbol: str, lo: int, hi: int | None) -> None:
        """``side`` did not see ids ``lo..hi`` (``hi`` None: from ``lo`` until its next record
        or snapshot)."""
        lane = self.lane(stream, symbol)
        if hi is None:
            if lane.open_hole[side] is None:
                lane.open_hole[side] = lo
        elif hi >= lo:
            lane.holes[side].append((lo, hi))

    def disconnected(self, side: int, lanes: Iterable[tuple[str, str]]) -> None:
        """``side`` lost its connection carrying ``lanes``: open a hole after each one's last id."""
        for stream, symbol in lanes:
            lane = self.lane(stream, symbol)
            if lane.last[side] >= 0 and lane.open_hole[side] is None:
                lane.open_hole[side] = lane.last[side] + 1

    def lost(self, stream: str) -> None:
        """The comparator was lapped on the ring's ``stream``: its records up to the next one
        read are unknown here, so nothing there is judged (``unchecked``)."""
        for lane in self.lanes.values():
            if lane.stream == stream and lane.blind_open is None:
                lane.blind_open = lane.last[RING] + 1

    def snapshot(self, side: int, stream: str, symbol: str, snapshot_id: int) -> None:
        """``side`` published a book snapshot at ``snapshot_id``: it stands for the diffs since
        the last one it published."""
        lane = self.lane(stream, symbol)
        if lane.first[side] is None:
            lane.first[side] = snapshot_id + 1
        lo_open = lane.open_hole[side]
        if lo_open is not None:
            lane.holes[side].append((lo_open, snapshot_id))
            lane.open_hole[side] = None
        if snapshot_id > lane.last_diff[side]:
            lane.covers[side].append((lane.last_diff[side], snapshot_id))
            lane.last_diff[side] = snapshot_id
        lane.last[side] = max(lane.last[side], snapshot_id)

    # -- classification ----------------------------------------------------------------------

    def sweep(self, now_ns: int, *, final: bool = False, ring_current: bool = True) -> None:
        """Classify records older than the grace window (``final``: all of them; the younger
        ones are left out as in flight).

        A side may lag (the comparator reads its socket or ring late): a ring record counts as
        extra only once the reference has passed its id in that lane, and a reference record as
        missing only once the ring has passed its id or the ring was read to its end
        (``ring_current``). What is left at the end is in flight."""
        horizon = now_ns - self.grace_ns
        for lane in self.lanes.values():
            start = lane.start()
            if start is None:
                if not final:
                    continue
                known = [f for f in lane.first if f is not None]
                start = max(known) if known else 0
            for side in (REF, RING):
                own = lane.pending[side]
                if not own:
                    continue
                # Pending records are in arrival order (receive times and ids rising): the
                # ripe ones are a prefix, so stop at the first that is not.
                passed = lane.last[REF] if side == RING else lane.last[RING]
                if side == REF and ring_current:
                    passed = 1 << 63
                old = []
                for key, rec in own.items():
                    if rec.ts_recv >= horizon or key >= passed:
                        break
                    old.append(key)
                for key in old:
                    self._classify(lane, side, own.pop(key), start)
                if final:
                    lane.counts.in_flight += len(own)
                    own.clear()

    def _classify(self, lane: Lane, side: int, rec: Rec, start: int) -> None:
        counts = lane.counts
        if rec.key < start:
            counts.before_overlap += 1
            return
        if lane.unchecked(rec):
            counts.unchecked += 1
            return
        if side == REF:
            counts.reference += 1
            if not lane.in_hole(RING, rec) and lane.covered(RING, rec):
                kind = "resynced"
                counts.resynced += 1
            else:
                kind = "missing"
                counts.missing += 1
        else:
            counts.ring += 1
            if lane.in_hole(REF, rec) or lane.covered(REF, rec):
                kind = "not_seen_by_reference"
                counts.not_seen_by_reference += 1
            else:
                kind = "extra"
                counts.extra += 1
        ids = _KIND_LIST.get(kind)
        if ids is not None:
            listed = getattr(counts, ids)
            if len(listed) < MAX_IDS:
                listed.append([lane.symbol, rec.key])
        if len(lane.finalized) < MAX_FINALIZED:
            lane.finalized[rec.key] = (side, kind, rec)
        if self.on_classified is not None:
            self.on_classified(lane.stream, lane.symbol, kind, side, rec)

    def _unclassify(self, lane: Lane, kind: str, rec: Rec, key: int) -> None:
        counts = lane.counts
        setattr(counts, kind, getattr(counts, kind) - 1)
        if kind in ("missing", "resynced"):
            counts.reference -= 1
        else:
            counts.ring -= 1
        ids = _KIND_LIST.get(kind)
        if ids is not None:
            listed = getattr(counts, ids)
            entry = [lane.symbol, key]
            if entry in listed:
                listed.remove(entry)
        if self.on_classified is not None:
            self.on_classified(lane.stream, lane.symbol, "late", -1, rec)

    # -- state -------------------------------------------------------------------------------

    def failed(self) -> bool:
        """Anything missing, mismatched or duplicated."""
        return any(c.missing or c.mismatched or c.duplicates for c in self.counts.values())

    def pending(self) -> int:
        """Records waiting for their counterpart."""
        return sum(len(lane.pending[0]) + len(lane.pending[1]) for lane in self.lanes.values())


def _difference(lane: Lane, ref: Rec, ring: Rec) -> dict[str, Any]:
    """Which fields of a mismatched pair differ, both values as text."""
    names = ("ts_event", *COMPARED[lane.stream])
    ref_values = (ref.ts_event, *ref.values)
    ring_values = (ring.ts_event, *ring.values)
    fields = {
        name: {"reference": _text(a), "ring": _text(b)}
        for name, a, b in zip(names, ref_values, ring_values, strict=True)
        if a != b
    }
    return {"symbol": lane.symbol, "id": ref.key, "fields": fields}


def _text(value: object) -> object:
    """A compared value for the report: pairs as decimal text, levels as lists."""
    if isinstance(value, tuple):
        if len(value) == 2 and all(type(v) is int for v in value):
            return pair_text(value)
        return [_text(v) for v in value]
    return value
