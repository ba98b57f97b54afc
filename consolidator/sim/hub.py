"""Subscription registry and fan-out of encoded events to sessions (synthetic mode)."""

from __future__ import annotations

from collections.abc import Callable

from consolidator.sim.frames import ws_text_frame
from consolidator.sim.session import Session
from consolidator.sim.streams import StreamKey

__all__ = ["Hub"]

StreamListener = Callable[[StreamKey, bool], None]


class Hub:
    """Maps stream names to subscribed sessions and publishes events to them.

    A listener is told when a stream gains its first subscriber or loses its last one, so
    the market only tracks streams somebody receives.
    """

    def __init__(self) -> None:
        self._subs: dict[str, dict[int, Session]] = {}
        self._keys: dict[str, StreamKey] = {}
        self._prefix: dict[str, bytes] = {}
        self._listeners: list[StreamListener] = []

    def add_listener(self, listener: StreamListener) -> None:
        """Register a stream activation listener."""
        self._listeners.append(listener)

    def subscribe(self, session: Session, key: StreamKey) -> None:
        """Add ``session`` as a receiver of ``key``."""
        subs = self._subs.get(key.name)
        if subs is None:
            subs = self._subs[key.name] = {}
            self._keys[key.name] = key
            self._prefix[key.name] = b'{"stream":"' + key.name.encode() + b'","data":'
            subs[session.id] = session
            for listener in self._listeners:
                listener(key, True)
        else:
            subs[session.id] = session

    def unsubscribe(self, session: Session, key: StreamKey) -> None:
        """Remove ``session`` from ``key``'s receivers."""
        subs = self._subs.get(key.name)
        if subs is None or subs.pop(session.id, None) is None or subs:
            return
        del self._subs[key.name]
        del self._keys[key.name]
        del self._prefix[key.name]
        for listener in self._listeners:
            listener(key, False)

    def session_closed(self, session: Session) -> None:
        """Nothing to release: subscriptions were removed one by one."""

    def active_keys(self, symbol: str) -> list[StreamKey]:
        """Active streams of an (uppercase) symbol."""
        return [k for k in self._keys.values() if k.symbol == symbol]

    def has(self, stream: str) -> bool:
        """Whether ``stream`` has at least one subscriber."""
        return stream in self._subs

    def publish(self, stream: str, payload: bytes) -> int:
        """Queue ``payload`` to every subscriber of ``stream``; returns the delivery count."""
        subs = self._subs.get(stream)
        if not subs:
            return 0
        raw: bytes | None = None
        wrapped: bytes | None = None
        for session in subs.values():
            if session.combined:
                if wrapped is None:
                    wrapped = ws_text_frame(self._prefix[stream] + payload + b"}")
                session.enqueue(wrapped, stream)
            else:
                if raw is None:
                    raw = ws_text_frame(payload)
                session.enqueue(raw, stream)
        return len(subs)
