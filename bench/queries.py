"""Statistics queries on a large database: generate rows, time /stats/*.

The proxy creates its schema itself (Alembic, on start-up), so a database is
made by starting the proxy once on an empty file and stopping it. Rows are
then bulk-inserted with the sqlite3 module in large transactions, with the
indexes dropped during the insert and rebuilt from their own SQL, the
hourly rollup `usage_hourly` filled from the rows the way migration 0002
fills it, and the daily rollup `usage_daily` from the hours the way 0003
does. Then the proxy is started on the file and each /stats/* endpoint is
timed through HTTP, and the raw SQL behind it is timed on `requests`
directly (what the endpoint would cost without the rollups), and on the
coarsest rollup there is (what whole days cost).

The rows follow a working team's spread: a dozen models with Zipf-like
shares and their own token sizes, two dozen clients (a quarter unnamed),
office hours and quiet weekends over 180 days, 2.5% errors, prompt and
response text on most rows.

    python queries.py --rows 1000000          # standalone, prints one table
"""

from __future__ import annotations

import argparse
import http.client
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import report
import servers
from servers import Server

DAYS = 180
BATCH = 100_000
ENDPOINTS = [
    ("summary", "/stats/summary"),
    ("by-model", "/stats/by-model"),
    ("recent", "/stats/recent?limit=100"),
    ("by-client", "/stats/by-client"),
    ("timeseries", "/stats/timeseries?bucket=day"),
]
# What each endpoint computes, as plain SQL on `requests` (no rollup).
RAW_SQL = {
    "summary": """SELECT count(*), sum(is_error = 0), sum(is_error),
        sum(input_tokens), sum(output_tokens), sum(total_tokens),
        avg(coalesce(input_tokens, 0)), avg(coalesce(output_tokens, 0)),
        sum(duration_ms) FROM requests""",
    "by-model": """SELECT model, count(*), sum(input_tokens), sum(output_tokens),
        sum(total_tokens) AS t, avg(input_tokens), avg(output_tokens),
        avg(duration_ms) FROM requests GROUP BY model ORDER BY t DESC""",
    "recent": """SELECT id, endpoint, model, client, input_tokens, output_tokens,
        total_tokens, duration_ms, start_time, is_error, was_streamed,
        http_status, usage_source FROM requests ORDER BY id DESC LIMIT 100""",
    "by-client": """SELECT client, count(*), sum(input_tokens), sum(output_tokens),
        sum(total_tokens) AS t FROM requests GROUP BY client ORDER BY t DESC""",
    "timeseries": """SELECT substr(start_time, 1, 10) AS day, count(*),
        sum(input_tokens), sum(output_tokens), sum(total_tokens)
        FROM requests GROUP BY day ORDER BY day""",
}
# The same from a rollup alone ({table}, its time column {time}): what SQLite
# needs when whole units of that rollup are read.
ROLLUP_READS = {
    "summary": """SELECT sum(requests), sum(errors), sum(input_tokens),
        sum(output_tokens), sum(total_tokens), sum(duration_ms) FROM {table}""",
    "by-model": """SELECT model, sum(requests), sum(input_tokens), sum(output_tokens),
        sum(total_tokens) AS t, sum(duration_ms) FROM {table}
        GROUP BY model ORDER BY t DESC""",
    "by-client": """SELECT client, sum(requests), sum(input_tokens),
        sum(output_tokens), sum(total_tokens) AS t FROM {table}
        GROUP BY client ORDER BY t DESC""",
    "timeseries": """SELECT substr({time}, 1, 10) AS day, sum(requests),
        sum(input_tokens), sum(output_tokens), sum(total_tokens)
        FROM {table} GROUP BY day ORDER BY day""",
}
# Coarsest first: the rollup whose whole units an unfiltered query reads.
ROLLUPS = (("usage_daily", "day"), ("usage_hourly", "hour"))
ROLLUP_SQL = """
INSERT INTO usage_hourly (hour, model, endpoint, client, status_class,
    usage_source, requests, errors, input_tokens, output_tokens, total_tokens,
    duration_ms)
SELECT strftime('%Y-%m-%d %H:00:00.000000', start_time), coalesce(model, ''),
    endpoint, coalesce(client, ''),
    CASE WHEN http_status BETWEEN 100 AND 599
         THEN CAST(http_status / 100 AS TEXT) || 'xx' ELSE 'err' END,
    usage_source, count(*), sum(is_error), coalesce(sum(input_tokens), 0),
    coalesce(sum(output_tokens), 0), coalesce(sum(total_tokens), 0),
    sum(duration_ms)
FROM requests GROUP BY 1, 2, 3, 4, 5, 6
"""
DAILY_SQL = """
INSERT INTO usage_daily (day, model, endpoint, client, status_class,
    usage_source, requests, errors, input_tokens, output_tokens, total_tokens,
    duration_ms)
SELECT strftime('%Y-%m-%d 00:00:00.000000', hour), model, endpoint, client,
    status_class, usage_source, sum(requests), sum(errors), sum(input_tokens),
    sum(output_tokens), sum(total_tokens), sum(duration_ms)
FROM usage_hourly GROUP BY 1, 2, 3, 4, 5, 6
"""

# name, share, input tokens (median), output tokens (median), tokens/s, reasons
MODELS = [
    ("qwen2.5-7b-instruct", 30, 900, 350, 45, False),
    ("llama-3.1-8b-instruct", 18, 700, 300, 40, False),
    ("mistral-nemo-instruct-2407", 10, 1200, 400, 28, False),
    ("gemma-2-9b-it", 8, 600, 250, 35, False),
    ("text-embedding-nomic-embed-text-v1.5", 8, 220, 0, 0, False),
    ("phi-4", 6, 1500, 500, 22, False),
    ("deepseek-r1-distill-qwen-14b", 5, 800, 1500, 18, True),
    ("qwen2.5-coder-32b-instruct", 4, 3000, 600, 10, False),
    ("openai/gpt-oss-20b", 3, 1000, 800, 30, True),
    ("text-embedding-bge-m3", 3, 300, 0, 0, False),
    ("llama-3.3-70b-instruct", 2, 2000, 500, 6, False),
    ("granite-3.1-8b-instruct", 1.5, 500, 200, 38, False),
    ("smollm2-1.7b-instruct", 1, 300, 150, 90, False),
]
CHAT_ENDPOINTS = [
    ("/v1/chat/completions", 85),
    ("/v1/completions", 5),
    ("/api/chat", 4),
    ("/v1/responses", 3),
    ("/api/v0/chat/completions", 3),
]
CLIENTS = [
    "open-webui", "continue", "aider", "cline", "zed", "notebook", "ci-evals",
    "batch-embed", "rag-indexer", "slack-bot", "jetbrains", "cursor", "obsidian",
    "docs-search", "triage-bot", "nightly-report", "anna-laptop", "ben-desktop",
    "chen-laptop", "dara-workstation", "eval-harness", "summarizer", "translator",
    "code-review",
]  # fmt: skip
ERRORS = [
    (500, "Model crashed while generating"),
    (502, "Upstream unavailable: http://127.0.0.1:1234 (is the server running?)"),
    (504, "Upstream did not answer within 600 s"),
    (400, "Model not loaded: load it in LM Studio first"),
    (404, "Unknown model"),
]
# The columns a row varies in, beside time, client, endpoint and text.
SHAPE_COLUMNS = (
    "duration_ms", "ttft_ms", "method", "input_tokens", "output_tokens",
    "total_tokens", "cached_input_tokens", "reasoning_tokens", "usage_source",
    "tokens_per_second", "http_status", "is_error", "error_message",
    "was_streamed", "finish_reason", "request_bytes", "response_bytes",
)  # fmt: skip
INSERT_COLUMNS = (
    "start_time", "end_time", "endpoint", "model", "requested_model", "client",
    "prompt", "response", *SHAPE_COLUMNS,
)  # fmt: skip
SHAPES = 2048  # precomputed outcomes per model: rows pick one, so generation is fast


def texts(seed: int, count: int, low: int, high: int) -> list[str]:
    """Return a pool of filler texts of varied length."""
    rng = random.Random(seed)
    vocabulary = "the model answer token proxy local server usage report stream".split()
    pool = []
    for _ in range(count):
        size = rng.randint(low, high)
        text = " ".join(rng.choice(vocabulary) for _ in range(size // 6 + 1))
        pool.append(text[:size])
    return pool


def hour_counts(total: int, hours: int, rng: random.Random) -> list[int]:
    """Spread rows over hours: office hours busy, nights and weekends quiet."""
    weights = []
    for hour in range(hours):
        day, clock = divmod(hour, 24)
        weekday = day % 7 < 5
        base = 1.0 if 8 <= clock < 19 else 0.25 if 6 <= clock < 23 else 0.05
        weights.append(base * (1.0 if weekday else 0.35) * rng.uniform(0.6, 1.4))
    scale = total / sum(weights)
    counts = [int(w * scale) for w in weights]
    for index in rng.sample(range(hours), total - sum(counts)):
        counts[index] += 1
    return counts


class Stamp:
    """Format epoch microseconds as SQLAlchemy stores UtcDateTime in SQLite."""

    def __init__(self) -> None:
        self.minutes: dict[int, str] = {}

    def __call__(self, micros: int) -> str:
        minute = micros // 60_000_000
        prefix = self.minutes.get(minute)
        if prefix is None:
            prefix = time.strftime("%Y-%m-%d %H:%M:", time.gmtime(minute * 60))
            self.minutes[minute] = prefix
        rest = micros - minute * 60_000_000
        return f"{prefix}{rest // 1_000_000:02d}.{rest % 1_000_000:06d}"


def shape(rng: random.Random, model: tuple[Any, ...]) -> tuple[Any, ...]:
    """Return one outcome of a call to `model`, in SHAPE_COLUMNS order."""
    _, _, size_in, size_out, speed, reasons = model
    streamed = size_out > 0 and rng.random() < 0.65
    tokens_in = max(1, int(size_in * rng.lognormvariate(0, 0.8)))
    tokens_out = max(1, int(size_out * rng.lognormvariate(0, 0.7))) if size_out else 0
    rate = speed * rng.uniform(0.7, 1.2) if speed else None
    ttft = int(80 + tokens_in / 1.5) if streamed else None
    duration = int(20 + tokens_in / 1.5 + (tokens_out / rate * 1000 if rate else 0))
    status, problem, source = 200, None, "upstream"
    finish = "stop" if rng.random() < 0.93 else "length"
    roll = rng.random()
    if roll < 0.025:  # an error: the server's message, no usage
        status, problem = rng.choice(ERRORS)
        tokens_in = tokens_out = ttft = rate = finish = None  # type: ignore[assignment]
        source, duration = "none", int(duration * rng.random()) + 1
    elif roll < 0.035 and streamed:  # the client left mid-stream
        finish, source, tokens_out = "cancelled", "estimated", max(1, tokens_out // 3)
    total = None if tokens_in is None else tokens_in + (tokens_out or 0)
    cached = (
        int(tokens_in * rng.random()) if tokens_in and rng.random() < 0.25 else None
    )
    reasoning = int(tokens_out * 0.6) if reasons and tokens_out else None
    response_bytes = (tokens_out or 0) * (140 if streamed else 5) + 300
    return (
        duration, ttft, "POST", tokens_in, tokens_out, total, cached, reasoning,
        source, rate, status, int(status >= 400), problem, int(streamed), finish,
        200 + int(tokens_in or 100) * 4, response_bytes,
    )  # fmt: skip


def profiles(rng: random.Random) -> list[tuple[str | None, list[int], str, bool]]:
    """Return each client's habits: its models, its endpoint, whether text is kept.

    A client sticks to a few models and one endpoint, as tools do; the unnamed
    client (no X-Client-Name) uses everything.
    """
    weights = [m[1] for m in MODELS]
    chat = [i for i, m in enumerate(MODELS) if m[3]]
    embed = [i for i, m in enumerate(MODELS) if not m[3]]
    paths = [p for p, _ in CHAT_ENDPOINTS]
    path_weights = [w for _, w in CHAT_ENDPOINTS]
    habits: list[tuple[str | None, list[int], str, bool]] = []
    for name in CLIENTS:
        if "embed" in name or "rag" in name or "search" in name:
            habits.append((name, embed, "/v1/embeddings", name != "batch-embed"))
            continue
        picks = rng.choices(chat, [weights[i] for i in chat], k=rng.randint(1, 3))
        path = rng.choices(paths, path_weights)[0]
        habits.append((name, sorted(set(picks)), path, name != "ci-evals"))
    habits.append((None, chat, "/v1/chat/completions", True))
    return habits


def generate_rows(total: int, seed: int = 5) -> Iterator[tuple[Any, ...]]:
    """Yield rows in INSERT_COLUMNS order, oldest first."""
    rng = random.Random(seed)
    stamp = Stamp()
    prompts, answers = texts(seed, 64, 20, 300), texts(seed + 1, 64, 20, 500)
    outcomes = [[shape(rng, m) for _ in range(SHAPES)] for m in MODELS]
    habits = profiles(rng)
    shares = [1 / (i + 1) for i in range(len(CLIENTS))] + [2.0]
    hours = DAYS * 24
    hour_us = 3_600_000_000
    begin = (int(time.time()) // 3600 - hours) * hour_us  # ends at the last full hour
    bits = rng.getrandbits
    for hour, count in enumerate(hour_counts(total, hours, rng)):
        clients = rng.choices(habits, shares, k=count)
        offsets = sorted(bits(32) % hour_us for _ in range(count))
        for (client, models, path, store), offset in zip(clients, offsets, strict=True):
            index = models[bits(16) % len(models)]
            name, outcome = MODELS[index][0], outcomes[index][bits(11)]
            endpoint = "/v1/embeddings" if not MODELS[index][3] else path
            start = begin + hour * hour_us + offset
            prompt = prompts[bits(6)] if store else None
            answer = answers[bits(6)] if store and outcome[4] else None
            yield (
                stamp(start), stamp(start + outcome[0] * 1000), endpoint, name, name,
                client, prompt, answer, *outcome,
            )  # fmt: skip


def fill(database: Path, total: int) -> dict[str, Any]:
    """Bulk-insert generated rows (and the rollup); return what it took."""
    began = time.monotonic()
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")  # 256 MB while building indexes
    tables = {
        r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    # Indexes are rebuilt once at the end: much faster than updating them per row.
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' "
        "AND tbl_name='requests' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')

    insert = (
        f"INSERT INTO requests ({', '.join(INSERT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
    )
    rows = generate_rows(total)
    while batch := [row for _, row in zip(range(BATCH), rows, strict=False)]:
        db.execute("BEGIN")
        db.executemany(insert, batch)
        db.execute("COMMIT")
    inserted = time.monotonic()

    for _, sql in indexes:
        db.execute(sql)
    rollups: dict[str, int] = {}
    if "usage_hourly" in tables:
        db.execute("BEGIN")
        db.execute("DELETE FROM usage_hourly")
        db.execute(ROLLUP_SQL)
        if "usage_daily" in tables:
            db.execute("DELETE FROM usage_daily")
            db.execute(DAILY_SQL)
        db.execute("COMMIT")
        for table, _ in ROLLUPS:
            if table in tables:
                count = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                rollups[f"{table}_rows"] = count
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return {
        "rows": total,
        "insert_s": round(inserted - began, 1),
        "index_and_rollup_s": round(time.monotonic() - inserted, 1),
        **rollups,
        "file_mb": round(database.stat().st_size / 2**20),
    }


def time_http(port: int, path: str, times: int) -> tuple[list[float], int, int]:
    """GET path once to warm up, then `times` times; return ms, status, bytes."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    spent, status, size = [], 0, 0
    try:
        for attempt in range(times + 1):
            began = time.perf_counter()
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read()
            if attempt:
                spent.append((time.perf_counter() - began) * 1000)
            status, size = answer.status, len(body)
    finally:
        connection.close()
    return spent, status, size


def time_raw(database: Path, sql: str, times: int) -> list[float]:
    """Run the SQL `times` times on the file; return milliseconds."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    spent = []
    try:
        for _ in range(times):
            began = time.perf_counter()
            db.execute(sql).fetchall()
            spent.append((time.perf_counter() - began) * 1000)
    finally:
        db.close()
    return spent


def measure(
    database: Path, total: int, proxy: Server | None, times: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Time every endpoint through the proxy (if any), its raw SQL, its rollup SQL."""
    rows, problems = [], []
    with sqlite3.connect(database) as db:
        found = db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        tables = {name for (name,) in found}
    db.close()
    rollup = next(((t, c) for t, c in ROLLUPS if t in tables), None)
    # A full scan of 10M rows takes seconds: once is enough to show it.
    raw_times = 1 if total > 1_000_000 else min(times, 3)
    for name, path in ENDPOINTS:
        row: dict[str, Any] = {"rows": total, "query": name}
        row["via"] = "proxy" if proxy else "raw SQL only"
        row["raw_ms"] = statistics.median(time_raw(database, RAW_SQL[name], raw_times))
        if name in ROLLUP_READS and rollup is not None:
            sql = ROLLUP_READS[name].format(table=rollup[0], time=rollup[1])
            spent = time_raw(database, sql, max(times, 3))
            row["rollup_ms"] = statistics.median(spent)
        if proxy is not None:
            spent, status, size = time_http(proxy.port, path, times)
            row.update(median_ms=statistics.median(spent), max_ms=max(spent))
            row.update(status=status, bytes=size)
            if status != 200:
                problems.append(f"ours: GET {path} answered {status} at {total:,} rows")
        rows.append(row)
    return rows, problems


def make_schema(
    database: Path, command: str, port: int, stub: Server, workdir: Path
) -> None:
    """Let the proxy create its schema in an empty file, then stop it."""
    upstream = f"http://127.0.0.1:{stub.port}"
    proxy = servers.ours(port, upstream, database, command)
    proxy.name = "ours-schema"
    proxy.start(workdir)
    try:
        proxy.wait_ready(workdir)
    finally:
        proxy.stop()


def time_proxy(
    database: Path, total: int, port: int, stub: Server, workdir: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """Start the proxy on a filled database and time the queries through it."""
    command = servers.find_proxy()
    assert command is not None
    proxy = servers.ours(port, f"http://127.0.0.1:{stub.port}", database, command)
    proxy.name = f"ours-stats-{total}"
    proxy.start(workdir)
    try:
        proxy.wait_ready(workdir)
        times = 2 if total < 100_000 else 5 if total <= 1_000_000 else 3
        return measure(database, total, proxy, times)
    finally:
        proxy.stop()


def run_one(
    total: int, port: int, stub: Server, workdir: Path, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Build one database of `total` rows and time the queries on it."""
    command = servers.find_proxy()
    if command is None or not servers.has_serve(command):
        return [], ["ours: lms-metrics-proxy serve is not available for the queries"]
    database = workdir / f"stats-{total}.db"
    make_schema(database, command, port, stub, workdir)
    say(f"generating {total:,} rows in {database.name}")
    made = fill(database, total)
    say(f"generated: {made}")
    if "usage_hourly_rows" not in made:
        say("no usage_hourly table: the endpoints read raw rows")

    rows, problems = time_proxy(database, total, port, stub, workdir)
    for row in rows:
        row["generation"] = made
    for suffix in ("", "-wal", "-shm"):
        Path(str(database) + suffix).unlink(missing_ok=True)
    return rows, problems


def run_all(
    sizes: list[int],
    port: int,
    stub: Server,
    workdir: Path,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Time the queries at each database size."""
    rows, problems = [], []
    for total in sizes:
        found_rows, found = run_one(total, port, stub, workdir, say)
        rows += found_rows
        problems += found
    return rows, problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--database",
        type=Path,
        help="time an existing database made by this script (no generation)",
    )
    parser.add_argument("--port", type=int, default=18320)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmsbench-queries"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    stub = servers.stub(args.port + 1)
    stub.start(args.workdir)
    try:
        stub.wait_ready(args.workdir)
        if args.database:
            with sqlite3.connect(args.database) as db:
                total = db.execute("SELECT count(*) FROM requests").fetchone()[0]
            rows, problems = time_proxy(
                args.database, total, args.port, stub, args.workdir
            )
        else:
            rows, problems = run_one(args.rows, args.port, stub, args.workdir, say)
    finally:
        stub.stop()
    print(report.stats_table(rows))
    for problem in problems:
        print("FAILED:", problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
