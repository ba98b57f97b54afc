"""Model test: a reader that applies what the protocol publishes always holds the venue's book.

A generated venue stream (with lost, repeated and stale diffs, late or failed snapshots,
disconnects) is fed to the protocol; after every published snapshot or diff, the reader's book
must equal the venue's true book at that update id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consolidator.payloads import Depth, Event
from consolidator.records import EventKind, decode_decimal
from consolidator.venues.base import FetchSnapshot, Output
from consolidator.venues.binance import BinanceProtocol, Market

from .helpers import Interner, depth, snapshot

Book = dict[str, str]
Draw = Callable[[st.SearchStrategy[Any]], Any]
ACTIONS = ["diff"] * 8 + ["lose", "repeat", "snapshot", "snapshot", "fail", "disconnect"]


class Venue:
    """One symbol's true book and its diff stream (U/u for spot, U/u/pu for USD-M)."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.last_id = 100
        self.last_event_u = 100
        self.book: Book = {}
        self.at: dict[int, Book] = {100: {}}
        self.sent: list[bytes] = []

    def event(self, draw: Draw) -> bytes:
        hidden = draw(st.integers(0, 2)) if self.market == "usdm" else 0
        first = self.last_id + 1 + hidden
        for update_id in range(self.last_id + 1, first):
            self.at[update_id] = dict(self.book)
        levels = draw(
            st.lists(
                st.tuples(st.sampled_from("12345"), st.sampled_from("0123")), min_size=1, max_size=3
            )
        )
        last = first + draw(st.integers(0, 2))
        for update_id in range(first, last + 1):
            self.at[update_id] = dict(self.book)
        for price, qty in levels:
            if qty == "0":
                self.book.pop(price, None)
            else:
                self.book[price] = qty
        self.at[last] = dict(self.book)
        prev = self.last_event_u if self.market == "usdm" else None
        frame = depth("AAAUSDT", first, last, prev, bids=levels)
        self.last_id = self.last_event_u = last
        self.sent.append(frame)
        return frame

    def snapshot(self, draw: Draw) -> bytes:
        last = draw(st.integers(max(100, self.last_id - 6), self.last_id))
        return snapshot(last, bids=sorted(self.at[last].items()))


def apply(book: Book, levels: list[tuple[int, int, int, int]]) -> None:
    for pm, pe, qm, qe in levels:
        price, qty = decode_decimal(pm, pe), decode_decimal(qm, qe)
        if qty == "0":
            book.pop(price, None)
        else:
            book[price] = qty


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["spot", "usdm"]), st.data())
def test_reader_book_always_matches_the_venue(market: Market, data: st.DataObject) -> None:
    venue = Venue(market)
    protocol = BinanceProtocol(market, ["AAAUSDT"], ["depth"], Interner())
    (plan,) = protocol.plan_connections()
    protocol.on_connected(plan.conn_id)
    reader: Book | None = None
    local = 0
    fetches = 0
    synced = 0

    def consume(outputs: list[Output]) -> None:
        nonlocal reader, local, fetches, synced
        for out in outputs:
            if isinstance(out, Depth) and out.snapshot:
                reader = {}
                apply(reader, out.bids)
                local = out.last_update_id
            elif isinstance(out, Depth):
                assert reader is not None
                apply(reader, out.bids)
                local = out.last_update_id
            elif isinstance(out, Event) and out.kind in (EventKind.GAP, EventKind.RESYNC):
                reader = None
            elif isinstance(out, Event) and out.kind == EventKind.BOOK_SYNCED:
                synced += 1
            elif isinstance(out, FetchSnapshot):
                fetches += 1
            if reader is not None and isinstance(out, Depth):
                assert reader == venue.at[local]

    for action in data.draw(st.lists(st.sampled_from(ACTIONS), min_size=5, max_size=80)):
        if action == "diff":
            consume(protocol.on_frame(plan.conn_id, venue.event(data.draw), 0))
        elif action == "lose":
            venue.event(data.draw)
        elif action == "repeat" and venue.sent:
            consume(protocol.on_frame(plan.conn_id, data.draw(st.sampled_from(venue.sent[-3:])), 0))
        elif action == "snapshot" and fetches:
            consume(protocol.on_snapshot("AAAUSDT", venue.snapshot(data.draw), 0))
        elif action == "fail":
            consume(protocol.on_snapshot_failed("AAAUSDT", "timeout"))
        elif action == "disconnect":
            consume(protocol.on_disconnect(plan.conn_id, 0))
            plan = protocol.plan_rotation(plan.conn_id)
            protocol.on_connected(plan.conn_id)
