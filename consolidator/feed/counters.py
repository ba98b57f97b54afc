"""In-process counters of one feed writer, and its one-line status.

Plain attributes and dicts, incremented on the hot path without locks (one thread). M1-5 moves
them to the shared-memory counters file; the names follow the Prometheus metrics of DESIGN.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["CHANNELS", "CONNECTION_STATES", "Counters"]

CHANNELS = ("trades", "quotes", "depth", "other")
"""``messages_received`` keys: the market channels, and ``other`` (replies, notices, junk)."""
CONNECTION_STATES = ("connecting", "open", "closing")
"""``connections`` keys (a closed connection is no longer counted)."""


@dataclass(slots=True)
class Counters:
    """What the writer counts (``consolidator_*`` metrics in DESIGN.md)."""

    messages_received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    last_message_ns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    bytes_received: int = 0
    records_published: dict[str, int] = field(default_factory=dict)
    parse_errors: Counter[str] = field(default_factory=Counter)
    reconnects: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    resyncs: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    connections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONNECTION_STATES, 0))
    rotations: int = 0
    rest_requests: int = 0
    rest_weight: int = 0
    rest_errors: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    snapshots: Counter[str] = field(default_factory=Counter)
    internal_errors: int = 0

    def move(self, old: str | None, new: str | None) -> None:
        """One connection went from state ``old`` to ``new`` (None: not counted)."""
        if old is not None:
            self.connections[old] -= 1
        if new is not None:
            self.connections[new] += 1

    def total_messages(self) -> int:
        """Messages received on every channel."""
        return sum(self.messages_received.values())

    def status(self, previous_total: int, interval_s: float) -> str:
        """The periodic status line; ``previous_total`` is `total_messages` of the last one."""
        total = self.total_messages()
        rate = (total - previous_total) / interval_s if interval_s > 0 else 0.0
        published = " ".join(f"{k}={v}" for k, v in self.records_published.items())
        parts = [
            f"conns open={self.connections['open']} connecting={self.connections['connecting']}",
            f"msgs={total} ({rate:.0f}/s) bytes={self.bytes_received}",
            f"published {published}",
            f"gaps={self.gaps} resyncs={self.resyncs} rotations={self.rotations}",
        ]
        if self.parse_errors:
            parts.append(f"parse_errors {_pairs(self.parse_errors)}")
        if self.reconnects:
            parts.append(f"reconnects {_pairs(self.reconnects)}")
        if self.drops:
            parts.append(f"drops {_pairs(self.drops)}")
        if self.rate_limited or self.rest_errors:
            parts.append(f"rate_limited={self.rate_limited} rest_errors {_pairs(self.rest_errors)}")
        if self.internal_errors:
            parts.append(f"internal_errors={self.internal_errors}")
        return "; ".join(parts)


def _pairs(counts: Counter[str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
