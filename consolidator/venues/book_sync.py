"""Per-symbol order-book synchronization: snapshot + diff sequencing, venue-neutral.

The writer does not keep books; it only decides which diffs may be published so that a reader
that starts from the published snapshot and applies the published diffs in order holds the
venue's book. One `BookSync` per symbol; a gap resynchronizes that symbol only.

Venue rules plug in as a `ContinuityRule` over the ids of `payloads.Depth` (``first_update_id``,
``last_update_id``, ``prev_update_id``):

* `UpdateIdRule`: Binance spot (PROTOCOLS.md 1.5, wording of 2025-11-12): snapshot too old if
  ``lastUpdateId < U`` of the first buffered diff; then drop ``u <= local``; a diff with
  ``U > local + 1`` is a gap.
* `FuturesRule`: Binance USD-M (PROTOCOLS.md 2.4): drop ``u < lastUpdateId``; the first diff
  applied must have ``U <= lastUpdateId <= u``; afterwards ``pu`` must equal the previous ``u``.
* `ChainRule`: a plain previous-id chain (each diff's ``prev_update_id`` equals the previous
  ``last_update_id``, the snapshot's id included): the shape of Deribit's change_id /
  prev_change_id, whose snapshots arrive in band (construct `BookSync` with
  ``in_band_snapshots=True`` and a ``request_snapshot`` that resubscribes).

On every connection a stream is gapless and ordered, so a diff whose ``last_update_id`` is not
above the last one published (or buffered) is a duplicate from an overlapping connection or stale:
it is dropped and counted. That is the official "u < local: ignore" test, made strict: ``u ==
local`` can only be the same diff again.

State table (``out`` receives the outputs; "request" is ``request_snapshot()``)::

    state      input                               outputs                               next
    ---------  ----------------------------------  ------------------------------------  ---------
    IDLE       diff                                request (diff buffered)               BUFFERING
    BUFFERING  diff, u <= last buffered u          Dropped stale_depth                   BUFFERING
    BUFFERING  diff, buffer full                   Dropped depth_buffer_overflow (oldest)
                                                   + once per attempt: RESYNC, request   BUFFERING
    BUFFERING  snapshot too old (rule)             Dropped snapshot_too_old, request     BUFFERING
    BUFFERING  snapshot, first kept diff joins     snapshot Depth, BOOK_SYNCED, the
                                                   buffered diffs that apply, in order   SYNCED
    BUFFERING  snapshot, buffer all older          snapshot Depth, BOOK_SYNCED           SYNCED*
    BUFFERING  snapshot, first kept diff REFETCH   Dropped snapshot_unusable, request    BUFFERING
    BUFFERING  snapshot, first kept diff GAP       GAP, RESYNC, request                  BUFFERING
    BUFFERING  snapshot failed / unparsable        request                               BUFFERING
    SYNCED     diff applies                        the diff                              SYNCED
    SYNCED     diff stale                          Dropped stale_depth                   SYNCED
    SYNCED     diff GAP                            GAP, RESYNC, request (diff buffered)  BUFFERING
    SYNCED*    diff cannot join (REFETCH)          RESYNC, request (diff buffered)       BUFFERING
    any        reset (connection lost)             GAP, RESYNC (none from IDLE)          IDLE
    IDLE, SYNCED  snapshot (REST venues)           Dropped unexpected_snapshot           same

``SYNCED*`` is SYNCED before the first diff after the snapshot has joined (the rule's ``join``
decides that diff, ``follow`` the later ones). With ``in_band_snapshots`` a snapshot is taken in
every state and restarts the book from it.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from consolidator.payloads import Depth
from consolidator.records import EventKind
from consolidator.venues.base import Dropped, Output, VenueUsageError, make_event

__all__ = [
    "APPLY",
    "GAP",
    "REFETCH",
    "STALE",
    "BookSync",
    "ChainRule",
    "ContinuityRule",
    "FuturesRule",
    "SyncState",
    "UpdateIdRule",
]

STALE: Final = 0
"""Verdict: the diff is older than the book (or a duplicate): drop it."""
APPLY: Final = 1
"""Verdict: the diff continues the book: publish it."""
GAP: Final = 2
"""Verdict: diffs were missed: resynchronize this symbol."""
REFETCH: Final = 3
"""Verdict (``join`` only): this snapshot cannot be joined to the diffs: fetch another."""

_STALE_DEPTH: Final = Dropped("stale_depth", 1)
_OVERFLOW: Final = Dropped("depth_buffer_overflow", 1)
_SNAPSHOT_TOO_OLD: Final = Dropped("snapshot_too_old", 1)
_SNAPSHOT_UNUSABLE: Final = Dropped("snapshot_unusable", 1)
_UNEXPECTED_SNAPSHOT: Final = Dropped("unexpected_snapshot", 1)


class SyncState(enum.IntEnum):
    """Where a symbol's book stands."""

    IDLE = 0
    BUFFERING = 1
    SYNCED = 2


class ContinuityRule(Protocol):
    """How a venue's update ids chain: the pluggable part of `BookSync`."""

    name: str

    def snapshot_too_old(self, snapshot_id: int, first: Depth) -> bool:
        """True if a snapshot with ``snapshot_id`` predates ``first``, the oldest buffered diff."""
        ...

    def join(self, snapshot_id: int, diff: Depth) -> int:
        """Verdict (STALE, APPLY, GAP or REFETCH) for the first diff after the snapshot."""
        ...

    def follow(self, local: int, diff: Depth) -> int:
        """Verdict (STALE, APPLY or GAP) for a diff once the book is at ``local``."""
        ...

    def gap_detail(self, local: int, diff: Depth) -> dict[str, object]:
        """The expected and received ids, for the GAP event."""
        ...


class UpdateIdRule:
    """Binance spot: ``U``/``u`` ranges, the next diff must start at or below ``local + 1``."""

    __slots__ = ()
    name = "U/u"

    def snapshot_too_old(self, snapshot_id: int, first: Depth) -> bool:
        """Step 4 of the procedure: ``lastUpdateId`` strictly below the first buffered ``U``."""
        return snapshot_id < first.first_update_id

    def join(self, snapshot_id: int, diff: Depth) -> int:
        """Step 5 then the update procedure, with the book at ``lastUpdateId``."""
        return self.follow(snapshot_id, diff)

    def follow(self, local: int, diff: Depth) -> int:
        """``u <= local``: stale; ``U > local + 1``: gap; otherwise apply."""
        if diff.last_update_id <= local:
            return STALE
        if diff.first_update_id > local + 1:
            return GAP
        return APPLY

    def gap_detail(self, local: int, diff: Depth) -> dict[str, object]:
        """Expected ``U <= local + 1``."""
        return {
            "rule": self.name,
            "expected": local + 1,
            "got": diff.first_update_id,
            "first_update_id": diff.first_update_id,
            "last_update_id": diff.last_update_id,
        }


class ChainRule:
    """A previous-id chain: each diff's ``prev_update_id`` is the last id of the book before it."""

    __slots__ = ()
    name = "prev"

    def snapshot_too_old(self, snapshot_id: int, first: Depth) -> bool:
        """Never decided up front: ``join`` sees whether the chain continues from the snapshot."""
        return False

    def join(self, snapshot_id: int, diff: Depth) -> int:
        """The snapshot's id is the first link of the chain."""
        return self.follow(snapshot_id, diff)

    def follow(self, local: int, diff: Depth) -> int:
        """``last <= local``: stale; ``prev != local``: gap; otherwise apply."""
        if diff.last_update_id <= local:
            return STALE
        if diff.prev_update_id != local:
            return GAP
        return APPLY

    def gap_detail(self, local: int, diff: Depth) -> dict[str, object]:
        """Expected ``prev == local``."""
        return {
            "rule": self.name,
            "expected": local,
            "got": diff.prev_update_id,
            "first_update_id": diff.first_update_id,
            "last_update_id": diff.last_update_id,
        }


class FuturesRule(ChainRule):
    """Binance USD-M: the first diff spans ``lastUpdateId``, then ``pu`` is the previous ``u``."""

    __slots__ = ()
    name = "pu"

    def join(self, snapshot_id: int, diff: Depth) -> int:
        """Drop ``u < lastUpdateId``; apply if ``U <= lastUpdateId <= u``; else refetch."""
        if diff.last_update_id < snapshot_id:
            return STALE
        if diff.first_update_id <= snapshot_id:
            return APPLY
        return REFETCH


class BookSync:
    """The sync state machine of one symbol's book (see the module's state table).

    Feed it the symbol's diffs in arrival order (from any connection) and its snapshots; it
    appends what to publish and what to request to the ``out`` list of each call.
    """

    __slots__ = (
        "_attempts",
        "_buffer",
        "_in_band",
        "_joined",
        "_local",
        "_max_buffered",
        "_overflowed",
        "_request",
        "_rule",
        "_state",
        "symbol",
        "symbol_id",
    )

    def __init__(
        self,
        symbol: str,
        symbol_id: int,
        rule: ContinuityRule,
        request_snapshot: Callable[[], Sequence[Output]],
        *,
        max_buffered: int = 1000,
        in_band_snapshots: bool = False,
    ) -> None:
        """Start IDLE.

        Args:
            symbol: the venue's symbol name (for the caller's bookkeeping).
            symbol_id: the id the symbol's events carry.
            rule: the venue's continuity rule.
            request_snapshot: the outputs that ask for a fresh snapshot of this symbol.
            max_buffered: how many diffs to hold while waiting for a snapshot; beyond it the
                oldest are dropped (a late snapshot is then judged against the newest ones).
            in_band_snapshots: snapshots arrive on the stream unrequested (Deribit): accept
                them in every state.
        """
        if max_buffered < 1:
            raise VenueUsageError("max_buffered must be at least 1")
        self.symbol = symbol
        self.symbol_id = symbol_id
        self._rule = rule
        self._request = request_snapshot
        self._max_buffered = max_buffered
        self._in_band = in_band_snapshots
        self._state = SyncState.IDLE
        self._buffer: deque[Depth] = deque()
        self._local = 0
        self._joined = False
        self._overflowed = False
        self._attempts = 0

    @property
    def state(self) -> SyncState:
        """The current state."""
        return self._state

    @property
    def local_update_id(self) -> int | None:
        """The id of the last published snapshot or diff while SYNCED, else None."""
        return self._local if self._state is SyncState.SYNCED else None

    @property
    def buffered(self) -> int:
        """How many diffs wait for a snapshot."""
        return len(self._buffer)

    @property
    def last_id(self) -> int | None:
        """The ``last_update_id`` the symbol's diffs have reached: the book's while SYNCED, the
        newest buffered diff's while BUFFERING; None when there is none (IDLE, empty buffer)."""
        if self._state is SyncState.SYNCED:
            return self._local
        buffer = self._buffer
        return buffer[-1].last_update_id if buffer else None

    @property
    def stale_up_to(self) -> int:
        """A diff whose ``last_update_id`` is at or below this is dropped as stale whatever else
        it holds (-1 when no id is known to be: IDLE, or SYNCED before a diff joined the
        snapshot, which the rule decides)."""
        if self._state is SyncState.SYNCED:
            return self._local if self._joined else -1
        buffer = self._buffer
        return buffer[-1].last_update_id if buffer else -1

    def on_diff(self, diff: Depth, out: list[Output]) -> bool:
        """Take one diff; publish it, buffer it, drop it or resynchronize.

        Returns False when it was dropped as stale (an earlier copy of it, or of a later diff,
        was taken), True otherwise.
        """
        state = self._state
        if state is SyncState.SYNCED:
            return self._take(diff, (diff,), out) != STALE
        if state is SyncState.BUFFERING:
            buffer = self._buffer
            if buffer and diff.last_update_id <= buffer[-1].last_update_id:
                out.append(_STALE_DEPTH)
                return False
            if len(buffer) >= self._max_buffered:
                buffer.popleft()
                out.append(_OVERFLOW)
                if not self._overflowed:
                    self._overflowed = True
                    detail = {"reason": "buffer_overflow", "max_buffered": self._max_buffered}
                    out.append(make_event(EventKind.RESYNC, detail, self.symbol_id, diff.ts_event))
                    out.extend(self._request())
            buffer.append(diff)
        else:
            self._restart((diff,), out)
        return True

    def on_snapshot(self, snapshot: Depth, out: list[Output]) -> None:
        """Take a snapshot (``last_update_id`` is the venue's id of the book it shows)."""
        if self._state is not SyncState.BUFFERING and not self._in_band:
            out.append(_UNEXPECTED_SNAPSHOT)
            return
        rule = self._rule
        buffer = self._buffer
        snapshot_id = snapshot.last_update_id
        if buffer and rule.snapshot_too_old(snapshot_id, buffer[0]):
            out.append(_SNAPSHOT_TOO_OLD)
            self._ask(out)
            return
        stale = 0
        while buffer and rule.join(snapshot_id, buffer[0]) == STALE:
            buffer.popleft()
            stale += 1
        if stale:
            out.append(Dropped("depth_before_snapshot", stale))
        if buffer:
            verdict = rule.join(snapshot_id, buffer[0])
            if verdict == REFETCH:
                out.append(_SNAPSHOT_UNUSABLE)
                self._ask(out)
                return
            if verdict == GAP:
                first = buffer[0]
                self._gap_events(snapshot_id, first, out)
                self._restart(tuple(buffer), out)
                return
        pending = tuple(buffer)
        buffer.clear()
        out.append(snapshot)
        detail = {
            "last_update_id": snapshot_id,
            "attempts": self._attempts,
            "buffered": len(pending),
        }
        out.append(make_event(EventKind.BOOK_SYNCED, detail, self.symbol_id, snapshot.ts_event))
        self._state = SyncState.SYNCED
        self._local = snapshot_id
        self._joined = False
        self._overflowed = False
        self._attempts = 0
        for index, diff in enumerate(pending):
            if self._take(diff, pending[index:], out) >= GAP:
                return

    def on_snapshot_failed(self, out: list[Output]) -> None:
        """The requested snapshot did not come (or did not parse): ask again while waiting."""
        if self._state is SyncState.BUFFERING:
            self._ask(out)

    def reset(self, reason: str, ts_event: int, out: list[Output]) -> None:
        """Forget the book because updates were lost outside the stream (e.g. a disconnect).

        Emits GAP and RESYNC unless IDLE; the next diff starts a new sync.
        """
        if self._state is SyncState.IDLE:
            return
        detail: dict[str, object] = {"reason": reason}
        if self._state is SyncState.SYNCED:
            detail["last_update_id"] = self._local
        out.append(make_event(EventKind.GAP, detail, self.symbol_id, ts_event))
        out.append(make_event(EventKind.RESYNC, {"reason": reason}, self.symbol_id, ts_event))
        self._buffer.clear()
        self._state = SyncState.IDLE
        self._overflowed = False
        self._attempts = 0

    def _take(self, diff: Depth, rest: tuple[Depth, ...], out: list[Output]) -> int:
        """One diff while SYNCED: joined to the snapshot (the first) or following the book.

        Returns the verdict; GAP or REFETCH mean it resynchronized instead: ``rest`` (this diff
        and any after it) waits in the buffer for the next snapshot.
        """
        rule = self._rule
        verdict = rule.follow(self._local, diff) if self._joined else rule.join(self._local, diff)
        if verdict == APPLY:
            self._local = diff.last_update_id
            self._joined = True
            out.append(diff)
        elif verdict == STALE:
            out.append(_STALE_DEPTH)
        elif verdict == GAP:
            self._gap(diff, rest, out)
        else:
            self._resync("snapshot_unjoinable", diff.ts_event, rest, out)
        return verdict

    def _gap_events(self, local: int, diff: Depth, out: list[Output]) -> None:
        detail = self._rule.gap_detail(local, diff)
        out.append(make_event(EventKind.GAP, detail, self.symbol_id, diff.ts_event))
        out.append(make_event(EventKind.RESYNC, {"reason": "gap"}, self.symbol_id, diff.ts_event))

    def _gap(self, diff: Depth, rest: Iterable[Depth], out: list[Output]) -> None:
        self._gap_events(self._local, diff, out)
        self._restart(rest, out)

    def _resync(self, reason: str, ts_event: int, rest: Iterable[Depth], out: list[Output]) -> None:
        out.append(make_event(EventKind.RESYNC, {"reason": reason}, self.symbol_id, ts_event))
        self._restart(rest, out)

    def _restart(self, diffs: Iterable[Depth], out: list[Output]) -> None:
        buffer = self._buffer
        buffer.clear()
        buffer.extend(diffs)
        while len(buffer) > self._max_buffered:
            buffer.popleft()
            out.append(_OVERFLOW)
        self._state = SyncState.BUFFERING
        self._overflowed = False
        self._attempts = 0
        self._ask(out)

    def _ask(self, out: list[Output]) -> None:
        self._attempts += 1
        out.extend(self._request())
