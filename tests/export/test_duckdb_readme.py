"""The README's DuckDB examples, run as written on an export of the recorded traffic, against
answers computed here from the recording (books rebuilt independently, trades as recorded)."""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests.export.helpers import MS, Exported, Rebuild, formulas

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
INTERVAL_NS = 100 * MS


def _examples() -> list[str]:
    """The sql blocks of the README's DuckDB section, in order."""
    text = README.read_text()
    section = text[text.index("### DuckDB") :]
    section = section[: section.index("\n## ")]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def _run(exported: Exported, sql: str) -> list[tuple[object, ...]]:
    db = duckdb.connect()
    db.sql(_examples()[0])  # SET TimeZone = 'UTC'
    sql = sql.replace("'export/feed=binance/", f"'{exported.out}/feed={exported.feed.name}/")
    return db.sql(sql).fetchall()


_EXPECTED: dict[Path, dict[str, list[tuple[int, dict[str, float]]]]] = {}


def _expected_rows(exported: Exported) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """Per symbol, (T, book formulas) for every T the export has a row for, rebuilt here."""
    if exported.out in _EXPECTED:
        return _EXPECTED[exported.out]
    rows = duckdb.sql(
        "select symbol, min(epoch_ns(ts)), max(epoch_ns(ts)) from "
        f"'{exported.out}/feed={exported.feed.name}/stream=book/*/*/*.parquet' group by symbol"
    ).fetchall()
    out: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for symbol, first, last in rows:
        rebuild = Rebuild(exported.rec, str(symbol))
        series = []
        for ts in range(int(str(first)), int(str(last)) + 1, INTERVAL_NS):
            bids, asks, _ = rebuild.at(ts)
            series.append((ts, formulas(bids, asks)))
        out[str(symbol)] = series
    _EXPECTED[exported.out] = out
    return out


def test_the_readme_has_the_examples() -> None:
    examples = _examples()
    assert len(examples) == 4
    assert "ASOF JOIN" in examples[3]


def test_spread_and_imbalance_per_minute(exported: Exported) -> None:
    got = _run(exported, _examples()[1])
    buckets: dict[tuple[str, int], list[dict[str, float]]] = defaultdict(list)
    for symbol, series in _expected_rows(exported).items():
        for ts, values in series:
            buckets[(symbol, ts // (60 * 10**9))].append(values)
    assert len(got) == len(buckets)
    for symbol, minute, spread_bps, imb1, imb5, n in got:
        key = (str(symbol), int(minute.timestamp()) // 60)  # type: ignore[attr-defined]
        values = buckets[key]
        assert n == len(values)
        assert spread_bps == pytest.approx(math.fsum(v["spread_bps"] for v in values) / n)
        assert imb1 == pytest.approx(math.fsum(v["imbalance_1"] for v in values) / n)
        assert imb5 == pytest.approx(math.fsum(v["imbalance_5"] for v in values) / n)


def test_five_second_volatility(exported: Exported) -> None:
    got = _run(exported, _examples()[2])
    returns: dict[tuple[str, int], list[float]] = defaultdict(list)
    for symbol, series in _expected_rows(exported).items():
        for (_, before), (ts, now) in itertools.pairwise(series):
            returns[(symbol, ts // (5 * 10**9))].append(
                math.log(now["midprice"] / before["midprice"])
            )
    got_by_key = {
        (str(symbol), int(bucket.timestamp()) // 5): (vol, n)  # type: ignore[attr-defined]
        for symbol, bucket, vol, n in got
    }
    assert {k for k, (_, n) in got_by_key.items() if n} == set(returns)
    for key, values in returns.items():
        vol, n = got_by_key[key]
        assert n == len(values)
        if n < 2:
            assert vol is None
            continue
        mean = math.fsum(values) / n
        expected = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1))
        assert vol == pytest.approx(expected, rel=1e-9, abs=1e-15), key


def test_trades_with_the_prevailing_book(exported: Exported) -> None:
    got = _run(exported, _examples()[3])
    rec = exported.rec
    books = _expected_rows(exported)
    first_row = {symbol: series[0][0] for symbol, series in books.items()}
    expected = []
    for trade in sorted(rec.trades, key=lambda t: (t["s"], t["a"])):
        ts = trade["T"] * MS
        book_ts = ts // INTERVAL_NS * INTERVAL_NS
        if trade["s"] not in first_row or book_ts < first_row[trade["s"]]:
            continue  # no book row at or before it: an inner ASOF JOIN drops the trade
        bids, asks, _ = Rebuild(rec, trade["s"]).at(book_ts)
        price = Decimal(trade["p"])
        mid = (bids[0][0] + asks[0][0]) / 2
        expected.append(
            (trade["s"], trade["a"], price, book_ts, bids[0][0], asks[0][0], price - mid)
        )
    rows = [
        (str(s), tid, price, int(bts.timestamp() * 10**9 + 0.5), bid, ask, fm)  # type: ignore[attr-defined]
        for s, _, tid, _, price, _, bts, bid, ask, fm in got
    ]
    assert [r[:6] for r in rows] == [e[:6] for e in expected]
    for row, exp in zip(rows, expected, strict=True):
        assert row[6] == exp[6]  # exact decimal arithmetic in DuckDB too
    assert rows or not rec.trades
