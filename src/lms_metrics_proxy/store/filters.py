"""Filters for the statistics queries, and where each one reads its rows.

A selection's whole hours are read from `usage_hourly`; the hours that its
`since` and `until` cut are read from `requests`, so that results equal the
raw-row computation while long ranges read a few thousand rollup rows
instead of millions. Ranges are half-open: `since <= start_time < until`.
The API parses query strings into `Filters`; this module never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, FunctionElement
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from lms_metrics_proxy.store.schema import (
    UtcDateTime,
    as_utc,
    floor_hour,
    requests,
    usage_hourly,
)

HOUR = timedelta(hours=1)

TimeRange = tuple[datetime | None, datetime | None]


@dataclass(frozen=True, slots=True)
class Filters:
    """Which requests a statistic covers; None means no restriction."""

    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    endpoint: str | None = None
    client: str | None = None


@dataclass(slots=True)
class Plan:
    """Where a selection's rows are read: raw time ranges and rollup hours."""

    raw: list[TimeRange] = field(default_factory=list)
    rollup: TimeRange | None = None


def plan_reads(filters: Filters, use_rollup: bool = True) -> Plan:
    """Split the selection into whole hours (rollup) and cut hours (raw)."""
    since, until = filters.since, filters.until
    if not use_rollup:
        return Plan(raw=[(since, until)])
    first = ceil_hour(since) if since is not None else None
    last = floor_hour(until) if until is not None else None
    if since is not None and (first is None or (last is not None and first >= last)):
        return Plan(raw=[(since, until)])

    plan = Plan(rollup=(first, last))
    if since is not None and first is not None and as_utc(since) < first:
        plan.raw.append((since, first))
    if until is not None and last is not None and last < as_utc(until):
        plan.raw.append((last, until))
    return plan


def ceil_hour(moment: datetime) -> datetime | None:
    """Return the first whole hour at or after `moment`; None past year 9999."""
    floor = floor_hour(moment)
    if floor == as_utc(moment):
        return floor
    try:
        return floor + HOUR
    except OverflowError:
        return None


def raw_conditions(filters: Filters, span: TimeRange) -> list[ColumnElement[bool]]:
    """Return the WHERE conditions on `requests` for `filters` within `span`."""
    conditions = label_conditions(filters, requests.c)
    since, until = span
    if since is not None:
        conditions.append(requests.c.start_time >= since)
    if until is not None:
        conditions.append(requests.c.start_time < until)
    return conditions


def rollup_conditions(filters: Filters, span: TimeRange) -> list[ColumnElement[bool]]:
    """Return the WHERE conditions on `usage_hourly` within the hours `span`."""
    conditions = label_conditions(filters, usage_hourly.c)
    first, last = span
    if first is not None:
        conditions.append(usage_hourly.c.hour >= first)
    if last is not None:
        conditions.append(usage_hourly.c.hour < last)
    return conditions


def label_conditions(filters: Filters, columns: Any) -> list[ColumnElement[bool]]:
    """Return equality conditions for the model, endpoint and client filters."""
    conditions: list[ColumnElement[bool]] = []
    for name in ("model", "endpoint", "client"):
        value = getattr(filters, name)
        if value is not None:
            conditions.append(columns[name] == value)
    return conditions


class BucketStart(FunctionElement[datetime]):
    """The start of the minute, hour or day (UTC) that a timestamp falls in."""

    type = UtcDateTime()
    inherit_cache = True
    unit = "hour"


class MinuteStart(BucketStart):
    """The start of a timestamp's minute."""

    inherit_cache = True
    unit = "minute"


class HourStart(BucketStart):
    """The start of a timestamp's hour."""

    inherit_cache = True
    unit = "hour"


class DayStart(BucketStart):
    """The start of a timestamp's day."""

    inherit_cache = True
    unit = "day"


BUCKETS: dict[str, type[BucketStart]] = {
    "minute": MinuteStart,
    "hour": HourStart,
    "day": DayStart,
}

# SQLite keeps UtcDateTime as `YYYY-MM-DD HH:MM:SS.ffffff` text.
SQLITE_FORMATS = {
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
}


def compile_sqlite(element: BucketStart, compiler: SQLCompiler, **kw: Any) -> str:
    """Truncate with strftime, whose text SQLAlchemy reads back as a time."""
    column = compiler.process(element.clauses, **kw)
    return f"strftime('{SQLITE_FORMATS[element.unit]}', {column})"


def compile_postgresql(element: BucketStart, compiler: SQLCompiler, **kw: Any) -> str:
    """Truncate in UTC, whatever the session's time zone."""
    column = compiler.process(element.clauses, **kw)
    return f"date_trunc('{element.unit}', {column} AT TIME ZONE 'UTC')"


for bucket in BUCKETS.values():
    compiles(bucket, "sqlite")(compile_sqlite)
    compiles(bucket, "postgresql")(compile_postgresql)
