"""Shared fixtures: a replaying model server and the proxy, as real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
# Every variable the proxy reads; none may leak in from the developer's shell.
PROXY_VARIABLES = (
    "PORT HOST LM_STUDIO_URL UPSTREAM_URL DATABASE_URL LOG_LEVEL RUST_LOG STORE_CONTENT"
    " MAX_CONTENT_CHARS STATS_TOKEN INJECT_STREAM_USAGE UPSTREAM_CONNECT_TIMEOUT"
    " UPSTREAM_READ_TIMEOUT MAX_REQUEST_BYTES PRICES_FILE WORKERS SHUTDOWN_GRACE"
    " QUEUE_MAX_ROWS"
).split()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check, seconds: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def get_json(url: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Upstream:
    url: str
    process: subprocess.Popen

    def received(self) -> list[dict]:
        return get_json(f"{self.url}/__received")

    def forget(self) -> None:
        request = urllib.request.Request(f"{self.url}/__received", method="DELETE")
        urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    port_file = tmp_path_factory.mktemp("replay") / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.replay", str(port_file)], cwd=ROOT
    )
    wait_until(lambda: port_file.exists() and port_file.read_text(), what="replay")
    yield Upstream(f"http://127.0.0.1:{port_file.read_text()}", process)
    process.terminate()
    process.wait(10)


@dataclass
class Proxy:
    url: str
    process: subprocess.Popen
    database: Path
    log: Path

    def row(self, client: str, seconds: float = 10.0) -> dict:
        """Return the stored row of the one request sent as `client`."""

        def find():
            recent = get_json(f"{self.url}/stats/recent?limit=1000&client={client}")
            return recent["requests"]

        rows = wait_until(find, seconds, what=f"a row for client {client}")
        assert len(rows) == 1, f"expected one row for {client}, got {len(rows)}"
        return get_json(f"{self.url}/stats/requests/{rows[0]['id']}")

    def log_text(self) -> str:
        return self.log.read_text()


def start_proxy(
    tmp: Path, upstream_url: str, extra_env: dict[str, str] | None = None
) -> Proxy:
    port = free_port()
    database = tmp / "proxy.db"
    log = tmp / "proxy.log"
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        LM_STUDIO_URL=upstream_url,
        DATABASE_URL=f"sqlite:{database}",
        LOG_LEVEL="debug",
    )
    env.update(extra_env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "lms_metrics_proxy", "serve"],
        cwd=tmp,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"proxy exited early:\n{log.read_text()}")
        try:
            return get_json(f"{url}/health")["status"] == "ok"
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_until(healthy, 30, what="the proxy's /health")
    return Proxy(url, process, database, log)


def stop_proxy(proxy: Proxy) -> int:
    proxy.process.terminate()
    return proxy.process.wait(30)


@pytest.fixture(scope="session")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[Proxy]:
    running = start_proxy(tmp_path_factory.mktemp("proxy"), upstream.url)
    yield running
    stop_proxy(running)
