"""The export of the recorded replay, shared by the modules of this package (one pipeline per
venue for the whole package)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from consolidator.records import EventKind
from tests.export.helpers import Exported, export
from tests.export.helpers import read_recording as read_rec
from tests.feed.helpers import Rings, running, wait_until
from tests.pipeline import Flusher
from tests.recorded import RECORDED


@pytest.fixture(scope="package", params=["binance-usdm", "binance"])
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exported]:
    """One replay per venue, exported once as Parquet (all five streams) and once as CSV."""
    venue = request.param
    tmp = tmp_path_factory.mktemp(venue)
    rec = read_rec(venue)
    sim_args = ["--venue", venue, "--replay", str(RECORDED), "--speed", "max"]
    keys = {"venue": venue, "symbols": rec.symbols, "trade_stream": "aggTrade"}
    with running(tmp, sim_args, **keys) as (_, feed, writer):
        flusher = Flusher(feed)
        rings = Rings(feed)
        depth_records = len(rec.snapshots) + sum(len(rec.published(s)) for s in rec.symbols)

        def complete() -> bool:
            return (
                rings.ready()
                and Counter(rings.event_kinds())[EventKind.BOOK_SYNCED] >= len(rec.symbols)
                and len(rings.fixed("trades")) >= len(rec.trades)
                and len(rings.fixed("quotes")) >= len(rec.quotes)
                and len(rings.depth()) >= depth_records
            )

        wait_until(complete, 30, f"the replay in the rings ({writer.stderr()})")
        out, csv = tmp / "parquet", tmp / "csv"
        streams = ["--stream", "trades", "--stream", "quotes", "--stream", "depth"]
        done = export(feed.root, feed.name, *streams, "--stream", "book", "--stream", "features",
                      "--out", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # quiet when not on a terminal
        done = export(feed.root, feed.name, "--stream", "trades", "--stream", "book",
                      "--format", "csv", "--out", str(csv))  # fmt: skip
        assert done.returncode == 0, done.stderr
        flusher.stop()
        yield Exported(rec, feed, out, csv)
