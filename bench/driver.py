"""Bounded load driver for chat completions, streamed or not.

Raw asyncio streams and the httptools response parser on uvloop, so the load
generator costs little beside the servers it measures. Each of C workers owns
one keep-alive connection and sends requests back to back until the time is
up or the request budget is spent; every loop is bounded in count and time,
and only 127.0.0.1 is accepted as a target.

Per request it records the time to the first body byte (TTFB) and to the end
of the body, and checks the answer: status 2xx, a JSON body with `usage` for
a plain request; for a stream, the expected number of `data:` events and a
final `data: [DONE]`.

    python driver.py --port 8080 --model bench-stream-200x10 --stream -c 64 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httptools
import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

PATH = "/v1/chat/completions"
SHAPE_EVENTS = 2  # a finish event and [DONE] follow the content events


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of request in the load mix."""

    model: str
    stream: bool = False
    include_usage: bool = False
    client: str | None = None

    def expected_events(self) -> int:
        """Return how many `data:` events the client should see (0: any)."""
        if not self.stream:
            return 0
        count = int(self.model.rsplit("-", 1)[-1].split("x")[0])
        return count + SHAPE_EVENTS + (1 if self.include_usage else 0)

    def payload(self, port: int) -> bytes:
        """Return the whole HTTP request."""
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 64,
        }
        if self.stream:
            body["stream"] = True
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        data = orjson.dumps(body)
        head = [
            f"POST {PATH} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            "Authorization: Bearer sk-bench",
            f"Content-Length: {len(data)}",
        ]
        if self.client:
            head.append(f"X-Client-Name: {self.client}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + data


@dataclass(slots=True)
class Tally:
    """What a run measured; latencies in seconds."""

    sent: int = 0
    ok: int = 0
    events: int = 0
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


class Answer:
    """httptools callbacks for one response: counts events, keeps the tail."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.first: float | None = None
        self.done = False
        self.keep_alive = False
        self.events = 0
        self.carry = b""
        self.body: list[bytes] = []
        self.tail = b""

    def on_body(self, chunk: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        # An event marker may be cut between two reads: count across the seam.
        joined = self.carry + chunk
        self.events += joined.count(b"data:") - self.carry.count(b"data:")
        self.carry = joined[-5:]
        self.tail = (self.tail + chunk)[-32:]
        if len(self.body) < 4:  # plain answers are one or two pieces
            self.body.append(chunk)

    def on_message_complete(self) -> None:
        # Read it here: the parser forgets the message once this returns.
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True


class Connection:
    """One keep-alive connection to the target."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, payload: bytes) -> tuple[int, Answer, float]:
        """Send one request; return status, parsed answer and start time."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, limit=1 << 20
            )
        assert self.reader is not None
        answer = Answer()
        start = time.perf_counter()
        self.writer.write(payload)
        while not answer.done:
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionResetError("closed mid-answer")
            answer.parser.feed_data(data)
        if not answer.keep_alive:
            self.close()
        return answer.parser.get_status_code(), answer, start

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def judge(kind: Kind, status: int, answer: Answer) -> str | None:
    """Return what is wrong with an answer, or None."""
    if not 200 <= status < 300:
        return f"status {status}"
    if not kind.stream:
        try:
            body = orjson.loads(b"".join(answer.body))
        except orjson.JSONDecodeError:
            return "invalid JSON"
        return None if isinstance(body, dict) and "usage" in body else "no usage"
    if b"data: [DONE]" not in answer.tail:
        return "no [DONE]"
    expected = kind.expected_events()
    if expected and answer.events != expected:
        return f"events {answer.events}!={expected}"
    return None


async def worker(
    port: int,
    mix: list[Kind],
    tally: Tally,
    stop_at: float,
    budget: list[int],
    limit: float,
) -> None:
    """Send requests on one connection until time or budget runs out."""
    connection = Connection(port)
    payloads = {kind: kind.payload(port) for kind in mix}
    while time.perf_counter() < stop_at and budget[0] > 0:
        budget[0] -= 1
        kind = random.choice(mix)
        tally.sent += 1
        try:
            async with asyncio.timeout(limit):
                status, answer, start = await connection.exchange(payloads[kind])
        except (OSError, TimeoutError, httptools.HttpParserError) as error:
            tally.errors[type(error).__name__] += 1
            connection.close()
            continue
        end = time.perf_counter()

        problem = judge(kind, status, answer)
        if problem:
            tally.errors[problem] += 1
            continue
        tally.ok += 1
        tally.events += answer.events
        tally.total.append(end - start)
        tally.ttfb.append((answer.first or end) - start)
    connection.close()


async def drive(
    port: int,
    mix: list[Kind],
    concurrency: int,
    duration: float,
    max_requests: int = 10_000_000,
    limit: float = 60.0,
) -> tuple[Tally, float]:
    """Run the load; return the tally and the elapsed seconds."""
    tally = Tally()
    budget = [max_requests]
    start = time.perf_counter()
    stop_at = start + duration
    tasks = [
        asyncio.ensure_future(worker(port, mix, tally, stop_at, budget, limit))
        for _ in range(concurrency)
    ]
    _, late = await asyncio.wait(tasks, timeout=duration + limit + 5)
    for task in late:  # the hard bound on wall time
        task.cancel()
        tally.errors["cancelled"] += 1
    if late:
        await asyncio.wait(late, timeout=5)
    return tally, time.perf_counter() - start


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile (share in 0..1) or None."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(tally: Tally, elapsed: float) -> dict[str, object]:
    """Return the JSON-ready figures of a run, times in milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "sent": tally.sent,
        "ok": tally.ok,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "elapsed_s": round(elapsed, 3),
        "rps": round(tally.ok / elapsed, 1) if elapsed else 0.0,
        "events": tally.events,
        "p50_ms": ms(percentile(tally.total, 0.50)),
        "p99_ms": ms(percentile(tally.total, 0.99)),
        "ttfb_p50_ms": ms(percentile(tally.ttfb, 0.50)),
        "ttfb_p99_ms": ms(percentile(tally.ttfb, 0.99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True, help="on 127.0.0.1")
    parser.add_argument("--model", default="bench-stream-200x0")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("-n", "--max-requests", type=int, default=10_000_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="per request")
    args = parser.parse_args()

    duration = min(args.duration, 3600.0)
    mix = [Kind(args.model, stream=args.stream)]
    run = drive(
        args.port, mix, args.concurrency, duration, args.max_requests, args.timeout
    )
    tally, elapsed = (uvloop.run if uvloop else asyncio.run)(run)
    json.dump(summarize(tally, elapsed), sys.stdout)
    print()


if __name__ == "__main__":
    main()
