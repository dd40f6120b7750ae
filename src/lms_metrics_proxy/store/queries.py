"""Statistics over the stored requests, returned as plain JSON-ready dicts.

Aggregates (summary, by model, by client, time series) add up sums from the
rollups for whole days and hours and from `requests` for the hours a time
filter cuts (see `filters.plan_reads`); averages are computed here from
integer sums, so every path gives identical results. `use_rollup=False` reads
raw rows only, which tests and benchmarks compare against. Database errors
become StoreError; nothing here parses query strings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store.database import Database, describe_error
from lms_metrics_proxy.store.filters import (
    BUCKETS,
    Filters,
    Read,
    TimeRange,
    plan_reads,
    raw_conditions,
    rollup_conditions,
    rollups_for,
)
from lms_metrics_proxy.store.schema import SUM_COLUMNS, Rollup, as_utc, requests

# usage_source -> the field that counts it.
SOURCE_FIELDS = {
    "upstream": "upstream_usage_requests",
    "estimated": "estimated_usage_requests",
    "none": "no_usage_requests",
}
# /stats/recent leaves out the text and extras, which can be large.
LIGHT_COLUMNS = [
    c for c in requests.c if c.name not in ("prompt", "response", "details")
]
NO_FILTERS = Filters()


# Each result row ends with the sums, then one request count per source.
SUMS_WIDTH = len(SUM_COLUMNS) + len(SOURCE_FIELDS)


@dataclass(slots=True)
class Totals:
    """Sums over a group of requests, and its count per usage source."""

    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    duration_ms: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, sums: Sequence[Any]) -> None:
        """Add one result row's sums: SUM_COLUMNS, then SOURCE_FIELDS' counts."""
        values = [int(value or 0) for value in sums]
        self.requests += values[0]
        self.errors += values[1]
        self.input_tokens += values[2]
        self.output_tokens += values[3]
        self.total_tokens += values[4]
        self.duration_ms += values[5]
        counts = values[len(SUM_COLUMNS) :]
        for source, count in zip(SOURCE_FIELDS, counts, strict=True):
            self.sources[source] = self.sources.get(source, 0) + count


async def summary(
    database: Database, filters: Filters = NO_FILTERS, use_rollup: bool = True
) -> dict[str, Any]:
    """Return the totals of SPEC §4's /stats/summary, plus usage provenance."""
    groups = await aggregate(database, filters, None, use_rollup)
    totals = groups.get(None, Totals())
    return {
        "total_requests": totals.requests,
        "successful_requests": totals.requests - totals.errors,
        "failed_requests": totals.errors,
        "total_input_tokens": totals.input_tokens,
        "total_output_tokens": totals.output_tokens,
        "total_tokens": totals.total_tokens,
        "average_input_tokens": average(totals.input_tokens, totals.requests),
        "average_output_tokens": average(totals.output_tokens, totals.requests),
        "total_duration_ms": totals.duration_ms,
        "average_duration_ms": average(totals.duration_ms, totals.requests),
        **provenance(totals),
    }


async def by_model(
    database: Database, filters: Filters = NO_FILTERS, use_rollup: bool = True
) -> dict[str, Any]:
    """Return one entry per model, most tokens first."""
    groups = await aggregate(database, filters, "model", use_rollup)
    return {"models": ranked("model", groups)}


async def by_client(
    database: Database, filters: Filters = NO_FILTERS, use_rollup: bool = True
) -> dict[str, Any]:
    """Return one entry per client (X-Client-Name), most tokens first."""
    groups = await aggregate(database, filters, "client", use_rollup)
    return {"clients": ranked("client", groups)}


async def timeseries(
    database: Database,
    bucket: str = "hour",
    filters: Filters = NO_FILTERS,
    use_rollup: bool = True,
) -> dict[str, Any]:
    """Return one point per minute, hour or day that has requests, oldest first."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")
    # TODO(minute-series-over-months): minutes are finer than any rollup, so a
    # minute series over a long range scans every raw row in it; cap the range
    # or keep a per-minute rollup.
    groups = await aggregate(database, filters, bucket, use_rollup)
    points = [
        point(start, totals)
        for start, totals in sorted(groups.items())
        if start is not None  # a time SQLite could not read
    ]
    return {"bucket": bucket, "points": points}


async def recent(
    database: Database, limit: int = 100, filters: Filters = NO_FILTERS
) -> dict[str, Any]:
    """Return the newest `limit` requests, newest first, without their text."""
    statement = (
        select(*LIGHT_COLUMNS)
        .where(*raw_conditions(filters, (filters.since, filters.until)))
        .order_by(requests.c.start_time.desc(), requests.c.id.desc())
        .limit(limit)
    )
    async with reading(database) as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return {"requests": [plain_row(row) for row in rows]}


async def request(
    database: Database, request_id: int, filters: Filters = NO_FILTERS
) -> dict[str, Any] | None:
    """Return one whole row, text and details included, or None."""
    statement = select(requests).where(
        requests.c.id == request_id,
        *raw_conditions(filters, (filters.since, filters.until)),
    )
    async with reading(database) as connection:
        row = (await connection.execute(statement)).mappings().first()
    return None if row is None else plain_row(row)


async def aggregate(
    database: Database, filters: Filters, key: str | None, use_rollup: bool
) -> dict[Any, Totals]:
    """Sum the selection by `key` (a column, a bucket, or None for all)."""
    reads = plan_reads(filters, rollups_for(key) if use_rollup else ())
    parts = [read_sums(filters, read, key) for read in reads]
    statement = parts[0] if len(parts) == 1 else union_all(*parts)

    async with reading(database) as connection:
        rows = (await connection.execute(statement)).all()
    groups: dict[Any, Totals] = {}
    for row in rows:
        # The rollups store a missing model or client as ''.
        group = (row[0] or None) if key is not None else None
        groups.setdefault(group, Totals()).add(row[-SUMS_WIDTH:])
    return groups


def read_sums(filters: Filters, read: Read, key: str | None) -> Select[Any]:
    """Select the sums of one part of a plan by key, then counts by source."""
    if read.source is None:
        return raw_sums(filters, read.span, key)
    return rollup_sums(filters, read.source, read.span, key)


def raw_sums(filters: Filters, span: TimeRange, key: str | None) -> Select[Any]:
    """Select the sums of raw rows in `span` by key, then counts by source."""
    keys = group_key(key, requests.c.start_time, requests.c)
    sums = [
        func.count().label("requests"),
        func.sum(case((requests.c.is_error, 1), else_=0)).label("errors"),
        *(func.sum(requests.c[name]).label(name) for name in SUM_COLUMNS[2:]),
        *source_counts(requests.c.usage_source, literal_column("1")),
    ]
    return select(*keys, *sums).where(*raw_conditions(filters, span)).group_by(*keys)


def rollup_sums(
    filters: Filters, rollup: Rollup, span: TimeRange, key: str | None
) -> Select[Any]:
    """Select the sums of `rollup` rows for its units `span`, like `raw_sums`."""
    columns = rollup.table.c
    keys = group_key(key, rollup.time, columns, rollup.unit)
    sums = [
        *(func.sum(columns[name]).label(name) for name in SUM_COLUMNS),
        *source_counts(columns.usage_source, columns.requests),
    ]
    return (
        select(*keys, *sums)
        .where(*rollup_conditions(filters, rollup, span))
        .group_by(*keys)
    )


def source_counts(
    source: ColumnElement[str], requests_in_row: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """Sum the requests of each usage source in SOURCE_FIELDS, in its order.

    Sums rather than a GROUP BY on the source: SQLite sorts the rows it
    groups, so the summary then needs no sort at all (a third faster) and
    by-model sorts by one column instead of two.
    """
    counts: list[ColumnElement[Any]] = []
    for name, counted in SOURCE_FIELDS.items():
        in_source = case((source == literal(name), requests_in_row), else_=0)
        counts.append(func.sum(in_source).label(counted))
    return counts


def group_key(
    key: str | None,
    time_column: ColumnElement[datetime],
    columns: Any,
    unit: str | None = None,
) -> list[ColumnElement[Any]]:
    """Return the GROUP BY expression for `key`, as a one-item list or empty.

    `unit` is the time unit of `time_column`'s values, if it has one.
    """
    if key is None:
        return []
    if key == unit:
        # Already the bucket's start: truncating it again costs a function
        # call per row (most of a day series' time in SQLite).
        return [time_column.label("key")]
    if key in BUCKETS:
        return [BUCKETS[key](time_column).label("key")]
    # A literal, not a parameter: PostgreSQL must see the same expression in
    # SELECT and GROUP BY, and two parameters are two expressions to it.
    return [func.coalesce(columns[key], literal_column("''")).label("key")]


def ranked(name: str, groups: dict[Any, Totals]) -> list[dict[str, Any]]:
    """Return one entry per group, by total tokens then requests, descending."""
    entries = [{name: group, **entry(totals)} for group, totals in groups.items()]
    entries.sort(
        key=lambda e: (-e["total_tokens"], -e["request_count"], str(e[name] or ""))
    )
    return entries


def entry(totals: Totals) -> dict[str, Any]:
    """Return the fields of one by-model, by-client or time series entry."""
    return {
        "request_count": totals.requests,
        "successful_requests": totals.requests - totals.errors,
        "failed_requests": totals.errors,
        "total_input_tokens": totals.input_tokens,
        "total_output_tokens": totals.output_tokens,
        "total_tokens": totals.total_tokens,
        "avg_input_tokens": average(totals.input_tokens, totals.requests),
        "avg_output_tokens": average(totals.output_tokens, totals.requests),
        "avg_duration_ms": round_half_up(totals.duration_ms, totals.requests),
        "total_duration_ms": totals.duration_ms,
        **provenance(totals),
    }


def point(start: datetime, totals: Totals) -> dict[str, Any]:
    """Return one time series point: the bucket's start and its sums."""
    return {
        "time": iso_time(start),
        "requests": totals.requests,
        "errors": totals.errors,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "total_tokens": totals.total_tokens,
        "duration_ms": totals.duration_ms,
        "avg_duration_ms": round_half_up(totals.duration_ms, totals.requests),
        **provenance(totals),
    }


def provenance(totals: Totals) -> dict[str, int]:
    """Count requests by where their token counts came from."""
    sources = totals.sources
    return {name: sources.get(source, 0) for source, name in SOURCE_FIELDS.items()}


def average(total: int, count: int) -> float:
    """Return total / count to one decimal, halves rounded up; 0.0 if no count."""
    return round_half_up(total * 10, count) / 10


def round_half_up(total: int, count: int) -> int:
    """Return total / count rounded to an integer, halves up, in exact integers."""
    if count == 0:
        return 0
    return (2 * total + count) // (2 * count)


def plain_row(row: Any) -> dict[str, Any]:
    """Turn a result row into JSON-ready values: times as text, details parsed."""
    # Keys are SQLAlchemy's quoted_name, a str subclass that orjson refuses.
    plain = {str(key): value for key, value in row.items()}
    for name in ("start_time", "end_time"):
        plain[name] = iso_time(plain[name])
    for name in ("is_error", "was_streamed"):
        plain[name] = bool(plain[name])
    if plain.get("details") is not None:
        try:
            plain["details"] = orjson.loads(plain["details"])
        except orjson.JSONDecodeError:
            pass  # written by something else; shown as the text it is
    return plain


def iso_time(moment: datetime) -> str:
    """Format a time as SPEC's `2026-01-19T10:30:45Z` (UTC, whole seconds)."""
    return as_utc(moment).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


@asynccontextmanager
async def reading(database: Database) -> AsyncIterator[AsyncConnection]:
    """Lend a connection for reading; database errors become StoreError."""
    try:
        async with database.engine.connect() as connection:
            yield connection
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(
            f"Could not read the database {database.label}: {describe_error(error)}"
        ) from error
