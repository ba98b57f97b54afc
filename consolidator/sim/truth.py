"""Ground-truth logs: one JSON object per emitted trade, and optionally per emitted bookTicker."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import orjson

__all__ = ["TruthLog"]


class TruthLog:
    """Buffered JSON-lines writer of every trade the market emits.

    Each line: ``{"symbol","trade_id","agg_id","price","qty","side","time"}`` where
    ``side`` is the taker side (``buy``/``sell``) and ``time`` the trade time in ms.
    Lines are written when :meth:`flush` is called (once per market loop turn).

    The quote log, when asked for, gets a line per bookTicker sent to subscribers:
    ``{"symbol","update_id","bid_price","bid_qty","ask_price","ask_qty","time"}``.

    Args:
        path: Output file (truncated), or None for a disabled log.
        quote_path: The quote log (truncated), or None for none.
    """

    def __init__(self, path: Path | None, quote_path: Path | None = None) -> None:
        self._file: BinaryIO | None = None if path is None else path.open("wb")
        self._quote_file: BinaryIO | None = None if quote_path is None else quote_path.open("wb")
        self._pending: list[bytes] = []
        self._pending_quotes: list[bytes] = []

    @property
    def quotes_enabled(self) -> bool:
        """Whether quotes are recorded."""
        return self._quote_file is not None

    def quote(
        self,
        symbol: str,
        update_id: int,
        prices: tuple[str, str, str, str],
        t_ms: int,
    ) -> None:
        """Record one bookTicker: ``prices`` is (bid price, bid qty, ask price, ask qty)."""
        bid_price, bid_qty, ask_price, ask_qty = prices
        self._pending_quotes.append(
            orjson.dumps(
                {
                    "symbol": symbol,
                    "update_id": update_id,
                    "bid_price": bid_price,
                    "bid_qty": bid_qty,
                    "ask_price": ask_price,
                    "ask_qty": ask_qty,
                    "time": t_ms,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
        )

    @property
    def enabled(self) -> bool:
        """Whether trades are recorded."""
        return self._file is not None

    def trade(
        self, symbol: str, trade_id: int, agg_id: int, price: str, qty: str, buy: bool, t_ms: int
    ) -> None:
        """Record one trade."""
        self._pending.append(
            orjson.dumps(
                {
                    "symbol": symbol,
                    "trade_id": trade_id,
                    "agg_id": agg_id,
                    "price": price,
                    "qty": qty,
                    "side": "buy" if buy else "sell",
                    "time": t_ms,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
        )

    def flush(self) -> None:
        """Write pending lines."""
        for file, pending in (
            (self._file, self._pending),
            (self._quote_file, self._pending_quotes),
        ):
            if file is not None and pending:
                file.write(b"".join(pending))
                file.flush()
            pending.clear()

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        for file in (self._file, self._quote_file):
            if file is not None:
                file.close()
        self._file = self._quote_file = None
