"""Build the web application and run it: relay, writer, statistics.

`build_app` wires the pieces together and owns their start and stop order;
`serve` runs one process until SIGTERM or Ctrl-C, finishing in-flight
requests and writing every pending row before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from lms_metrics_proxy.api import guard, setup_api
from lms_metrics_proxy.api.dashboard import setup_dashboard
from lms_metrics_proxy.api.metrics import CONTENT_TYPE, Metrics
from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.relay.proxy import Relay
from lms_metrics_proxy.store.database import Database, open_database
from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.store.writer import Writer
from lms_metrics_proxy.tasks import spawn

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# How often a worker of several leaves its metrics for the others; a scrape
# may miss at most this much of the other workers' latest requests.
SHARE_SECONDS = 1.0


class Pieces:
    """The long-lived parts of one proxy process, started in order."""

    def __init__(self, settings: Settings, share: Path | None = None) -> None:
        self.settings = settings
        self.database: Database | None = None
        self.writer: Writer | None = None
        self.metrics = Metrics(share)
        self.sharing: asyncio.Task[None] | None = None
        self.relay = Relay(settings, self.observe)

    def observe(self, record: Record, tracked: bool) -> None:
        """Take one finished request: count it, and queue its row if tracked."""
        self.metrics.observe(record)
        if tracked and self.writer is not None:
            self.writer.put(record)

    async def start(self) -> None:
        self.database = await open_database(self.settings)
        logger.info("Database initialized at %s", self.settings.database_label)
        self.writer = Writer(self.database, max_rows=self.settings.queue_max_rows)
        await self.writer.start()
        await self.relay.start()
        if self.metrics.share is not None:
            self.sharing = spawn(self.share_metrics(), "share-metrics")

    async def stop(self) -> None:
        await self.relay.stop()
        if self.sharing is not None:
            self.sharing.cancel()
            self.metrics.dump()  # the last requests count after this worker
        if self.writer is not None:
            await self.writer.stop()
        if self.database is not None:
            await self.database.close()

    async def share_metrics(self) -> None:
        """Leave this worker's metric sums for the others every second."""
        while True:
            self.metrics.dump()
            await asyncio.sleep(SHARE_SECONDS)


PIECES = web.AppKey("pieces", Pieces)


def build_app(settings: Settings, share: Path | None = None) -> web.Application:
    """Return the aiohttp application: statistics routes, then the relay.

    `share`: the folder where the workers of `serve --workers N` add up
    their metrics (None for a single process).
    """
    pieces = Pieces(settings, share)
    app = web.Application(client_max_size=settings.max_request_bytes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await pieces.start()
        yield
        await pieces.stop()

    app.cleanup_ctx.append(lifecycle)
    setup_api(app, pieces, settings)
    setup_dashboard(app, settings)
    app.router.add_get(
        "/metrics", guard(metrics_view(pieces.metrics), settings.stats_token)
    )
    app.router.add_route("*", "/{tail:.*}", pieces.relay.handle)
    app[PIECES] = pieces
    relay_past_the_router(app, pieces.relay.handle)
    return app


def own_prefixes(app: web.Application) -> tuple[str, ...]:
    """Return the first path segment of every route the proxy serves itself."""
    prefixes = set()
    for resource in app.router.resources():
        first = resource.canonical.split("/")[1]
        if not first.startswith("{"):  # the relay's catch-all
            prefixes.add("/" + first)
    return tuple(sorted(prefixes))


def relay_past_the_router(app: web.Application, relay: Handler) -> None:
    """Hand proxied requests to the relay without resolving a route.

    aiohttp's router costs about 10 µs a request (a match object, a regular
    expression, a coroutine per candidate), 5% of a relayed request under
    load. Every path outside the proxy's own prefixes ends at the relay's
    catch-all anyway, so those skip it. Own paths, and requests with Expect
    (whose 100 Continue aiohttp's route machinery sends), go the usual way.
    This wraps Application._handle, which aiohttp's runner calls for every
    request; were that to change, requests would take the router again,
    slower but the same.
    """
    own = own_prefixes(app)
    routed = app._handle

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.startswith(own) or "Expect" in request.headers:
            return await routed(request)
        return await relay(request)

    app._handle = handle  # type: ignore[method-assign]


def metrics_view(metrics: Metrics) -> Handler:
    """Serve the Prometheus text format."""

    async def view(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    return view


async def serve(
    settings: Settings,
    sock: socket.socket | None = None,
    share: Path | None = None,
) -> None:
    """Run the proxy until SIGTERM or SIGINT, then shut down gracefully."""
    logger.info(
        "Starting token counter proxy on port %s with LM Studio at %s",
        settings.port,
        settings.upstream_url,
    )
    if not settings.is_loopback and settings.stats_token is None:
        logger.warning(
            "Listening on %s without STATS_TOKEN: anyone on the network can read "
            "the stored prompts; set STATS_TOKEN or bind 127.0.0.1",
            settings.host,
        )
    runner = web.AppRunner(
        build_app(settings, share),
        access_log=None,
        handler_cancellation=True,
        auto_decompress=False,
        shutdown_timeout=settings.shutdown_grace,
    )
    await runner.setup()
    site = _site(runner, settings, sock)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    logger.info(
        "Proxy server listening on %s:%s pid=%s",
        settings.host,
        settings.port,
        os.getpid(),
    )
    await _wait_for_signal()
    await _shut_down(runner, settings)
    logger.info("Stopped")


async def _shut_down(runner: web.AppRunner, settings: Settings) -> None:
    """Let requests in flight finish within the grace period; a second
    signal cuts them at once. Either way every pending row is written."""
    relay = runner.app[PIECES].relay
    relay.stopping = True
    logger.info(
        "Shutting down: finishing %s requests in flight (up to %g s, "
        "SHUTDOWN_GRACE), then writing pending rows; press Ctrl-C again to "
        "cut them now",
        relay.in_flight,
        settings.shutdown_grace,
    )

    def cut() -> None:
        logger.warning("Cutting %s requests in flight now", relay.in_flight)
        for connection in runner.server.connections if runner.server else ():
            connection.force_close()

    _on_signal(cut)
    await runner.cleanup()
    if relay.cut_at_shutdown:
        logger.warning(
            "Shutdown cut %s requests short; their rows say finish_reason=cancelled",
            relay.cut_at_shutdown,
        )


def _site(
    runner: web.AppRunner, settings: Settings, sock: socket.socket | None
) -> web.BaseSite:
    if sock is not None:
        return web.SockSite(runner, sock)
    return web.TCPSite(
        runner,
        settings.host,
        settings.port,
        reuse_port=settings.workers > 1 or None,
        backlog=1024,
    )


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    _on_signal(stop.set)
    await stop.wait()


def _on_signal(callback: Callable[[], None]) -> None:
    """Call `callback` on SIGINT or SIGTERM (replacing any earlier handler)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, callback)
