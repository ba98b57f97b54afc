"""Minimal asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) for the REST side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpRequest", "HttpResponse", "HttpServer"]

_log = logging.getLogger(__name__)
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A parsed request.

    Attributes:
        method: Uppercase method.
        path: Decoded path without the query.
        query: Query parameters (last value wins).
        headers: Lowercase header names to values.
        body: Request body.
        peer: Client IP address.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: str


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response with a JSON (or other) body."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())
    content_type: str = "application/json;charset=UTF-8"


Handler = Callable[[HttpRequest], HttpResponse]


class HttpServer:
    """Serves ``handler`` over HTTP/1.1 on ``host:port`` (0 = ephemeral).

    Args:
        handler: Synchronous request handler.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=_MAX_HEAD)
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close open client connections."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "local"
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._write(writer, HttpResponse(431, b"{}"), close=True)
                    return
                request, keep_alive, error = self._parse(head, ip)
                if request is None:
                    await self._write(writer, HttpResponse(400, error.encode()), close=True)
                    return
                length = int(request.headers.get("content-length", "0") or 0)
                if length > _MAX_BODY:
                    await self._write(writer, HttpResponse(413, b"{}"), close=True)
                    return
                if length:
                    try:
                        body = await reader.readexactly(length)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        return
                    request = HttpRequest(
                        request.method,
                        request.path,
                        request.query,
                        request.headers,
                        body,
                        request.peer,
                    )
                try:
                    response = self._handler(request)
                except Exception:
                    _log.exception("REST handler failed")
                    response = HttpResponse(500, b'{"code":-1000,"msg":"Internal error."}')
                await self._write(writer, response, close=not keep_alive)
                if not keep_alive:
                    return
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    def _parse(head: bytes, ip: str) -> tuple[HttpRequest | None, bool, str]:
        try:
            text = head.decode("latin-1")
            request_line, *header_lines = text.split("\r\n")
            method, target, version = request_line.split(" ", 2)
        except ValueError:
            return None, False, "bad request line"
        headers: dict[str, str] = {}
        for line in header_lines:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                return None, False, "bad header"
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            return None, False, "chunked bodies are not supported"
        if not headers.get("content-length", "0").isdigit():
            return None, False, "bad content-length"
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        connection = headers.get("connection", "").lower()
        keep_alive = (version == "HTTP/1.1" and connection != "close") or connection == "keep-alive"
        return HttpRequest(method.upper(), parts.path, query, headers, b"", ip), keep_alive, ""

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: HttpResponse, close: bool) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head + response.body)
        await writer.drain()
