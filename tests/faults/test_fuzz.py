"""Bad input everywhere: arbitrary answers through the relay, arbitrary queries
to the stats API.

Hypothesis drives the relay in-process (a real aiohttp server and client on
loopback, one event loop on its own thread) with answers made of arbitrary or
mangled bytes, cut at arbitrary points: nothing raises into the request path,
the client gets the server's bytes unchanged, and every request leaves exactly
one row, with usage unknown where nothing could be read. The meter's memory
stays bounded whatever it is fed. Schemathesis checks the stats API against
the OpenAPI description the proxy serves.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
import tracemalloc
import warnings
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from threading import Thread
from typing import Any, TypeVar

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from tests.conftest import FIXTURES, Proxy, start_proxy, stop_proxy
from tests.faults.conftest import call, chat_body, settled_rows, unique
from tests.faults.server import ModelServer, read_request

from lms_metrics_proxy.api.openapi import openapi_document
from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.relay.proxy import Relay
from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.usage import Meter, inspect_request
from lms_metrics_proxy.usage import meter as meter_module
from lms_metrics_proxy.usage.estimate import load_tokenizer

T = TypeVar("T")
# What the scripted server plays: status, Content-Type, body chunks.
Answer = tuple[int, str | None, list[bytes]]
ENDPOINTS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/embeddings",
    "/api/chat",
    "/api/generate",
    "/api/v1/chat",
    "/completion",
]
CONTENT_TYPES = [
    "text/event-stream",
    "application/x-ndjson",
    "application/json",
    "text/plain",
    None,
]
RECORDED = sorted(p for p in (FIXTURES / "upstream").iterdir() if p.suffix != ".md")
USAGE_SOURCES = {"upstream", "estimated", "none"}


class Scripted:
    """A relay in front of a server that plays whatever the test sets next."""

    def __init__(self, inject: bool) -> None:
        self.inject = inject
        self.loop = asyncio.new_event_loop()
        self.thread = Thread(target=self.loop.run_forever, daemon=True)
        self.answer: Answer = (200, None, [])
        self.records: list[Record] = []
        self.port = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(30)

    def start(self) -> None:
        # bpe-openai warns of a deprecated importlib call when it loads; load
        # it here, where the warning is not made an error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            load_tokenizer()
        self.thread.start()
        self.run(self._start())

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        self.upstream = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        upstream_port = self.upstream.sockets[0].getsockname()[1]
        config = Settings(
            upstream_url=f"http://127.0.0.1:{upstream_port}",
            inject_stream_usage=self.inject,
            upstream_read_timeout=5,
        )
        self.relay = Relay(config, lambda record, _: self.records.append(record))
        await self.relay.start()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.relay.handle)
        self.runner = web.AppRunner(
            app, handler_cancellation=True, auto_decompress=False
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _close(self) -> None:
        await self.runner.cleanup()
        await self.relay.stop()
        self.upstream.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: Any) -> None:
        try:
            while (request := await read_request(reader)) is not None:
                if request.path in ("/tokenize", "/apply-template"):
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                status, ctype, chunks = self.answer
                typed = f"Content-Type: {ctype}\r\n" if ctype else ""
                head = (
                    f"HTTP/1.1 {status} X\r\n{typed}Transfer-Encoding: chunked\r\n\r\n"
                )
                writer.write(head.encode())
                for chunk in chunks:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                    await asyncio.sleep(0)  # one chunk per segment, mostly
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        finally:
            writer.close()

    def exchange(
        self, path: str, body: bytes, answer: Answer
    ) -> tuple[int, bytes, Record]:
        """Send one request; return what the client got and the row it left."""
        self.answer = answer
        before = len(self.records)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request("POST", path, body=body)
            response = connection.getresponse()
            got = response.status, response.read()
        finally:
            connection.close()
        deadline = time.monotonic() + 10
        while len(self.records) == before and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.01)  # a second row, if one came, would show by now
        assert len(self.records) == before + 1, "not exactly one row"
        return got[0], got[1], self.records[-1]


class Errors(logging.Handler):
    """Every ERROR the proxy or aiohttp logs while the fuzzing runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def errors() -> Iterator[Errors]:
    handler = Errors()
    for name in ("lms_metrics_proxy", "aiohttp"):
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in ("lms_metrics_proxy", "aiohttp"):
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture(scope="module")
def plain() -> Iterator[Scripted]:
    relay = Scripted(inject=False)
    relay.start()
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def injecting() -> Iterator[Scripted]:
    relay = Scripted(inject=True)
    relay.start()
    yield relay
    relay.close()


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A recorded answer with bytes flipped, dropped or added, or pure noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=3000))
    data = bytearray(draw(st.sampled_from(RECORDED)).read_bytes()[:6000])
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.binary(min_size=0, max_size=8))
        cut = draw(st.integers(0, 8))
        data[at : at + cut] = junk
    return bytes(data)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    body = draw(mangled())
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body))), max_size=12))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    status = draw(st.sampled_from([200, 200, 200, 400, 500]))
    return status, draw(st.sampled_from(CONTENT_TYPES)), [c for c in chunks if c]


requests = st.one_of(
    st.builds(
        lambda stream, model: json.dumps(
            {
                "model": model,
                "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            }
        ).encode(),
        st.booleans(),
        st.text(max_size=10),
    ),
    st.binary(max_size=200),
)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), body=requests, answer=answers())
def test_any_answer_reaches_the_client_unchanged_and_leaves_one_row(
    plain: Scripted, errors: Errors, path: str, body: bytes, answer: Answer
) -> None:
    status, data, record = plain.exchange(path, body, answer)

    assert status == answer[0]
    assert data == b"".join(answer[2])
    assert record.http_status == status
    assert record.response_bytes == len(data)
    assert record.usage_source in USAGE_SOURCES
    assert errors.seen == []


@FUZZ
@given(body=requests, answer=answers())
def test_any_stream_through_the_usage_filter_leaves_one_row(
    injecting: Scripted, errors: Errors, body: bytes, answer: Answer
) -> None:
    status, data, record = injecting.exchange("/v1/chat/completions", body, answer)

    assert status == answer[0]
    assert len(data) <= len(b"".join(answer[2]))
    assert record.http_status == status
    assert record.usage_source in USAGE_SOURCES
    assert errors.seen == []


def test_unreadable_answer_leaves_a_row_with_usage_unknown(plain: Scripted) -> None:
    body = json.dumps({"model": "m", "prompt": ""}).encode()
    answer = (200, "application/json", [b'{"usage": {"prompt_tokens": 5', b" oops"])

    _, _, record = plain.exchange("/v1/completions", body, answer)

    assert record.usage_source in ("none", "estimated")
    assert record.input_tokens is None or record.usage_source == "estimated"
    assert record.http_status == 200


HELD = 1 << 14


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    unit=st.one_of(
        st.binary(min_size=1, max_size=300),
        st.sampled_from(RECORDED).map(lambda p: p.read_bytes()[:4000]),
    ),
    content_type=st.sampled_from(CONTENT_TYPES),
    path=st.sampled_from(ENDPOINTS),
)
def test_meter_memory_stays_bounded_whatever_it_is_fed(
    monkeypatch: pytest.MonkeyPatch, unit: bytes, content_type: str | None, path: str
) -> None:
    monkeypatch.setattr(meter_module, "MAX_HELD", HELD)
    exchange = inspect_request("POST", path, b'{"stream": true, "model": "m"}')
    meter = Meter(exchange, 200, content_type, None, 1000)
    chunk = (unit * (HELD // len(unit) + 1))[:HELD]

    tracemalloc.start()
    try:
        for _ in range(64):  # 1 MiB, 64 times what the meter may hold
            meter.feed(chunk)
        meter.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # What it holds, plus the pieces of the chunk in hand (a chunk of 16 Ki
    # newlines is 16 Ki empty lines for a moment), whatever the total fed.
    assert peak < 16 * HELD


# The stats API under schemathesis, against a live proxy with some rows.
# (schemathesis.pytest.from_fixture fails on pytest 9, so each operation's
# strategy is driven by hand.)

OPERATIONS = sorted(openapi_document()["paths"])


def has_parameters(path: str) -> bool:
    """Whether invalid input can be made for it (else it has no negative cases)."""
    return bool(openapi_document()["paths"][path]["get"].get("parameters"))


@pytest.fixture(scope="module")
def stats_proxy(
    tmp_path_factory: pytest.TempPathFactory, model: ModelServer
) -> Iterator[Proxy]:
    proxy = start_proxy(
        tmp_path_factory.mktemp("stats-api"), model.url, {"LOG_LEVEL": "info"}
    )
    prefix = unique("schema")
    for n in range(6):
        fault = "stream" if n % 2 else "json"
        body = chat_body(stream=fault == "stream", text=f"question {n} <b>&\u00e9")
        call(proxy.url, f"{prefix}-{n % 3}", fault, body=body)
    call(proxy.url, f"{prefix}-cut", "reset", body=chat_body(stream=True))
    assert settled_rows(proxy.database, prefix, 7) == 7
    yield proxy
    stop_proxy(proxy)


@pytest.fixture(scope="module")
def stats_schema(stats_proxy: Proxy) -> Any:
    return schemathesis.openapi.from_url(f"{stats_proxy.url}/stats/openapi.json")


@pytest.mark.parametrize(
    ("path", "mode"),
    [(path, GenerationMode.POSITIVE) for path in OPERATIONS]
    + [(path, GenerationMode.NEGATIVE) for path in OPERATIONS if has_parameters(path)],
)
def test_stats_api_gives_no_500_and_keeps_to_its_schema(
    stats_schema: Any, stats_proxy: Proxy, path: str, mode: GenerationMode
) -> None:
    operation = stats_schema[path]["GET"]

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        case.call_and_validate(base_url=stats_proxy.url)

    check()


def test_proxy_log_has_no_traceback_after_the_schema_run(stats_proxy: Proxy) -> None:
    assert "Traceback" not in stats_proxy.log_text()
