"""Ground-truth trade log: one JSON object per emitted trade."""

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

    Args:
        path: Output file (truncated), or None for a disabled log.
    """

    def __init__(self, path: Path | None) -> None:
        self._file: BinaryIO | None = None if path is None else path.open("wb")
        self._pending: list[bytes] = []

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
        if self._file is not None and self._pending:
            self._file.write(b"".join(self._pending))
            self._file.flush()
        self._pending.clear()

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
