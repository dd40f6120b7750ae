"""A model server that replays recorded response bytes, for tests.

Runs as its own process on a loopback port (`python -m tests.support.replay
PORT_FILE`), so the proxy under test talks to a real socket. Which answer it
plays comes from request headers, so one server serves a whole test session:

- `X-Replay: NAME` plays tests/fixtures/upstream/NAME (status and
  Content-Type from the file name: `*-error-*` files are errors, `.sse` is an
  event stream, `.ndjson` NDJSON, else JSON).
- `X-Replay-Status`, `X-Replay-Type` override status and Content-Type.
- `X-Replay-Chunk: N` writes the body N bytes at a time (chunked), with
  `X-Replay-Delay-Ms` between writes.
- `X-Replay-Head-Delay-Ms` stays silent that long before the status line,
  `X-Replay-Stall-Ms` that long after the headers;
  `X-Replay-Ending: abort` closes the socket without the last chunk.

Every request is kept; `GET /__received` returns them as JSON (newest last)
and `DELETE /__received` forgets them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"
STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Server Error"}


class Replay:
    """The server's state: what it received."""

    def __init__(self) -> None:
        self.received: list[dict[str, object]] = []

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                if not await self.answer(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def answer(self, request: dict, writer: asyncio.StreamWriter) -> bool:
        headers = request["headers"]
        if request["path"] == "/__received":
            if request["method"] == "DELETE":
                self.received.clear()
            await send(
                writer, 200, "application/json", json.dumps(self.received).encode()
            )
            return True
        self.received.append(
            {
                "method": request["method"],
                "path": request["path"],
                "headers": request["header_list"],
                "body": base64.b64encode(request["body"]).decode(),
            }
        )
        name = headers.get("x-replay")
        if name is None:
            await send(
                writer, 404, "application/json", b'{"error":"no X-Replay header"}'
            )
            return True
        return await play(name, headers, writer)


async def read_request(reader: asyncio.StreamReader) -> dict | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    header_list = [line.split(":", 1) for line in lines[1:] if line]
    header_list = [(k.strip(), v.strip()) for k, v in header_list]
    headers = {k.lower(): v for k, v in header_list}
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await read_chunked(reader)
    return {
        "method": method,
        "path": path,
        "headers": headers,
        "header_list": header_list,
        "body": body,
    }


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def guess(name: str) -> tuple[int, str]:
    if name.endswith(".sse"):
        return 200, "text/event-stream"
    if name.endswith(".ndjson"):
        return 200, "application/x-ndjson"
    status = 200
    if "-error-" in name:
        status = 404 if "not-found" in name or "no-models" in name else 400
        if "unknown-endpoint-200" in name:
            status = 200
    return status, "application/json"


async def play(name: str, headers: dict, writer: asyncio.StreamWriter) -> bool:
    body = (FIXTURES / name).read_bytes()
    status, ctype = guess(name)
    status = int(headers.get("x-replay-status", status))
    ctype = headers.get("x-replay-type", ctype)
    chunk = int(headers.get("x-replay-chunk", "0"))
    delay = int(headers.get("x-replay-delay-ms", "0")) / 1000
    stall = int(headers.get("x-replay-stall-ms", "0")) / 1000
    abort = headers.get("x-replay-ending") == "abort"
    await asyncio.sleep(int(headers.get("x-replay-head-delay-ms", "0")) / 1000)
    if (
        not chunk
        and not stall
        and not abort
        and not ctype.endswith(("stream", "ndjson"))
    ):
        await send(writer, status, ctype, body)
        return True
    head = (
        f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Status')}\r\n"
        f"Content-Type: {ctype}\r\nX-Replayed: {name}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    if stall:
        await asyncio.sleep(stall)
    step = chunk or len(body)
    for start in range(0, len(body), step):
        piece = body[start : start + step]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        if delay:
            await asyncio.sleep(delay)
    if abort:
        writer.transport.abort()
        return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def send(
    writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes
) -> None:
    head = (
        f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Status')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


def write_port(port_file: str, port: int) -> None:
    Path(port_file).write_text(str(port))


async def main(port_file: str) -> None:
    replay = Replay()
    server = await asyncio.start_server(replay.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    write_port(port_file, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
