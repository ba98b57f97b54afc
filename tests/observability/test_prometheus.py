"""A real Prometheus scrapes the exporter while the simulator feeds two writers.

Checked through Prometheus's HTTP API: message counts equal what the simulator sent, the latency
histograms are populated and usable with histogram_quantile, process metrics arrive, every query
of the Grafana dashboard (etc/grafana) runs, and a feed that appears (or goes away) while
everything runs shows up (or disappears).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.feed.helpers import REPO, Feed, Writer, wait_until
from tests.observability.helpers import Exporter, Prometheus, wait_value
from tests.pipeline import pipeline, wait_rings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANNEL_OF = {"trade": "trades", "bookTicker": "quotes", "depthUpdate": "depth"}
DASHBOARD = REPO / "etc" / "grafana" / "consolidator.json"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the Grafana dashboard, ready for Prometheus."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in panels
        for target in panel.get("targets", ())
    ]


def test_prometheus_sees_exact_counts_histograms_and_feeds_coming_and_going(
    tmp_path: Path,
) -> None:
    with pipeline(tmp_path, "--venue", "binance", "--symbols", "3", "--rate", "200") as p:
        exporter = Exporter(p.feed.root)
        prometheus: Prometheus | None = None
        second: Writer | None = None
        try:
            prometheus = Prometheus(tmp_path, f"127.0.0.1:{exporter.port}")
            wait_until(prometheus.targets_up, 30, "Prometheus to scrape the exporter")

            # A feed appears while the exporter runs.
            feed2 = Feed(p.feed.root, name="f2", shm_dir=p.feed.shm_dir)
            feed2.write(venue="binance", symbols=list(p.sim.info["symbols"]),
                        ws_url=p.sim.ws_url, rest_url=p.sim.rest_url)  # fmt: skip
            second = Writer(feed2)
            wait_rings(feed2)
            wait_value(prometheus, 'consolidator_writer_up{feed="f2"}', 1.0)
            received = 'sum(consolidator_messages_received_total{feed="f2",channel="trades"})'
            wait_until(lambda: (prometheus.value(received) or 0) > 50, 60, "f2's trades")

            # Latency histograms, populated and summarized by Prometheus.
            for stream in ("trades", "quotes", "depth"):
                p99 = prometheus.value(
                    "histogram_quantile(0.99, sum by (le) (rate("
                    f'consolidator_receive_to_commit_seconds_bucket{{feed="f1",stream="{stream}"}}'
                    "[1m])))"
                )
                assert p99 is not None
                assert 0 < p99 <= 1.0, (stream, p99)
            for channel in ("trades", "depth"):
                count = prometheus.value(
                    f'consolidator_exchange_to_receive_seconds_count{{feed="f1",channel="{channel}"}}'
                )
                assert count is not None
                assert count > 0
            # Every query of the Grafana dashboard runs; all but the rare-event ones have data.
            for title, expr in dashboard_queries():
                result = prometheus.query(expr.replace("$feed", "f1|f2"))
                rare = "parse_errors" in expr or "reconnects" in expr
                assert result or rare, f"dashboard panel {title!r}: no data for {expr}"
            rss = prometheus.value(
                'consolidator_process_resident_memory_bytes{service="consolidator@f1"}'
            )
            assert rss is not None
            assert rss > 10e6

            # Stop the traffic: what the simulator sent is final; the counts must equal it.
            p.sim.control(action="pause")
            stats = p.sim.stats()
            assert stats["connections"]["frames_discarded"] == 0
            sent: Counter[str] = Counter()
            for symbol in stats["symbols"].values():
                for kind, count in symbol["sent"].items():
                    sent[CHANNEL_OF[kind]] += count
            assert all(sent[c] > 0 for c in ("trades", "quotes", "depth")), sent
            for channel, count in sent.items():
                promql = f'sum(consolidator_messages_received_total{{channel="{channel}"}})'
                wait_value(prometheus, promql, float(count))
            for feed in ("f1", "f2"):  # the raw ring holds every message received
                messages = prometheus.value(
                    f'sum(consolidator_messages_received_total{{feed="{feed}"}})'
                )
                raw = prometheus.value(
                    f'consolidator_records_published_total{{feed="{feed}",stream="raw"}}'
                )
                assert messages == raw

            # The feed goes away: its series disappear from Prometheus.
            assert second.stop()[0] == 0
            shutil.rmtree(p.feed.shm_dir / "f2")
            wait_until(
                lambda: prometheus.query('consolidator_writer_up{feed="f2"}') == [],
                30,
                "f2 to disappear from Prometheus",
            )
            assert prometheus.value('consolidator_writer_up{feed="f1"}') == 1.0
        finally:
            if second is not None and second.alive():
                second.stop()
            if prometheus is not None:
                prometheus.stop()
            assert exporter.stop() == 0
