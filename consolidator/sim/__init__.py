"""Local Binance exchange simulator (spot and USD-M) for tests and benchmarks.

The simulator serves the venue's WebSocket market streams and REST market-data endpoints on
loopback, driven either by a seeded synthetic market or by recorded traffic. Run it with
``python -m consolidator.sim.cli --help``.
"""

__all__: list[str] = []
