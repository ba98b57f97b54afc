"""sd_notify for the services: READY, WATCHDOG, STATUS, STOPPING.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket path; ``@`` starts an abstract name) to a
``Type=notify`` service and ``WATCHDOG_USEC`` (with ``WATCHDOG_PID``) when ``WatchdogSec=`` is
set. Without them every call is a no-op, so the commands behave the same outside systemd.

The socket is non-blocking: a notification that does not fit (systemd stalled) is dropped and
counted rather than ever blocking the writer's event loop. Watchdog pings must come from the loop
that does the work (`ping_if_due` from its timer or pass), so a blocked loop stops pinging and
systemd restarts the process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier"]

_log = logging.getLogger("consolidator.notify")


class Notifier:
    """The service's side of the systemd notification protocol.

    Args:
        environ: where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read.
        clock: monotonic seconds (tests).

    Attributes:
        watchdog_interval_s: seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None
            when systemd runs no watchdog for this process.
        dropped: notifications that could not be sent.
    """

    def __init__(
        self,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._next_ping = 0.0
        self._warned = False
        self.dropped = 0
        self.watchdog_interval_s: float | None = None
        self._socket: socket.socket | None = None
        address = environ.get("NOTIFY_SOCKET")
        if address:
            self._socket = _connect(address)
        usec = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not owner or owner == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 2e6

    @property
    def enabled(self) -> bool:
        """A notification socket is connected."""
        return self._socket is not None

    def ready(self, status: str | None = None) -> None:
        """Start-up is complete (``READY=1``), with an optional first status line."""
        self._send("READY=1" if status is None else f"READY=1\nSTATUS={_line(status)}")
        self._next_ping = 0.0

    def status(self, text: str) -> None:
        """The one-line status ``systemctl status`` shows."""
        self._send(f"STATUS={_line(text)}")

    def stopping(self, status: str | None = None) -> None:
        """An orderly stop has begun (``STOPPING=1``)."""
        self._send("STOPPING=1" if status is None else f"STOPPING=1\nSTATUS={_line(status)}")

    def ping(self) -> None:
        """Tell the watchdog the process is alive (``WATCHDOG=1``)."""
        self._send("WATCHDOG=1")
        if self.watchdog_interval_s is not None:
            self._next_ping = self._clock() + self.watchdog_interval_s

    def ping_if_due(self) -> None:
        """`ping` when half the watchdog interval has passed since the last one; cheap otherwise."""
        if self.watchdog_interval_s is not None and self._clock() >= self._next_ping:
            self.ping()

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        sock = self._socket
        if sock is None:
            return
        try:
            sock.send(message.encode())
        except OSError as exc:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                _log.warning("sd_notify: cannot send to systemd: %s (dropped; not repeated)", exc)


def _connect(address: str) -> socket.socket | None:
    target = "\0" + address[1:] if address.startswith("@") else address
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(target)
    except OSError as exc:
        sock.close()
        _log.warning("sd_notify: cannot connect to NOTIFY_SOCKET %s: %s", address, exc.strerror)
        return None
    sock.setblocking(False)
    return sock


def _line(text: str) -> str:
    return text.replace("\n", " ")
