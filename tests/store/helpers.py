"""Rows and counts for the store and API tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from lms_metrics_proxy.store import Database, Record
from lms_metrics_proxy.store.batch import insert_batch, regroup, rollup_deltas
from lms_metrics_proxy.store.schema import HOURLY, ROLLUPS, Rollup, requests

BASE_TIME = datetime(2026, 1, 19, 10, 30, 45, tzinfo=UTC)


def make_record(**fields: Any) -> Record:
    """A plausible row; keyword arguments replace any field."""
    start = fields.pop("start_time", BASE_TIME)
    duration = fields.pop("duration_ms", 1200)
    values: dict[str, Any] = {
        "start_time": start,
        "end_time": start + timedelta(milliseconds=duration),
        "duration_ms": duration,
        "method": "POST",
        "endpoint": "/v1/chat/completions",
        "http_status": 200,
        "usage_source": "upstream",
        "model": "qwen3-8b",
        "requested_model": "qwen3-8b",
        "input_tokens": 80,
        "output_tokens": 300,
        "total_tokens": 380,
        "prompt": '[{"role": "user", "content": "Hello"}]',
        "response": "Hi there",
        "request_bytes": 120,
        "response_bytes": 900,
    }
    values.update(fields)
    return Record(**values)


async def count_rows(database: Database, table: str = "requests") -> int:
    async with database.engine.connect() as connection:
        result = await connection.exec_driver_sql(f"SELECT COUNT(*) FROM {table}")
        return int(result.scalar_one())


async def fill(database: Database, rows: Sequence[Record], batch: int) -> None:
    """Insert the rows in batches, as the writer would."""
    for start in range(0, len(rows), batch):
        async with database.transaction() as connection:
            await insert_batch(connection, rows[start : start + batch])


async def read_rollup(database: Database, rollup: Rollup) -> dict[tuple, list[int]]:
    """Return a rollup table as {(unit start, *labels): sums}."""
    async with database.engine.connect() as connection:
        rows = (await connection.execute(select(rollup.table))).all()
    width = len(rollup.group_columns)
    return {tuple(row[:width]): [int(v) for v in row[width:]] for row in rows}


async def assert_rollups_match_rows(database: Database) -> None:
    """Check that every rollup holds exactly the sums of the stored rows."""
    async with database.engine.connect() as connection:
        rows = (await connection.execute(select(requests))).all()
    # Result rows have the attributes of a Record that the sums read.
    deltas = rollup_deltas(rows, HOURLY.floor)  # type: ignore[arg-type]
    for rollup in ROLLUPS:
        deltas = regroup(deltas, rollup.floor)
        assert await read_rollup(database, rollup) == deltas, rollup.unit
