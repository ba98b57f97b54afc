"""Replay of recorded Binance traffic (cryptofeed ``sample_data`` format).

Files (see the recorded directory's README): ``<P>.ws.1.0`` holds ``URL <-> t`` then one
``t: <frame>`` line per received combined-stream frame; ``<P>.http.0.0`` holds
``URL -> t: <body>`` REST depth snapshots; ``<P>.0`` line 1 is the exchangeInfo response.

Every connection gets its own playback, started by its first subscription: the recorded
frames of the streams it is subscribed to, in recorded order, at the recorded pace scaled by
``speed`` (or as fast as possible). ``data`` payloads are sent byte-for-byte as recorded.
Subscribe to everything at once (URL or one SUBSCRIBE) to get the exact recorded interleaving.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from consolidator.sim.config import SimConfig
from consolidator.sim.faults import FaultKind, FaultManager
from consolidator.sim.frames import ws_text_frame
from consolidator.sim.session import Session
from consolidator.sim.streams import StreamKey

__all__ = [
    "RecordedFrame",
    "Recording",
    "ReplayFeed",
    "load_recording",
    "read_http_file",
    "read_ws_file",
    "recv_ns",
    "stream_symbols",
]

_MAX_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One recorded combined-stream frame.

    Attributes:
        t: Receive time (Unix seconds).
        stream: Stream name.
        data: Exact bytes of the ``data`` value.
        raw_frame: ``data`` as a WebSocket text frame (``/ws`` connections).
        wrapped_frame: ``{"stream":..,"data":..}`` as a WebSocket text frame.
    """

    t: float
    stream: str
    data: bytes
    raw_frame: bytes
    wrapped_frame: bytes


@dataclass(frozen=True, slots=True)
class Recording:
    """Loaded recording: frames, snapshots by symbol, exchangeInfo."""

    url: str
    frames: tuple[RecordedFrame, ...]
    snapshots: dict[str, bytes]
    exchange_info: dict[str, Any]
    exchange_info_raw: bytes


def recv_ns(text: bytes) -> int:
    """A recorded receive time (``1633998512.0633569``, Unix seconds) as exact nanoseconds."""
    whole, _, frac = text.decode().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a receive time: {text!r}")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def read_ws_file(path: Path) -> tuple[str, list[tuple[int, bytes]]]:
    """A recorded WebSocket file: its URL, and each received frame as (receive ns, exact bytes).

    The first line is ``URL <-> connect_time``; each frame line is ``recv_time: <json>``. Frames
    the client sent (``URL <- time: <json>``) are skipped.

    Raises:
        ValueError: a frame line whose receive time does not parse (names the file and line).
    """
    url = ""
    frames: list[tuple[int, bytes]] = []
    for lineno, raw_line in enumerate(path.read_bytes().split(b"\n"), 1):
        line = raw_line.rstrip(b"\r")
        if not line.strip():
            continue
        head, sep, body = line.partition(b": ")
        if not sep:
            url = line.partition(b" <-> ")[0].decode()
            continue
        if b" " in head:
            continue
        try:
            frames.append((recv_ns(head), body))
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    return url, frames


def read_http_file(path: Path) -> list[tuple[int, str, bytes]]:
    """A recorded HTTP file: each response as (receive ns, request URL, body).

    Lines are ``URL -> recv_time: <body>``; other lines (the recorder's own configuration) are
    skipped.
    """
    out: list[tuple[int, str, bytes]] = []
    for raw_line in path.read_bytes().split(b"\n"):
        line = raw_line.rstrip(b"\r")
        url, sep, rest = line.partition(b" -> ")
        if not sep:
            continue
        recv, _, body = rest.partition(b": ")
        try:
            out.append((recv_ns(recv), url.decode(), body))
        except ValueError:
            continue
    return out


def stream_symbols(url: str) -> list[str]:
    """The symbols of a combined-stream URL (``...?streams=btcusdt@trade/...``), uppercase."""
    streams = url.split("streams=", 1)[1].split(" ", 1)[0].split("/") if "streams=" in url else []
    return sorted({s.split("@", 1)[0].upper() for s in streams if s})


def _frames(path: Path) -> tuple[str, list[RecordedFrame]]:
    url, lines = read_ws_file(path)
    frames: list[RecordedFrame] = []
    for recv, body in lines:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}: unreadable frame ({exc})") from None
        if not isinstance(message, dict) or not isinstance(message.get("stream"), str):
            continue
        stream: str = message["stream"]
        prefix = b'{"stream":"' + stream.encode() + b'","data":'
        if body.startswith(prefix) and body.endswith(b"}"):
            data = body[len(prefix) : -1]
        else:
            data = orjson.dumps(message["data"])
        wrapped = prefix + data + b"}"
        frames.append(
            RecordedFrame(recv / 1e9, stream, data, ws_text_frame(data), ws_text_frame(wrapped))
        )
    return url, frames


def _minimal_info(symbols: list[str]) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": 0,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [{"symbol": s, "status": "TRADING"} for s in symbols],
    }


def load_recording(directory: Path, prefix: str) -> Recording:
    """Load ``<prefix>.ws.1.0``, ``<prefix>.http.0.0`` and ``<prefix>.0`` from ``directory``.

    Raises:
        ValueError: When the WebSocket file is missing or unreadable.
    """
    ws_path = directory / f"{prefix}.ws.1.0"
    if not ws_path.is_file():
        raise ValueError(f"recorded stream file not found: {ws_path}")
    url, frames = _frames(ws_path)
    snapshots: dict[str, bytes] = {}
    http_path = directory / f"{prefix}.http.0.0"
    if http_path.is_file():
        for _, req_url, body in read_http_file(http_path):
            symbol = parse_qs(urlsplit(req_url).query).get("symbol", [""])[0]
            if symbol and "/depth" in req_url:
                snapshots.setdefault(symbol, body)
    info_path = directory / f"{prefix}.0"
    info_raw = b""
    if info_path.is_file():
        lines = read_http_file(info_path)
        if lines and lines[0][1].endswith("exchangeInfo"):
            info_raw = lines[0][2]
    info = orjson.loads(info_raw) if info_raw else _minimal_info(sorted(snapshots))
    return Recording(url, tuple(frames), snapshots, info, info_raw)


class ReplayFeed:
    """Per-connection playback of a recording; also serves the recorded REST bodies.

    Args:
        recording: The loaded recording.
        config: Simulator configuration (``speed``).
        faults: Fault manager (``drop-depth`` drops a recorded depth frame).
    """

    def __init__(self, recording: Recording, config: SimConfig, faults: FaultManager) -> None:
        self._rec = recording
        self._speed = config.speed
        self._faults = faults
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._scopes: dict[int, set[str]] = {}
        self._played: dict[int, set[str]] = {}
        self._status: dict[str, str] = {
            s["symbol"]: s.get("status", "TRADING") for s in recording.exchange_info["symbols"]
        }
        self._status_changed = False
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.sent: Counter[str] = Counter()
        self.recorded: Counter[str] = Counter(f.stream for f in recording.frames)
        self.finished = 0

    # Feed protocol

    def subscribe(self, session: Session, key: StreamKey) -> None:
        """Play ``key``'s recorded frames to ``session`` (once per connection).

        A stream subscribed while the connection's playback runs joins it at the current
        position; one subscribed when no playback runs starts a new playback from the
        beginning of the recording, limited to the streams not played yet.
        """
        played = self._played.setdefault(session.id, set())
        if key.name in played:
            return
        played.add(key.name)
        scope = self._scopes.get(session.id)
        if scope is not None and session.id in self._tasks:
            scope.add(key.name)
            return
        scope = self._scopes[session.id] = {key.name}
        task = asyncio.get_running_loop().create_task(self._play(session, scope))
        self._tasks[session.id] = task
        task.add_done_callback(functools.partial(self._forget, session.id))

    def _forget(self, sid: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(sid) is task:
            del self._tasks[sid]
            self._scopes.pop(sid, None)

    def unsubscribe(self, session: Session, key: StreamKey) -> None:
        """Nothing to do: the playback checks the live subscriptions per frame."""

    def session_closed(self, session: Session) -> None:
        """Stop the session's playback."""
        task = self._tasks.pop(session.id, None)
        if task is not None:
            task.cancel()
        self._scopes.pop(session.id, None)
        self._played.pop(session.id, None)

    async def close(self) -> None:
        """Cancel every playback."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _play(self, session: Session, scope: set[str]) -> None:
        loop = asyncio.get_running_loop()
        frames = self._rec.frames
        if not frames:
            return
        fast = self._speed == float("inf")
        t_first = frames[0].t
        start = loop.time()
        for i, frame in enumerate(frames):
            if self._paused:
                paused_at = loop.time()
                await self._resumed.wait()
                start += loop.time() - paused_at
            if fast:
                if i % 256 == 255:
                    await asyncio.sleep(0)
                    while session.is_open and session.buffered_bytes() > _MAX_BUFFER:
                        await asyncio.sleep(0.005)
            else:
                delay = start + (frame.t - t_first) / self._speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if not session.is_open:
                return
            if frame.stream not in scope or frame.stream not in session.live:
                continue
            if "@depth" in frame.stream and self._faults.take(
                FaultKind.DROP_DEPTH, frame.stream.partition("@")[0].upper(), loop.time()
            ):
                continue
            session.enqueue(
                frame.wrapped_frame if session.combined else frame.raw_frame, frame.stream
            )
            self.sent[frame.stream] += 1
        self.finished += 1

    # Market data for REST and control

    def pause(self) -> dict[str, Any]:
        """Hold every playback."""
        self._paused = True
        self._resumed.clear()
        return {"paused": True}

    def resume(self) -> dict[str, Any]:
        """Continue every playback."""
        self._paused = False
        self._resumed.set()
        return {"paused": False}

    def recorded_symbols(self) -> list[str]:
        """Uppercase symbols that have recorded frames."""
        return sorted({stream.partition("@")[0].upper() for stream in self.recorded})

    def symbol_names(self) -> list[str]:
        """Symbols of the recorded exchangeInfo plus those with a snapshot."""
        return list(dict.fromkeys([*self._status, *self._rec.snapshots]))

    def set_status(self, symbol: str, status: str) -> dict[str, Any]:
        """Change a recorded symbol's exchangeInfo status."""
        if symbol not in self._status:
            raise KeyError(symbol)
        self._status[symbol] = status
        self._status_changed = True
        return {"symbol": symbol, "status": status}

    def exchange_info(self, symbols: list[str] | None) -> bytes:
        """The recorded exchangeInfo (byte-exact unless filtered or a status changed)."""
        info = self._rec.exchange_info
        if symbols is None and not self._status_changed and self._rec.exchange_info_raw:
            return self._rec.exchange_info_raw
        wanted = None if symbols is None else set(symbols)
        entries = [
            {**s, "status": self._status[s["symbol"]]}
            for s in info["symbols"]
            if wanted is None or s["symbol"] in wanted
        ]
        return orjson.dumps({**info, "serverTime": time.time_ns() // 1_000_000, "symbols": entries})

    def depth(self, symbol: str, limit: int) -> bytes | None:
        """The recorded snapshot (byte-exact unless truncated by ``limit``)."""
        raw = self._rec.snapshots.get(symbol)
        if raw is None:
            return None if symbol not in self._status else b'{"lastUpdateId":0,"bids":[],"asks":[]}'
        body = orjson.loads(raw)
        if len(body.get("bids", ())) <= limit and len(body.get("asks", ())) <= limit:
            return raw
        body["bids"] = body["bids"][:limit]
        body["asks"] = body["asks"][:limit]
        return orjson.dumps(body)

    def truth_book(self, symbol: str) -> dict[str, Any] | None:
        """Not available in replay mode."""
        return None

    def stats(self) -> dict[str, Any]:
        """Frames sent per stream and per symbol/kind, recorded counts, playbacks."""
        symbols: dict[str, dict[str, Any]] = {}
        for stream, count in self.sent.items():
            head, _, kind = stream.partition("@")
            entry = symbols.setdefault(head.upper(), {"sent": Counter()})
            entry["sent"][kind] += count
        return {
            "paused": self._paused,
            "symbols": {s: {"sent": dict(e["sent"])} for s, e in symbols.items()},
            "replay": {
                "frames_sent": dict(self.sent),
                "recorded": dict(self.recorded),
                "playbacks_active": len(self._tasks),
                "playbacks_finished": self.finished,
            },
        }
