"""`serve --workers 2`: two processes on one port, one database, one /metrics."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import Upstream, start_proxy, stop_proxy, wait_until

REQUESTS = 40
# Seconds the test allows the workers to leave their metrics for each other.
SHARED_WITHIN = 5.0


def chat(url: str, client: str) -> int:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=body.encode(),
        headers={
            "Content-Type": "application/json",
            "X-Replay": "lmstudio-chat-nonstream.json",
            "X-Client-Name": client,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
        return int(answer.status)


def requests_counted(url: str) -> float:
    """Return the scraped lms_proxy_requests_total for the replayed chat."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    wanted = 'lms_proxy_requests_total{endpoint="/v1/chat/completions",method="POST"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(wanted) and 'status="200"' in line
    )


def rows_of(database: Path, client: str) -> int:
    with sqlite3.connect(database) as db:
        query = "SELECT count(*) FROM requests WHERE client = ?"
        return int(db.execute(query, (client,)).fetchone()[0])


def test_two_workers_share_the_port_the_database_and_the_metrics(
    tmp_path: Path, upstream: Upstream
) -> None:
    proxy = start_proxy(tmp_path, upstream.url, {"WORKERS": "2"})
    try:
        wait_until(
            lambda: proxy.log_text().count("Proxy server listening") == 2,
            30,
            what="both workers listening",
        )
        client = f"workers-{uuid.uuid4().hex[:8]}"
        statuses = [chat(proxy.url, client) for _ in range(REQUESTS)]
        # Each call is a new connection, which the kernel hands to either
        # worker (all 40 to one of them: a chance of 2**-39).
        wait_until(lambda: rows_of(proxy.database, client) == REQUESTS, 20)
        wait_until(
            lambda: all(requests_counted(proxy.url) == REQUESTS for _ in range(6)),
            SHARED_WITHIN,
            what="every scrape counting the requests of both workers",
        )
    finally:
        code = stop_proxy(proxy)

    assert statuses == [200] * REQUESTS
    assert code == 0
