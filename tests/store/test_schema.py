"""The tables: exactly SPEC §3's columns, and migrations equal to schema.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.store import Database, Writer
from lms_metrics_proxy.store.migration import alembic_config
from lms_metrics_proxy.store.schema import (
    as_utc,
    floor_hour,
    metadata,
    requests,
    status_class,
)

from .helpers import make_record

# SPEC §3, in order; True where the column may be null.
SPEC_COLUMNS = {
    "id": False,
    "start_time": False,
    "end_time": False,
    "duration_ms": False,
    "ttft_ms": True,
    "method": False,
    "endpoint": False,
    "model": True,
    "requested_model": True,
    "client": True,
    "input_tokens": True,
    "output_tokens": True,
    "total_tokens": True,
    "cached_input_tokens": True,
    "reasoning_tokens": True,
    "usage_source": False,
    "tokens_per_second": True,
    "prompt": True,
    "response": True,
    "http_status": False,
    "is_error": False,
    "error_message": True,
    "was_streamed": False,
    "finish_reason": True,
    "request_bytes": False,
    "response_bytes": False,
}
SPEC_INDEXES = {("model",), ("endpoint",), ("start_time",), ("is_error",), ("client",)}


async def migrate_to(database_url: str, revision: str) -> Database:
    """Open a database and upgrade it only as far as `revision`."""
    database = Database(Settings(database_url=database_url))

    def upgrade(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with database.transaction() as connection:
        await connection.run_sync(upgrade)
    return database


def describe_requests(connection: Connection) -> tuple[dict[str, bool], set[tuple]]:
    inspector = inspect(connection)
    columns = {c["name"]: c["nullable"] for c in inspector.get_columns("requests")}
    indexes = {tuple(i["column_names"]) for i in inspector.get_indexes("requests")}
    return columns, indexes


async def test_baseline_has_exactly_the_spec_columns_and_indexes(
    database_url: str,
) -> None:
    database = await migrate_to(database_url, "0001")

    async with database.engine.connect() as connection:
        columns, indexes = await connection.run_sync(describe_requests)
    await database.close()

    assert list(columns) == list(SPEC_COLUMNS)
    assert columns == SPEC_COLUMNS
    assert indexes == SPEC_INDEXES


async def test_newest_revision_adds_details_and_keeps_spec_columns(
    database: Database,
) -> None:
    async with database.engine.connect() as connection:
        columns, indexes = await connection.run_sync(describe_requests)

    assert list(columns) == [*SPEC_COLUMNS, "details"]
    assert indexes == SPEC_INDEXES


async def test_migrated_database_matches_schema_module(database: Database) -> None:
    def differences(connection: Connection) -> list:
        context = MigrationContext.configure(connection)
        return compare_metadata(context, metadata)

    async with database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_times_are_stored_in_utc_and_read_back_aware(
    database: Database, writer: Writer
) -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2026, 1, 19, 12, 30, 45, 123456, tzinfo=paris)
    writer.put(make_record(start_time=local))
    await writer.flush()

    async with database.engine.connect() as connection:
        stored = (await connection.execute(select(requests.c.start_time))).scalar_one()

    assert stored == local
    assert stored.tzinfo is UTC
    assert stored.hour == 10
    assert stored.microsecond == 123456


def test_naive_times_are_taken_as_utc() -> None:
    naive = datetime(2026, 1, 19, 10, 30)  # noqa: DTZ001 - naive on purpose

    assert as_utc(naive) == naive.replace(tzinfo=UTC)
    assert floor_hour(naive) == datetime(2026, 1, 19, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (201, "2xx"), (404, "4xx"), (502, "5xx"), (100, "1xx"),
     (0, "err"), (600, "err"), (-1, "err")],
)  # fmt: skip
def test_status_class_groups_by_hundreds(status: int, expected: str) -> None:
    assert status_class(status) == expected
