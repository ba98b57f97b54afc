"""Sans-I/O venue protocols: bytes and receive times in, records and requests out.

``base`` holds the venue-neutral outputs, the connection table and the control-frame pacer;
``book_sync`` the per-symbol order-book sync state machine with pluggable continuity rules;
``binance`` the Binance spot and USD-M protocol. None of them does I/O or reads the clock.
"""

__all__: list[str] = []
