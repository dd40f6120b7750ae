"""API fixtures: the /health and /stats/* routes over a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from lms_metrics_proxy.api import setup_api
from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.store import Database, Record, Writer, open_database

TOKEN = "s3cret-stats-token"
Client = TestClient[web.Request, web.Application]


@dataclass
class Parts:
    """What app.py's Pieces gives setup_api: the database and the writer."""

    database: Database | None
    writer: Writer | None

    async def write(self, *records: Record) -> None:
        assert self.writer is not None
        for record in records:
            self.writer.put(record)
        await self.writer.flush()


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    database = await open_database(Settings(database_url=f"sqlite:{tmp_path}/a.db"))
    writer = Writer(database, interval=0.01)
    await writer.start()
    yield Parts(database, writer)
    await writer.stop()
    await database.close()


@pytest.fixture
def make_client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], parts: Parts
) -> Callable[..., Awaitable[Client]]:
    async def make(token: str | None = None) -> Client:
        app = web.Application()
        setup_api(app, parts, Settings(stats_token=token))
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]]) -> Client:
    return await make_client()
