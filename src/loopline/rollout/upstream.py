"""The router's client side: a small HTTP/1.1 client over pooled keep-alive connections to one model server.

Why not httpx or aiohttp: the router's budget is 0.5 ms added per request, and on this kind of host a
request through httpx's AsyncClient costs ~0.55 ms of Python over a bare socket, aiohttp's ~0.2 ms; this
client, an ``asyncio.Protocol`` that writes each request in one ``write`` and parses the answer in place,
costs a few tens of microseconds. It speaks only what the router needs: plain ``http://`` upstreams,
whole request and response bodies in memory (``Content-Length``, chunked, or until close), keep-alive.

No delayed-ACK stall on this side either: every connection sets TCP_NODELAY (asyncio does too, for
connections it creates; set here explicitly so the property does not hang on that), and each request
leaves in a single write, so Nagle's algorithm never holds back a second segment waiting for an ACK.
A kept-alive connection the server closed while it sat idle is noticed when it closes, or, if the close
races the next request (the connection ends before any byte of the answer), that request is sent once
more on a fresh connection: model inference is safe to repeat.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
Failure = Literal["unreachable", "timeout", "protocol"]


class UpstreamError(Exception):
    """The upstream gave no usable answer: unreachable (refused, reset, closed), timeout, or protocol."""

    def __init__(self, url: str, failure: Failure, detail: str) -> None:
        super().__init__(f"{url}: {failure}: {detail}")
        self.url, self.failure, self.detail = url, failure, detail


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lowercased, hop-by-hop framing headers included
    body: bytes


class _Closed(Exception):
    """The connection closed before the response was complete; ``started``: some of it had arrived."""

    def __init__(self, started: bool, reason: str) -> None:
        super().__init__(reason)
        self.started = started


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the response parsed as its bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._head: tuple[int, list[tuple[bytes, bytes]], int | None, bool, bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None:
            return  # bytes nobody asked for: the next request fails on them (protocol error)
        try:
            response = self._parse(eof=False)
        except ValueError as exc:
            self._fail(exc)
            return
        if response is not None and not self._waiter.done():
            self._waiter.set_result(response)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = self._parse(eof=True)  # a body delimited by the close
        except ValueError as error:
            self._fail(error)
            return
        if response is not None:
            waiter.set_result(response)
        else:
            started = bool(self._buffer) or self._head is not None
            waiter.set_exception(_Closed(started, str(exc) if exc else "closed by the server"))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes) -> UpstreamResponse:
        """Send ``data`` (a whole request) and wait for the whole response."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._head = None
        self.transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    @property
    def reusable(self) -> bool:
        """Open, between responses, and nothing unasked-for received."""
        return not self.closed and self._head is None and not self._buffer

    def _parse(self, eof: bool) -> UpstreamResponse | None:
        """The response once complete (None: more bytes needed); ValueError for a malformed one."""
        buffer = self._buffer
        while self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ValueError(f"response head longer than {MAX_HEAD_BYTES} bytes")
                return None
            head = _parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
            if not 100 <= head[0] < 200:  # an interim response (100 Continue): the real one follows
                self._head = head
        status, headers, length, chunked, keep_alive = self._head
        if chunked:
            parsed = _dechunk(buffer)
            if parsed is None:
                if eof:
                    raise ValueError("connection closed inside a chunked body")
                return None
            body, used = parsed
        elif length is not None:
            if len(buffer) < length:
                if eof:
                    raise ValueError(f"connection closed after {len(buffer)} of {length} body bytes")
                return None
            body, used = bytes(buffer[:length]), length
        elif status in (204, 304):
            body, used = b"", 0
        else:  # no framing: the body runs until the server closes
            if not eof:
                return None
            body, used, keep_alive = bytes(buffer), len(buffer), False
        del buffer[:used]
        self._head = None
        if not keep_alive:
            self.close()
        return UpstreamResponse(status, headers, body)


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], int | None, bool, bool]:
    """Status, headers, content length, chunked, keep-alive of a response head."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    keep_alive = version == b"HTTP/1.1"  # HTTP/1.0: only when asked for
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"malformed header line {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        headers.append((name, value))
        if name == b"content-length":
            if not value.isdigit():
                raise ValueError(f"Content-Length {value[:40]!r} is not a number")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
    return int(code), headers, None if chunked else length, chunked, keep_alive


def _dechunk(buffer: bytearray) -> tuple[bytes, int] | None:
    """The body of a complete chunked encoding at the start of ``buffer`` and the bytes it used."""
    chunks: list[bytes] = []
    position = 0
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(buffer[position:line_end]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError(f"malformed chunk size {size_text[:20]!r}") from None
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            if trailer_end < 0:
                return None
            return b"".join(chunks), trailer_end + 4
        if len(buffer) < position + size + 2:
            return None
        chunks.append(bytes(buffer[position : position + size]))
        position += size + 2


class UpstreamPool:
    """Keep-alive connections to one model server at ``url`` (``http://host:port``, optionally a path
    prefix): requests reuse idle connections (most recent first) and open new ones when all are busy;
    at most ``max_idle`` stay open between requests."""

    def __init__(self, url: str, max_idle: int = 64) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f"Upstream URL {url!r} is not supported: the router talks plain HTTP to model servers on "
                "the same network; give it as http://HOST:PORT (no TLS, no user info)."
            )
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self._prefix = parts.path.rstrip("/").encode()
        self._host_header = parts.netloc.encode()
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._closed = False

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> UpstreamResponse:
        """Send one request (``target``: path and query string) and return the whole response.

        Raises:
            UpstreamError: unreachable, a malformed response, or no answer within ``timeout`` seconds.
        """
        data = self._encode(method, target, headers, body)
        try:
            async with asyncio.timeout(timeout):
                return await self._send(data)
        except TimeoutError:
            raise UpstreamError(self.url, "timeout", f"no answer within {timeout:g} s") from None

    async def _send(self, data: bytes) -> UpstreamResponse:
        for attempt in range(2):
            connection, reused = await self._acquire()
            try:
                response = await connection.exchange(data)
            except _Closed as exc:
                connection.close()
                if reused and not exc.started and attempt == 0:
                    continue  # closed while idle (no byte of an answer): send it on a fresh connection
                raise UpstreamError(self.url, "unreachable", f"connection closed: {exc}") from None
            except ValueError as exc:
                connection.close()
                raise UpstreamError(self.url, "protocol", str(exc)) from None
            except BaseException:  # cancelled (a timeout): the response may still arrive; drop the connection
                connection.close()
                raise
            self._release(connection)
            return response
        raise AssertionError("unreachable")

    async def _acquire(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise UpstreamError(self.url, "unreachable", str(exc) or type(exc).__name__) from None
        return connection, False

    def _release(self, connection: _Connection) -> None:
        if self._closed or not connection.reusable or len(self._idle) >= self._max_idle:
            connection.close()
        else:
            self._idle.append(connection)

    def _encode(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        parts = [method, b" ", self._prefix, target, b" HTTP/1.1\r\nhost: ", self._host_header]
        parts += [b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [b"\r\n", body]
        return b"".join(parts)

    def idle_connections(self) -> int:
        return sum(not c.closed for c in self._idle)

    async def aclose(self) -> None:
        """Close the idle connections; ones in use close when their request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class Breaker:
    """Stops sending to a failing upstream: after ``failures`` failures in a row it stays open for
    ``seconds`` (``allows()`` is False), then lets requests try again, and one more failure re-opens it.
    ``failures`` 0: never opens."""

    def __init__(self, failures: int, seconds: float) -> None:
        self._failures, self._seconds = failures, seconds
        self._streak = 0
        self._open_until = 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self._open_until

    def failed(self) -> bool:
        """Count a failure; True when this one opens the breaker."""
        self._streak += 1
        if not self._failures or self._streak < self._failures:
            return False
        self._open_until = time.monotonic() + self._seconds
        self._streak = self._failures - 1  # after the pause, the next failure re-opens it at once
        return True

    def succeeded(self) -> None:
        self._streak = 0
