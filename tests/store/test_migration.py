"""Migrations at start-up: from nothing, from each revision, from the Rust proxy."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store import Filters, Writer, open_database, queries
from lms_metrics_proxy.store.batch import ROW_COLUMNS
from lms_metrics_proxy.store.migration import alembic_config
from lms_metrics_proxy.store.schema import requests

from .helpers import BASE_TIME, assert_rollups_match_rows, count_rows, make_record
from .test_schema import migrate_to

MIGRATION_LOGGER = "lms_metrics_proxy.store.database"

# The table as the original Rust proxy (sqlx, SQLite) created it: text times in
# RFC 3339, integer booleans, its own index names.
RUST_SCHEMA = """
CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    start_time TEXT NOT NULL, end_time TEXT NOT NULL, duration_ms INTEGER NOT NULL,
    ttft_ms INTEGER, method TEXT NOT NULL, endpoint TEXT NOT NULL, model TEXT,
    requested_model TEXT, client TEXT, input_tokens INTEGER, output_tokens INTEGER,
    total_tokens INTEGER, cached_input_tokens INTEGER, reasoning_tokens INTEGER,
    usage_source TEXT NOT NULL DEFAULT 'none', tokens_per_second REAL,
    prompt TEXT, response TEXT, http_status INTEGER NOT NULL,
    is_error BOOLEAN NOT NULL DEFAULT 0, error_message TEXT,
    was_streamed BOOLEAN NOT NULL DEFAULT 0, finish_reason TEXT,
    request_bytes INTEGER NOT NULL DEFAULT 0, response_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX idx_requests_model ON requests(model);
CREATE INDEX idx_requests_start_time ON requests(start_time);
"""
RUST_ROWS = [
    # start, end, model, input, output, total, status, is_error
    ("2026-01-19T10:30:45.123456789+00:00", "2026-01-19T10:30:46.5+00:00",
     "qwen3-8b", 80, 300, 380, 200, 0),
    ("2026-01-19T12:59:59+02:00", "2026-01-19T13:00:01+02:00",
     "qwen3-8b", 20, 5, 25, 200, 0),
    ("2026-01-19T11:15:00Z", "", "llama-3", None, None, None, 502, 1),
]  # fmt: skip


def make_rust_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(RUST_SCHEMA)
        connection.executemany(
            "INSERT INTO requests (start_time, end_time, duration_ms, method, "
            "endpoint, model, input_tokens, output_tokens, total_tokens, "
            "http_status, is_error, usage_source) "
            "VALUES (?, ?, 1000, 'POST', '/v1/chat/completions', ?, ?, ?, ?, ?, ?, "
            "'upstream')",
            RUST_ROWS,
        )
    connection.close()


def revision_of(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version")
    connection.close()
    return str(revision[0])


def migration_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == MIGRATION_LOGGER and r.levelno == logging.INFO
    ]


async def test_empty_database_is_migrated_to_newest_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, MIGRATION_LOGGER)

    database = await open_database(Settings(database_url=database_url))
    summary = await queries.summary(database)
    await database.close()

    [message] = migration_messages(caplog)
    assert message.startswith("Migrations applied database=")
    assert message.endswith("from=empty to=0003")
    assert summary["total_requests"] == 0


async def test_reopening_a_current_database_applies_nothing(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await (await open_database(Settings(database_url=database_url))).close()
    caplog.set_level(logging.INFO, MIGRATION_LOGGER)
    caplog.clear()

    database = await open_database(Settings(database_url=database_url))
    await database.close()

    assert migration_messages(caplog) == []


async def test_rust_sqlite_database_is_adopted_without_losing_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token_counter.db"
    make_rust_database(path)
    caplog.set_level(logging.INFO, MIGRATION_LOGGER)

    database = await open_database(Settings(database_url=f"sqlite:{path}"))
    recent = await queries.recent(database)
    summary = await queries.summary(database)
    raw = await queries.summary(database, use_rollup=False)
    await database.close()

    assert migration_messages(caplog) == [
        f"Adopted the Rust proxy's requests table database=sqlite:{path}",
        f"Migrations applied database=sqlite:{path} from=0001 to=0003",
    ]
    assert revision_of(path) == "0003"
    assert [(r["id"], r["start_time"]) for r in recent["requests"]] == [
        (3, "2026-01-19T11:15:00Z"),
        (2, "2026-01-19T10:59:59Z"),
        (1, "2026-01-19T10:30:45Z"),
    ]
    assert summary == raw
    assert summary["total_requests"] == 3
    assert summary["failed_requests"] == 1
    assert summary["total_tokens"] == 405


async def test_rust_times_become_sortable_text(tmp_path: Path) -> None:
    path = tmp_path / "token_counter.db"
    make_rust_database(path)

    database = await open_database(Settings(database_url=f"sqlite:{path}"))
    await database.close()

    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT start_time, end_time FROM requests ORDER BY id"
        ).fetchall()
    connection.close()
    assert rows == [
        ("2026-01-19 10:30:45.123000", "2026-01-19 10:30:46.500000"),
        ("2026-01-19 10:59:59.000000", "2026-01-19 11:00:01.000000"),
        # The Rust proxy's empty end becomes the start.
        ("2026-01-19 11:15:00.000000", "2026-01-19 11:15:00.000000"),
    ]


async def test_adopted_database_gets_spec_indexes_and_new_ids(tmp_path: Path) -> None:
    path = tmp_path / "token_counter.db"
    make_rust_database(path)
    database = await open_database(Settings(database_url=f"sqlite:{path}"))
    writer = Writer(database)
    await writer.start()

    writer.put(make_record())
    await writer.stop()
    await database.close()

    with sqlite3.connect(path) as connection:
        ids = [
            row[0] for row in connection.execute("SELECT id FROM requests ORDER BY id")
        ]
        indexes = connection.execute("PRAGMA index_list(requests)").fetchall()
    connection.close()
    assert ids == [1, 2, 3, 4]
    names = {index[1] for index in indexes}
    assert {"idx_requests_model", "idx_requests_start_time"} <= names
    assert {
        "ix_requests_endpoint",
        "ix_requests_is_error",
        "ix_requests_client",
    } <= names
    assert "ix_requests_model" not in names


async def test_unversioned_baseline_table_is_adopted(database_url: str) -> None:
    baseline = await migrate_to(database_url, "0001")
    async with baseline.transaction() as connection:
        await connection.exec_driver_sql("DROP TABLE alembic_version")
        await connection.execute(requests.insert(), [rust_row(), rust_row()])
    await baseline.close()

    database = await open_database(Settings(database_url=database_url))
    summary = await queries.summary(database)
    await database.close()

    assert summary["total_requests"] == 2
    assert summary["total_tokens"] == 760


async def test_upgrade_from_baseline_fills_the_rollup_from_rows(
    database_url: str,
) -> None:
    baseline = await migrate_to(database_url, "0001")
    async with baseline.transaction() as connection:
        rows = [rust_row(client="cli"), rust_row(model=None), rust_row(http_status=0)]
        await connection.execute(requests.insert(), rows)
    await baseline.close()

    database = await open_database(Settings(database_url=database_url))
    rollup_rows = await count_rows(database, "usage_hourly")
    by_rollup = await queries.by_client(database)
    by_rows = await queries.by_client(database, use_rollup=False)
    models = await queries.by_model(database, Filters(since=BASE_TIME))
    await database.close()

    assert rollup_rows == 3
    assert by_rollup == by_rows
    assert {m["model"] for m in models["models"]} == {"qwen3-8b", None}


@pytest.mark.parametrize("start", ["0001", "0002"])
async def test_upgrade_fills_the_daily_rollup_from_the_hours(
    database_url: str, start: str
) -> None:
    older = await migrate_to(database_url, "0001")
    async with older.transaction() as connection:
        await connection.execute(requests.insert(), rows_over_days())
    await older.close()
    await (await migrate_to(database_url, start)).close()

    database = await open_database(Settings(database_url=database_url))
    daily_rows = await count_rows(database, "usage_daily")
    await assert_rollups_match_rows(database)
    series = await queries.timeseries(database, "day")
    raw_series = await queries.timeseries(database, "day", use_rollup=False)
    by_model = await queries.by_model(database)
    raw_by_model = await queries.by_model(database, use_rollup=False)
    await database.close()

    assert daily_rows == 3 * 2  # three days, two models
    assert series == raw_series
    assert by_model == raw_by_model


def rows_over_days() -> list[dict[str, object]]:
    """Rows on both sides of two midnights, for two models."""
    midnight = BASE_TIME.replace(hour=0, minute=0, second=0) + timedelta(days=1)
    offsets = [timedelta(microseconds=-1), timedelta(0), timedelta(hours=5)]
    times = [
        midnight + offset + timedelta(days=day) for offset in offsets for day in (0, 1)
    ]
    return [rust_row(start_time=t, model=m) for t in times for m in ("a", None)]


async def test_downgrade_to_nothing_and_upgrade_again(database_url: str) -> None:
    database = await open_database(Settings(database_url=database_url))

    def downgrade(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    async with database.transaction() as connection:
        await connection.run_sync(downgrade)
    await database.close()
    again = await open_database(Settings(database_url=database_url))
    rows = await count_rows(again)
    await again.close()

    assert rows == 0


async def test_table_without_spec_columns_is_refused_with_their_names(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY, start_time)")
    connection.close()

    with pytest.raises(StoreError, match="lacks columns end_time, duration_ms"):
        await open_database(Settings(database_url=f"sqlite:{path}"))


async def test_newer_revision_than_this_proxy_knows_is_refused(
    database_url: str,
) -> None:
    database = await open_database(Settings(database_url=database_url))
    async with database.transaction() as connection:
        await connection.exec_driver_sql(
            "UPDATE alembic_version SET version_num='9999'"
        )
    await database.close()

    with pytest.raises(StoreError, match="9999"):
        await open_database(Settings(database_url=database_url))


async def test_folder_that_does_not_exist_is_named_in_the_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "missing" / "proxy.db"

    with pytest.raises(StoreError) as raised:
        await open_database(Settings(database_url=f"sqlite:{path}"))
    await aiosqlite_settles()

    assert str(path) in str(raised.value)
    assert "folder exists and is writable" in str(raised.value)


async def test_unreachable_postgres_says_what_to_check() -> None:
    url = "postgresql://nobody:secret@127.0.0.1:9/lms"

    with pytest.raises(StoreError) as raised:
        await open_database(Settings(database_url=url))

    message = str(raised.value)
    assert "postgresql://nobody:***@127.0.0.1:9/lms" in message
    assert "check that PostgreSQL is running" in message
    assert "secret" not in message


async def test_processes_starting_together_migrate_one_after_the_other(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url)

    opened = await asyncio.gather(*(open_database(settings) for _ in range(3)))
    for database in opened:
        await database.close()

    assert len(opened) == 3


def rust_row(**fields: object) -> dict[str, object]:
    """A row as column values, without `details` (absent at 0001)."""
    record = make_record(**fields)
    return {name: getattr(record, name) for name in ROW_COLUMNS if name != "details"}


async def aiosqlite_settles() -> None:
    """Let aiosqlite's thread finish after a failed connect.

    aiosqlite stops its thread without waiting when connect fails; were the
    test's event loop closed first, the thread would fail to report back.
    """
    await asyncio.sleep(0.2)
