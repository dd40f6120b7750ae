"""The tables: `requests` (SPEC §3, one row per request) and `usage_hourly`.

This module only describes tables; it opens nothing. The migrations in
`migrations/versions` create exactly these tables, and a test compares the two.
`usage_hourly` is a rollup of `requests` by hour that the writer keeps in the
same transaction as the rows, so long-range statistics need not scan them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
)

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both SQLite and PostgreSQL.

    PostgreSQL stores `timestamptz`. SQLite has no time type: SQLAlchemy
    stores `YYYY-MM-DD HH:MM:SS.ffffff` text, which sorts and compares
    correctly as long as every value is in UTC, so values are converted to UTC
    on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return as_utc(value)


def as_utc(value: datetime) -> datetime:
    """Return `value` in UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def floor_hour(moment: datetime) -> datetime:
    """Return the start of the UTC hour that `moment` falls in."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


# BIGINT keys on PostgreSQL; SQLite needs the exact type INTEGER for a rowid key.
RowId = BigInteger().with_variant(Integer(), "sqlite")

requests = Table(
    "requests",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("start_time", UtcDateTime(), nullable=False),
    Column("end_time", UtcDateTime(), nullable=False),
    Column("duration_ms", BigInteger(), nullable=False),
    Column("ttft_ms", BigInteger()),
    Column("method", Text(), nullable=False),
    Column("endpoint", Text(), nullable=False),
    Column("model", Text()),
    Column("requested_model", Text()),
    Column("client", Text()),
    Column("input_tokens", BigInteger()),
    Column("output_tokens", BigInteger()),
    Column("total_tokens", BigInteger()),
    Column("cached_input_tokens", BigInteger()),
    Column("reasoning_tokens", BigInteger()),
    Column("usage_source", Text(), nullable=False, server_default=text("'none'")),
    Column("tokens_per_second", Float()),
    Column("prompt", Text()),
    Column("response", Text()),
    Column("http_status", Integer(), nullable=False),
    Column("is_error", Boolean(), nullable=False, server_default=false()),
    Column("error_message", Text()),
    Column("was_streamed", Boolean(), nullable=False, server_default=false()),
    Column("finish_reason", Text()),
    Column("request_bytes", BigInteger(), nullable=False, server_default=text("0")),
    Column("response_bytes", BigInteger(), nullable=False, server_default=text("0")),
    # Added by migration 0002: dialect extras as a JSON object, or null.
    Column("details", Text()),
    Index("ix_requests_model", "model"),
    Index("ix_requests_endpoint", "endpoint"),
    Index("ix_requests_start_time", "start_time"),
    Index("ix_requests_is_error", "is_error"),
    Index("ix_requests_client", "client"),
    # AUTOINCREMENT: ids keep increasing even after the newest rows are pruned.
    sqlite_autoincrement=True,
)

# The rollup's group columns. A unique key treats NULLs as distinct on both
# databases, so a missing model or client is stored as '' here.
GROUP_COLUMNS = ("hour", "model", "endpoint", "client", "status_class", "usage_source")
SUM_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "duration_ms",
)

usage_hourly = Table(
    "usage_hourly",
    metadata,
    Column("hour", UtcDateTime(), nullable=False),
    Column("model", Text(), nullable=False),
    Column("endpoint", Text(), nullable=False),
    Column("client", Text(), nullable=False),
    Column("status_class", Text(), nullable=False),
    Column("usage_source", Text(), nullable=False),
    *(Column(name, BigInteger(), nullable=False) for name in SUM_COLUMNS),
    PrimaryKeyConstraint(*GROUP_COLUMNS, name="pk_usage_hourly"),
)


def status_class(http_status: int) -> str:
    """Group an HTTP status as `2xx`, `4xx`..., or `err` when it is no status."""
    if 100 <= http_status <= 599:
        return f"{http_status // 100}xx"
    return "err"
