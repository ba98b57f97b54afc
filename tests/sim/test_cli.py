"""The simulator as a real subprocess: first line, signals, usage errors, throughput."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from ..recorded import RECORDED
from .helpers import REPO, RawWs, get_json, run, spawn_sim, unwrap

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_line_and_clean_signal_exit(sig: signal.Signals, tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    with spawn_sim("--symbols", "BTCUSDT,ETHUSDT", "--rate", "3000", "--truth-log", str(truth)) as (
        proc,
        info,
    ):
        assert info["pid"] == proc.pid
        assert info["venue"] == "binance"
        assert info["ws_url"].startswith("ws://127.0.0.1:")
        assert info["rest_url"].startswith("http://127.0.0.1:")

        async def probe() -> None:
            async with connect(info["ws_url"] + "/ws/btcusdt@trade") as ws:
                trade = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert trade["e"] == "trade"
            depth = await get_json(info["rest_url"] + "/api/v3/depth?symbol=ETHUSDT&limit=5")
            assert len(depth["bids"]) == 5

        run(probe())
        proc.send_signal(sig)
        assert proc.wait(10) == 0
    lines = truth.read_text().splitlines()
    assert lines
    assert set(json.loads(lines[0])) == {
        "symbol",
        "trade_id",
        "agg_id",
        "price",
        "qty",
        "side",
        "time",
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--venue", "kraken"],
        ["--fault", "explode"],
        ["--rate", "-5"],
        ["--symbols", "btc-usdt"],
        ["--replay", "/nonexistent/dir"],
        ["--replay", "/tmp", "--replay-prefix", "NOPE"],
        ["--mode", "replay"],
        ["--mode", "synthetic", "--replay", "/tmp"],
        ["--port", "70000"],
    ],
)
def test_bad_usage_is_one_line_exit_2(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "consolidator.sim.cli", *args],
        cwd=REPO,
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("consolidator sim: error:")


def test_duration_exits_zero() -> None:
    start = time.monotonic()
    with spawn_sim("--duration", "0.5", "--rate", "100") as (proc, _):
        assert proc.wait(10) == 0
    assert time.monotonic() - start < 8


def test_rest_keep_alive_with_stdlib_client() -> None:
    with spawn_sim("--venue", "binance-usdm", "--rate", "100") as (_, info):
        port = int(info["rest_url"].rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            used = []
            for path in ("/fapi/v1/ping", "/fapi/v1/time", "/fapi/v1/depth?symbol=BTCUSDT&limit=5"):
                conn.request("GET", path)
                response = conn.getresponse()
                assert response.status == 200
                json.loads(response.read())
                used.append(int(response.headers["X-MBX-USED-WEIGHT-1M"]))
            assert used == [1, 2, 4]
        finally:
            conn.close()


def test_replay_subprocess_usdm() -> None:
    with spawn_sim("--venue", "binance-usdm", "--replay", str(RECORDED), "--speed", "max") as (
        _,
        info,
    ):
        assert (info["venue"], info["mode"]) == ("binance-usdm", "replay")
        assert info["symbols"] == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]

        async def probe() -> None:
            url = info["ws_url"] + "/public/stream?streams=sushiusdt@depth@100ms"
            async with connect(url, max_queue=None) as ws:
                stream, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
            assert stream == "sushiusdt@depth@100ms"
            assert data["pu"] <= data["U"] or data["pu"] < data["u"]
            info_body = await get_json(info["rest_url"] + "/fapi/v1/exchangeInfo")
            assert info_body["futuresType"] == "U_MARGINED"

        run(probe())


def _sched_s(pid: int) -> tuple[float, float]:
    """Seconds a process's threads ran on a CPU and waited runnable for one (schedstat)."""
    ran = waited = 0
    paths = list(Path(f"/proc/{pid}/task").glob("*/schedstat"))
    assert paths, "no /proc/PID/task/*/schedstat (a kernel without CONFIG_SCHED_INFO)"
    for path in paths:
        on_cpu, run_delay, _ = path.read_text().split()
        ran, waited = ran + int(on_cpu), waited + int(run_delay)
    return ran / 1e9, waited / 1e9


@pytest.mark.slow
def test_throughput_beyond_target() -> None:
    """At ``--rate max`` one all-streams connection receives tens of thousands of frames/s.

    Per second of the simulator's CPU time, so that it holds on a machine busy with other work
    too (where the simulator gets a fraction of a CPU); and the simulator must want the CPU the
    whole time (running or runnable: nothing throttles it at ``max``).
    """
    with spawn_sim("--rate", "max", "--symbols", "8") as (proc, info):
        streams = "/".join(
            f"{s.lower()}@{k}" for s in info["symbols"] for k in ("trade", "aggTrade", "bookTicker")
        )

        async def measure() -> tuple[float, float, float]:
            ws = await RawWs.connect(info["ws_url"] + "/stream?streams=" + streams)
            loop = asyncio.get_running_loop()
            await asyncio.sleep(0.5)  # pacing: past the start
            before = await get_json(info["rest_url"] + "/sim/stats")
            ran, waited = _sched_s(proc.pid)
            start = loop.time()
            received = 0
            while loop.time() - start < 2.0:
                received += len(await ws.reader.read(1 << 20))
            after = await get_json(info["rest_url"] + "/sim/stats")
            ran, waited = (a - b for a, b in zip(_sched_s(proc.pid), (ran, waited), strict=True))
            elapsed = loop.time() - start
            await ws.close()

            def sent(stats: dict[str, dict[str, dict[str, dict[str, int]]]]) -> int:
                return sum(sum(s["sent"].values()) for s in stats["symbols"].values())

            assert received > 0
            frames = sent(after) - sent(before)
            return frames / elapsed, frames / ran, (ran + waited) / elapsed

        rate, per_cpu_s, demand = run(measure())
        print(
            f"simulator throughput: {rate:.0f} frames/s, {per_cpu_s:.0f} per CPU-second, "
            f"running or runnable {demand:.0%} of the time"
        )
        assert per_cpu_s > 30000
        assert demand > 0.8
