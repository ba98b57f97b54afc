"""One websocket connection (picows) against a real loopback websockets server: stamps per socket
read, fragments, pacing, readiness, the close handshake, pings, limits, sink failures, TLS."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from consolidator.feed.connection import ConnectError, FeedConnection
from consolidator.venues.base import ConnectionPlan, ControlPacer

SUBSCRIBE = b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}'
LIST = b'{"method":"LIST_SUBSCRIPTIONS","id":1}'
MARKET = b'{"stream":"btcusdt@trade","data":{}}'
DEADLINE_S = 10.0


def _frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """An unmasked server frame."""
    head = bytes(((0x80 if fin else 0) | opcode,))
    n = len(payload)
    if n < 126:
        return head + bytes((n,)) + payload
    if n < 65536:
        return head + bytes((126,)) + n.to_bytes(2, "big") + payload
    return head + bytes((127,)) + n.to_bytes(8, "big") + payload


def _plan(frames: tuple[bytes, ...] = (SUBSCRIBE,)) -> ConnectionPlan:
    return ConnectionPlan(1, "/stream", ("btcusdt@trade",), frames)


Handler = Callable[[ServerConnection], Awaitable[None]]


async def _with_server(
    handler: Handler, client: Callable[[str], Awaitable[Any]], **kwargs: Any
) -> Any:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        scheme = "wss" if "ssl" in kwargs else "ws"
        return await asyncio.wait_for(client(f"{scheme}://127.0.0.1:{port}"), 2 * DEADLINE_S)


def _run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _until(condition: Callable[[], bool], what: str = "condition") -> None:
    """Wait until ``condition()`` holds (polling), failing after `DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def _open(url: str, sink: Callable[[int, bytes, int], None], **kwargs: Any) -> FeedConnection:
    pacer = kwargs.pop("pacer", ControlPacer(rate_per_s=50))
    frames = kwargs.pop("frames", (SUBSCRIBE,))
    conn = FeedConnection(_plan(frames), url, sink, pacer, **kwargs)
    await conn.open()
    return conn


def test_messages_of_one_read_share_its_stamp() -> None:
    """Two messages in one TCP chunk carry the chunk's arrival time, however long the first
    takes to process."""
    received: list[tuple[bytes, int, int]] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b'{"n":1}') + _frame(b'{"n":2}'))
        await done.wait()

    def sink(conn_id: int, message: bytes, ts: int) -> None:
        if message.startswith(b'{"n"'):
            if not received:
                time.sleep(0.1)  # a slow first message must not delay the second one's stamp
            received.append((message, ts, time.time_ns()))
            if len(received) == 2:
                done.set()

    async def client(url: str) -> None:
        before = time.time_ns()
        conn = await _open(url, sink)
        await done.wait()
        await conn.close()
        assert [m for m, _, _ in received] == [b'{"n":1}', b'{"n":2}']
        (_, ts1, _), (_, ts2, seen2) = received
        assert before < ts1 == ts2
        assert seen2 - ts2 >= 100_000_000

    _run(_with_server(handler, client))


def test_each_read_gets_its_own_stamp_and_one_batch_done() -> None:
    """Frames of one socket read share a stamp; the next read has a later one; the per-read
    hook runs once per read, after that read's messages."""
    events: list[tuple[str, bytes, int]] = []
    first_read = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(b'{"result":null,"id":1}', text=True)
        await _until(lambda: any(m.startswith(b'{"result"') for _, m, _ in events), "reply")
        ws.transport.write(b"".join(_frame(b'{"n":%d}' % i) for i in range(3)))
        await first_read.wait()
        ws.transport.write(b"".join(_frame(b'{"n":%d}' % i) for i in range(3, 5)))
        await ws.wait_closed()

    def sink(conn_id: int, message: bytes, ts: int) -> None:
        events.append(("msg", message, ts))
        if message == b'{"n":2}':
            first_read.set()

    def batch_done() -> None:
        events.append(("batch", b"", 0))

    async def client(url: str) -> None:
        conn = await _open(url, sink, batch_done=batch_done)
        await _until(lambda: sum(m.startswith(b'{"n"') for _, m, _ in events) == 5, "messages")
        await _until(lambda: events[-1][0] == "batch", "the last batch_done")
        await conn.close()

    _run(_with_server(handler, client))
    start = next(i for i, e in enumerate(events) if e[1] == b'{"n":0}')
    tail = events[start : start + 7]  # (the close handshake's read comes after)
    assert [kind for kind, _, _ in tail] == ["msg"] * 3 + ["batch"] + ["msg"] * 2 + ["batch"], tail
    stamps = [ts for kind, _, ts in tail if kind == "msg"]
    assert stamps[0] == stamps[1] == stamps[2] < stamps[3] == stamps[4]


def test_continuation_frames_are_assembled_and_stamped_at_the_last() -> None:
    sent_last: list[int] = []
    got: list[tuple[bytes, int]] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b'{"part":', fin=False))
        ws.transport.write(_frame(b'"one",', opcode=0x0, fin=False))
        await asyncio.sleep(0.2)
        sent_last.append(time.time_ns())
        ws.transport.write(_frame(b'"x":1}', opcode=0x0) + _frame(b'{"whole":1}'))
        ws.transport.write(_frame(b"\x00\x01", opcode=0x2, fin=False) + _frame(b"\x02", opcode=0x0))
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda _c, m, ts: got.append((m, ts)), frames=(LIST,))
        await _until(lambda: len(got) == 3, "three messages")
        assert conn.is_open
        await conn.close()

    _run(_with_server(handler, client))
    assert [m for m, _ in got] == [b'{"part":"one","x":1}', b'{"whole":1}', b"\x00\x01\x02"]
    assert got[0][1] >= sent_last[0]


def test_a_fragmented_message_above_the_limit_fails_the_connection_with_1009() -> None:
    got: list[bytes] = []
    server_saw: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b"a" * 60, fin=False))
        ws.transport.write(_frame(b"b" * 60, opcode=0x0, fin=False))
        ws.transport.write(_frame(b"c" * 60, opcode=0x0))
        ws.transport.write(_frame(b'{"after":1}'))
        await ws.wait_closed()
        server_saw.append(ws.close_code)

    async def client(url: str) -> None:
        conn = await _open(url, lambda _c, m, _t: got.append(m), frames=(LIST,), max_size=100)
        await asyncio.wait_for(conn.wait_closed(), DEADLINE_S)
        assert not conn.is_open
        assert conn.close_info()[0] == 1009

    _run(_with_server(handler, client))
    assert got == []  # nothing after the failure either
    assert server_saw == [1009]


def test_a_frame_above_the_limit_fails_the_connection_with_1009() -> None:
    got: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b'{"small":1}') + _frame(b"x" * 101))
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda _c, m, _t: got.append(m), frames=(LIST,), max_size=100)
        await asyncio.wait_for(conn.wait_closed(), DEADLINE_S)
        assert conn.close_info()[0] == 1009

    _run(_with_server(handler, client))
    assert got == [b'{"small":1}']


def test_a_frame_above_the_limit_in_a_read_of_its_own_is_not_delivered() -> None:
    got: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b'{"small":1}'))
        await _until(lambda: bool(got), "the small message")
        ws.transport.write(_frame(b"x" * 101))
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda _c, m, _t: got.append(m), frames=(LIST,), max_size=100)
        await asyncio.wait_for(conn.wait_closed(), DEADLINE_S)
        assert conn.close_info()[0] == 1009

    _run(_with_server(handler, client))
    assert got == [b'{"small":1}']


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ((_frame(b"x", opcode=0x0),), 1002),  # a continuation without a start
        ((_frame(b"a", fin=False), _frame(b"b")), 1002),  # a new message inside a fragmented one
    ],
)
def test_misplaced_fragments_fail_the_connection_with_1002(frames: tuple[bytes], code: int) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for frame in frames:
            ws.transport.write(frame)
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None, frames=(LIST,))
        await asyncio.wait_for(conn.wait_closed(), DEADLINE_S)
        assert conn.close_info()[0] == code

    _run(_with_server(handler, client))


def test_the_servers_close_is_answered_and_recorded() -> None:
    server_saw: list[object] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(MARKET, text=True)
        await ws.close(1001, "going away")
        server_saw.append(ws.protocol.close_rcvd)

    async def client(url: str) -> None:
        got: list[bytes] = []
        conn = await _open(url, lambda _c, m, _t: got.append(m))
        await asyncio.wait_for(conn.wait_closed(), DEADLINE_S)
        assert not conn.is_open
        assert conn.close_info() == (1001, "going away")
        assert got == [MARKET]

    _run(_with_server(handler, client))
    (rcvd,) = server_saw
    assert rcvd is not None  # the server got our CLOSE: a complete handshake, not a drop
    assert rcvd.code == 1001  # type: ignore[attr-defined]


def test_a_dropped_connection_has_no_close_code() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.abort()

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None)
        await asyncio.wait_for(conn.wait_closed(), DEADLINE_S)
        assert conn.close_info() == (None, "")

    _run(_with_server(handler, client))


def test_our_close_completes_the_handshake() -> None:
    server_saw: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        server_saw.append(ws.close_code)

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None)
        await conn.close()
        assert not conn.is_open
        assert conn.close_info() == (1000, "")

    _run(_with_server(handler, client))
    assert server_saw == [1000]


def test_server_pings_are_answered_and_count_as_traffic() -> None:
    pongs: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await asyncio.sleep(0.3)
        waiter = await ws.ping(b"payload-123")
        pongs.append(await asyncio.wait_for(waiter, DEADLINE_S))
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None)
        await _until(lambda: conn.idle_s(time.monotonic()) >= 0.2, "idle")
        await _until(lambda: bool(pongs), "the server to get its pong")
        assert conn.idle_s(time.monotonic()) < 0.2  # the ping refreshed liveness
        await conn.close()

    _run(_with_server(handler, client))
    assert len(pongs) == 1  # websockets resolves the waiter only for the matching payload


def test_our_ping_is_answered_and_the_pong_refreshes_liveness() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None)
        await _until(lambda: conn.idle_s(time.monotonic()) >= 0.25, "idle")
        await conn.ping()
        await _until(lambda: conn.idle_s(time.monotonic()) < 0.1, "the pong")
        await conn.close()
        assert not conn.is_open

    _run(_with_server(handler, client))


def test_an_exception_in_the_sink_is_counted_and_the_connection_kept() -> None:
    got: list[bytes] = []
    errors: list[Exception] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b'{"n":1}') + _frame(b'{"boom":1}') + _frame(b'{"n":2}'))
        await _until(lambda: len(got) == 2, "two messages")
        await ws.send(b'{"n":3}', text=True)
        await ws.wait_closed()

    def sink(conn_id: int, message: bytes, ts: int) -> None:
        if message == b'{"boom":1}':
            raise ValueError("a bug downstream")
        got.append(message)

    async def client(url: str) -> None:
        conn = await _open(url, sink, frames=(LIST,), on_sink_error=errors.append)
        await _until(lambda: len(got) == 3, "three messages")
        assert conn.is_open
        assert conn.sink_errors == 1
        await conn.close()

    _run(_with_server(handler, client))
    assert got == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert [str(e) for e in errors] == ["a bug downstream"]


def test_control_frames_are_paced_and_sent_as_text() -> None:
    arrivals: list[tuple[float, object]] = []
    frames = tuple(b'{"method":"SUBSCRIBE","params":[],"id":%d}' % i for i in range(1, 6))

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            arrivals.append((time.monotonic(), message))
            await ws.send(b'{"result":null,"id":0}', text=True)

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None, pacer=ControlPacer(rate_per_s=20), frames=frames)
        conn.send_control(b'{"method":"UNSUBSCRIBE","params":[],"id":6}')
        await _until(lambda: len(arrivals) >= 6, "six control frames")
        await conn.close()

    _run(_with_server(handler, client))
    assert all(isinstance(m, str) for _, m in arrivals)
    assert [m for _, m in arrivals][:5] == [f.decode() for f in frames]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.04, gaps


def test_ready_needs_the_replies_and_a_market_message() -> None:
    states: list[bool] = []
    step = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(MARKET, text=True)
        await step.wait()
        await ws.send(b'{"result":null,"id":1}', text=True)
        await ws.send(MARKET, text=True)
        await ws.wait_closed()

    async def client(url: str) -> None:
        messages: list[bytes] = []
        conn = await _open(url, lambda _c, m, _t: messages.append(m))
        await _until(lambda: len(messages) >= 1, "the first message")
        states.append(conn.ready.is_set())
        step.set()
        await asyncio.wait_for(conn.ready.wait(), DEADLINE_S)
        states.append(conn.ready.is_set())
        await _until(lambda: len(messages) >= 3, "three messages")
        await conn.close()
        assert messages == [MARKET, b'{"result":null,"id":1}', MARKET]

    _run(_with_server(handler, client))
    assert states == [False, True]


def test_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
        conn = FeedConnection(
            _plan(), f"ws://127.0.0.1:{port}", lambda *_: None, ControlPacer(rate_per_s=5)
        )
        with pytest.raises(ConnectError):
            await conn.open()

    _run(main())


def test_a_rejected_handshake_is_a_connect_error() -> None:
    async def main() -> None:
        async with serve(
            lambda ws: ws.wait_closed(),
            "127.0.0.1",
            0,
            process_request=lambda conn, _req: conn.respond(503, "busy\n"),
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            conn = FeedConnection(
                _plan(), f"ws://127.0.0.1:{port}", lambda *_: None, ControlPacer(rate_per_s=5)
            )
            with pytest.raises(ConnectError, match="503"):
                await conn.open()

    _run(main())


def test_no_proxy_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")
    got: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(MARKET, text=True)
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda _c, m, _t: got.append(m))
        await _until(lambda: bool(got), "a message, straight from the server")
        await conn.close()

    _run(_with_server(handler, client))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_tls_is_verified_against_the_system_store_by_default(
    certificate: tuple[Path, Path],
) -> None:
    async def client(url: str) -> None:
        conn = FeedConnection(_plan(), url, lambda *_: None, ControlPacer(rate_per_s=5))
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await conn.open()

    _run(_with_server(lambda ws: ws.wait_closed(), client, ssl=_server_tls(certificate)))


def test_tls_with_a_trusted_certificate_carries_messages(certificate: tuple[Path, Path]) -> None:
    got: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(MARKET, text=True)
        await ws.wait_closed()

    async def client(url: str) -> None:
        trusted = ssl.create_default_context(cafile=str(certificate[0]))
        conn = await _open(url, lambda _c, m, _t: got.append(m), ssl_context=trusted)
        await _until(lambda: bool(got), "a message over TLS")
        await conn.close()

    _run(_with_server(handler, client, ssl=_server_tls(certificate)))
    assert got == [MARKET]
