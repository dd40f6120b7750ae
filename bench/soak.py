"""Soak test: mixed load on the proxy for ten minutes, watching for leaks.

Starts the stub and the proxy (recording to a fresh SQLite file), sends 64
concurrent mixed requests (plain, streamed, streamed with include_usage) for
--seconds, and samples the proxy's RSS and open descriptors every 10 s. At the
end it stops the proxy (which drains its queue) and counts the rows.

Prints the RSS slope after warm-up in MB/min. Exits 1 when a row is missing,
when descriptors are not released (more than 16 above the count before the
load, once the stub has stopped and so closed the pooled connections; up to
--settle seconds are given), or when a request failed; never on timing.

    python bench/soak.py                   # 600 s
    python bench/soak.py --seconds 60      # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import driver
import procfs
import servers
from driver import Kind

FD_SLACK = 16  # descriptors a process may open for itself (logs, pipes, epoll)
# Weights by repetition: half plain, half streams of three shapes.
MIX = [
    Kind("bench-model", client="soak-plain"),
    Kind("bench-model", client="soak-plain"),
    Kind("bench-model"),
    Kind("bench-stream-50x2", stream=True, client="soak-chat"),
    Kind("bench-stream-20x0", stream=True, include_usage=True, client="soak-sdk"),
    Kind("bench-stream-200x0", stream=True),
]


def slope(samples: list[tuple[float, float]]) -> float | None:
    """Return the least-squares slope of (seconds, MB) samples in MB/min."""
    if len(samples) < 2:
        return None
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if not spread:
        return None
    rise = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return 60 * rise / spread


async def sample(
    pid: int, every: float, until: float, log: list[dict[str, float]]
) -> None:
    """Read RSS and descriptors of the proxy every `every` seconds."""
    began = time.monotonic()
    while time.monotonic() < until:
        log.append(
            {
                "t": round(time.monotonic() - began, 1),
                "rss_mb": round(procfs.rss_mb(pid), 1),
                "fds": procfs.open_fds(pid),
            }
        )
        print(f"[soak] {log[-1]}", file=sys.stderr, flush=True)
        await asyncio.sleep(max(0.0, min(every, until - time.monotonic())))


async def soak(
    port: int, pid: int, args: argparse.Namespace
) -> tuple[driver.Tally, list]:
    """Run the load and the sampler side by side."""
    log: list[dict[str, float]] = []
    until = time.monotonic() + args.seconds
    sampler = asyncio.ensure_future(sample(pid, args.every, until, log))
    tally, _ = await driver.drive(port, MIX, args.concurrency, args.seconds, limit=60)
    sampler.cancel()
    return tally, log


def settle(pid: int, baseline: int, seconds: float) -> int:
    """Wait until the proxy's descriptors fall back near `baseline`; return them.

    Pooled upstream connections stay open for their keep-alive time (30 s in
    the proxy, and aiohttp closes them on a timer of that period, so up to
    twice that), so descriptors are compared once those have had time to
    close: a leak is what is still open then.
    """
    began = time.monotonic()
    count = procfs.open_fds(pid)
    while count > baseline + FD_SLACK and time.monotonic() < began + seconds:
        time.sleep(1)
        count = procfs.open_fds(pid)
    waited = time.monotonic() - began
    print(f"[soak] {count} descriptors after {waited:.0f} s idle", file=sys.stderr)
    return count


def judge(
    tally: driver.Tally, log: list[dict[str, float]], rows: int, fds: tuple[int, int]
) -> tuple[dict[str, Any], list[str]]:
    """Return the summary and the reasons to fail; fds: (before, settled after)."""
    summary = {
        "requests_sent": tally.sent,
        "answered_ok": tally.ok,
        "errors": dict(tally.errors),
        "rows": rows,
        "rss_start_mb": log[0]["rss_mb"],
        "rss_end_mb": log[-1]["rss_mb"],
        "rss_slope_mb_per_min": slope([(s["t"], s["rss_mb"]) for s in log]),
        "fds_during_load": [min(s["fds"] for s in log), max(s["fds"] for s in log)],
        "fds_before": fds[0],
        "fds_settled_after": fds[1],
    }
    problems = []
    if rows < tally.sent:
        problems.append(
            f"{tally.sent - rows} rows missing ({rows} < {tally.sent} sent)"
        )
    if fds[1] > fds[0] + FD_SLACK:
        problems.append(f"descriptors not released: {fds[0]} before, {fds[1]} after")
    if tally.errors:
        problems.append(f"requests failed: {dict(tally.errors)}")
    return summary, problems


def run_soak(
    args: argparse.Namespace, command: str, workdir: Path
) -> tuple[driver.Tally, list[dict[str, float]], int, dict[str, Any]]:
    """Start stub and proxy, run the load, stop; return tally, samples, rows."""
    stub = servers.stub(args.base_port)
    upstream = f"http://127.0.0.1:{args.base_port}"
    proxy = servers.ours(args.base_port + 1, upstream, workdir / "soak.db", command)
    try:
        for server in (stub, proxy):
            server.start(workdir)
            server.wait_ready(workdir)
        before = procfs.open_fds(proxy.pid)
        run = soak(proxy.port, proxy.pid, args)
        tally, log = (driver.uvloop.run if driver.uvloop else asyncio.run)(run)
        # Closing the upstream closes the proxy's pooled connections to it at
        # once, instead of after their keep-alive time: what stays open then
        # is a leak.
        stub.stop()
        after: dict[str, Any] = {
            "fds": (before, settle(proxy.pid, before, args.settle))
        }
        after["idle_rss_mb"] = round(procfs.rss_mb(proxy.pid), 1)
        after["proxy_exit_status"] = proxy.stop()
        with sqlite3.connect(workdir / "soak.db") as db:
            rows = db.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        proxy.stop()
        stub.stop()
    return tally, log, rows, after


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--every", type=float, default=10, help="sampling period, s")
    parser.add_argument(
        "--warmup", type=float, default=0, help="s (default: 1/5 of the run)"
    )
    parser.add_argument(
        "--settle", type=float, default=90, help="s to wait for idle connections"
    )
    parser.add_argument("--base-port", type=int, default=18400)
    parser.add_argument(
        "--results", type=Path, default=servers.HERE / "results", help="folder"
    )
    args = parser.parse_args()
    args.warmup = args.warmup or min(120.0, args.seconds / 5)
    return args


def main() -> None:
    args = parse_args()
    if servers.LOAD_CORES:
        os.sched_setaffinity(0, {int(servers.LOAD_CORES)})
    command = servers.find_proxy()
    if command is None or not servers.has_serve(command):
        sys.exit("soak: `lms-metrics-proxy serve --help` does not work")
    workdir = Path(tempfile.mkdtemp(prefix="lmssoak-"))

    tally, log, rows, after = run_soak(args, command, workdir)

    warm = [s for s in log if s["t"] >= args.warmup] or log[-1:]
    summary, problems = judge(tally, warm, rows, after.pop("fds"))
    summary.update(after)
    args.results.mkdir(exist_ok=True)
    path = args.results / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {"summary": summary, "problems": problems, "samples": log}
    path.write_text(json.dumps(document, indent=1))
    print(json.dumps(summary, indent=1))
    rate = summary["rss_slope_mb_per_min"]
    print(
        f"\nsoak {args.seconds:.0f} s: {tally.sent:,} requests, {rows:,} rows; "
        f"RSS {summary['rss_start_mb']} -> {summary['rss_end_mb']} MB, slope after "
        f"{args.warmup:.0f} s warm-up: "
        + ("n/a" if rate is None else f"{rate:+.2f} MB/min")
        + f"; descriptors {summary['fds_before']} before, "
        f"{summary['fds_during_load']} during, {summary['fds_settled_after']} after"
        + f"\nsamples and summary in {path}"
    )
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if problems:
        print(f"logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
