"""Filters for the statistics queries, and where each one reads its rows.

A selection is read from the coarsest source that covers it exactly: its
whole UTC days from `usage_daily`, the whole hours at the ragged ends of
those days from `usage_hourly`, and the cut hours at the very ends from
`requests`. Results equal the raw-row computation, while a year reads a few
hundred rows per day instead of millions. Ranges are half-open:
`since <= start_time < until`. The API parses query strings into `Filters`;
this module never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, FunctionElement
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from lms_metrics_proxy.store.schema import (
    ROLLUPS,
    Rollup,
    UtcDateTime,
    as_utc,
    requests,
)

TimeRange = tuple[datetime | None, datetime | None]


@dataclass(frozen=True, slots=True)
class Filters:
    """Which requests a statistic covers; None means no restriction."""

    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    endpoint: str | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """One part of a selection: a time range and its source (None: raw rows).

    A rollup's range starts and ends on its units (or is open).
    """

    source: Rollup | None
    span: TimeRange


def plan_reads(filters: Filters, rollups: Sequence[Rollup] = ROLLUPS) -> list[Read]:
    """Split the selection's time range among `rollups` (finest first) and rows.

    Pass no rollups to read raw rows only.
    """
    return cover((filters.since, filters.until), tuple(rollups))


def cover(span: TimeRange, rollups: tuple[Rollup, ...]) -> list[Read]:
    """Read the coarsest rollup's whole units in `span`, and its ends finer."""
    if not rollups:
        return [Read(None, span)]
    *finer, coarsest = rollups
    inner = whole_units(span, coarsest)
    if inner is None:
        return cover(span, tuple(finer))

    reads = [Read(coarsest, inner)]
    for edge in ragged_edges(span, inner):
        reads += cover(edge, tuple(finer))
    return reads


def whole_units(span: TimeRange, rollup: Rollup) -> TimeRange | None:
    """Return the range of the rollup's whole units in `span`, or None if none."""
    since, until = span
    first = rollup.ceil(since) if since is not None else None
    last = rollup.floor(until) if until is not None else None
    if since is not None and first is None:
        return None  # no unit starts before the end of the calendar
    if first is not None and last is not None and first >= last:
        return None
    return first, last


def ragged_edges(span: TimeRange, inner: TimeRange) -> list[TimeRange]:
    """Return the parts of `span` before and after `inner`, where not empty."""
    since, until = span
    first, last = inner
    edges: list[TimeRange] = []
    if since is not None and first is not None and as_utc(since) < first:
        edges.append((since, first))
    if until is not None and last is not None and last < as_utc(until):
        edges.append((last, until))
    return edges


def rollups_for(key: str | None) -> tuple[Rollup, ...]:
    """Return the rollups whose rows fit inside one group of `key`.

    A time series bucket can only be summed from rollup rows no longer than
    itself: a day's row says nothing about its hours. Labels take any rollup.
    """
    step = BUCKET_STEPS.get(key) if key is not None else None
    if step is None:
        return ROLLUPS
    return tuple(rollup for rollup in ROLLUPS if rollup.step <= step)


def raw_conditions(filters: Filters, span: TimeRange) -> list[ColumnElement[bool]]:
    """Return the WHERE conditions on `requests` for `filters` within `span`."""
    conditions = label_conditions(filters, requests.c)
    since, until = span
    if since is not None:
        conditions.append(requests.c.start_time >= since)
    if until is not None:
        conditions.append(requests.c.start_time < until)
    return conditions


def rollup_conditions(
    filters: Filters, rollup: Rollup, span: TimeRange
) -> list[ColumnElement[bool]]:
    """Return the WHERE conditions on `rollup` within its units `span`."""
    conditions = label_conditions(filters, rollup.table.c)
    first, last = span
    if first is not None:
        conditions.append(rollup.time >= first)
    if last is not None:
        conditions.append(rollup.time < last)
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
BUCKET_STEPS = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
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
    """Truncate in UTC, whatever the session's time zone, back to a timestamptz.

    A rollup's own time column (a timestamptz) can stand for its bucket in
    the same UNION; a plain timestamp beside it would be converted through
    the session's time zone.
    """
    column = compiler.process(element.clauses, **kw)
    truncated = f"date_trunc('{element.unit}', {column} AT TIME ZONE 'UTC')"
    return f"({truncated} AT TIME ZONE 'UTC')"


for bucket in BUCKETS.values():
    compiles(bucket, "sqlite")(compile_sqlite)
    compiles(bucket, "postgresql")(compile_postgresql)
