"""Upstream stub: a fast, deterministic OpenAI-compatible server for the benchmark.

It stands in for LM Studio on port 1234, so that what the benchmark measures
is the proxy in front of it, not the model server. A raw asyncio protocol with
the httptools parser on uvloop keeps it cheap (no web framework).

    POST /v1/chat/completions           small JSON answer with `usage`
    POST /v1/chat/completions  stream   SSE, shape from the model name:
         `bench-stream-200x10` = 200 content events 10 ms apart, then a
         finish event, then (only when the request asked for
         stream_options.include_usage) a usage event with `"choices": []`,
         then `data: [DONE]`; one HTTP chunk per event
    GET  /v1/models, GET /health

Only 127.0.0.1 is served unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys

import httptools
import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench then runs on asyncio's loop
    uvloop = None

CREATED = 1_760_000_000
SHAPE = re.compile(rb"(\d+)x(\d+)$")
REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Not Allowed"}
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
MODELS = orjson.dumps(
    {"object": "list", "data": [{"id": "bench-model", "object": "model"}]}
)
# Bodies are built once per model and shape: the stub must not be the cost.
_bodies: dict[bytes, bytes] = {}
_streams: dict[tuple[bytes, int, bool], list[bytes]] = {}


def build_answer(model: bytes) -> bytes:
    """Return the JSON body of a non-streaming chat completion."""
    body = _bodies.get(model)
    if body is None:
        body = orjson.dumps(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": CREATED,
                "model": model.decode(),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello there."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 3,
                    "total_tokens": 15,
                },
            }
        )
        _bodies[model] = body
    return body


def frame(event: dict[str, object] | None) -> bytes:
    """Return one SSE event as one HTTP chunk (`[DONE]` when event is None)."""
    data = b"[DONE]" if event is None else orjson.dumps(event)
    payload = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def build_stream(model: bytes, count: int, with_usage: bool) -> list[bytes]:
    """Return the framed events of one stream, the last one closing the body."""
    key = (model, count, with_usage)
    cached = _streams.get(key)
    if cached is not None:
        return cached
    head = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model.decode(),
    }
    events = []
    for i in range(count):
        delta = {"role": "assistant"} if i == 0 else {}
        delta["content"] = f"t{i} "
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        events.append(frame({**head, "choices": [choice]}))

    finish = {"index": 0, "delta": {}, "finish_reason": "stop"}
    events.append(frame({**head, "choices": [finish]}))
    if with_usage:
        usage = {"prompt_tokens": 12, "completion_tokens": count}
        usage["total_tokens"] = 12 + count
        events.append(frame({**head, "choices": [], "usage": usage}))
    events.append(frame(None) + b"0\r\n\r\n")
    if len(_streams) < 256:
        _streams[key] = events
    return events


def plain(status: int, body: bytes, keep_alive: bool) -> bytes:
    """Return a whole HTTP/1.1 response with a JSON body."""
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"OK")),
            b"Content-Type: application/json\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"" if keep_alive else b"Connection: close\r\n",
            b"\r\n",
            body,
        )
    )


class StubProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them in order."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.waiting: collections.deque[tuple[bytes, bytes, bytes, bool]] = (
            collections.deque()
        )
        self.streaming = False
        self.closed = False
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(plain(400, b'{"error":"bad request"}', False))
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        request = (
            self.parser.get_method(),
            self.url,
            b"".join(self.body),
            self.parser.should_keep_alive(),
        )
        if self.streaming:  # a pipelined request: answer after the stream
            self.waiting.append(request)
        else:
            self.answer(*request)

    def answer(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> None:
        path = url.split(b"?", 1)[0]
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            self.complete(method, body, keep_alive)
        elif path in (b"/v1/models", b"/models") and method == b"GET":
            self.transport.write(plain(200, MODELS, keep_alive))
        elif path == b"/health":
            self.transport.write(plain(200, b'{"status":"ok"}', keep_alive))
        else:
            self.transport.write(plain(404, b'{"error":"not found"}', keep_alive))
        if not keep_alive and not self.streaming:
            self.transport.close()

    def complete(self, method: bytes, body: bytes, keep_alive: bool) -> None:
        if method != b"POST":
            self.transport.write(plain(405, b'{"error":"use POST"}', keep_alive))
            return
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self.transport.write(plain(400, b'{"error":"invalid JSON"}', keep_alive))
            return
        model = str(request.get("model") or "bench-model").encode()
        if not request.get("stream"):
            self.transport.write(plain(200, build_answer(model), keep_alive))
            return

        options = request.get("stream_options") or {}
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        count, pace = 20, 0
        shape = SHAPE.search(model)
        if shape:
            count, pace = min(int(shape[1]), 100_000), int(shape[2])
        events = build_stream(model, max(count, 1), with_usage)
        self.streaming = True
        self.transport.pause_reading()
        self.task = asyncio.ensure_future(
            self.stream(events, count, pace / 1000, keep_alive)
        )

    async def stream(
        self, events: list[bytes], count: int, pace: float, keep_alive: bool
    ) -> None:
        self.transport.write(STREAM_HEAD + events[0])
        for i in range(1, len(events)):
            # Pacing applies between content events; the tail follows at once.
            if pace and i < count:
                await asyncio.sleep(pace)
            if not self.writable.is_set():
                await self.writable.wait()
            if self.closed:
                return
            self.transport.write(events[i])
        self.streaming = False
        if not keep_alive:
            self.transport.close()
            return
        self.transport.resume_reading()
        while self.waiting and not self.streaming and not self.closed:
            self.answer(*self.waiting.popleft())


async def serve(host: str, port: int) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=4096)
    print(f"stub listening on http://{host}:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234)
    args = parser.parse_args()
    runner = uvloop.run if uvloop else asyncio.run
    try:
        runner(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
