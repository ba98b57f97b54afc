"""The record both sides of a comparison are reduced to, and what is compared per stream.

A record is keyed by the venue's own id: a trade by its trade id (aggregate id for aggTrade), a
quote by its order-book update id, a depth diff by its last update id (``u``; Deribit:
change_id). ``first`` is the first update id a depth diff covers (``U``), the key otherwise; the
ids a side did not see are ranges over ``[first, key]``.

``values`` holds the compared fields; prices and quantities as exact decimals in one canonical
form, a ``(mantissa, exponent)`` pair of ints with no trailing zero in the mantissa (0 is
``(0, 0)``), so ``"61837.630"`` and ``"61837.63"`` are both ``(6183763, -2)`` and equal values
compare equal as plain tuples (`decimal_pair` makes one from a `Decimal`, `pair_text` prints it):

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

from decimal import Decimal
from typing import Final, NamedTuple

__all__ = ["COMPARED", "STREAMS", "Pair", "Rec", "decimal_pair", "pair_text"]

Pair = tuple[int, int]
"""An exact decimal: ``(mantissa, exponent)``, the mantissa without trailing zeros."""

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


def decimal_pair(value: Decimal) -> Pair:
    """The canonical pair of a finite `Decimal` (exact: no context, no rounding).

    Raises:
        ValueError: ``value`` is not finite.
    """
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite decimal: {value!r}")
    mantissa = int("".join(map(str, digits)) or "0")
    if mantissa == 0:
        return 0, 0
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    return (-mantissa if sign else mantissa), exponent


def pair_text(pair: Pair) -> str:
    """Plain notation of a pair (``(6183763, -2)`` -> ``"61837.63"``)."""
    mantissa, exponent = pair
    return format(Decimal(mantissa).scaleb(exponent), "f")
