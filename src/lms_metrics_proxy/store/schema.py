"""The tables: `requests` (SPEC §3, one row per request) and two rollups.

This module only describes tables; it opens nothing. The migrations in
`migrations/versions` create exactly these tables, and a test compares the two.
`usage_hourly` and `usage_daily` sum `requests` by UTC hour and by UTC day;
the writer keeps both in the same transaction as the rows, so long-range
statistics read a few rows per day instead of scanning requests or hours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


def floor_day(moment: datetime) -> datetime:
    """Return the start of the UTC day that `moment` falls in."""
    return as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


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

# What a rollup groups by besides time. A unique key treats NULLs as distinct
# on both databases, so a missing model or client is stored as '' there.
LABEL_COLUMNS = ("model", "endpoint", "client", "status_class", "usage_source")
SUM_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "duration_ms",
)


def rollup_table(name: str, unit: str) -> Table:
    """Describe a rollup keyed by the start of a UTC `unit` and the labels."""
    return Table(
        name,
        metadata,
        Column(unit, UtcDateTime(), nullable=False),
        *(Column(label, Text(), nullable=False) for label in LABEL_COLUMNS),
        *(Column(total, BigInteger(), nullable=False) for total in SUM_COLUMNS),
        PrimaryKeyConstraint(unit, *LABEL_COLUMNS, name=f"pk_{name}"),
    )


usage_hourly = rollup_table("usage_hourly", "hour")
usage_daily = rollup_table("usage_daily", "day")


@dataclass(frozen=True, slots=True)
class Rollup:
    """A rollup table and the UTC unit of time that each of its rows covers.

    `unit` names both the table's time column and the time series bucket that
    the column already is the start of.
    """

    table: Table
    unit: str
    step: timedelta
    floor: Callable[[datetime], datetime]

    @property
    def time(self) -> Column[datetime]:
        """The column holding the start of each row's unit."""
        column: Column[datetime] = self.table.c[self.unit]
        return column

    @property
    def group_columns(self) -> tuple[str, ...]:
        """The table's key: the unit's start, then the labels."""
        return (self.unit, *LABEL_COLUMNS)

    def ceil(self, moment: datetime) -> datetime | None:
        """Return the first unit start at or after `moment`; None past year 9999."""
        floor = self.floor(moment)
        if floor == as_utc(moment):
            return floor
        try:
            return floor + self.step
        except OverflowError:
            return None


HOURLY = Rollup(usage_hourly, "hour", timedelta(hours=1), floor_hour)
DAILY = Rollup(usage_daily, "day", timedelta(days=1), floor_day)
# Finest first: each unit is a whole number of the one before it, and every
# unit start is also a start of the finer units, so reads can nest them.
ROLLUPS = (HOURLY, DAILY)


def status_class(http_status: int) -> str:
    """Group an HTTP status as `2xx`, `4xx`..., or `err` when it is no status."""
    if 100 <= http_status <= 599:
        return f"{http_status // 100}xx"
    return "err"
