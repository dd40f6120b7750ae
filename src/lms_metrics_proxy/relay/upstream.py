"""A lean HTTP/1.1 client for the one model server the proxy talks to.

aiohttp's ClientSession cost about a third of the proxy's CPU per request
(bench/README.md): it builds a URL, a payload object, a request and a response
object, and a task to write the body, for every call. A relay needs far less:
keep-alive connections to one origin, the request head and body sent in one
write, the answer parsed by llhttp (httptools) and handed on chunk by chunk,
with back-pressure when the client reads slowly. No redirects, cookies,
decompression, proxies or authentication: bytes go through as they came.

Errors: `TimeoutError` when the server is silent for `read_timeout`
(`ConnectTimeout` when it does not accept within `connect_timeout`),
`Unreachable` when no connection can be opened, `UpstreamClosed` when the
connection ends before the answer does, `UpstreamInvalid` when the answer is
not HTTP. The two connect errors mean the request never left the proxy.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# Body bytes buffered for a slow client before the server's socket is paused.
HIGH_WATER = 2**16
# A connection left idle this long is closed (servers drop idle ones too).
KEEPALIVE_SECONDS = 30.0
# How often the pool looks for silent and idle connections, at most: one
# timer per pool instead of two per request (arming and cancelling a timer
# for every request was 2% of the proxy's CPU under load). A timeout fires
# up to a quarter of itself late.
SWEEP_SECONDS = 1.0
# Dropped on the way to the server: they describe the client's connection.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        # Set again below for the body actually sent; `Expect` would make the
        # server wait for a go-ahead the proxy never gives.
        b"host",
        b"content-length",
        b"expect",
    }
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# A POST is sent again on a new connection only when the reused one failed
# this soon: a server that closed it while idle resets it at once, while a
# server that took the request and then died may have begun generating.
STALE_SECONDS = 0.1


class UpstreamClosed(ConnectionError):
    """The server closed or reset the connection before the answer ended."""


class UpstreamInvalid(Exception):
    """The server's bytes are not a valid HTTP/1.1 answer."""


class Unreachable(ConnectionError):
    """No connection to the server could be opened: the request never left."""


class ConnectTimeout(TimeoutError):
    """The server did not accept a connection in time: the request never left."""


class AfterTheEnd(Exception):
    """Bytes came after the end of a complete answer, in the same read."""


class Answer:
    """The server's answer: status and headers, then the body as it arrives.

    It holds its own state and its own waiter: once complete, its connection
    may already carry the next request while this answer is still being read.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_done",
        "_error",
        "_ready",
        "_waiter",
        "content_length",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, connection: Connection) -> None:
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = EMPTY_HEADERS
        self.content_length: int | None = None
        self._connection: Connection | None = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ready = False  # status and headers are in
        self._done = False  # the whole body is in
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters ("" when absent)."""
        value = self.headers.get("Content-Type", "")
        return value.partition(";")[0].strip().lower()

    async def read_chunk(self) -> bytes:
        """Return what has arrived of the body (waiting for some); b"" at the end."""
        while True:
            if self._chunks:
                return self._take()
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            await self._wait()

    def close(self) -> None:
        """Let go of the answer; an unfinished one takes its connection along."""
        connection, self._connection = self._connection, None
        self._chunks.clear()
        if connection is not None and not self._done:
            connection.abort()

    async def _wait(self) -> None:
        """Wait for the server's next bytes, its end, or the read timeout."""
        connection = self._connection
        if connection is None:
            return  # the answer already holds its end or its error
        waiter = connection.loop.create_future()
        self._waiter = waiter
        connection.waiting_since = connection.loop.time()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self) -> bytes:
        chunks = self._chunks
        chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        connection = self._connection
        if connection is not None and connection.paused:
            connection.resume()
        return chunk

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)

    def _finish(self) -> None:
        self._done = True
        self._connection = None

    def _fail(self, error: BaseException) -> None:
        if not self._done and self._error is None:
            self._error = error
        self._connection = None


EMPTY_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: Answer | None = None
        self.head_only = False
        self.got_bytes = False
        self.message_done = False
        self.reusable = True
        self.headers: list[tuple[str, str]] = []
        self.until_eof = False
        self.paused = False
        self.waiting_since = 0.0  # when the answer's reader last began to wait
        self.idle_since: float | None = None  # in the pool since then
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:
            # Bytes nobody asked for: the connection can't be trusted.
            self.abort()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            # Junk after a complete answer in the same read spoils it too: a
            # body longer than its Content-Length, or a second answer nobody
            # asked for, means the two ends disagree on where answers end.
            self._fail(UpstreamInvalid(_parser_cause(error)))
            self.abort()
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamInvalid("the server switched protocols"))
            self.abort()
        else:
            if self.message_done:
                self._complete()
            elif answer._buffered > HIGH_WATER and not self.paused:
                self.paused = True
                if self.transport is not None:
                    self.transport.pause_reading()
        answer._wake()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost ends the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        answer = self.answer
        if answer is None:
            return
        if answer._ready and self.until_eof and exc is None:
            self._complete()
        else:
            cause = str(exc) if exc else "connection closed by the server"
            self._fail(UpstreamClosed(cause))
        answer._wake()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.message_done:
            # Without this, llhttp would parse the next answer into this one.
            raise AfterTheEnd

    def on_status(self, status: bytes) -> None:
        assert self.answer is not None
        self.answer.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(
            (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        answer = self.answer
        assert answer is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim answer: the final one follows
            return
        headers = CIMultiDict(self.headers)
        answer.status = status
        answer.headers = CIMultiDictProxy(headers)
        length = headers.get("Content-Length")
        if length is not None and length.isdigit():
            answer.content_length = int(length)
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.until_eof = length is None and not chunked
        answer._ready = True
        if self.head_only:
            # No body follows, whatever the headers say; llhttp cannot be
            # told so, so the connection is not reused.
            self.message_done = True
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        if self.answer is not None:
            self.answer._feed(body)

    def on_message_complete(self) -> None:
        if self.answer is not None and self.answer._ready:
            self.message_done = True
            # llhttp knows this only until the next message begins.
            self.reusable = self.reusable and self.parser.should_keep_alive()

    # Used by the pool and the answer

    def send(self, head: bytes, body: bytes, head_only: bool) -> Answer:
        """Write one request; return its answer, whose headers are not in yet."""
        assert self.transport is not None
        self.idle_since = None
        self.answer = Answer(self)
        self.head_only = head_only
        self.got_bytes = False
        self.message_done = False
        self.reusable = True
        self.headers = []
        self.until_eof = False
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)
        return self.answer

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection at once (an unfinished or broken answer)."""
        answer = self.answer
        self._fail(UpstreamClosed("connection dropped by the proxy"))
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()
        if answer is not None:
            answer._wake()

    def idle(self) -> None:
        """Wait in the pool; the sweep closes it after KEEPALIVE_SECONDS unused."""
        self.idle_since = self.loop.time()

    def sweep(self, now: float) -> None:
        """Close the connection if it sat idle too long or its server went silent.

        Silence is the time the answer's reader has waited with nothing come:
        every byte wakes it, and it waits afresh after taking them, so time
        spent writing to a slow client is not silence.
        """
        if self.idle_since is not None:
            if now - self.idle_since >= KEEPALIVE_SECONDS:
                self.abort()
            return
        answer = self.answer
        if answer is None or self.paused:
            return  # no answer is being read from the server
        waiter = answer._waiter
        if waiter is None or waiter.done():
            return  # nobody waits for the server, or bytes just came
        if now - self.waiting_since < self.pool.read_timeout:
            return
        self._fail(TimeoutError("the model server sent nothing in time"))
        self.abort()
        answer._wake()

    # Internals

    def _complete(self) -> None:
        answer = self.answer
        if answer is None:
            return
        self.answer = None
        answer._finish()
        if self.closed:
            return
        if self.reusable:
            self.pool.release(self)
        else:
            self.abort()

    def _fail(self, error: BaseException) -> None:
        answer = self.answer
        if answer is not None:
            self.answer = None
            answer._fail(error)


class Pool:
    """Keep-alive connections to one origin, newest first."""

    def __init__(self, url: URL, connect_timeout: float, read_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.host = url.host or "127.0.0.1"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if url.scheme == "https" else None
        )
        self.host_header = url.host_port_subcomponent or self.host
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()
        self.sweep_every = min(SWEEP_SECONDS, read_timeout / 4, KEEPALIVE_SECONDS / 4)
        self.sweeper: asyncio.TimerHandle | None = None

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        has_body: bool,
    ) -> Answer:
        """Send a request; return the answer once its status and headers are in.

        A request sent on a kept-alive connection that the server closed
        meanwhile (no byte came back) is sent once more on a new connection:
        any method within STALE_SECONDS of sending it, an idempotent one later.
        """
        head = request_head(method, target, headers, self.host_header, body, has_body)
        head_only = method == "HEAD"
        window = float("inf") if method in IDEMPOTENT_METHODS else STALE_SECONDS
        connection, reused = await self._acquire()
        retry_within = window if reused else 0.0
        answer = await self._exchange(connection, head, body, head_only, retry_within)
        if answer is not None:
            return answer
        connection, _ = await self._connect()
        answer = await self._exchange(connection, head, body, head_only, 0.0)
        assert answer is not None
        return answer

    async def close(self) -> None:
        """Close every connection."""
        for connection in list(self.open):
            connection.abort()
        self.idle.clear()
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None

    def release(self, connection: Connection) -> None:
        self.idle.append(connection)
        connection.idle()

    def forget(self, connection: Connection) -> None:
        self.open.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)

    async def _exchange(
        self,
        connection: Connection,
        head: bytes,
        body: bytes,
        head_only: bool,
        retry_within: float,
    ) -> Answer | None:
        """Send on `connection` and wait for the headers.

        None: the connection was closed with no byte back within
        `retry_within` seconds of sending, so the request may be sent again.
        """
        answer = connection.send(head, body, head_only)
        sent = self.loop.time()
        try:
            while not answer._ready:
                error = answer._error
                if error is not None:
                    soon = self.loop.time() - sent < retry_within
                    stale = soon and not connection.got_bytes
                    if stale and isinstance(error, UpstreamClosed):
                        return None
                    raise error
                await answer._wait()
            if isinstance(answer._error, UpstreamInvalid):
                # Junk came with the head: nothing of it is worth passing on.
                raise answer._error
        except BaseException:
            answer.close()
            raise
        return answer

    async def _acquire(self) -> tuple[Connection, bool]:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and connection.transport is not None:
                if not connection.transport.is_closing():
                    return connection, True
        return await self._connect()

    async def _connect(self) -> tuple[Connection, bool]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await self.loop.create_connection(
                    lambda: Connection(self), self.host, self.port, ssl=self.ssl
                )
        except TimeoutError as error:
            raise ConnectTimeout(
                f"no connection within {self.connect_timeout:g} s"
            ) from error
        except OSError as error:
            raise Unreachable(str(error) or type(error).__name__) from error
        self.open.add(connection)
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.sweep_every, self._sweep)
        return connection, False

    def _sweep(self) -> None:
        """Time out silent connections, close stale idle ones; again while any."""
        now = self.loop.time()
        for connection in list(self.open):
            connection.sweep(now)
        self.sweeper = None
        if self.open:
            self.sweeper = self.loop.call_later(self.sweep_every, self._sweep)


def request_head(
    method: str,
    target: str,
    headers: Iterable[tuple[bytes, bytes]],
    host: str,
    body: bytes,
    has_body: bool,
) -> bytes:
    """Serialize the request line and headers, hop-by-hop ones left out."""
    kept: list[tuple[bytes, bytes]] = []
    dropped = HOP_BY_HOP
    for name, value in headers:
        lower = name.lower()
        if lower == b"connection":
            named = {part.strip().lower() for part in value.split(b",")}
            dropped = dropped | named
        kept.append((name, value))
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")]
    for name, value in kept:
        if name.lower() not in dropped:
            lines.append(name + b": " + value + b"\r\n")
    if body or has_body or method in BODY_METHODS:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines)


def _parser_cause(error: BaseException) -> str:
    """llhttp's reason in a few words, without the bytes it choked on."""
    if isinstance(error.__context__, AfterTheEnd):
        return "another answer began"
    text = str(error) or type(error).__name__
    return text.split(":", 1)[0].strip()
