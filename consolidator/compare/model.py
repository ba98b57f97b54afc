"""The record both sides of a comparison are reduced to, and what is compared per stream.

A record is keyed by the venue's own id: a trade by its trade id (aggregate id for aggTrade), a
quote by its order-book update id, a depth diff by its last update id (``u``; Deribit:
change_id). ``first`` is the first update id a depth diff covers (``U``), the key otherwise; the
ids a side did not see are ranges over ``[first, key]``.

``values`` holds the compared fields, exact `Decimal` for prices and quantities:

=======  ==================================================================================
stream   values
=======  ==================================================================================
trades   price, qty, side ("buy" / "sell": the taker's side)
quotes   bid_price, bid_qty, ask_price, ask_qty
depth    first_update_id, prev_update_id (None without one), bids, asks (tuples of
         (price, qty) pairs, in the order sent)
=======  ==================================================================================

``ts_event`` (the venue's event time, 0 when it sends none) is compared too.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["COMPARED", "STREAMS", "Rec"]

STREAMS: Final = ("trades", "quotes", "depth")

COMPARED: Final[dict[str, tuple[str, ...]]] = {
    "trades": ("price", "qty", "side"),
    "quotes": ("bid_price", "bid_qty", "ask_price", "ask_qty"),
    "depth": ("first_update_id", "prev_update_id", "bids", "asks"),
}
"""The names of ``Rec.values`` per stream (``ts_event`` is compared besides)."""


class Rec(NamedTuple):
    """One record of one side, reduced to what is matched and compared."""

    key: int
    first: int
    ts_event: int
    ts_recv: int
    ts_commit: int  # 0 on a live reference (nothing is committed there)
    values: tuple[object, ...]
