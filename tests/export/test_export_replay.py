"""``consolidator export`` of recorded Binance traffic replayed through the real simulator, writer
and flusher: every record exactly once with exact values (read back with DuckDB), and book rows
equal to a book rebuilt here, independently, from the recording at each sample time."""

from __future__ import annotations

import math
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.export.helpers import (
    MS,
    Exported,
    Rebuild,
    event_time,
    formulas,
    parquet_glob,
)

pytestmark = pytest.mark.integration

INTERVAL_NS = 100 * MS


def _sql(db: duckdb.DuckDBPyConnection, query: str) -> list[tuple[object, ...]]:
    return db.sql(query).fetchall()


def test_every_trade_exactly_once_with_exact_values(exported: Exported) -> None:
    rec, name = exported.rec, exported.feed.name
    db = duckdb.connect()
    trades = parquet_glob(exported.out, name, "trades")
    rows = _sql(db, f"select symbol, trade_id, price, qty, side, epoch_ns(ts_event), feed, venue "
                    f"from read_parquet('{trades}') order by symbol, trade_id")  # fmt: skip
    expected = sorted(
        (t["s"], t["a"], Decimal(t["p"]), Decimal(t["q"]), "sell" if t["m"] else "buy",
         t["T"] * MS, name, rec.venue)
        for t in rec.trades
    )  # fmt: skip
    assert rows == expected
    assert _sql(db, f"select count(*) = count(distinct (symbol, trade_id)) from '{trades}'") == [
        (True,)
    ]
    for path in exported.out.glob(f"feed={name}/stream=*/*/*/*.parquet"):
        schema = pq.read_schema(path)
        for column in schema:
            if column.name.startswith("ts"):
                assert column.type == pa.timestamp("ns", tz="UTC"), (path, column)
            if column.name in ("price", "qty") or column.name[:7] in ("bid_px_", "ask_sz_"):
                assert column.type == pa.decimal128(38, 18), (path, column)
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_quotes_and_depth_exactly_once_with_exact_values(exported: Exported) -> None:
    rec, name = exported.rec, exported.feed.name
    db = duckdb.connect()
    quotes = _sql(db, f"select symbol, update_id, bid_price, bid_qty, ask_price, ask_qty "
                      f"from '{parquet_glob(exported.out, name, 'quotes')}'")  # fmt: skip
    assert sorted(quotes) == sorted(
        (q["s"], q["u"], Decimal(q["b"]), Decimal(q["B"]), Decimal(q["a"]), Decimal(q["A"]))
        for q in rec.quotes
    )
    depth = parquet_glob(exported.out, name, "depth")
    diffs = _sql(db, f"select symbol, first_update_id, last_update_id, prev_update_id, bids, asks "
                     f"from '{depth}' where type = 'depth' order by seq")  # fmt: skip
    expected = [
        (d["s"], d["U"], d["u"], d.get("pu"),
         [{"price": Decimal(p), "qty": Decimal(q)} for p, q in d["b"]],
         [{"price": Decimal(p), "qty": Decimal(q)} for p, q in d["a"]])
        for d in rec.diffs if d in rec.published(d["s"])
    ]  # fmt: skip
    assert sorted(diffs, key=lambda r: (r[0], r[2])) == sorted(expected, key=lambda r: (r[0], r[2]))
    snaps = _sql(db, f"select symbol, last_update_id, len(bids), len(asks) from '{depth}' "
                     f"where type = 'snapshot' order by symbol")  # fmt: skip
    assert snaps == [
        (s, rec.snapshots[s].last, len(rec.snapshots[s].bids), len(rec.snapshots[s].asks))
        for s in sorted(rec.snapshots)
    ]


def test_book_rows_equal_an_independent_rebuild_at_every_sample_time(exported: Exported) -> None:
    rec, name = exported.rec, exported.feed.name
    db = duckdb.connect()
    book = parquet_glob(exported.out, name, "book")
    levels = ", ".join(f"bid_px_{i:02d}, bid_sz_{i:02d}, ask_px_{i:02d}, ask_sz_{i:02d}"
                       for i in range(1, 11))  # fmt: skip
    derived = ("midprice", "spread", "spread_bps", "microprice", "imbalance_1", "imbalance_5",
               "imbalance_10", "depth_10bps", "depth_50bps")  # fmt: skip
    rows = _sql(db, f"select symbol, epoch_ns(ts), gap, last_update_id, {levels}, "
                    f"{', '.join(derived)} from '{book}' order by symbol, ts")  # fmt: skip
    last_event = max(event_time(d) for d in rec.diffs if d in rec.published(d["s"]))
    by_symbol: dict[str, list[tuple[object, ...]]] = {}
    for row in rows:
        by_symbol.setdefault(str(row[0]), []).append(row)
    assert sorted(by_symbol) == rec.symbols
    for symbol, mine in by_symbol.items():
        times = [int(str(r[1])) for r in mine]
        assert times == list(range(times[0], times[-1] + 1, INTERVAL_NS)), symbol  # no hole
        assert times[-1] == last_event // INTERVAL_NS * INTERVAL_NS
        first_diff = event_time(rec.published(symbol)[0])
        assert times[0] <= -(-first_diff // INTERVAL_NS) * INTERVAL_NS
        rebuild = Rebuild(rec, symbol)
        for row in mine:
            ts = int(str(row[1]))
            assert row[2] is False  # the recording has no gap
            bids, asks, last = rebuild.at(ts)
            assert row[3] == last, (symbol, ts)
            flat: list[object] = []
            for i in range(10):
                flat += [*(bids[i] if i < len(bids) else (None, None)),
                         *(asks[i] if i < len(asks) else (None, None))]  # fmt: skip
            assert list(row[4:44]) == flat, (symbol, ts)
            assert dict(zip(derived, row[44:], strict=True)) == formulas(bids, asks), (symbol, ts)


def test_feature_rows_carry_each_interval_s_trades(exported: Exported) -> None:
    """Checked with DuckDB against the exported trades: (T - interval, T] by exchange time."""
    rec, name = exported.rec, exported.feed.name
    db = duckdb.connect()
    features = parquet_glob(exported.out, name, "features")
    trades = parquet_glob(exported.out, name, "trades")
    mismatched = _sql(db, f"""
        with t as (
            select f.symbol, f.ts,
                   coalesce(sum(t.qty) filter (where t.side = 'buy'), 0)::double as buy,
                   coalesce(sum(t.qty) filter (where t.side = 'sell'), 0)::double as sell,
                   sum(t.price::double * t.qty::double) / sum(t.qty::double) as vwap
            from '{features}' f left join '{trades}' t
              on t.symbol = f.symbol and t.ts_event > f.ts - interval 100 millisecond
             and t.ts_event <= f.ts
            group by all)
        select t.* from t join '{features}' f using (symbol, ts)
        where f.taker_buy_volume != t.buy or f.taker_sell_volume != t.sell
           or f.signed_volume != t.buy - t.sell
           or abs(coalesce(f.vwap, 0) - coalesce(t.vwap, 0)) > 1e-12 * coalesce(f.vwap, 1)
    """)  # fmt: skip
    assert mismatched == []
    first_rows = dict(_sql(db, f"select symbol, min(ts) from '{features}' group by symbol"))
    counted = _sql(
        db, f"select count(*) from '{features}' where taker_buy_volume + taker_sell_volume > 0"
    )
    expected_trades = [
        t for t in rec.trades if t["T"] * MS > first_rows[t["s"]].timestamp() * 1e9 - 1e8
    ]
    assert counted[0][0] > 0 if expected_trades else counted[0][0] == 0
    # returns and volatility from the midprices (log change, sample std over 20 intervals)
    rows = _sql(db, f"select symbol, midprice, returns, volatility_20 from '{features}' "
                    f"order by symbol, ts")  # fmt: skip
    prev: dict[str, float] = {}
    window: dict[str, list[float]] = {}
    for symbol, mid, ret, vol in rows:
        assert isinstance(mid, float)
        expected = math.log(mid / prev[symbol]) if symbol in prev else None
        assert ret == expected
        prev[symbol] = mid
        if expected is not None:
            window.setdefault(symbol, []).append(expected)
        w = window.get(symbol, [])[-20:]
        if len(w) == 20:
            mean = math.fsum(w) / 20
            assert vol == pytest.approx(math.sqrt(math.fsum((x - mean) ** 2 for x in w) / 19))
        else:
            assert vol is None


def test_csv_has_the_same_rows_with_plain_decimal_strings(exported: Exported) -> None:
    rec, name = exported.rec, exported.feed.name
    db = duckdb.connect()
    trades = parquet_glob(exported.csv, name, "trades", "csv")
    rows = _sql(
        db, f"select symbol, trade_id, price, qty from read_csv('{trades}', all_varchar=true)"
    )
    assert sorted(rows) == sorted(
        (t["s"], str(t["a"]), _plain(t["p"]), _plain(t["q"])) for t in rec.trades
    )
    pq_book = parquet_glob(exported.out, name, "book")
    csv_book = parquet_glob(exported.csv, name, "book", "csv")
    same = _sql(db, f"""
        select count(*) from '{pq_book}' p join read_csv('{csv_book}', all_varchar=true) c
          on p.symbol = c.symbol and p.ts = c.ts::timestamptz
         and p.bid_px_01 = c.bid_px_01::decimal(38, 18) and p.ask_sz_10 is not distinct from
             c.ask_sz_10::decimal(38, 18) and p.microprice = c.microprice::double
    """)  # fmt: skip
    total = _sql(db, f"select count(*) from '{pq_book}'")
    assert same == total


def _plain(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text
