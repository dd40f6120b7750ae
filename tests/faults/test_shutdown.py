"""Stopping the proxy: SIGTERM and Ctrl-C finish what is in flight; kill -9 loses
at most the rows still queued.

On SIGTERM or SIGINT the proxy stops accepting connections at once, lets the
requests in flight run for up to SHUTDOWN_GRACE seconds (cutting the rest, which
are recorded as cancelled), writes every pending row and exits 0.

kill -9 cannot be caught. What it loses is bounded: rows already committed
survive (SQLite in WAL mode, synchronous=NORMAL, is safe against a process
crash; only an OS crash or power cut can undo the last commits), so the loss is
the requests still in flight plus the rows the writer had not committed yet:
those of requests that ended within the last batch window (the writer lingers
50 ms to fill a batch, then commits in a few ms) or, while the database cannot
be written, everything queued, never more than QUEUE_MAX_ROWS. To make it
smaller: stop with SIGTERM, which drains the queue; keep the database writable
(see /health's `queued`); and lower QUEUE_MAX_ROWS to bound the worst case.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from tests.conftest import Proxy, start_proxy, wait_until
from tests.faults.conftest import (
    CHAT,
    call,
    chat_body,
    count_rows,
    health,
    raise_fd_limit,
    rows_of,
    unique,
)
from tests.faults.server import ModelServer

IN_FLIGHT = 200


async def stream(
    session: aiohttp.ClientSession, url: str, client: str, events: int, delay_ms: int
) -> tuple[int, bytes, bool]:
    """Read one stream to its end; say whether it ended cleanly."""
    headers = {
        "X-Client-Name": client,
        "X-Fault": "stream",
        "X-Events": str(events),
        "X-Delay-Ms": str(delay_ms),
        "Content-Type": "application/json",
    }
    body = bytearray()
    async with session.post(
        url + CHAT, data=chat_body(stream=True), headers=headers
    ) as response:
        try:
            async for chunk in response.content.iter_any():
                body += chunk
        except aiohttp.ClientPayloadError:
            return response.status, bytes(body), False
        return response.status, bytes(body), True


def is_refused(proxy: Proxy) -> bool:
    parts = urlsplit(proxy.url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def stop_under_load(
    proxy: Proxy,
    model: ModelServer,
    signum: int,
    prefix: str,
    count: int,
    events: int,
    delay_ms: int,
    again_after: float | None = None,
) -> tuple[list[tuple[int, bytes, bool]], bool, float]:
    """Start `count` streams, signal the proxy once all are under way (and
    once more `again_after` seconds later, if given)."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.ensure_future(
                stream(session, proxy.url, f"{prefix}-{n}", events, delay_ms)
            )
            for n in range(count)
        ]
        await asyncio.to_thread(
            wait_until,
            lambda: sum(name.startswith(prefix) for name in model.seen.copy()) == count,
            30,
            f"{count} streams under way",
        )
        proxy.process.send_signal(signum)
        if again_after is not None:
            await asyncio.sleep(again_after)
            proxy.process.send_signal(signum)
        signalled = time.monotonic()
        await asyncio.sleep(0.3)
        refused = await asyncio.to_thread(is_refused, proxy)
        results = await asyncio.gather(*tasks)
    return results, refused, signalled


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"]
)
def test_stop_finishes_200_requests_in_flight_and_writes_every_row(
    tmp_path: Path, model: ModelServer, signum: int
) -> None:
    raise_fd_limit(4096)
    proxy = start_proxy(
        tmp_path, model.url, {"SHUTDOWN_GRACE": "20", "LOG_LEVEL": "info"}
    )
    prefix = unique("inflight")

    results, refused, signalled = asyncio.run(
        stop_under_load(proxy, model, signum, prefix, IN_FLIGHT, 10, 200)
    )
    code = proxy.process.wait(30)
    stopped = time.monotonic() - signalled
    rows = rows_of(proxy.database, prefix)

    assert refused, "a new connection was accepted after the signal"
    assert [(status, done) for status, _, done in results] == [(200, True)] * IN_FLIGHT
    assert all(body.endswith(b"data: [DONE]\n\n") for _, body, _ in results)
    assert code == 0
    assert len(rows) == IN_FLIGHT
    assert {row["finish_reason"] for row in rows} == {None}  # none cut short
    assert stopped < 20
    assert "Stopped" in proxy.log_text()


def test_requests_past_the_grace_period_are_cut_and_still_recorded(
    tmp_path: Path, model: ModelServer
) -> None:
    proxy = start_proxy(
        tmp_path, model.url, {"SHUTDOWN_GRACE": "1", "LOG_LEVEL": "info"}
    )
    prefix = unique("past-grace")

    results, refused, signalled = asyncio.run(
        stop_under_load(proxy, model, signal.SIGTERM, prefix, 5, 40, 250)
    )
    code = proxy.process.wait(30)
    stopped = time.monotonic() - signalled
    rows = rows_of(proxy.database, prefix)

    assert refused
    assert [done for _, _, done in results] == [False] * 5
    assert code == 0
    assert stopped < 8
    assert len(rows) == 5
    assert {row["finish_reason"] for row in rows} == {"cancelled"}
    assert "Shutdown cut 5 requests short" in proxy.log_text()


def test_a_second_ctrl_c_cuts_the_requests_in_flight_at_once(
    tmp_path: Path, model: ModelServer
) -> None:
    proxy = start_proxy(
        tmp_path, model.url, {"SHUTDOWN_GRACE": "30", "LOG_LEVEL": "info"}
    )
    prefix = unique("second-signal")

    results, refused, signalled = asyncio.run(
        stop_under_load(proxy, model, signal.SIGINT, prefix, 3, 40, 250, 0.5)
    )
    code = proxy.process.wait(30)
    stopped = time.monotonic() - signalled
    rows = rows_of(proxy.database, prefix)
    log = proxy.log_text()

    assert refused
    assert [done for _, _, done in results] == [False] * 3
    assert code == 0
    assert stopped < 5  # the streams had 10 s to go, the grace 30 s
    assert {row["finish_reason"] for row in rows} == {"cancelled"}
    assert len(rows) == 3
    assert "finishing 3 requests in flight" in log
    assert "press Ctrl-C again" in log
    assert "Cutting 3 requests in flight now" in log
    assert "Shutdown cut 3 requests short" in log


def test_kill_9_loses_at_most_the_rows_still_queued(
    tmp_path: Path, model: ModelServer
) -> None:
    proxy = start_proxy(tmp_path, model.url, {"LOG_LEVEL": "info"})
    prefix = unique("killed")
    sent = 100

    for n in range(sent):
        assert call(proxy.url, f"{prefix}-{n}").status == 200
    queued = health(proxy)["queued"]
    proxy.process.kill()
    proxy.process.wait(10)
    rows = count_rows(proxy.database, prefix)
    with sqlite3.connect(proxy.database) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    again = start_proxy(tmp_path, model.url, {"LOG_LEVEL": "info"})
    try:
        assert call(again.url, f"{prefix}-after").status == 200
        after = wait_until(lambda: count_rows(again.database, prefix) > rows, 10)
    finally:
        again.process.terminate()
        again.process.wait(30)

    print(f"kill -9: {sent} sent, {queued} queued at the kill, {rows} rows kept")
    assert rows >= sent - queued
    assert check == "ok"
    assert after
