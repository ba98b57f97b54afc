"""Checks shared by the synthetic-market tests: books against the truth, chains, trades."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from consolidator.payloads import Depth, Event
from consolidator.records import NO_SYMBOL, EventKind

from .helpers import Rings, Sim, rebuild, truth_levels, wait_until


def synced(events: list[Event], symbol_ids: list[int]) -> bool:
    """Every symbol's last book event is BOOK_SYNCED (none is resynchronizing)."""
    state: dict[int, bool] = {}
    for event in events:
        if event.kind == EventKind.BOOK_SYNCED:
            state[event.symbol_id] = True
        elif event.kind in (EventKind.RESYNC, EventKind.GAP) and event.symbol_id != NO_SYMBOL:
            state[event.symbol_id] = False
    return all(state.get(s, False) for s in symbol_ids)


def wait_synced(rings: Rings, symbols: list[str], timeout: float = 60.0) -> None:
    def ready() -> bool:
        if not rings.ready():
            return False
        ids = {v: k for k, v in rings.names().items()}
        return all(s in ids for s in symbols) and synced(rings.events(), [ids[s] for s in symbols])

    wait_until(ready, timeout, "every book synchronized")


def checkpoint(sim: Sim, rings: Rings, symbols: list[str]) -> None:
    """Pause the market, let the writer drain, compare every rebuilt book with the truth."""
    paused = sim.control(action="pause")
    try:
        targets = {s: paused["symbols"][s]["update_id"] for s in symbols}

        def drained() -> bool:
            books = rebuild(rings.depth(), rings.names().__getitem__)
            return all(s in books and books[s].last_id == targets[s] for s in symbols)

        wait_until(drained, 60, f"the writer to reach {targets}")
        books = rebuild(rings.depth(), rings.names().__getitem__)
        for symbol in symbols:
            truth = sim.book(symbol)
            assert truth["lastUpdateId"] == targets[symbol]
            assert books[symbol].bids == truth_levels(truth["bids"]), symbol
            assert books[symbol].asks == truth_levels(truth["asks"]), symbol
    finally:
        sim.control(action="resume")


def check_depth_chain(records: list[Depth], usdm: bool) -> int:
    """Every published diff continues the book of the snapshot and diffs before it.

    A reader needs nothing but the depth stream: after a gap the writer publishes a new
    snapshot before any diff that does not continue. Returns the number of snapshots.
    """
    local: dict[int, int] = {}
    joined: dict[int, bool] = {}
    snapshots = 0
    for depth in records:
        sym = depth.symbol_id
        if depth.snapshot:
            local[sym] = depth.last_update_id
            joined[sym] = False
            snapshots += 1
            continue
        assert sym in local, f"diff before any snapshot: {depth[:6]}"
        last = local[sym]
        first, final, prev = depth.first_update_id, depth.last_update_id, depth.prev_update_id
        if usdm:
            ok = first <= last <= final if not joined[sym] else prev == last
        else:
            ok = first <= last + 1 <= final if not joined[sym] else first == last + 1
        assert ok, f"unannounced gap: local {last}, diff {depth[:6]}"
        local[sym] = final
        joined[sym] = True
    return snapshots


def trade_ids(rings: Rings) -> dict[str, list[int]]:
    """Each symbol's published trade ids, in ring order."""
    names = rings.names()
    out: dict[str, list[int]] = defaultdict(list)
    for row in rings.fixed("trades")[["symbol_id", "trade_id"]].tolist():
        out[names[row[0]]].append(row[1])
    return out


def truth_trades(path: Path, key: str = "trade_id") -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    with path.open("rb") as f:
        for line in f:
            entry = json.loads(line)
            out[entry["symbol"]].append(entry[key])
    return out


def check_trades_complete(
    published: dict[str, list[int]], truth: dict[str, list[int]]
) -> dict[str, int]:
    """No duplicate, no reordering, and every truth id between the first and last published.

    Returns the number of published trades per symbol.
    """
    counts = {}
    for symbol, ids in published.items():
        assert len(ids) == len(set(ids)), f"{symbol}: duplicate trades"
        assert ids == sorted(ids), f"{symbol}: trades out of order"
        expected = [i for i in dict.fromkeys(truth[symbol]) if ids[0] <= i <= ids[-1]]
        missing = sorted(set(expected) - set(ids))
        assert not missing, f"{symbol}: {len(missing)} trades missing, first {missing[:5]}"
        assert len(ids) == len(expected)
        counts[symbol] = len(ids)
    return counts


def stop_detail(rings: Rings) -> dict[str, Any]:
    stops = [e for e in rings.events() if e.kind == EventKind.WRITER_STOP]
    assert len(stops) == 1
    detail: dict[str, Any] = json.loads(stops[0].detail)
    return detail


def kinds(rings: Rings) -> Counter[EventKind]:
    return Counter(rings.event_kinds())
