"""``depth_speed``: the writer subscribes the configured diff-depth stream of the simulator, and
the books it publishes from it are right."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from consolidator.payloads import RAW_HEADER
from consolidator.records import RecordType

from .checks import check_depth_chain, checkpoint, stop_detail, wait_synced
from .helpers import Rings, running, wait_until

pytestmark = pytest.mark.integration

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize(
    ("venue", "speed", "stream", "interval_ms"),
    [
        ("binance", "1000ms", "@depth", 1000),
        ("binance-usdm", "0ms", "@depth@0ms", 0),
        ("binance-usdm", "500ms", "@depth@500ms", 500),
    ],
)
def test_the_configured_depth_stream_is_carried(
    tmp_path: Path, venue: str, speed: str, stream: str, interval_ms: int
) -> None:
    sim_args = ["--venue", venue, "--symbols", ",".join(SYMBOLS), "--rate", "2000"]
    keys = {"venue": venue, "symbols": SYMBOLS, "channels": ["depth"], "depth_speed": speed}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_synced(rings, SYMBOLS, timeout=30)
        checkpoint(sim, rings, SYMBOLS)

        def diffs_of_first() -> int:
            depth = rings.depth()
            return sum(not d.snapshot and d.symbol_id == depth[0].symbol_id for d in depth)

        wait_until(lambda: diffs_of_first() >= 8, 30, "8 diffs of one symbol")
        code, _ = writer.stop()
        assert code == 0, writer.stderr()
        depth = rings.depth()
        raw = [p[RAW_HEADER.size :] for _, t, p in rings.variable("raw") if t == RecordType.RAW]
        detail = stop_detail(rings)
    check_depth_chain(depth, venue == "binance-usdm")
    names = {orjson.loads(m)["stream"] for m in raw if m.startswith(b'{"stream"')}
    assert names == {s.lower() + stream for s in SYMBOLS}
    assert detail["internal_errors"] == 0
    assert not detail["parse_errors"]
    diffs = [d for d in depth if not d.snapshot and d.symbol_id == depth[0].symbol_id]
    spacing = sorted(b.ts_recv - a.ts_recv for a, b in itertools.pairwise(diffs))
    median_ms = spacing[len(spacing) // 2] / 1e6
    if interval_ms:
        assert 0.6 * interval_ms <= median_ms <= 1.6 * interval_ms, spacing
    else:
        assert median_ms < 50, spacing
