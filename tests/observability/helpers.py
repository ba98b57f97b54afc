"""Real processes for the observability tests: the exporter, and a Prometheus server."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from consolidator.process import stop_process
from tests.feed.helpers import REPO, env_without_proxy, wait_until

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)/metrics")


def http_get(url: str) -> str:
    with _OPENER.open(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


class Exporter:
    """``consolidator exporter`` on a free loopback port, as a subprocess."""

    def __init__(self, config_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log = config_dir / f"exporter-{uuid.uuid4().hex[:6]}.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consolidator.cli.main", "exporter",
                 "--config-dir", str(config_dir), "--listen", "127.0.0.1:0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
                env=env if env is not None else env_without_proxy(),
            )  # fmt: skip
        self.port = 0
        wait_until(self._listening, 30, "the exporter to listen")
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exporter exited: {self.stderr()}")
        match = _LISTENING.search(self.stderr())
        if match:
            self.port = int(match.group(2))
        return bool(match)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def scrape(self) -> str:
        return http_get(self.url)

    def stop(self) -> int:
        if not stop_process(self.proc, timeout=15):
            raise AssertionError(f"exporter ignored SIGTERM: {self.stderr()}")
        return self.proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Prometheus:
    """A real Prometheus server on loopback scraping ``target`` every second, with tmp storage."""

    def __init__(self, tmp: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise AssertionError("prometheus is not installed (Debian package prometheus)")
        self.dir = tmp / f"prometheus-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir()
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: consolidator\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env_without_proxy(),
            )  # fmt: skip
        wait_until(self._ready, 60, "Prometheus to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text(errors='replace')}")
        try:
            http_get(self.url + "/-/ready")
        except OSError:
            return False
        return True

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        reply = json.loads(http_get(url))
        assert reply["status"] == "success", reply
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of an instant query (None when it has no result)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> bool:
        reply = json.loads(http_get(self.url + "/api/v1/targets"))
        active = reply["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_value(prometheus: Prometheus, promql: str, expected: float, timeout: float = 30.0) -> None:
    """Until ``promql`` evaluates to ``expected`` in Prometheus."""
    seen: list[float | None] = []

    def equal() -> bool:
        seen.append(prometheus.value(promql))
        return seen[-1] == expected

    try:
        wait_until(equal, timeout, f"{promql} == {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last values {seen[-5:]}") from None
