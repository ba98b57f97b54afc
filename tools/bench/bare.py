"""Bare picows receive loops: the floor a Python WebSocket client can reach on this machine.

Run: ``python -m tools.bench.bare WS_URL STREAMS_FILE [--parse] [--cpu N]``

One picows connection to ``WS_URL/stream`` (combined streams, as the writer connects), one
SUBSCRIBE of every stream named in ``STREAMS_FILE`` (one per line), then counts text frames
(``--parse``: and ``orjson.loads`` each payload). Every 0.5 s it prints one JSON line: ``{"t":
perf_counter, "frames": frames so far, "cpu": process CPU seconds}``; the benchmark takes the
difference of two lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import orjson
import picows
import uvloop

__all__ = ["main", "receive"]


class _Counter(picows.WSListener):
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


async def receive(ws_url: str, streams: list[str], parse: bool) -> None:
    """Connect, subscribe, and report the counts every 0.5 s until the connection ends."""
    transport, listener = await picows.ws_connect(
        lambda: _Counter(parse), ws_url + "/stream", max_frame_size=1 << 24
    )
    assert isinstance(listener, _Counter)
    request = {"method": "SUBSCRIBE", "params": streams, "id": 1}
    transport.send(picows.WSMsgType.TEXT, orjson.dumps(request))
    while not listener.closed.done():
        line = {"t": time.perf_counter(), "frames": listener.frames, "cpu": time.process_time()}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await asyncio.wait([listener.closed], timeout=0.5)


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ws_url")
    parser.add_argument("streams", type=Path)
    parser.add_argument("--parse", action="store_true", help="orjson.loads every payload")
    parser.add_argument("--cpu", type=int, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    streams = [s for s in args.streams.read_text().split() if s]
    uvloop.run(receive(args.ws_url, streams, args.parse))


if __name__ == "__main__":
    main()
