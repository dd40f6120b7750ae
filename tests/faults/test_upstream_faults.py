"""The model server misbehaves: every client still gets a clean answer or cut,
and every request still gets its row (SPEC §2 and §3)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.conftest import Proxy, start_proxy, stop_proxy, wait_until
from tests.faults.conftest import (
    Answer,
    call,
    health,
    row_of,
    rows_of,
    settled_rows,
    unique,
)
from tests.faults.server import ModelServer

REQUESTS = 3
# Streams ask for usage themselves, so the proxy changes no byte of them.
STREAM = json.dumps(
    {
        "model": "fault-model",
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, model: ModelServer
) -> Iterator[Proxy]:
    proxy = start_proxy(
        tmp_path_factory.mktemp("upstream-faults"),
        model.url,
        {"UPSTREAM_READ_TIMEOUT": "1", "UPSTREAM_CONNECT_TIMEOUT": "2"},
    )
    yield proxy
    stop_proxy(proxy)


def payload(sent: bytes | bytearray) -> bytes:
    """The body bytes in what the server wrote, chunk framing removed."""
    head, _, rest = bytes(sent).partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return rest
    body = bytearray()
    while b"\r\n" in rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return bytes(body)


def assert_prefix(answer: Answer, sent: bytes | bytearray) -> None:
    server_body = payload(sent)
    assert answer.body == server_body[: len(answer.body)]


# fault -> (status the client sees, whether its body ends cleanly)
CASES = {
    "reset": (200, False),
    "stall-mid": (200, False),
    "short-length": (200, False),
    "close-after-head": (200, False),
    "close-after-head-length": (200, False),
    "invalid-json": (200, True),
    # The junk after the body arrives with it and spoils the whole answer.
    "long-length": (502, True),
    "stall-head": (504, True),
}
# What the proxy's own error says, where it answers with one.
ERRORS = {"long-length": "not valid HTTP", "stall-head": "UPSTREAM_READ_TIMEOUT"}


@pytest.mark.parametrize("fault", list(CASES))
def test_server_fault_gives_bytes_up_to_the_fault_and_a_row_per_request(
    relay: Proxy, model: ModelServer, fault: str
) -> None:
    prefix = unique(fault)
    status, complete = CASES[fault]

    answers = {}
    for n in range(REQUESTS):
        name = f"{prefix}-{n}"
        body = None if fault in ("invalid-json", "long-length") else STREAM
        answers[name] = call(relay.url, name, fault, body=body)
    after = call(relay.url, f"{prefix}-after", "json")
    rows = settled_rows(relay.database, prefix, REQUESTS + 1)

    assert rows == REQUESTS + 1
    assert after.status == 200
    assert after.complete
    for name, answer in answers.items():
        assert (answer.status, answer.complete) == (status, complete), name
        if status == 200:
            assert_prefix(answer, model.seen[name].sent)
        else:
            assert ERRORS[fault] in json.loads(answer.body)["error"]["message"]
    for row in rows_of(relay.database, prefix):
        if row["client"].endswith("-after"):
            continue
        assert row["http_status"] == status
        assert row["usage_source"] in ("upstream", "estimated", "none")
        assert row["is_error"] == (not complete or status >= 400), row


def test_unclosed_json_body_is_passed_on_and_recorded_with_usage_unknown(
    relay: Proxy, model: ModelServer
) -> None:
    name = unique("bad-json")

    answer = call(relay.url, name, "invalid-json")
    row = row_of(relay.database, name)

    assert answer.body == payload(model.seen[name].sent)
    assert row["usage_source"] in ("none", "estimated")
    assert row["is_error"] == 0
    assert row["http_status"] == 200


def test_stall_before_the_head_gives_504_and_closes_the_server_request(
    relay: Proxy, model: ModelServer
) -> None:
    name = unique("stall")

    answer = call(relay.url, name, "stall-head", body=STREAM)
    closed = wait_until(lambda: model.seen[name].hung_up, 5, what="the hang-up")
    row = row_of(relay.database, name)

    error = json.loads(answer.body)["error"]
    assert error["type"] == "upstream_timeout"
    assert error["code"] == 504
    assert closed is not None
    assert "UPSTREAM_READ_TIMEOUT" in row["error_message"]


def stream_for(url: str, name: str) -> Answer:
    slow = {"X-Events": "60", "X-Delay-Ms": "100"}
    return call(url, name, "stream", body=STREAM, headers=slow)


def test_server_restarted_under_open_streams(relay: Proxy, model: ModelServer) -> None:
    prefix = unique("restart")
    streams = 5

    with ThreadPoolExecutor(streams) as pool:
        names = [f"{prefix}-open-{n}" for n in range(streams)]
        futures = [pool.submit(stream_for, relay.url, name) for name in names]
        wait_until(
            lambda: all(
                n in model.seen and len(model.seen[n].sent) > 400 for n in names
            ),
            10,
            what="every stream under way",
        )
        model.stop()
        down = [call(relay.url, f"{prefix}-down-{n}") for n in range(REQUESTS)]
        model.start()
        up = [call(relay.url, f"{prefix}-up-{n}") for n in range(REQUESTS)]
        cut = [future.result(30) for future in futures]
    rows = settled_rows(relay.database, prefix, streams + 2 * REQUESTS)

    assert rows == streams + 2 * REQUESTS
    for name, answer in zip(names, cut, strict=True):
        assert answer.status == 200
        assert not answer.complete
        assert_prefix(answer, model.seen[name].sent)
    assert [a.status for a in down] == [502] * REQUESTS
    assert all(
        json.loads(a.body)["error"]["type"] == "upstream_unavailable" for a in down
    )
    assert [a.status for a in up] == [200] * REQUESTS
    assert health(relay)["status"] == "ok"


def test_refused_connection_gives_502_and_a_row_per_request(tmp_path: Path) -> None:
    dead = ModelServer()
    dead.start()
    dead.close()  # the port is free again: connections are refused
    proxy = start_proxy(tmp_path, dead.url, {"UPSTREAM_CONNECT_TIMEOUT": "1"})
    prefix = unique("refused")
    try:
        started = time.monotonic()
        answers = [call(proxy.url, f"{prefix}-{n}") for n in range(REQUESTS)]
        elapsed = time.monotonic() - started
        rows = settled_rows(proxy.database, prefix, REQUESTS)
    finally:
        stop_proxy(proxy)

    assert rows == REQUESTS
    assert [a.status for a in answers] == [502] * REQUESTS
    message = json.loads(answers[0].body)["error"]["message"]
    assert dead.url in message
    assert "running" in message
    assert elapsed < 3
