"""The benchmark's points and how each is measured against one target.

A point is a load shape (plain requests at some concurrency, or streams).
`measure` runs one point against one server: a short warm-up, then the load
from the load cores (wrk for plain requests, driver.py for streams), with CPU
time and peak memory of the target and the stub read from /proc around it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import procfs
import spy
from servers import HERE, LOAD_CORES, Server, pinned


@dataclass(frozen=True)
class Point:
    """One load shape."""

    mode: str  # plain, stream, stream-10ms, slow-1000
    concurrency: int
    model: str = "bench-model"
    stream: bool = False
    duration: float = 10.0
    max_requests: int = 0  # 0: as many as fit in the duration


def plan(smoke: bool) -> list[Point]:
    """Return the points of a full run, or of the one-minute smoke run."""
    seconds = 2.0 if smoke else 10.0
    points = [Point("plain", c, duration=seconds) for c in (1, 16, 64)]
    points += [
        Point("stream", 64, "bench-stream-200x0", True, seconds),
        Point("stream-10ms", 64, "bench-stream-200x10", True, seconds),
    ]
    if smoke:  # fewer and shorter slow streams: the smoke run checks, not weighs
        points.append(Point("slow-200", 200, "bench-stream-10x50", True, 1.0, 200))
    else:
        points.append(Point("slow-1000", 1000, "bench-stream-20x250", True, 3.0, 1000))
    return points


@dataclass
class Ledger:
    """Requests sent to one target, to check the rows it recorded.

    `low` counts answers that came back (each must have a row); `high` adds
    requests cut off when wrk stops (a row is allowed, not required).
    """

    low: int = 0
    high: int = 0


def run_wrk(port: int, point: Point, seconds: float) -> dict[str, object]:
    """Run wrk against the target; return driver-shaped figures."""
    argv = [
        "wrk",
        "-t1",
        f"-c{point.concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "post.lua"),
        f"http://127.0.0.1:{port}",
    ]
    done = subprocess.run(
        pinned(argv, LOAD_CORES), capture_output=True, timeout=seconds + 60, check=False
    )
    lines = [x for x in done.stdout.decode().splitlines() if x.startswith("WRKJSON ")]
    if not lines:
        raise RuntimeError(f"wrk gave no result: {done.stderr.decode()[-400:]}")
    figures = json.loads(lines[-1].split(" ", 1)[1])
    kinds = {k: figures[k] for k in ("connect", "read", "write", "status", "timeout")}
    elapsed = figures["duration_us"] / 1e6
    ok = figures["requests"] - figures["status"]
    return {
        "sent": figures["requests"],
        "ok": ok,
        "errors": sum(kinds.values()),
        "error_kinds": {k: v for k, v in kinds.items() if v},
        "elapsed_s": round(elapsed, 3),
        "rps": round(ok / elapsed, 1),
        "events": 0,
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
    }


def run_driver(
    port: int, point: Point, seconds: float, limit: int
) -> dict[str, object]:
    """Run driver.py against the target; return its figures."""
    argv = [sys.executable, str(HERE / "driver.py"), "--port", str(port)]
    argv += ["--model", point.model, "-c", str(point.concurrency), "-d", str(seconds)]
    argv += ["--timeout", "60"] + (["--stream"] if point.stream else [])
    if limit:
        argv += ["-n", str(limit)]
    done = subprocess.run(
        pinned(argv, LOAD_CORES), capture_output=True, timeout=seconds + 90, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"driver failed: {done.stderr.decode()[-600:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def load(port: int, point: Point, seconds: float, limit: int = 0) -> dict[str, object]:
    """Run one load of the point's shape."""
    if point.stream:
        return run_driver(port, point, seconds, limit or point.max_requests)
    return run_wrk(port, point, seconds)


def book(ledger: Ledger, point: Point, figures: dict[str, object]) -> None:
    """Add one load's requests to the target's ledger."""
    ledger.low += int(figures["ok"])  # type: ignore[call-overload]
    ledger.high += int(figures["sent"])  # type: ignore[call-overload]
    if not point.stream:  # wrk does not count what it cut off at the end
        ledger.high += point.concurrency


def warm_up(server: Server, point: Point, ledger: Ledger, smoke: bool) -> None:
    """Open connections and load lazy code paths before measuring."""
    if smoke:
        return
    if point.stream:
        short = Point(point.mode, 8, point.model.rsplit("x", 1)[0] + "x0", True, 0.5)
        book(ledger, short, load(server.port, short, 0.5, limit=8))
    else:
        book(ledger, point, load(server.port, point, 1))


def measure(
    server: Server,
    stub: Server,
    point: Point,
    ledger: Ledger,
    smoke: bool,
    spy_to: Path | None = None,
) -> dict[str, object]:
    """Measure one point against one server; return one result row.

    With `spy_to`, py-spy samples the server during the load (and costs it
    some CPU: a profiled row is flagged in the results).
    """
    warm_up(server, point, ledger, smoke)
    is_stub = server is stub
    peak_ok = procfs.reset_peak(server.pid)
    before = procfs.cpu_seconds([server.pid]), procfs.cpu_seconds([stub.pid])
    started = time.monotonic()
    sampler = spy.start(server.pid, point.duration, spy_to) if spy_to else None

    figures = load(server.port, point, point.duration)

    wall = time.monotonic() - started
    after = procfs.cpu_seconds([server.pid]), procfs.cpu_seconds([stub.pid])
    if sampler is not None:
        sampler.wait(timeout=60)
    target_cpu = procfs.cpu_delta(before[0], after[0])
    stub_cpu = 0.0 if is_stub else procfs.cpu_delta(before[1], after[1])
    book(ledger, point, figures)
    name = "direct" if is_stub else server.name
    row: dict[str, object] = {"target": name, "mode": point.mode}
    row.update(concurrency=point.concurrency, wall_s=round(wall, 2), **figures)
    row.update(cpu_target_s=round(target_cpu, 3), cpu_stub_s=round(stub_cpu, 3))
    row["profiled"] = sampler is not None
    row["peak_rss_mb"] = round(procfs.peak_rss_mb(server.pid), 1) if peak_ok else None
    row.update(per_unit(target_cpu, stub_cpu, figures))
    return row


def per_unit(
    target: float, stub: float, figures: dict[str, object]
) -> dict[str, object]:
    """Return CPU per request and per streamed event, in microseconds."""
    ok, events = int(figures["ok"]), int(figures["events"])  # type: ignore[call-overload]
    both = target + stub
    return {
        "cpu_us_per_req": round(1e6 * both / ok, 1) if ok else None,
        "cpu_us_per_event": round(1e6 * both / events, 2) if events else None,
        "target_cpu_us_per_req": round(1e6 * target / ok, 1) if ok else None,
        "target_cpu_us_per_event": round(1e6 * target / events, 2) if events else None,
    }


def have_wrk() -> bool:
    """Say whether wrk is installed."""
    return shutil.which("wrk") is not None
