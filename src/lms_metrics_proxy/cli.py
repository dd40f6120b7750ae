"""The command line: `serve` runs the proxy; other commands read its database.

The only module that configures logging. Settings errors end here as one
line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import multiprocessing
import os
import signal
import sys
from typing import Any

import click

from lms_metrics_proxy import __version__
from lms_metrics_proxy.config import Settings, load_settings
from lms_metrics_proxy.errors import ConfigError, StoreError

logger = logging.getLogger("lms_metrics_proxy.cli")

TRACE = 5
LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


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
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "plain"}
            },
            "loggers": {
                "lms_metrics_proxy": {"level": LEVELS[level]},
                # Their access and client lines carry full URLs, which may
                # hold a key in the query string.
                "aiohttp": {"level": logging.WARNING},
                "alembic": {"level": logging.WARNING},
            },
            "root": {"handlers": ["stderr"], "level": logging.WARNING},
        }
    )


def fail(message: str) -> None:
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
    click.option("--database-url", help="sqlite:PATH or postgresql://… [DATABASE_URL]."),
    click.option("--log-level", help="trace, debug, info, warn, error [LOG_LEVEL]."),
    click.option(
        "--store-content/--no-store-content",
        default=None,
        help="Store prompt and response text [STORE_CONTENT].",
    ),
    click.option("--max-content-chars", help="Cap on each stored text [MAX_CONTENT_CHARS]."),
    click.option("--stats-token", help="Bearer token for /stats, /metrics [STATS_TOKEN]."),
    click.option(
        "--inject-stream-usage/--no-inject-stream-usage",
        default=None,
        help="Ask streams for a usage chunk [INJECT_STREAM_USAGE].",
    ),
    click.option(
        "--upstream-connect-timeout", help="Seconds [UPSTREAM_CONNECT_TIMEOUT]."
    ),
    click.option(
        "--upstream-read-timeout", help="Seconds between two bytes [UPSTREAM_READ_TIMEOUT]."
    ),
    click.option("--max-request-bytes", help="Larger bodies get 413 [MAX_REQUEST_BYTES]."),
    click.option("--prices-file", help="TOML or JSON prices per model [PRICES_FILE]."),
    click.option("--workers", help="Processes sharing the port [WORKERS, default 1]."),
    click.option(
        "--shutdown-grace", help="Seconds in-flight requests get on stop [SHUTDOWN_GRACE]."
    ),
    click.option("--queue-max-rows", help="Rows held while the database is down [QUEUE_MAX_ROWS]."),
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
        return
    configure_logging(settings.log_level)
    if settings.workers > 1:
        run_workers(settings)
    else:
        run_one(settings)


def run_one(settings: Settings) -> None:
    """Run a single proxy process until it is told to stop."""
    from lms_metrics_proxy.app import serve

    try:
        _run(serve(settings))
    except StoreError as error:
        fail(str(error))
    except OSError as error:
        fail(
            f"Cannot listen on {settings.host}:{settings.port} ({error.strerror}); "
            "stop what uses that port or choose another with PORT or --port"
        )


def run_workers(settings: Settings) -> None:
    """Run `settings.workers` processes sharing one port (SO_REUSEPORT)."""
    from lms_metrics_proxy.store.database import migrate_only

    asyncio.run(migrate_only(settings))
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings,), name=f"worker-{n}")
        for n in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate() if signum == signal.SIGTERM else _interrupt(worker)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for worker in workers:
        worker.join()
        codes.append(worker.exitcode or 0)
    sys.exit(max(codes))


def _interrupt(worker: multiprocessing.process.BaseProcess) -> None:
    if worker.pid is not None:
        os.kill(worker.pid, signal.SIGINT)


def _worker_main(settings: Settings) -> None:
    configure_logging(settings.log_level)
    run_one(settings)


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for Windows
        asyncio.run(coro)
        return
    uvloop.run(coro)


def main() -> None:
    """Entry point of the `lms-metrics-proxy` console script."""
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
