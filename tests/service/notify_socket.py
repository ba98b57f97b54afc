"""A real sd_notify socket: what systemd's side of the protocol receives."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


class NotifySocket:
    """A bound AF_UNIX datagram socket; `env` points a child process at it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[tuple[float, str]] = []

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def collect(self, seconds: float) -> list[str]:
        """Receive for ``seconds``; every message so far."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [m for _, m in self.messages]

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first message (received so far or within ``timeout``) with a line ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            for _, message in self.messages:
                if any(line.startswith(prefix) for line in message.splitlines()):
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.messages}")
            self.collect(min(left, 0.2))

    def times(self, message: str) -> list[float]:
        """When each message equal to ``message`` arrived."""
        return [t for t, m in self.messages if m == message]

    def close(self) -> None:
        self.sock.close()
