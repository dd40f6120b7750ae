"""Benchmark of the proxy beside its anchors, in one run on one upstream stub.

Targets, measured in turn at every point:
    direct  the stub itself (the ceiling)
    ours    lms-metrics-proxy serve, recording to SQLite
    bare    bench/passthrough.py: aiohttp in and out, recording nothing
    nginx   nginx as a plain reverse proxy (when installed)

Then the statistics queries: /stats/* through the running proxy on a
database of generated rows (see queries.py).

Prints one table and writes bench/results/NAME-TIMESTAMP.json. Exits 1 when
our proxy fails (an error status, a broken stream, a missing row), never
because of a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import load
import queries
import report
import scaling
import servers
import spy
from load import Ledger, Point
from servers import Server

RESULTS = servers.HERE / "results"
TARGETS = ("direct", "ours", "bare", "nginx")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one-minute check: fails on errors only"
    )
    parser.add_argument(
        "--big", action="store_true", help="also time the queries at 10M rows"
    )
    parser.add_argument(
        "--targets",
        help="comma list among direct,ours,bare,nginx "
        "(default: all; --smoke leaves nginx out)",
    )
    parser.add_argument("--no-stats", action="store_true", help="skip the queries")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy samples ours at plain c=64 and stream-10ms (costs it CPU)",
    )
    parser.add_argument("--base-port", type=int, default=18300)
    parser.add_argument(
        "--max-minutes", type=float, default=0, help="skip points past this"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    default = "direct,ours,bare" if args.smoke else ",".join(TARGETS)
    args.targets = [t.strip() for t in (args.targets or default).split(",")]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    args.max_minutes = args.max_minutes or (3.0 if args.smoke else 9.0)
    return args


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_targets(
    args: argparse.Namespace, workdir: Path, stub: Server, problems: list[str]
) -> list[Server]:
    """Return the targets to measure; say why any is left out."""
    upstream = f"http://127.0.0.1:{stub.port}"
    chosen: list[Server] = []
    for offset, name in enumerate(TARGETS, start=1):
        port = args.base_port + offset
        if name not in args.targets:
            continue
        if name == "direct":
            chosen.append(stub)
        elif name == "bare":
            chosen.append(servers.bare(port, upstream))
        elif name == "nginx":
            binary = servers.find_nginx()
            if binary is None:
                say("skipping nginx: not installed (run.sh installs it as root)")
                continue
            chosen.append(servers.nginx(port, stub.port, workdir, binary))
        else:
            command = servers.find_proxy()
            if command is None or not servers.has_serve(command):
                problems.append("ours: `lms-metrics-proxy serve --help` does not work")
                say("skipping ours: lms-metrics-proxy serve is not available")
                continue
            chosen.append(servers.ours(port, upstream, workdir / "bench.db", command))
    return chosen


def is_ready(server: Server, workdir: Path, problems: list[str]) -> bool:
    """Wait for a target; on failure note it, stop it and leave it out."""
    try:
        server.wait_ready(workdir)
    except RuntimeError as error:
        problems.append(f"{server.name}: {error}")
        say(f"skipping {server.name}: {error}")
        server.stop()
        return False
    return True


def sanity(server: Server, ledger: Ledger) -> list[str]:
    """Check one plain answer and one stream through the server."""
    ask = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
    status, body = servers.request(server.port, "POST", "/v1/chat/completions", ask)
    problems = []
    if status != 200 or b'"usage"' not in body:
        problems.append(f"{server.name}: plain answer {status} {body[:120]!r}")
    ask = {**ask, "model": "bench-stream-5x0", "stream": True}
    status, body = servers.request(server.port, "POST", "/v1/chat/completions", ask)
    events = body.count(b"data:")
    if status != 200 or events != 7 or not body.rstrip().endswith(b"data: [DONE]"):
        problems.append(f"{server.name}: stream {status}, {events} events (7 expected)")
    ledger.low += 2
    ledger.high += 2
    return problems


def spy_path(args: argparse.Namespace, server: Server, point: Point) -> Path | None:
    """Return where py-spy writes, for the points --profile samples."""
    if not args.profile or server.name != "ours":
        return None
    if point.mode == "stream-10ms" or (
        point.mode == "plain" and point.concurrency == 64
    ):
        RESULTS.mkdir(exist_ok=True)
        return RESULTS / f"spy-ours-{point.mode}-{point.concurrency}.txt"
    return None


def measure_all(
    args: argparse.Namespace,
    stub: Server,
    targets: list[Server],
    ledgers: dict[str, Ledger],
    began: float,
) -> list[dict[str, Any]]:
    """Measure every point on every target, alternating the order."""
    rows: list[dict[str, Any]] = []
    points = load.plan(args.smoke)
    if not load.have_wrk():
        say("skipping plain points: wrk is not installed (run.sh installs it as root)")
        points = [p for p in points if p.stream]
    for index, point in enumerate(points):
        order = targets if index % 2 == 0 else targets[::-1]
        for server in order:
            if time.monotonic() - began > args.max_minutes * 60:
                say(f"skipping {server.name} {point.mode}: past --max-minutes")
                continue
            spy_to = spy_path(args, server, point)
            row = load.measure(
                server, stub, point, ledgers[server.name], args.smoke, spy_to
            )
            row["spy_file"] = str(spy_to) if spy_to else None
            rows.append(row)
            say(
                f"{row['target']:6} {point.mode:11} c={point.concurrency:<4} "
                f"{row['rps']:>9} req/s  p50 {row['p50_ms']} ms  errors {row['errors']}"
            )
    return rows


def count_rows(database: Path) -> tuple[int, int]:
    """Return (rows, rows without input tokens) in table `requests`."""
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT count(*), coalesce(sum(input_tokens IS NULL), 0) FROM requests"
        ).fetchone()


def audit_ours(
    ours: Server, ledger: Ledger, rows: list[dict[str, Any]], workdir: Path
) -> tuple[list[str], dict[str, Any]]:
    """Stop ours (it drains its queue) and check its answers and rows."""
    problems = []
    for row in rows:
        if row["target"] == "ours" and row["errors"]:
            problems.append(
                f"ours {row['mode']} c={row['concurrency']}: {row['error_kinds']}"
            )
    status = ours.stop()
    if status not in (0, -signal.SIGTERM):
        problems.append(f"ours exited with status {status} on SIGTERM")
    try:
        stored, unmetered = count_rows(workdir / "bench.db")
    except sqlite3.Error as error:
        return [*problems, f"ours: cannot count rows ({error})"], {}
    audit = {"rows": stored, "expected_min": ledger.low, "expected_max": ledger.high}
    audit["rows_without_usage"] = unmetered
    if stored < ledger.low:
        problems.append(
            f"ours: {ledger.low - stored} rows missing ({stored} < {ledger.low})"
        )
    if unmetered > ledger.high - ledger.low:
        problems.append(
            f"ours: {unmetered} rows without usage (the stub always sends it)"
        )
    return problems, audit


def versions() -> dict[str, str]:
    """Return the tools and machine the run used."""
    found = {"python": platform.python_version(), "kernel": platform.release()}
    found["cpus"] = str(os.cpu_count())
    found["load_cores"], found["server_cores"] = (
        str(servers.LOAD_CORES),
        str(servers.SERVER_CORES),
    )
    for name, argv in (("wrk", ["wrk", "-v"]), ("nginx", ["nginx", "-v"])):
        if shutil.which(argv[0]):
            done = subprocess.run(argv, capture_output=True, check=False, timeout=10)
            text = (done.stdout + done.stderr).decode().strip()
            found[name] = text.splitlines()[0] if text else "?"
    git = ["git", "-C", str(servers.REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True)
    found["proxy_commit"] = head.stdout.decode().strip() + (
        " + uncommitted changes in src/" if dirty.stdout.strip() else ""
    )
    with open("/proc/loadavg") as loadavg:
        found["loadavg_at_start"] = loadavg.read().strip()
    return found


def save(kind: str, document: dict[str, Any]) -> Path:
    """Write the results as JSON under bench/results/."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(document, indent=1, default=str))
    return path


def start_targets(
    args: argparse.Namespace,
    workdir: Path,
    stub: Server,
    problems: list[str],
    started: list[Server],
) -> list[Server]:
    """Start the targets and return those that answer."""
    targets = build_targets(args, workdir, stub, problems)
    for server in targets:
        if server is not stub:
            server.start(workdir)
            started.append(server)
    return [t for t in targets if is_ready(t, workdir, problems)]


def load_phase(
    args: argparse.Namespace,
    workdir: Path,
    stub: Server,
    document: dict[str, Any],
    began: float,
) -> bool:
    """Measure every target; return whether ours was measured."""
    problems, started = document["problems"], []
    try:
        targets = start_targets(args, workdir, stub, problems, started)
        ledgers = {t.name: Ledger() for t in targets}
        for server in targets:
            problems += sanity(server, ledgers[server.name])
        rows = measure_all(args, stub, targets, ledgers, began)
        report.add_ratios(rows)
        document["load"] = rows
        ours = next((t for t in targets if t.name == "ours"), None)
        if ours is not None:
            found, audit = audit_ours(ours, ledgers["ours"], rows, workdir)
            problems += found
            document["rows_audit"] = audit
    finally:
        for server in started:
            server.stop()
    return ours is not None


def scaling_phase(
    args: argparse.Namespace, workdir: Path, stub: Server, document: dict[str, Any]
) -> None:
    """Time `make run` to its first answer; measure 1 and 2 workers."""
    upstream = f"http://127.0.0.1:{stub.port}"
    say("timing make run to its first answered request")
    runs = 1 if args.smoke else 3
    startup, found = scaling.startup(args.base_port + 20, upstream, workdir, runs)
    document["startup"] = startup
    document["problems"] += found
    command = servers.find_proxy()
    if args.smoke or command is None:
        return
    say("measuring ours with 1, then 2 workers at plain c=64")

    def make_server(count: int) -> Server:
        database = workdir / f"workers-{count}.db"
        return servers.ours(args.base_port + 21, upstream, database, command, count)

    rows, found = scaling.workers(make_server, stub, workdir, 10.0)
    document["workers"] = rows
    document["problems"] += found


def run(args: argparse.Namespace, workdir: Path) -> int:
    """Run the whole benchmark; return the exit status."""
    began = time.monotonic()
    document: dict[str, Any] = {"args": vars(args), "versions": versions()}
    document.update(problems=[], load=[], stats=[])
    stub = servers.stub(args.base_port)
    try:
        stub.start(workdir)
        stub.wait_ready(workdir)
        measured_ours = load_phase(args, workdir, stub, document, began)
        if measured_ours:
            scaling_phase(args, workdir, stub, document)
        if measured_ours and not args.no_stats:
            sizes = [1_000_000] + ([10_000_000] if args.big else [])
            port = args.base_port + 10
            stats, found = queries.run_all(
                [20_000] if args.smoke else sizes, port, stub, workdir, say
            )
            document["stats"] = stats
            document["problems"] += found
    finally:
        stub.stop()

    document["minutes"] = round((time.monotonic() - began) / 60, 2)
    document["profiles"] = {
        Path(row["spy_file"]).name: spy.summarize(Path(row["spy_file"]))
        for row in document["load"]
        if row.get("spy_file") and Path(row["spy_file"]).exists()
    }
    print_all(document)
    path = save("smoke" if args.smoke else "bench", document)
    say(f"results in {path}; run took {document['minutes']} min")
    for problem in document["problems"]:
        say(f"FAILED: {problem}")
    return 1 if document["problems"] else 0


def print_all(document: dict[str, Any]) -> None:
    """Print the tables to stdout."""
    rows, stats = document["load"], document["stats"]
    print()
    print(report.load_table(rows))
    audit = document.get("rows_audit")
    if audit:
        print(
            f"\nours recorded {audit['rows']:,} rows for "
            f"{audit['expected_min']:,}..{audit['expected_max']:,} requests sent "
            f"({audit['rows_without_usage']:,} without usage)"
        )
    if stats:
        print()
        print(report.stats_table(stats))
    if document.get("workers"):
        print()
        print(report.workers_table(document["workers"], servers.SERVER_CORES))
    if any(r["target"] == "ours" for r in rows):
        checks = report.check_design(rows, stats)
        checks += report.startup_checks(document.get("startup") or {})
        print()
        print(report.checks_table(checks))
    for name, found in document.get("profiles", {}).items():
        print()
        print(spy.render(name, found))


def main() -> None:
    args = parse_args()
    if servers.LOAD_CORES:
        os.sched_setaffinity(0, {int(servers.LOAD_CORES)})  # stay off the server core
    # SIGTERM becomes an exception, so `finally` stops what we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="lmsbench-"))
    status = 1
    try:
        status = run(args, workdir)
    finally:
        if args.keep or status:
            say(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
