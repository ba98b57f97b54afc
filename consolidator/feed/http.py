"""A small asyncio HTTP/1.1 GET client: one keep-alive connection, TLS, timeouts.

Enough for a venue's REST market-data endpoints: ``GET`` with a query string, bodies framed by
``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the connection; one request at a
time per client (the REST layer serializes its requests anyway, see `consolidator.feed.rest`).
A request on a kept-alive connection that the server closed in the meantime is retried once on a
fresh connection (GET is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode, urlsplit

from consolidator import __version__
from consolidator.errors import ConfigError, ConsolidatorError

__all__ = ["HttpClient", "HttpError", "HttpResponse"]

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 64 * 1024 * 1024
USER_AGENT: Final = f"consolidator/{__version__}"


class HttpError(ConsolidatorError):
    """The request failed: connection, timeout, or a response that is not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response; ``headers`` has lower-case names, ``ts_recv`` is when the body was complete
    (ns since the epoch)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    ts_recv: int


class _RetryError(Exception):
    """A reused connection was closed by the server before it answered."""


class HttpClient:
    """GET requests to one ``http://`` or ``https://`` origin over a kept-alive connection.

    Args:
        base_url: scheme, host and optional port (and path prefix) of the server.
        timeout_s: the limit for one whole request (connect, send, headers, body).

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL.
    """

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        default_port = self._port == (443 if self._tls else 80)
        self._host_header = self._host if default_port else f"{self._host}:{self._port}"
        if ":" in self._host and not default_port:
            self._host_header = f"[{self._host}]:{self._port}"
        self._timeout = timeout_s
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self._tls else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def get(self, path: str, query: Mapping[str, str | int] | None = None) -> HttpResponse:
        """``GET path?query`` and read the whole response.

        Raises:
            HttpError: no response within the timeout, a connection error, a malformed
                response, or a body above 64 MiB.
        """
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    try:
                        return await self._exchange(target)
                    except _RetryError:
                        return await self._exchange(target)
            except TimeoutError:
                await self._drop()
                raise HttpError(f"GET {target}: no response within {self._timeout:g} s") from None
            except (OSError, EOFError, ValueError, _RetryError, asyncio.LimitOverrunError) as exc:
                await self._drop()
                raise HttpError(f"GET {target}: {exc or type(exc).__name__}") from None
            except HttpError:
                await self._drop()
                raise

    async def close(self) -> None:
        """Close the kept-alive connection, if any."""
        await self._drop()

    async def _exchange(self, target: str) -> HttpResponse:
        reused = self._writer is not None
        if self._writer is None:
            await self._connect()
        reader, writer = self._reader, self._writer
        assert reader is not None
        assert writer is not None
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {self._host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: application/json\r\nAccept-Encoding: identity\r\n\r\n"
        )
        try:
            writer.write(request.encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            await self._drop()
            if reused and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                raise _RetryError(str(exc)) from None
            raise
        except asyncio.LimitOverrunError:
            raise HttpError(f"GET {target}: response head above {MAX_HEAD} bytes") from None
        status, headers, version = _parse_head(head, target)
        body = await self._body(reader, headers, status, target)
        ts_recv = time.time_ns()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if not keep:
            await self._drop()
        return HttpResponse(status, headers, body, ts_recv)

    async def _body(
        self, reader: asyncio.StreamReader, headers: Mapping[str, str], status: int, target: str
    ) -> bytes:
        if status in (204, 304) or 100 <= status < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _chunked(reader, target)
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise HttpError(f"GET {target}: bad Content-Length {length!r}")
            size = int(length)
            if size > MAX_BODY:
                raise HttpError(f"GET {target}: body of {size} bytes is too large")
            return await reader.readexactly(size)
        body = await reader.read(MAX_BODY + 1)
        while True:
            more = await reader.read(MAX_BODY + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > MAX_BODY:
            raise HttpError(f"GET {target}: body above {MAX_BODY} bytes")
        await self._drop()
        return body

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._tls else None,
            limit=MAX_HEAD,
        )

    async def _drop(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


def _parse_head(head: bytes, target: str) -> tuple[int, dict[str, str], str]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"GET {target}: not an HTTP/1.x response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"GET {target}: malformed header line {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), headers, parts[0]


async def _chunked(reader: asyncio.StreamReader, target: str) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"GET {target}: bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise HttpError(f"GET {target}: body above {MAX_BODY} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(f"GET {target}: chunk not followed by CRLF")
