"""Store fixtures: a database on a real SQLite file, and on PostgreSQL when set.

Tests that take `database_url` (or `database`, `writer`) run on SQLite under
tmp_path, and again on PostgreSQL when TEST_POSTGRES_URL names a database the
tests may empty, e.g. postgresql://lms:lms@127.0.0.1/lms_test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.store import Database, Writer, open_database

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
NO_POSTGRES = "TEST_POSTGRES_URL is not set (e.g. postgresql://lms:lms@127.0.0.1/db)"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def empty_postgres(url: str) -> None:
    """Drop every table the proxy makes, so each test starts from nothing."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "DROP TABLE IF EXISTS requests, usage_hourly, usage_daily, "
            "alembic_version CASCADE"
        )
    finally:
        await connection.close()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'proxy.db'}"
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    await empty_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    # A short busy timeout keeps lock tests quick; 5 s is the real default.
    opened = await open_database(Settings(database_url=database_url), 0.2)
    yield opened
    await opened.close()


@pytest.fixture
async def writer(database: Database) -> AsyncIterator[Writer]:
    started = Writer(database, max_rows=10_000, interval=0.01)
    await started.start()
    yield started
    await started.stop(5.0)
