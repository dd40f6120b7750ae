"""Two figures beside the load table: start-up time, and 1 to 2 workers.

Start-up: `make run` exactly as the README gives it, timed from launch to the
first proxied chat completion answered 200 (polled every 5 ms), first on a
new database (the migrations run) and then on the file that run left.

Workers: `serve --workers 1`, then `--workers 2` (SO_REUSEPORT, both writing
the same SQLite file), each at plain c=64, pinned like every other target.
Where only one server core exists the two processes share it, so the ratio
says what a second process costs there rather than what it gains.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import load
from load import Ledger, Point
from servers import REPO, SERVER_CORES, Server, pinned, request

ASK = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
START_LIMIT_S = 30.0


def first_answer_s(port: int, upstream: str, database: Path) -> float:
    """Launch `make run`; return seconds until a proxied request gets 200."""
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LM_STUDIO_URL": upstream,
        "DATABASE_URL": f"sqlite:{database}",
        "LOG_LEVEL": "warning",
    }
    began = time.perf_counter()
    process = subprocess.Popen(
        pinned(["make", "-s", "run"], SERVER_CORES),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - began < START_LIMIT_S:
            if process.poll() is not None:
                raise RuntimeError(f"make run exited with status {process.returncode}")
            try:
                status, _ = request(port, "POST", "/v1/chat/completions", ASK)
            except OSError:
                time.sleep(0.005)
                continue
            if status == 200:
                return time.perf_counter() - began
            raise RuntimeError(f"make run answered {status} to its first request")
        raise RuntimeError(f"make run did not answer within {START_LIMIT_S:.0f} s")
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def startup(
    port: int, upstream: str, workdir: Path, runs: int
) -> tuple[dict[str, Any], list[str]]:
    """Time `runs` starts on a new database, then `runs` on an existing one."""
    new, existing = [], []
    try:
        for attempt in range(runs):
            new.append(first_answer_s(port, upstream, workdir / f"start-{attempt}.db"))
        for _ in range(runs):
            existing.append(first_answer_s(port, upstream, workdir / "start-0.db"))
    except RuntimeError as error:
        return {}, [f"ours: start-up: {error}"]
    return {"new_db_s": new, "existing_db_s": existing}, []


def workers(
    make_server: Callable[[int], Server],
    stub: Server,
    workdir: Path,
    seconds: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Measure ours with 1 and 2 workers at plain c=64."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    point = Point("plain", 64, duration=seconds)
    for count in (1, 2):
        server = make_server(count)
        try:
            server.start(workdir)
            server.wait_ready(workdir)
            row = load.measure(server, stub, point, Ledger(), smoke=False)
        except RuntimeError as error:
            problems.append(f"ours --workers {count}: {error}")
            continue
        finally:
            server.stop()
        row["workers"] = count
        if row["errors"]:
            problems.append(f"ours --workers {count}: {row['error_kinds']}")
        rows.append(row)
    if len(rows) == 2 and rows[0]["rps"]:
        rows[1]["x_one_worker"] = round(rows[1]["rps"] / rows[0]["rps"], 2)
    return rows, problems
