"""Fault-test helpers: the misbehaving model server, a raw client, row counts.

Every fault test sends a known number of requests, each named with
`X-Client-Name`, and checks the rows written against that number by reading
the SQLite file itself, not the proxy's API.
"""

from __future__ import annotations

import http.client
import json
import resource
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.conftest import Proxy, get_json, wait_until
from tests.faults.server import ModelServer

CHAT = "/v1/chat/completions"
Row = dict[str, Any]


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    server = ModelServer()
    server.start()
    yield server
    server.close()


@dataclass
class Answer:
    """What a client got: status, headers, body, and whether the body ended."""

    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def chat_body(stream: bool = False, text: str = "Hello") -> bytes:
    body = {
        "model": "fault-model",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    return json.dumps(body).encode()


def call(
    url: str,
    client: str,
    fault: str = "json",
    *,
    body: bytes | Iterable[bytes] | None = None,
    path: str = CHAT,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
) -> Answer:
    """POST to the proxy; read the answer to its end or to where it broke."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    sent = {"X-Client-Name": client, "X-Fault": fault, **(headers or {})}
    if body is None:
        body = chat_body(stream=fault != "json")
    try:
        chunked = sent.get("Transfer-Encoding") == "chunked"
        connection.request(
            "POST", path, body=body, headers=sent, encode_chunked=chunked
        )
        response = connection.getresponse()
        data, complete = read_body(response)
        found = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, found, data, complete)
    finally:
        connection.close()


def read_body(response: http.client.HTTPResponse) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    try:
        if response.chunked:
            while piece := response.read1(65536):
                parts.append(piece)
        else:
            parts.append(response.read())
    except http.client.IncompleteRead as error:
        parts.append(error.partial)
        return b"".join(parts), False
    except ConnectionError:
        return b"".join(parts), False
    return b"".join(parts), True


def count_rows(database: Path, prefix: str) -> int:
    """Rows whose client starts with `prefix`, read from the file itself."""
    if not database.exists():
        return 0  # deleted, and not written again yet
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        query = "SELECT count(*) FROM requests WHERE client LIKE ? || '%'"
        try:
            return int(db.execute(query, (prefix,)).fetchone()[0])
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return 0  # created again, not migrated yet
            raise


def rows_of(database: Path, prefix: str) -> list[Row]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        db.row_factory = sqlite3.Row
        query = "SELECT * FROM requests WHERE client LIKE ? || '%' ORDER BY id"
        return [dict(row) for row in db.execute(query, (prefix,))]


def settled_rows(
    database: Path, prefix: str, expected: int, seconds: float = 20
) -> int:
    """Wait until `expected` rows are there (or time is up); return the count.

    A short second look catches rows written twice.
    """
    deadline = time.monotonic() + seconds
    count = count_rows(database, prefix)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        count = count_rows(database, prefix)
    time.sleep(0.2)
    return count_rows(database, prefix)


def row_of(database: Path, client: str) -> Row:
    """The one row of `client`, once it is written."""

    def rows() -> list[Row]:
        return [row for row in rows_of(database, client) if row["client"] == client]

    wait_until(rows, what=f"the row of {client}")
    time.sleep(0.1)  # a second row, if one came, would show by now
    found = rows()
    assert len(found) == 1, found
    return found[0]


def health(proxy: Proxy) -> Row:
    state: Row = get_json(f"{proxy.url}/health")
    return state


def wait_health(proxy: Proxy, status: str, seconds: float = 20) -> Row:
    state: Row = wait_until(
        lambda: (state := health(proxy))["status"] == status and state,
        seconds,
        what=f"/health to say {status}",
    )
    return state


def raise_fd_limit(wanted: int) -> None:
    """Allow `wanted` descriptors here and in the processes started from here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
