"""What the proxy protects: the stats behind STATS_TOKEN, keys never kept,
text kept only when allowed and only up to its cap, pages that escape."""

from __future__ import annotations

import hmac
import json
import logging
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from aiohttp.http_exceptions import LineTooLong
from aiohttp.test_utils import make_mocked_request
from tests.conftest import Proxy, start_proxy, stop_proxy
from tests.faults.conftest import (
    CHAT,
    call,
    chat_body,
    rows_of,
    settled_rows,
    unique,
)
from tests.faults.server import ModelServer

from lms_metrics_proxy.api import auth
from lms_metrics_proxy.cli import MalformedRequestFilter
from lms_metrics_proxy.usage import TRUNCATION_MARK

TOKEN = "stats-" + uuid.uuid4().hex
GUARDED = [
    "/stats/summary",
    "/stats/recent",
    "/stats/by-model",
    "/stats/openapi.json",
    "/metrics",
    "/dashboard",
]
WARNING = "anyone on the network can read the stored prompts"


def fetch(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, model: ModelServer
) -> Iterator[Proxy]:
    """A proxy on every interface with STATS_TOKEN set and a small text cap."""
    proxy = start_proxy(
        tmp_path_factory.mktemp("guarded"),
        model.url,
        {"HOST": "0.0.0.0", "STATS_TOKEN": TOKEN, "MAX_CONTENT_CHARS": "50"},
    )
    yield proxy
    stop_proxy(proxy)


@pytest.fixture(scope="module")
def private(
    tmp_path_factory: pytest.TempPathFactory, model: ModelServer
) -> Iterator[Proxy]:
    """A proxy on every interface, no token, no stored text, logging everything."""
    proxy = start_proxy(
        tmp_path_factory.mktemp("private"),
        model.url,
        {
            "HOST": "0.0.0.0",
            "STORE_CONTENT": "false",
            "LOG_LEVEL": "trace",
            "UPSTREAM_READ_TIMEOUT": "1",
            "MAX_REQUEST_BYTES": "4096",
        },
    )
    yield proxy
    stop_proxy(proxy)


def test_stats_token_guards_stats_metrics_and_dashboard_not_the_proxy(
    guarded: Proxy,
) -> None:
    name = unique("open")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    wrong = {"Authorization": f"Bearer {TOKEN[:-1]}x"}

    without = {path: fetch(guarded.url + path)[0] for path in GUARDED}
    mistaken = {path: fetch(guarded.url + path, wrong)[0] for path in GUARDED}
    allowed = {path: fetch(guarded.url + path, bearer)[0] for path in GUARDED}
    proxied = call(guarded.url, name)
    rows = settled_rows(guarded.database, name, 1)

    assert set(without.values()) == {401}
    assert set(mistaken.values()) == {401}
    assert set(allowed.values()) == {200}
    assert fetch(guarded.url + "/health")[0] == 200
    assert fetch(f"{guarded.url}/dashboard?token={TOKEN}")[0] == 200
    assert proxied.status == 200
    assert rows == 1
    assert WARNING not in guarded.log_text()


def test_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return compare(given, expected)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    request = make_mocked_request("GET", "/", headers={"Authorization": "Bearer abc"})

    assert auth.is_authorized(request, b"abd") is False
    assert compared == [(b"abc", b"abd")]


def test_non_loopback_address_without_token_warns_at_start(private: Proxy) -> None:
    lines = [line for line in private.log_text().splitlines() if WARNING in line]

    assert len(lines) == 1
    assert " WARNING lms_metrics_proxy.app: Listening on 0.0.0.0 " in lines[0]


def send_raw(proxy: Proxy, data: bytes, leave: bool = False) -> bytes:
    parts = urlsplit(proxy.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(data)
        return b"" if leave else sock.recv(65536)


def test_planted_key_is_never_stored_or_logged(
    private: Proxy, model: ModelServer
) -> None:
    key = "sk-planted-" + uuid.uuid4().hex
    prefix = unique("keys")
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key, "api-key": key}
    path = f"{CHAT}?key={key}&api_key={quote(key)}"
    faults = ["json", "stream", "reset", "stall-head", "invalid-json", "long-length"]

    answers = [
        call(private.url, f"{prefix}-{f}", f, path=path, headers=headers)
        for f in faults
    ]
    too_big = call(private.url, f"{prefix}-big", body=b"x" * 5000, headers=headers)
    head = f"POST {path} HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {key}\r\n"
    send_raw(
        private,
        f"{head}X-Client-Name: {prefix}-left\r\nContent-Length: 99\r\n\r\n{{".encode(),
        leave=True,
    )
    huge = send_raw(private, f"{head}x-api-key: {key}{'k' * 10_000}\r\n\r\n".encode())
    model.stop()
    try:
        refused = call(private.url, f"{prefix}-refused", path=path, headers=headers)
    finally:
        model.start()
    rows = settled_rows(private.database, prefix, len(faults) + 3)

    assert rows == len(faults) + 3  # the huge header is refused before it is a request
    assert model.seen[f"{prefix}-json"].headers["x-api-key"] == key  # forwarded
    assert [a.status for a in answers][:2] == [200, 200]
    assert (too_big.status, refused.status, huge.split(b" ")[1]) == (413, 502, b"400")
    for file in [private.database, *private.database.parent.glob("proxy.db-*")]:
        assert key.encode() not in file.read_bytes(), file.name
    assert key not in private.log_text()
    assert "sk-planted" not in private.log_text()


@pytest.mark.parametrize("pieces", [1, 5], ids=["one-write", "five-writes"])
def test_a_chunked_body_over_the_limit_is_refused_and_recorded(
    private: Proxy, model: ModelServer, pieces: int
) -> None:
    name = unique(f"chunked-{pieces}")
    body = [b"x" * (5000 // pieces)] * pieces  # MAX_REQUEST_BYTES is 4096

    answer = call(
        private.url, name, body=body, headers={"Transfer-Encoding": "chunked"}
    )
    rows = settled_rows(private.database, name, 1)

    assert answer.status == 413
    assert rows == 1
    assert name not in model.seen  # never forwarded


def test_store_content_false_keeps_no_text_in_the_database(
    private: Proxy, model: ModelServer
) -> None:
    prompt, reply = "prompt-" + uuid.uuid4().hex, "reply-" + uuid.uuid4().hex
    prefix = unique("no-text")
    headers = {"X-Reply": reply}

    plain = call(
        private.url, f"{prefix}-plain", body=chat_body(text=prompt), headers=headers
    )
    streamed = call(
        private.url,
        f"{prefix}-stream",
        "stream",
        body=chat_body(stream=True, text=prompt),
        headers=headers,
    )
    rows = (
        rows_of(private.database, prefix)
        if settled_rows(private.database, prefix, 2)
        else []
    )
    files = [private.database, *private.database.parent.glob("proxy.db-*")]

    assert reply.encode() in plain.body
    assert reply.encode() in streamed.body
    assert len(rows) == 2
    assert all(row["prompt"] is None and row["response"] is None for row in rows)
    for file in files:
        data = file.read_bytes()
        assert prompt.encode() not in data, file.name
        assert reply.encode() not in data, file.name


def test_max_content_chars_caps_stored_text_and_marks_the_cut(
    guarded: Proxy,
) -> None:
    name = unique("capped")
    prompt, reply = "p" * 300, "r" * 300

    call(guarded.url, name, body=chat_body(text=prompt), headers={"X-Reply": reply})
    settled_rows(guarded.database, name, 1)
    [row] = rows_of(guarded.database, name)

    assert len(row["prompt"]) <= 50
    assert row["prompt"].endswith(TRUNCATION_MARK)
    assert row["response"] == "r" * (50 - len(TRUNCATION_MARK)) + TRUNCATION_MARK


def test_pages_show_stored_markup_as_text(guarded: Proxy) -> None:
    script = '<script>alert("pwned")</script>'
    name = unique("markup")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    call(guarded.url, name, body=chat_body(text=script), headers={"X-Reply": script})
    settled_rows(guarded.database, name, 1)
    [row] = rows_of(guarded.database, name)

    status, body, headers = fetch(f"{guarded.url}/stats/requests/{row['id']}", bearer)
    page = fetch(f"{guarded.url}/dashboard", bearer)[1]
    login = fetch(f"{guarded.url}/dashboard?model={quote(script)}")[1]
    scripts = (Path(__file__).parents[2] / "src/lms_metrics_proxy/api/static").glob(
        "*.js"
    )

    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["response"] == script[:50]  # shorter than the cap
    assert b"<script>alert" not in page
    assert b"<script>alert" not in login
    assert b"&lt;script&gt;alert" in login
    for file in scripts:
        text = file.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in text, f"{file.name} uses {sink}"


def test_malformed_request_log_line_carries_no_request_bytes() -> None:
    secret = "sk-in-a-header-" + uuid.uuid4().hex
    error = LineTooLong(f"Bearer {secret}...", "8190")
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        (type(error), error, None),
    )

    kept = MalformedRequestFilter().filter(record)

    assert kept is True
    assert (record.name, record.levelno) == ("aiohttp.server", logging.WARNING)
    assert record.getMessage() == (
        "Malformed HTTP request refused status=400 error=LineTooLong"
    )
    assert record.exc_info is None
