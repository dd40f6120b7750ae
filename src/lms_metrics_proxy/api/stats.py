"""The JSON endpoints: /health and /stats/* (SPEC §4), and their OpenAPI text.

Each handler reads its parameters (400 on a bad one), asks `store.queries`,
and answers JSON; a database that cannot be read gives 503, never 500.
/health is always open; /stats/* need the bearer token when one is set.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from lms_metrics_proxy.api.auth import guard
from lms_metrics_proxy.api.openapi import openapi_document
from lms_metrics_proxy.api.params import (
    read_bucket,
    read_filters,
    read_id,
    read_limit,
)
from lms_metrics_proxy.api.responses import NotFound, json_errors, json_response
from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.prices import NO_PRICES, Prices, load_prices
from lms_metrics_proxy.store import Database, Writer, queries

SERVICE = "token_counter_proxy"


class Parts(Protocol):
    """Where the handlers find the database and writer, once started.

    The app opens both on start-up, after its routes are fixed, so the
    handlers look them up on each request instead of holding them.
    """

    database: Database | None
    writer: Writer | None


class StatsViews:
    """The handlers, reading from the parts they report on."""

    def __init__(self, parts: Parts, prices: Prices = NO_PRICES) -> None:
        self.parts = parts
        self.prices = prices

    @property
    def database(self) -> Database:
        """The open database; StoreError (503) before start-up ends."""
        if self.parts.database is None:
            raise StoreError("The database is not open yet; try again shortly")
        return self.parts.database

    async def health(self, request: web.Request) -> web.Response:
        """GET /health: ok, or degraded while rows cannot be written."""
        writer = self.parts.writer
        state = (
            writer.health() if writer else {"status": "degraded", "reason": "starting"}
        )
        status = state.pop("status")
        return json_response({"status": status, "service": SERVICE, **state})

    async def summary(self, request: web.Request) -> web.Response:
        """GET /stats/summary."""
        filters = read_filters(request.query)
        data = await queries.summary(self.database, filters)
        if self.prices is not NO_PRICES:
            models = await queries.by_model(self.database, filters)
            costs = [self._cost(entry) for entry in models["models"]]
            data["estimated_cost"] = round(sum(c for c in costs if c), 6)
        return json_response(data)

    async def by_model(self, request: web.Request) -> web.Response:
        """GET /stats/by-model."""
        filters = read_filters(request.query)
        data = await queries.by_model(self.database, filters)
        if self.prices is not NO_PRICES:
            for entry in data["models"]:
                entry["estimated_cost"] = self._cost(entry)
        return json_response(data)

    def _cost(self, entry: dict[str, Any]) -> float | None:
        return self.prices.cost(
            entry["model"], entry["total_input_tokens"], entry["total_output_tokens"]
        )

    async def by_client(self, request: web.Request) -> web.Response:
        """GET /stats/by-client."""
        filters = read_filters(request.query)
        return json_response(await queries.by_client(self.database, filters))

    async def recent(self, request: web.Request) -> web.Response:
        """GET /stats/recent?limit=N."""
        limit = read_limit(request.query)
        filters = read_filters(request.query)
        return json_response(await queries.recent(self.database, limit, filters))

    async def timeseries(self, request: web.Request) -> web.Response:
        """GET /stats/timeseries?bucket=minute|hour|day."""
        bucket = read_bucket(request.query)
        filters = read_filters(request.query)
        data = await queries.timeseries(self.database, bucket, filters)
        return json_response(data)

    async def request_row(self, request: web.Request) -> web.Response:
        """GET /stats/requests/{id}: one whole row, or 404."""
        request_id = read_id(request.match_info["id"])
        filters = read_filters(request.query)
        row = await queries.request(self.database, request_id, filters)
        if row is None:
            raise NotFound(f"No request with id {request_id}")
        return json_response(row)

    async def openapi(self, request: web.Request) -> web.Response:
        """GET /stats/openapi.json: the OpenAPI 3.1 description of this API."""
        return json_response(openapi_document())


def setup_api(app: web.Application, parts: Parts, settings: Settings) -> None:
    """Add /health and the /stats/* routes to `app`.

    `parts` has the attributes `database` and `writer` (app.py's Pieces);
    they may still be None here and are read on each request.
    """
    views = StatsViews(parts, load_prices(settings.prices_file))
    app.router.add_get("/health", json_errors(views.health))
    routes = {
        "/stats/summary": views.summary,
        "/stats/by-model": views.by_model,
        "/stats/by-client": views.by_client,
        "/stats/recent": views.recent,
        "/stats/timeseries": views.timeseries,
        "/stats/requests/{id}": views.request_row,
        "/stats/openapi.json": views.openapi,
    }
    for path, handler in routes.items():
        app.router.add_get(path, guard(json_errors(handler), settings.stats_token))
