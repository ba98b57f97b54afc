"""Price-level order book on an integer tick grid."""

from __future__ import annotations

from bisect import bisect_left, insort

__all__ = ["BookSide", "OrderBook"]


class BookSide:
    """One side of a book: price (ticks) to quantity (steps), kept sorted by price.

    Attributes:
        is_bid: True for bids (best = highest price).
        levels: Price to quantity; every quantity is positive.
        prices: Prices in ascending order.
    """

    __slots__ = ("is_bid", "levels", "prices")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, int] = {}
        self.prices: list[int] = []

    def __len__(self) -> int:
        return len(self.prices)

    def best(self) -> int | None:
        """Best price or None when empty."""
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def worst(self) -> int | None:
        """Price farthest from the top, or None when empty."""
        if not self.prices:
            return None
        return self.prices[0] if self.is_bid else self.prices[-1]

    def at_depth(self, depth: int) -> int:
        """Price of the level ``depth`` positions from the top (0 = best)."""
        return self.prices[-1 - depth] if self.is_bid else self.prices[depth]

    def set(self, price: int, qty: int) -> None:
        """Set the level's quantity; zero removes it."""
        levels = self.levels
        if qty > 0:
            if price not in levels:
                insort(self.prices, price)
            levels[price] = qty
        elif price in levels:
            del levels[price]
            prices = self.prices
            del prices[bisect_left(prices, price)]

    def top(self, n: int | None = None) -> list[tuple[int, int]]:
        """Up to ``n`` levels (all when None), best first."""
        prices = self.prices
        if self.is_bid:
            chosen = prices[::-1] if n is None else prices[: -n - 1 : -1] if n > 0 else []
        else:
            chosen = prices if n is None else prices[:n]
        levels = self.levels
        return [(p, levels[p]) for p in chosen]


class OrderBook:
    """Bids and asks of one symbol."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)

    def side(self, is_bid: bool) -> BookSide:
        """The bid or ask side."""
        return self.bids if is_bid else self.asks
