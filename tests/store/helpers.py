"""Rows and counts for the store and API tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lms_metrics_proxy.store import Database, Record

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
