"""The command line: `serve` runs the proxy; other commands read its database.

The only module that configures logging. Settings errors end here as one
line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import logging.config
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from lms_metrics_proxy import __version__
from lms_metrics_proxy.config import Settings, load_settings
from lms_metrics_proxy.errors import ConfigError, StoreError

logger = logging.getLogger("lms_metrics_proxy.cli")

T = TypeVar("T")
AGO = re.compile(r"(\d+)\s*([dhm])")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}
SUMMARY_ROWS = (
    "total_requests",
    "failed_requests",
    "total_input_tokens",
    "total_output_tokens",
    "total_tokens",
    "estimated_usage_requests",
    "no_usage_requests",
)

TRACE = 5
LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class MalformedRequestFilter(logging.Filter):
    """Keep the bytes of a request aiohttp cannot parse out of the log.

    aiohttp logs such a request (a header line over 8 KiB, a bad chunk size)
    at ERROR with a traceback and the offending bytes, which may be an
    Authorization header or a key in the query string. The client erred, not
    the proxy: one WARNING line naming the kind of fault replaces it.
    """

    # TODO(aiohttp-parser-error-hook): such a request gets aiohttp's 400 but
    # no row, since it never reaches the relay; recording it needs a hook into
    # aiohttp's RequestHandler.handle_error.
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        # Matched by module: this module does not import the HTTP stack.
        if error is None or type(error).__module__ != "aiohttp.http_exceptions":
            return True
        record.msg = "Malformed HTTP request refused status=%s error=%s"
        record.args = (getattr(error, "code", 400), type(error).__name__)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(level: str) -> None:
    """Log to stderr at `level`; keep aiohttp's own loggers quiet."""
    logging.addLevelName(TRACE, "TRACE")
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
            },
            "filters": {"malformed": {"()": MalformedRequestFilter}},
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "plain"}
            },
            "loggers": {
                "lms_metrics_proxy": {"level": LEVELS[level]},
                # Their access and client lines carry full URLs, which may
                # hold a key in the query string.
                "aiohttp": {"level": logging.WARNING},
                "aiohttp.server": {"filters": ["malformed"]},
                "alembic": {"level": logging.WARNING},
            },
            "root": {"handlers": ["stderr"], "level": logging.WARNING},
        }
    )


def fail(message: str) -> NoReturn:
    """Print one line for the user and exit with status 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lms-metrics-proxy")
def cli() -> None:
    """Count the tokens that go through your local LLM server."""


SETTING_OPTIONS = [
    click.option("--host", help="Address to bind [HOST, default 127.0.0.1]."),
    click.option("--port", type=str, help="Port to listen on [PORT, default 8080]."),
    click.option(
        "--upstream",
        "upstream_url",
        help="Model server base URL, without /v1 [LM_STUDIO_URL].",
    ),
    click.option(
        "--database-url", help="sqlite:PATH or postgresql://… [DATABASE_URL]."
    ),
    click.option("--log-level", help="trace, debug, info, warn, error [LOG_LEVEL]."),
    click.option(
        "--store-content/--no-store-content",
        default=None,
        help="Store prompt and response text [STORE_CONTENT].",
    ),
    click.option(
        "--max-content-chars", help="Cap on each stored text [MAX_CONTENT_CHARS]."
    ),
    click.option(
        "--stats-token", help="Bearer token for /stats, /metrics [STATS_TOKEN]."
    ),
    click.option(
        "--inject-stream-usage/--no-inject-stream-usage",
        default=None,
        help="Ask streams for a usage chunk [INJECT_STREAM_USAGE].",
    ),
    click.option(
        "--upstream-connect-timeout", help="Seconds [UPSTREAM_CONNECT_TIMEOUT]."
    ),
    click.option(
        "--upstream-read-timeout",
        help="Seconds between two bytes [UPSTREAM_READ_TIMEOUT].",
    ),
    click.option(
        "--max-request-bytes", help="Larger bodies get 413 [MAX_REQUEST_BYTES]."
    ),
    click.option("--prices-file", help="TOML or JSON prices per model [PRICES_FILE]."),
    click.option("--workers", help="Processes sharing the port [WORKERS, default 1]."),
    click.option(
        "--shutdown-grace",
        help="Seconds in-flight requests get on stop [SHUTDOWN_GRACE].",
    ),
    click.option(
        "--queue-max-rows",
        help="Rows held while the database is down [QUEUE_MAX_ROWS].",
    ),
]


def setting_options(func: Any) -> Any:
    """Add one option per setting to a command."""
    for option in reversed(SETTING_OPTIONS):
        func = option(func)
    return func


@cli.command("serve")
@setting_options
def serve_command(**flags: Any) -> None:
    """Run the proxy (SQLite at ./token_counter.db unless DATABASE_URL says else)."""
    try:
        settings = load_settings(overrides=flags)
    except ConfigError as error:
        fail(str(error))
    configure_logging(settings.log_level)
    if settings.workers > 1:
        run_workers(settings)
    else:
        run_one(settings)


def run_one(settings: Settings, share: Path | None = None) -> None:
    """Run a single proxy process until it is told to stop.

    `share`: the folder where workers add up their metrics, when several run.
    """
    from lms_metrics_proxy.app import serve

    try:
        _run(serve(settings, share=share))
    except StoreError as error:
        fail(str(error))
    except OSError as error:
        fail(
            f"Cannot listen on {settings.host}:{settings.port} "
            f"({error.strerror or error}); "
            "stop what uses that port or choose another with PORT or --port"
        )


def run_workers(settings: Settings) -> None:
    """Run `settings.workers` processes sharing one port (SO_REUSEPORT)."""
    # Migrate once here, so that the workers do not race to do it.
    _run(_with_database(settings, lambda database: _noop()))
    share = Path(tempfile.mkdtemp(prefix="lms-metrics-proxy-"))
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings, share), name=f"worker-{n}")
        for n in range(settings.workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate() if signum != signal.SIGINT else _interrupt(worker)

    # Before the workers start: they have process groups of their own (see
    # _worker_main), so signals reach them only through this process. A
    # closed terminal (SIGHUP) is passed on as SIGTERM.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for worker in workers:
        worker.start()
    codes = []
    for worker in workers:
        worker.join()
        codes.append(worker.exitcode or 0)
    shutil.rmtree(share, ignore_errors=True)
    sys.exit(max(codes))


def _interrupt(worker: multiprocessing.process.BaseProcess) -> None:
    if worker.pid is not None:
        os.kill(worker.pid, signal.SIGINT)


def _worker_main(settings: Settings, share: Path) -> None:
    # A group of its own: Ctrl-C in a terminal signals the whole foreground
    # group, and a worker that got it both from there and from the parent
    # would take it as the second Ctrl-C, which cuts requests in flight.
    os.setpgrp()
    configure_logging(settings.log_level)
    run_one(settings, share)


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for Windows
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _noop() -> None:
    return None


async def _with_database(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from lms_metrics_proxy.store import open_database

    database = await open_database(settings)
    try:
        return await work(database)
    finally:
        await database.close()


def run_on_database(
    flags: dict[str, Any],
    work: Callable[[Any], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    """Open the configured database (migrating it), run `work`, close it.

    A SQLite file that does not exist is created only with `create`: the
    commands that read rows would otherwise make an empty database at a
    mistyped path and report zeros.
    """
    try:
        settings = load_settings(overrides=flags)
    except ConfigError as error:
        fail(str(error))
    path = settings.sqlite_path
    if not create and path not in (None, ":memory:") and not os.path.exists(path):
        fail(
            f"No database at {path}: the proxy has recorded nothing there. "
            "Run this where the proxy runs, or point DATABASE_URL "
            "(--database-url) at the file it writes."
        )
    configure_logging("warn" if settings.log_level == "info" else settings.log_level)
    try:
        return asyncio.run(_with_database(settings, work))
    except StoreError as error:
        fail(str(error))
    raise AssertionError("unreachable")


def read_moment(value: str | None, option: str) -> datetime | None:
    """Read `7d`, `12h`, `30m`, an ISO 8601 time or Unix seconds."""
    if value is None:
        return None
    match = AGO.fullmatch(value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return datetime.now(UTC) - timedelta(**{UNITS[unit]: amount})
    try:
        if value.strip().replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "expected 7d, 12h, 30m, an ISO 8601 time or Unix seconds", param_hint=option
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def filter_options(func: Any) -> Any:
    """Add --since, --until, --model, --endpoint, --client and --database-url."""
    options = [
        click.option("--since", help="7d, 12h, 30m, ISO 8601 or Unix seconds."),
        click.option("--until", help="Same forms as --since."),
        click.option("--model", help="Only this model."),
        click.option(
            "--endpoint", help="Only this endpoint, e.g. /v1/chat/completions."
        ),
        click.option("--client", help="Only this X-Client-Name."),
        click.option(
            "--database-url", help="sqlite:PATH or postgresql://… [DATABASE_URL]."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_filters(options: dict[str, Any]) -> Any:
    """Build store Filters from the filter options."""
    from lms_metrics_proxy.store import Filters

    return Filters(
        since=read_moment(options.pop("since"), "--since"),
        until=read_moment(options.pop("until"), "--until"),
        model=options.pop("model"),
        endpoint=options.pop("endpoint"),
        client=options.pop("client"),
    )


@cli.command("stats")
@filter_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def stats_show(as_json: bool, **options: Any) -> None:
    """Show totals and per-model usage from the database."""
    from lms_metrics_proxy.store import queries

    filters = make_filters(options)

    async def work(database: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            await queries.summary(database, filters),
            await queries.by_model(database, filters),
        )

    summary, models = run_on_database(options, work)
    if as_json:
        click.echo(json.dumps({"summary": summary, **models}, indent=2))
        return
    show_stats(summary, models["models"])


def show_stats(summary: dict[str, Any], models: list[dict[str, Any]]) -> None:
    """Print the summary and the per-model table with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    totals = Table(title="Summary", show_header=False)
    for key in SUMMARY_ROWS:
        totals.add_row(key.replace("_", " "), f"{summary.get(key, 0):,}")
    console.print(totals)
    table = Table(title="By model")
    for heading in ("model", "requests", "input", "output", "total", "avg ms"):
        table.add_column(heading, justify="left" if heading == "model" else "right")
    for entry in models:
        table.add_row(
            str(entry["model"]),
            f"{entry['request_count']:,}",
            f"{entry['total_input_tokens']:,}",
            f"{entry['total_output_tokens']:,}",
            f"{entry['total_tokens']:,}",
            f"{entry['avg_duration_ms']:,}",
        )
    console.print(table)


@cli.command("recent")
@filter_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
def recent_show(limit: int, **options: Any) -> None:
    """List the newest requests."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from lms_metrics_proxy.store import queries

    filters = make_filters(options)
    rows = run_on_database(options, lambda db: queries.recent(db, limit, filters))
    # Narrow enough for 80 columns: no box lines, short headings, long names
    # folded onto a second line rather than cut.
    table = Table(
        title=f"Last {limit} requests",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for heading, field, right in RECENT_COLUMNS:
        table.add_column(
            heading,
            justify="right" if right else "left",
            overflow="fold",
            no_wrap=field in ("id", "start_time"),
        )
    for row in rows["requests"]:
        table.add_row(*(recent_cell(row, field) for _, field, _ in RECENT_COLUMNS))
    Console().print(table)


# heading, field of /stats/recent, right-aligned
RECENT_COLUMNS = (
    ("id", "id", True),
    ("time (UTC)", "start_time", False),
    ("client", "client", False),
    ("model", "model", False),
    ("endpoint", "endpoint", False),
    ("in", "input_tokens", True),
    ("out", "output_tokens", True),
    ("ms", "duration_ms", True),
    ("HTTP", "http_status", True),
    ("usage", "usage_source", False),
)


def recent_cell(row: dict[str, Any], field: str) -> str:
    """Return one cell of `recent`: times as `MM-DD HH:MM:SS`, None as blank."""
    value = row[field]
    if value is None:
        return ""
    if field == "start_time":
        return str(value)[5:19].replace("T", " ")  # 2026-01-19T10:30:45Z
    return str(value)


@cli.command("export")
@filter_options
@click.option(
    "--format",
    "form",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.File("w"),
    default="-",
    help="File to write [default: standard output].",
)
@click.option("--no-text", is_flag=True, help="Leave out prompt and response.")
def export_rows_command(form: str, output: Any, no_text: bool, **options: Any) -> None:
    """Write the selected rows as CSV or JSON lines."""
    from lms_metrics_proxy.store.maintenance import export_rows

    filters = make_filters(options)

    async def work(database: Any) -> int:
        count = 0
        writer = None
        async for row in export_rows(database, filters, with_text=not no_text):
            if form == "jsonl":
                output.write(json.dumps(row) + "\n")
            else:
                if writer is None:
                    writer = csv.DictWriter(output, fieldnames=list(row))
                    writer.writeheader()
                row["details"] = (
                    json.dumps(row["details"]) if row.get("details") else None
                )
                writer.writerow(row)
            count += 1
        return count

    count = run_on_database(options, work)
    click.echo(f"Exported {count} rows", err=True)


@cli.command("prune")
@click.option("--older-than", required=True, help="Age to keep, e.g. 30d or 12h.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--database-url", help="sqlite:PATH or postgresql://… [DATABASE_URL].")
def prune_rows(older_than: str, yes: bool, **options: Any) -> None:
    """Delete rows older than an age (whole hours, rollup included)."""
    from lms_metrics_proxy.store.maintenance import count_before, prune

    if not AGO.fullmatch(older_than.strip()):
        raise click.BadParameter(
            "expected an age such as 30d, 12h or 90m", param_hint="--older-than"
        )
    before = read_moment(older_than, "--older-than")
    assert before is not None
    count = run_on_database(options, lambda db: count_before(db, before))
    if count == 0:
        click.echo("Nothing to prune")
        return
    if not yes:
        click.confirm(
            f"Delete {count} rows from before {before:%Y-%m-%d %H:00} UTC?", abort=True
        )
    deleted = run_on_database(options, lambda db: prune(db, before))
    click.echo(f"Deleted {deleted} rows")


@cli.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
@click.option("--database-url", help="sqlite:PATH or postgresql://… [DATABASE_URL].")
def db_upgrade(**options: Any) -> None:
    """Apply every pending migration (serve does this at start-up too)."""
    run_on_database(options, lambda db: _noop(), create=True)
    click.echo("Database is at the latest schema")


def main() -> None:
    """Entry point of the `lms-metrics-proxy` console script."""
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
