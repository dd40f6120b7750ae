"""Bytes, headers, statuses and timing reach the client as the server sent them."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.conftest import FIXTURES, Proxy, Upstream, free_port, start_proxy, stop_proxy

STREAMS = sorted(p.name for p in (FIXTURES / "upstream").glob("*.sse")) + sorted(
    p.name for p in (FIXTURES / "upstream").glob("*.ndjson")
)


def request(
    proxy_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    parts = urlsplit(proxy_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheaders(), data


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("fixture", STREAMS)
def test_stream_bytes_reach_the_client_unchanged(proxy: Proxy, fixture: str) -> None:
    body = json.dumps(
        {
            "model": "m",
            "prompt": "hi",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()

    status, headers, data = request(
        proxy.url,
        "POST",
        "/v1/completions",
        body,
        {
            "X-Replay": fixture,
            "X-Replay-Chunk": "7",
            "Content-Type": "application/json",
        },
    )

    assert status == 200
    assert data == (FIXTURES / "upstream" / fixture).read_bytes()
    assert ("X-Replayed", fixture) in headers


def test_request_reaches_the_server_unchanged(proxy: Proxy, upstream: Upstream) -> None:
    body = b'{"model": "m", "input": [1, 2, 3],  "odd spacing": true}'
    name = unique("unchanged")

    request(
        proxy.url,
        "POST",
        "/v1/embeddings?api-version=2&x=%20y",
        body,
        {
            "X-Replay": "openai-embeddings.json",
            "X-Client-Name": name,
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "hop",
            "Proxy-Connection": "keep-alive",
            "Content-Type": "application/json",
        },
    )

    seen = upstream.received()[-1]
    names = {k.lower(): v for k, v in seen["headers"]}
    assert seen["path"] == "/v1/embeddings?api-version=2&x=%20y"
    assert base64.b64decode(seen["body"]) == body
    assert names["x-custom"] == "kept"
    assert "x-drop-me" not in names
    assert "proxy-connection" not in names
    assert "user-agent" not in names, "the proxy must not add headers of its own"


def test_delete_is_forwarded_and_recorded_but_get_is_not_recorded(
    proxy: Proxy, upstream: Upstream
) -> None:
    name = unique("methods")

    get_status, _, _ = request(
        proxy.url,
        "GET",
        "/v1/models",
        None,
        {"X-Replay": "openai-embeddings.json", "X-Client-Name": name},
    )
    del_status, _, _ = request(
        proxy.url,
        "DELETE",
        "/api/delete",
        None,
        {"X-Replay": "openai-embeddings.json", "X-Client-Name": name},
    )

    row = proxy.row(name)
    assert (get_status, del_status) == (200, 200)
    assert row["method"] == "DELETE"
    assert [r["method"] for r in upstream.received()[-2:]] == ["GET", "DELETE"]


def test_stream_chunks_leave_as_they_arrive(proxy: Proxy) -> None:
    body = json.dumps({"model": "m", "prompt": "hi", "stream": True}).encode()
    parts = urlsplit(proxy.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        "POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "X-Replay: ollama-api-chat-stream.ndjson\r\nX-Replay-Chunk: 100\r\n"
        f"X-Replay-Delay-Ms: 300\r\nContent-Length: {len(body)}\r\n\r\n"
    )

    started = time.monotonic()
    sock.sendall(head.encode() + body)
    arrivals = []
    while True:
        data = sock.recv(65536)
        if not data:
            break
        arrivals.append(time.monotonic() - started)
        if data.endswith(b"0\r\n\r\n"):
            break
    sock.close()

    assert len(arrivals) >= 3
    assert arrivals[0] < 0.25, "the first chunk waited for later ones"
    assert arrivals[-1] - arrivals[0] > 0.5


def test_client_that_leaves_mid_stream_is_recorded_as_cancelled(proxy: Proxy) -> None:
    name = unique("leaves")
    body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    parts = urlsplit(proxy.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\n"
        f"X-Replay: openai-chat-stream-usage.sse\r\nX-Client-Name: {name}\r\n"
        "X-Replay-Chunk: 200\r\nX-Replay-Delay-Ms: 200\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )

    sock.sendall(head.encode() + body)
    sock.recv(1000)
    sock.close()

    row = proxy.row(name)
    assert row["finish_reason"] == "cancelled"
    assert row["is_error"] is False
    assert row["was_streamed"] is True


def test_unreachable_server_gives_502_and_a_row(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = start_proxy(tmp_path, dead)
    try:
        status, _, data = request(
            proxy.url,
            "POST",
            "/v1/chat/completions",
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
            {"X-Client-Name": "dead", "Content-Type": "application/json"},
        )
        row = proxy.row("dead")
    finally:
        stop_proxy(proxy)

    error = json.loads(data)["error"]
    assert status == 502
    assert error["type"] == "upstream_unavailable"
    assert error["code"] == 502
    assert dead in error["message"]
    assert "running" in error["message"]
    assert "WARNING lms_metrics_proxy.relay.proxy: Model server failed status=502" in (
        proxy.log_text()
    )
    assert row["http_status"] == 502
    assert row["is_error"] is True
    # The prompt never reached a model: no tokens to estimate.
    assert (row["input_tokens"], row["usage_source"]) == (None, "none")


def test_server_silent_before_headers_gives_504(
    tmp_path: Path, upstream: Upstream
) -> None:
    proxy = start_proxy(tmp_path, upstream.url, {"UPSTREAM_READ_TIMEOUT": "0.5"})
    try:
        status, _, data = request(
            proxy.url,
            "POST",
            "/v1/chat/completions",
            b'{"model": "m"}',
            {
                "X-Replay": "openai-chat-nonstream.json",
                "X-Replay-Head-Delay-Ms": "1500",
                "X-Client-Name": "silent",
            },
        )
        row = proxy.row("silent")
    finally:
        stop_proxy(proxy)

    error = json.loads(data)["error"]
    assert status == 504
    assert error["type"] == "upstream_timeout"
    assert row["http_status"] == 504
    assert row["is_error"] is True


def test_server_stalling_mid_answer_ends_the_body_and_marks_the_row(
    tmp_path: Path, upstream: Upstream
) -> None:
    proxy = start_proxy(tmp_path, upstream.url, {"UPSTREAM_READ_TIMEOUT": "0.5"})
    try:
        with pytest.raises(http.client.IncompleteRead):
            request(
                proxy.url,
                "POST",
                "/v1/chat/completions",
                b'{"model": "m", "stream": true}',
                {
                    "X-Replay": "openai-chat-stream-usage.sse",
                    "X-Replay-Chunk": "50",
                    "X-Replay-Delay-Ms": "1500",
                    "X-Client-Name": "stall",
                },
            )
        row = proxy.row("stall")
    finally:
        stop_proxy(proxy)

    assert row["http_status"] == 200
    assert row["is_error"] is True
    assert "UPSTREAM_READ_TIMEOUT" in row["error_message"]


def test_body_over_the_limit_gets_413_and_is_not_forwarded(
    tmp_path: Path, upstream: Upstream
) -> None:
    proxy = start_proxy(tmp_path, upstream.url, {"MAX_REQUEST_BYTES": "1000"})
    upstream.forget()
    try:
        status, _, data = request(
            proxy.url,
            "POST",
            "/v1/chat/completions",
            b"x" * 5000,
            {"X-Replay": "openai-chat-nonstream.json", "X-Client-Name": "big"},
        )
        row = proxy.row("big")
    finally:
        stop_proxy(proxy)

    assert status == 413
    assert "MAX_REQUEST_BYTES" in json.loads(data)["error"]["message"]
    assert upstream.received() == []
    assert row["http_status"] == 413


def test_a_client_waiting_for_100_continue_gets_it_and_its_body_through(
    proxy: Proxy, upstream: Upstream
) -> None:
    name = unique("expect")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": name}]})
    parts = urlsplit(proxy.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"X-Replay: lmstudio-chat-nonstream.json\r\n"
            b"X-Client-Name: %s\r\nContent-Length: %d\r\n\r\n"
            % (name.encode(), len(body))
        )
        interim = sock.recv(4096)  # the body goes only after the go-ahead
        sock.sendall(body.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)

    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert proxy.row(name)["prompt"].find(name) >= 0
    sent = base64.b64decode(upstream.received()[-1]["body"])
    assert json.loads(sent)["messages"][0]["content"] == name


@pytest.mark.parametrize("path", ["/statsfoo", "/stats-of-the-server", "/healthz"])
def test_paths_that_only_start_like_the_proxys_own_are_forwarded(
    proxy: Proxy, upstream: Upstream, path: str
) -> None:
    status, _, _ = request(
        proxy.url, "GET", path, headers={"X-Replay": "lmstudio-chat-nonstream.json"}
    )

    assert status == 200
    assert upstream.received()[-1]["path"] == path
