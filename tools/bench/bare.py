"""Bare picows receive loops: the floor a Python WebSocket client can reach on this machine.

Run: ``python -m tools.bench.bare WS_URL STREAMS_FILE --seconds S [--parse] [--cpu N]``

One picows connection to ``WS_URL/stream`` (combined streams, as the writer connects), one
SUBSCRIBE of every stream named in ``STREAMS_FILE`` (one per line), then counts text frames
(``--parse``: and ``orjson.loads`` each payload). After a warm-up (frames flowing for 2 s) it
measures ``--seconds`` of wall time and prints one JSON line: ``{"frames", "wall_s", "cpu_s",
"frames_per_s", "cpu_us_per_frame"}`` (CPU: this process's user + system time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import orjson
import picows
import uvloop

__all__ = ["main", "receive"]


class _Counter(picows.WSListener):  # type: ignore[misc]
    def __init__(self, parse: bool) -> None:
        self.frames = 0
        self.parse = parse
        self.closed = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type == picows.WSMsgType.TEXT:
            self.frames += 1
            if self.parse:
                orjson.loads(frame.get_payload_as_memoryview())
        elif frame.msg_type == picows.WSMsgType.CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def receive(ws_url: str, streams: list[str], seconds: float, parse: bool) -> dict[str, float]:
    """Connect, subscribe, warm up, and measure ``seconds`` of receiving."""
    transport, listener = await picows.ws_connect(lambda: _Counter(parse), ws_url + "/stream")
    assert isinstance(listener, _Counter)
    request = {"method": "SUBSCRIBE", "params": streams, "id": 1}
    transport.send(picows.WSMsgType.TEXT, orjson.dumps(request))
    deadline = time.monotonic() + 30.0
    while listener.frames < 100 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)
    f0, c0, t0 = listener.frames, time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    f1, c1, t1 = listener.frames, time.process_time(), time.perf_counter()
    transport.disconnect()
    frames = f1 - f0
    cpu = c1 - c0
    return {
        "frames": frames,
        "wall_s": t1 - t0,
        "cpu_s": cpu,
        "frames_per_s": frames / (t1 - t0),
        "cpu_us_per_frame": 1e6 * cpu / frames if frames else 0.0,
    }


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ws_url")
    parser.add_argument("streams", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--parse", action="store_true", help="orjson.loads every payload")
    parser.add_argument("--cpu", type=int, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    streams = [s for s in args.streams.read_text().split() if s]
    print(json.dumps(uvloop.run(receive(args.ws_url, streams, args.seconds, args.parse))))


if __name__ == "__main__":
    main()
