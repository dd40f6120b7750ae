"""The relay's own HTTP/1.1 client, against small servers on real sockets.

Each test runs a raw asyncio server that writes exactly the bytes under test,
so framing, keep-alive, timeouts and faults are what the client really meets.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from yarl import URL

from lms_metrics_proxy.relay import upstream
from lms_metrics_proxy.relay.upstream import (
    HIGH_WATER,
    Answer,
    Pool,
    Unreachable,
    UpstreamClosed,
    UpstreamInvalid,
    request_head,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one request; return its head and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[Pool, list[int]]]:
    """Serve `handler` on a free port; yield a pool for it and the connection count."""
    connections: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the test is over
        finally:
            writer.close()

    listener = await asyncio.start_server(run, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = Pool(URL(f"http://127.0.0.1:{port}"), connect_timeout=2, read_timeout=0.5)
    try:
        yield pool, connections
    finally:
        await pool.close()
        for task in tasks:
            task.cancel()
        listener.close()


async def body_of(answer: Answer) -> bytes:
    parts = []
    while chunk := await answer.read_chunk():
        parts.append(chunk)
    return b"".join(parts)


async def echo_forever(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer every request on the connection with its own body, keep-alive."""
    while True:
        _, body = await read_request(reader)
        writer.write(JSON % len(body) + body)
        await writer.drain()


def post(pool: Pool, body: bytes, headers: list[tuple[bytes, bytes]] | None = None):  # type: ignore[no-untyped-def]
    return pool.request("POST", "/v1/chat/completions", headers or [], body, True)


async def test_keeps_one_connection_alive_across_requests() -> None:
    async with server(echo_forever) as (pool, connections):
        bodies = []
        for n in range(5):
            answer = await post(pool, b'{"n":%d}' % n)
            bodies.append(await body_of(answer))
            answer.close()

    assert bodies == [b'{"n":%d}' % n for n in range(5)]
    assert len(connections) == 1


async def test_concurrent_requests_each_get_their_own_answer() -> None:
    # A finished answer's reader may run after its connection carries the
    # next request: each must still wake for its own bytes.
    async def one(n: int) -> bytes:
        answer = await post(pool, b"%d" % n)
        try:
            return await body_of(answer)
        finally:
            answer.close()

    async with server(echo_forever) as (pool, connections):
        for _ in range(20):
            got = await asyncio.wait_for(
                asyncio.gather(*(one(n) for n in range(8))), timeout=5
            )
            assert got == [b"%d" % n for n in range(8)]

    assert len(connections) <= 8


def test_request_head_drops_hop_by_hop_headers_and_keeps_the_rest_as_sent() -> None:
    headers = [
        (b"Authorization", b"Bearer sk-x"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Host", b"client.example"),
        (b"Content-Length", b"99"),
        (b"Transfer-Encoding", b"chunked"),
        (b"x-Client-Name", b"caf\xc3\xa9"),
    ]

    head = request_head("POST", "/v1/x?a=1", headers, "127.0.0.1:1234", b"{}", True)

    assert head == (
        b"POST /v1/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:1234\r\n"
        b"Authorization: Bearer sk-x\r\nx-Client-Name: caf\xc3\xa9\r\n"
        b"Content-Length: 2\r\n\r\n"
    )


def test_a_bodiless_get_has_no_content_length() -> None:
    head = request_head("GET", "/v1/models", [], "h", b"", False)

    assert head == b"GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n"


async def test_chunked_body_arrives_unframed_and_the_connection_is_reused() -> None:
    async def chunked(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for event in (b"data: 1\n\n", b"data: 2\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async with server(chunked) as (pool, connections):
        first = await post(pool, b"{}")
        body = await body_of(first)
        first.close()
        second = await post(pool, b"{}")
        again = await body_of(second)

    assert first.content_type == "text/event-stream"
    assert first.content_length is None
    assert body == again == b"data: 1\n\ndata: 2\n\n"
    assert len(connections) == 1


async def test_a_body_without_length_ends_when_the_server_closes() -> None:
    async def until_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with server(until_close) as (pool, _):
        answer = await post(pool, b"{}")

        assert await body_of(answer) == b"all of it"


async def test_a_short_body_gives_what_came_then_upstream_closed() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(JSON % 100 + b"0123456789")
        await writer.drain()

    async with server(short) as (pool, _):
        answer = await post(pool, b"{}")
        first = await answer.read_chunk()
        with pytest.raises(UpstreamClosed):
            await answer.read_chunk()

    assert first == b"0123456789"


async def test_a_kept_connection_the_server_closed_is_replaced_without_error() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(JSON % 2 + b"ok")  # keep-alive promised, then closed
        await writer.drain()

    async with server(once) as (pool, connections):
        first = await post(pool, b"{}")
        await body_of(first)
        await asyncio.sleep(0.05)  # the close reaches the client
        second = await post(pool, b"{}")

        assert await body_of(second) == b"ok"
    assert len(connections) == 2


def drops_second_request(after: float) -> tuple[Handler, list[bytes]]:
    """A server that answers a first request, then drops the connection
    `after` seconds into the second one, without a byte."""
    seen: list[bytes] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for number in itertools.count():
            head, body = await read_request(reader)
            seen.append(head.split(b" ", 2)[0] + b" " + body)
            if number == 1:
                await asyncio.sleep(after)
                writer.transport.abort()
                return
            writer.write(JSON % 2 + b"ok")
            await writer.drain()

    return handler, seen


async def test_a_post_dropped_at_once_on_a_kept_connection_is_sent_again() -> None:
    handler, seen = drops_second_request(after=0)

    async with server(handler) as (pool, connections):
        await body_of(await post(pool, b"1"))
        answer = await post(pool, b"2")

        assert await body_of(answer) == b"ok"
    assert seen == [b"POST 1", b"POST 2", b"POST 2"]
    assert len(connections) == 2


async def test_a_post_dropped_after_a_while_is_not_sent_twice() -> None:
    # The server may have begun generating: sending it again could run the
    # whole generation a second time.
    handler, seen = drops_second_request(after=0.3)

    async with server(handler) as (pool, _):
        await body_of(await post(pool, b"1"))
        with pytest.raises(UpstreamClosed):
            await post(pool, b"2")

    assert seen == [b"POST 1", b"POST 2"]


async def test_a_get_dropped_after_a_while_is_sent_again() -> None:
    handler, seen = drops_second_request(after=0.3)

    async with server(handler) as (pool, _):
        await body_of(await pool.request("GET", "/v1/models", [], b"", False))
        answer = await pool.request("GET", "/v1/models", [], b"", False)

        assert await body_of(answer) == b"ok"
    assert seen == [b"GET ", b"GET ", b"GET "]


async def test_a_second_answer_in_the_same_read_spoils_the_first() -> None:
    async def two(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(JSON % 2 + b"ok" + b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with server(two) as (pool, _):
        with pytest.raises(UpstreamInvalid, match="another answer began"):
            await body_of(await post(pool, b"{}"))
        assert not pool.open
        assert not pool.idle


async def test_silence_before_the_head_is_a_timeout() -> None:
    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async with server(silent) as (pool, _):
        with pytest.raises(TimeoutError):
            await post(pool, b"{}")
        assert not pool.open


async def test_silence_mid_body_is_a_timeout_but_a_slow_steady_body_is_not() -> None:
    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(JSON % 100)
        for _ in range(4):  # 0.3 s apart: each under the 0.5 s read timeout
            writer.write(b"ab")
            await writer.drain()
            await asyncio.sleep(0.3)
        await asyncio.sleep(10)

    async with server(trickle) as (pool, _):
        answer = await post(pool, b"{}")
        got = [await answer.read_chunk() for _ in range(4)]
        with pytest.raises(TimeoutError):
            await answer.read_chunk()

    assert b"".join(got) == b"abababab"


async def test_time_away_from_the_answer_is_not_silence() -> None:
    async def pause_then_end(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(JSON % 4 + b"ab")
        await writer.drain()
        await asyncio.sleep(1.0)  # the reader is away for 0.8 s of it
        writer.write(b"cd")
        await writer.drain()
        await asyncio.sleep(10)

    async with server(pause_then_end) as (pool, _):
        answer = await post(pool, b"{}")
        first = await answer.read_chunk()
        await asyncio.sleep(0.8)  # as when a slow client holds the relay up
        rest = await body_of(answer)

    assert first + rest == b"abcd"


async def test_an_idle_connection_is_closed_after_the_keepalive_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream, "KEEPALIVE_SECONDS", 0.4)

    async with server(echo_forever) as (pool, connections):
        assert await body_of(await post(pool, b"1")) == b"1"
        kept = len(pool.open)
        await asyncio.sleep(0.8)
        closed = not pool.open and not pool.idle
        assert await body_of(await post(pool, b"2")) == b"2"

    assert (kept, closed) == (1, True)
    assert len(connections) == 2


async def test_a_head_answer_has_no_body_and_its_connection_is_not_reused() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(JSON % 1000)
            await writer.drain()

    async with server(head) as (pool, connections):
        answer = await pool.request("HEAD", "/v1/models", [], b"", False)
        body = await body_of(answer)
        again = await pool.request("HEAD", "/v1/models", [], b"", False)

    assert (answer.status, answer.content_length, body) == (200, 1000, b"")
    assert again.status == 200
    assert len(connections) == 2


async def test_an_interim_100_answer_is_skipped() -> None:
    async def interim(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + JSON % 2 + b"ok")
        await writer.drain()
        await asyncio.sleep(1)

    async with server(interim) as (pool, _):
        answer = await post(pool, b"{}")

        assert (answer.status, answer.reason) == (200, "OK")
        assert await body_of(answer) == b"ok"


async def test_bytes_that_are_not_http_are_invalid() -> None:
    async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with server(junk) as (pool, _):
        with pytest.raises(UpstreamInvalid):
            await post(pool, b"{}")


async def test_a_refused_connection_is_unreachable() -> None:
    listener = await asyncio.start_server(echo_forever, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    pool = Pool(URL(f"http://127.0.0.1:{port}"), connect_timeout=2, read_timeout=1)

    with pytest.raises(Unreachable) as raised:
        await post(pool, b"{}")

    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


async def test_a_slow_reader_pauses_the_server_instead_of_buffering_its_body() -> None:
    size = 8 * 2**20
    sent: list[int] = []

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(JSON % size)
        piece = b"x" * 2**16
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()
            sent.append(len(piece))
        await asyncio.sleep(5)

    async with server(flood) as (pool, _):
        answer = await post(pool, b"{}")
        await asyncio.sleep(0.5)  # nobody reads the body meanwhile
        held, sent_then = answer._buffered, sum(sent)
        total = len(await body_of(answer))

    # Kernel socket buffers hold some; the proxy holds about HIGH_WATER more.
    assert held <= HIGH_WATER + 2**18
    assert sent_then < size
    assert total == size


async def test_closing_an_unfinished_answer_drops_its_connection() -> None:
    hung_up = asyncio.Event()

    async def stream(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(JSON % 100 + b"partial")
        await writer.drain()
        if not await reader.read(1):
            hung_up.set()

    async with server(stream) as (pool, _):
        answer = await post(pool, b"{}")
        await answer.read_chunk()
        answer.close()
        await asyncio.wait_for(hung_up.wait(), 2)

        assert not pool.open
