"""Fault injection: spec parsing, arming, and per-frame / per-connection application.

Spec grammar:
``KIND[:SYMBOL][,count=N][,prob=P][,after=S][,duration=S][,variant=V][,session=ID]``.

* ``drop-depth`` skips one diff-depth event (the book counter still advances).
* ``duplicate`` sends a frame twice; ``reorder`` swaps two consecutive frames;
  ``malformed`` inserts a bad frame (``variant`` = ``json`` | ``types`` | ``event``, cycling
  when not given).
* ``stall`` stops sending and answering pings on a connection (for ``duration`` seconds,
  forever when not given); ``reset`` aborts a connection with a TCP RST.

``count`` is how many times the fault fires (default 1, or unlimited when ``prob`` is given;
``count=0`` means unlimited); ``prob`` is the chance that an eligible frame (or connection)
is hit; ``after`` delays activation by that many seconds after arming, and for connection
faults after the connection opened, whichever is later. A symbol restricts frame faults to
that symbol's streams and connection faults to connections subscribed to it; ``session``
restricts connection faults to the connection with that id (``/sim/stats`` lists them), e.g. to
cut one of a client's redundant connections.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from consolidator.sim.frames import ws_text_frame

__all__ = [
    "FaultKind",
    "FaultManager",
    "FaultSpec",
    "OutFrame",
    "parse_fault",
]

OutFrame = tuple[bytes, str]
"""An outgoing WebSocket frame (already encoded) and its stream name."""


class FaultKind(StrEnum):
    """Injectable fault kinds."""

    DROP_DEPTH = "drop-depth"
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    MALFORMED = "malformed"
    STALL = "stall"
    RESET = "reset"

    @property
    def per_connection(self) -> bool:
        """Whether the fault applies to a whole connection rather than to frames."""
        return self in (FaultKind.STALL, FaultKind.RESET)


_VARIANTS = ("json", "types", "event")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A parsed fault specification (see the module docstring)."""

    kind: FaultKind
    symbol: str | None = None
    count: int | None = 1
    prob: float = 1.0
    after: float = 0.0
    duration: float | None = None
    variant: str | None = None
    session: int | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-able description."""
        return {
            "kind": self.kind.value,
            "symbol": self.symbol,
            "count": self.count,
            "prob": self.prob,
            "after": self.after,
            "duration": self.duration,
            "variant": self.variant,
            "session": self.session,
        }


def _number(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"fault option {key}={value!r} is not a number") from None
    if not number >= 0 or math.isinf(number):
        raise ValueError(f"fault option {key}={value!r} must be a finite number >= 0")
    return number


def parse_fault(text: str) -> FaultSpec:
    """Parse a fault spec such as ``drop-depth:BTCUSDT,count=2``.

    Raises:
        ValueError: On any syntax error.
    """
    head, *options = [part.strip() for part in text.strip().split(",")]
    name, _, symbol = head.partition(":")
    try:
        kind = FaultKind(name.strip().lower())
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown fault {name!r} (one of {kinds})") from None
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("count", "prob", "after", "duration", "variant", "session"):
            raise ValueError(f"bad fault option {option!r}")
        values[key] = value
    prob = _number("prob", values["prob"]) if "prob" in values else 1.0
    if prob > 1:
        raise ValueError("fault option prob must be <= 1")
    count: int | None = 1 if "prob" not in values else None
    if "count" in values:
        raw = _number("count", values["count"])
        if raw != int(raw):
            raise ValueError("fault option count must be an integer")
        count = int(raw) or None
    variant = values.get("variant")
    if variant is not None and (kind is not FaultKind.MALFORMED or variant not in _VARIANTS):
        raise ValueError(f"bad malformed variant {variant!r} (one of {', '.join(_VARIANTS)})")
    session: int | None = None
    if "session" in values:
        if not kind.per_connection or not values["session"].isdigit():
            raise ValueError(f"bad fault option session={values['session']!r} (stall, reset)")
        session = int(values["session"])
    return FaultSpec(
        kind=kind,
        symbol=symbol.strip().upper() or None,
        count=count,
        prob=prob,
        after=_number("after", values["after"]) if "after" in values else 0.0,
        duration=_number("duration", values["duration"]) if "duration" in values else None,
        variant=variant,
        session=session,
    )


@dataclass(slots=True)
class _Armed:
    spec: FaultSpec
    armed_at: float
    remaining: int | None
    tried: set[int] = field(default_factory=set)

    def trial(self, rng: random.Random) -> bool:
        if self.remaining == 0:
            return False
        if self.spec.prob < 1.0 and rng.random() >= self.spec.prob:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


def _stream_symbol(stream: str) -> str:
    return stream.partition("@")[0].upper()


class FaultManager:
    """Armed faults and their application counters.

    Args:
        seed: Seed of the fault RNG (probabilistic faults are reproducible).
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed ^ 0x5EED)
        self._armed: list[_Armed] = []
        self._malformed_turn = 0
        self.applied: Counter[str] = Counter()
        self.frame_faults_armed = False

    def arm(self, spec: FaultSpec, now: float) -> None:
        """Arm a fault at loop time ``now``."""
        self._armed.append(_Armed(spec, now, spec.count))
        self._refresh()

    def _refresh(self) -> None:
        self._armed = [a for a in self._armed if a.remaining != 0]
        self.frame_faults_armed = any(
            a.spec.kind in (FaultKind.DUPLICATE, FaultKind.REORDER, FaultKind.MALFORMED)
            for a in self._armed
        )

    def record(self, kind: FaultKind) -> None:
        """Count one application of ``kind``."""
        self.applied[kind.value] += 1

    def _fire(self, armed: _Armed) -> bool:
        if not armed.trial(self._rng):
            return False
        self.record(armed.spec.kind)
        if armed.remaining == 0:
            self._refresh()
        return True

    def take(self, kind: FaultKind, symbol: str, now: float) -> bool:
        """Consume one application of an event-level fault (``drop-depth``) if due."""
        for armed in self._armed:
            spec = armed.spec
            if (
                spec.kind is kind
                and (spec.symbol is None or spec.symbol == symbol)
                and now >= armed.armed_at + spec.after
                and self._fire(armed)
            ):
                return True
        return False

    def mutate(self, frames: list[OutFrame], combined: bool, now: float) -> list[OutFrame]:
        """Apply due frame faults (duplicate, reorder, malformed) to an outgoing batch."""
        out = frames
        for armed in list(self._armed):
            spec = armed.spec
            if spec.kind.per_connection or spec.kind is FaultKind.DROP_DEPTH:
                continue
            if now < armed.armed_at + spec.after:
                continue
            out = self._mutate_one(armed, out, combined)
        return out

    def _eligible(self, spec: FaultSpec, stream: str) -> bool:
        return spec.symbol is None or _stream_symbol(stream) == spec.symbol

    def _mutate_one(self, armed: _Armed, frames: list[OutFrame], combined: bool) -> list[OutFrame]:
        spec = armed.spec
        out: list[OutFrame] = []
        i = 0
        n = len(frames)
        while i < n:
            frame = frames[i]
            if armed.remaining == 0 or not self._eligible(spec, frame[1]):
                out.append(frame)
                i += 1
                continue
            if spec.kind is FaultKind.REORDER:
                if i + 1 < n and self._eligible(spec, frames[i + 1][1]) and self._fire(armed):
                    out.extend((frames[i + 1], frame))
                    i += 2
                    continue
                out.append(frame)
            elif spec.kind is FaultKind.DUPLICATE:
                out.append(frame)
                if self._fire(armed):
                    out.append(frame)
            else:
                if self._fire(armed):
                    out.append(self._malformed(spec, frame[1], combined))
                out.append(frame)
            i += 1
        return out

    def _malformed(self, spec: FaultSpec, stream: str, combined: bool) -> OutFrame:
        variant = spec.variant
        if variant is None:
            variant = _VARIANTS[self._malformed_turn % len(_VARIANTS)]
            self._malformed_turn += 1
        symbol = _stream_symbol(stream)
        if variant == "json":
            return ws_text_frame(
                b'{"e":"depthUpdate","E":17,"s":"' + symbol.encode() + b'","U":'
            ), stream
        if variant == "types":
            body: dict[str, Any] = {
                "e": "depthUpdate" if "@depth" in stream else "trade",
                "E": "not-a-number",
                "s": 42,
                "U": "x",
                "u": None,
                "t": "x",
                "p": 1.5,
                "q": None,
                "b": "bad",
                "a": {},
            }
        else:
            body = {"e": "simMysteryEvent", "E": 0, "s": symbol}
        payload = {"stream": stream, "data": body} if combined else body
        return ws_text_frame(orjson.dumps(payload)), stream

    def due_connection_faults(
        self, conn_id: int, opened_at: float, symbols: set[str], now: float
    ) -> list[FaultSpec]:
        """Connection faults that fire now on this connection (each tried once per fault)."""
        fired: list[FaultSpec] = []
        for armed in list(self._armed):
            spec = armed.spec
            if not spec.kind.per_connection or conn_id in armed.tried:
                continue
            if spec.symbol is not None and spec.symbol not in symbols:
                continue
            if spec.session is not None and spec.session != conn_id:
                continue
            if now < max(armed.armed_at, opened_at) + spec.after:
                continue
            armed.tried.add(conn_id)
            if self._fire(armed):
                fired.append(spec)
        return fired

    @property
    def has_connection_faults(self) -> bool:
        """Whether any stall/reset fault is armed."""
        return any(a.spec.kind.per_connection for a in self._armed)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state: applied counts and armed faults."""
        return {
            "applied": dict(self.applied),
            "armed": [{**a.spec.describe(), "remaining": a.remaining} for a in self._armed],
        }
