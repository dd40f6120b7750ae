"""A model server that misbehaves on request, for the fault tests.

Raw asyncio on its own thread, so a test can stop it, restart it on the same
port, and see what each exchange looked like from the server's side. The
request picks the behaviour:

- `X-Fault: NAME` names one of FAULTS (default `json`); `X-Events`,
  `X-Delay-Ms` and `X-Event-Bytes` shape a stream, `X-Reply` sets the text.
- `X-Client-Name` names the exchange in `server.seen` (what was sent, and
  whether the peer hung up before the answer ended).

Every response is HTTP/1.1 keep-alive unless its fault closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
# Long enough that the proxy's read timeout (about 1 s in these tests) is
# what ends a stall, short enough that a forgotten stall ends by itself.
STALL_SECONDS = 20.0
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@dataclass
class Seen:
    """One exchange as the server saw it."""

    fault: str
    path: str
    headers: dict[str, str]
    body: bytes
    sent: bytearray = field(default_factory=bytearray)
    finished: bool = False  # the server wrote its whole answer
    hung_up: float | None = None  # monotonic time the peer closed, if it did


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Exchange:
    """The server's side of one request: write bytes, notice a hang-up."""

    def __init__(
        self, request: Request, reader: asyncio.StreamReader, writer: Any, seen: Seen
    ) -> None:
        self.request = request
        self.reader = reader
        self.writer = writer
        self.seen = seen
        self._gone = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        # The proxy sends nothing more until the answer ends (it does not
        # pipeline), so the read returns only when the peer hangs up.
        try:
            if await self.reader.read(1):
                return
        except ConnectionError:
            pass
        self.seen.hung_up = time.monotonic()

    def header(self, name: str, default: str) -> str:
        return self.request.headers.get(name, default)

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            self.seen.sent += data
            await self.writer.drain()
        except ConnectionError:
            self.seen.hung_up = self.seen.hung_up or time.monotonic()
            raise

    async def chunk(self, data: bytes) -> None:
        await self.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def wait(self, seconds: float) -> None:
        """Sleep, or return early when the peer hangs up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._gone), seconds)

    def reset(self) -> None:
        """Close the socket with a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()

    def end(self) -> None:
        """Say the whole answer was written."""
        self._gone.cancel()
        self.seen.finished = True

    async def stop_watching(self) -> None:
        """End the hang-up watch before the next request is read."""
        self._gone.cancel()
        await asyncio.wait([self._gone])


def head(status: int, ctype: str, length: int | None = None) -> bytes:
    """A response head: chunked, or with the Content-Length given."""
    framing = (
        "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    )
    return f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n{framing}\r\n\r\n".encode()


def completion(text: str = "Hello there") -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "fault-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    ).encode()


def events(count: int, size: int = 0, text: str = "") -> list[bytes]:
    """The SSE events of a chat completion stream, usage and [DONE] included."""
    # Padding goes beside the text, so that it costs the meter nothing.
    pad = "x" * max(0, size - 100)
    out = []
    for n in range(count):
        delta = {"content": text if n == 0 and text else f"w{n} "}
        chunk = {"model": "fault-model", "choices": [{"index": 0, "delta": delta}]}
        if pad:
            chunk["padding"] = pad
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    final = {"model": "fault-model", "choices": [], "usage": USAGE}
    out.append(b"data: " + json.dumps(final).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


async def answer_json(ex: Exchange) -> None:
    body = completion(ex.header("x-reply", "Hello there"))
    await ex.write(head(200, "application/json", len(body)) + body)
    ex.end()


async def stream(ex: Exchange, stop_after: int | None = None) -> bool:
    """Send the stream's events; say whether every one went out."""
    count = int(ex.header("x-events", "5"))
    delay = int(ex.header("x-delay-ms", "0")) / 1000
    size = int(ex.header("x-event-bytes", "0"))
    await ex.write(head(200, "text/event-stream"))
    text = ex.header("x-reply", "")
    for n, event in enumerate(events(count, size, text)):
        if n == stop_after or ex.seen.hung_up is not None:
            return False
        await ex.chunk(event)
        if delay:
            await ex.wait(delay)
    return True


async def answer_stream(ex: Exchange) -> None:
    if await stream(ex):
        await ex.write(b"0\r\n\r\n")
        ex.end()


async def reset_mid_stream(ex: Exchange) -> None:
    await stream(ex, stop_after=3)
    ex.reset()


async def stall_before_head(ex: Exchange) -> None:
    await ex.wait(STALL_SECONDS)
    ex.close()


async def stall_mid_stream(ex: Exchange) -> None:
    await stream(ex, stop_after=3)
    await ex.wait(STALL_SECONDS)
    ex.close()


async def invalid_json(ex: Exchange) -> None:
    body = b'{"choices": [{"message": {"content": "half'
    await ex.write(head(200, "application/json", len(body)) + body)
    ex.end()


async def short_length(ex: Exchange) -> None:
    """Promise more bytes than the body has, then close."""
    body = completion()
    await ex.write(head(200, "application/json", len(body) + 100) + body)
    ex.close()


async def long_length(ex: Exchange) -> None:
    """Promise fewer bytes than the body has; the rest is junk on the socket."""
    body = completion()
    await ex.write(head(200, "application/json", 20) + body)
    ex.end()


async def close_after_head(ex: Exchange) -> None:
    await ex.write(head(200, "text/event-stream"))
    ex.close()


async def close_after_head_with_length(ex: Exchange) -> None:
    await ex.write(head(200, "application/json", 500))
    ex.close()


FAULTS: dict[str, Callable[[Exchange], Awaitable[None]]] = {
    "json": answer_json,
    "stream": answer_stream,
    "reset": reset_mid_stream,
    "stall-head": stall_before_head,
    "stall-mid": stall_mid_stream,
    "invalid-json": invalid_json,
    "short-length": short_length,
    "long-length": long_length,
    "close-after-head": close_after_head,
    "close-after-head-length": close_after_head_with_length,
}
# Faults that leave the socket unusable for a next request.
CLOSING = {"reset", "stall-head", "stall-mid", "short-length", "close-after-head"}
CLOSING |= {"close-after-head-length", "long-length"}


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
    return Request(method, path, headers, body)


class ModelServer:
    """The misbehaving model server, on 127.0.0.1 and a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.seen: dict[str, Seen] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[Any] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> None:
        if not self.thread.is_alive():
            self.thread.start()
        self.call(self._listen())

    def stop(self) -> None:
        """Stop listening and drop every open connection, as a crash would."""
        self.call(self._stop())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: Any) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while (request := await read_request(reader)) is not None:
                if not await self._answer(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, request: Request, reader: Any, writer: Any) -> bool:
        fault = request.headers.get("x-fault", "json")
        seen = Seen(fault, request.path, request.headers, request.body)
        name = request.headers.get("x-client-name")
        if name:
            self.seen[name] = seen
        exchange = Exchange(request, reader, writer, seen)
        try:
            await FAULTS[fault](exchange)
        finally:
            await exchange.stop_watching()
        return seen.finished and fault not in CLOSING
