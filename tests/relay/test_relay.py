"""The relay in one process: an aiohttp front, a raw upstream, a client socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.relay.proxy import Relay
from lms_metrics_proxy.store.record import Record

STREAM = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'


@asynccontextmanager
async def relay_to(
    port: int, records: list[Record]
) -> AsyncIterator[tuple[Relay, int]]:
    """Run a Relay in front of 127.0.0.1:port; yield it and its own port."""
    settings = Settings(upstream_url=f"http://127.0.0.1:{port}")
    relay = Relay(settings, lambda record, tracked: records.append(record))
    await relay.start()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock=listener).start()
    try:
        yield relay, listener.getsockname()[1]
    finally:
        await runner.cleanup()
        await relay.stop()


async def test_a_client_leaving_while_a_refusal_is_read_closes_the_upstream() -> None:
    """The relay reads a 400 to see whether stream_options was refused."""
    closed = asyncio.Event()

    async def refuse_slowly(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"POST /v1/chat/completions "):
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return  # the relay asking the server to count tokens
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"error":'
        )
        await writer.drain()
        await reader.read()  # until the relay lets the connection go
        closed.set()

    upstream = await asyncio.start_server(refuse_slowly, "127.0.0.1", 0)
    records: list[Record] = []
    async with relay_to(upstream.sockets[0].getsockname()[1], records) as (relay, port):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(STREAM), STREAM)
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()  # the client leaves

        await asyncio.wait_for(closed.wait(), 5)
        assert relay.pool is not None
        assert not relay.pool.open
    upstream.close()

    assert [record.http_status for record in records] == [499]
