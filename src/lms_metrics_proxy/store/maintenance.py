"""Housekeeping for the command line: export rows, prune old ones.

Pruning works in whole hours so that the hourly rollup and the raw rows
always describe the same requests. A cutoff inside a day leaves that day's
daily rows summing hours that are gone, so they are summed again from the
hours that remain, in the same transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, delete, func, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store.database import Database, describe_error
from lms_metrics_proxy.store.filters import Filters, raw_conditions, rollup_conditions
from lms_metrics_proxy.store.queries import NO_FILTERS, plain_row, reading
from lms_metrics_proxy.store.schema import (
    DAILY,
    HOURLY,
    LABEL_COLUMNS,
    SUM_COLUMNS,
    UtcDateTime,
    floor_hour,
    requests,
)

EXPORT_BATCH = 1000


async def export_rows(
    database: Database, filters: Filters, with_text: bool = True
) -> AsyncIterator[dict[str, Any]]:
    """Yield the selected rows oldest first, a batch at a time."""
    columns = [
        c for c in requests.c if with_text or c.name not in ("prompt", "response")
    ]
    statement = (
        select(*columns)
        .where(*raw_conditions(filters, (filters.since, filters.until)))
        .order_by(requests.c.id)
        .execution_options(yield_per=EXPORT_BATCH)
    )
    async with reading(database) as connection:
        result = await connection.stream(statement)
        async for row in result.mappings():
            yield plain_row(row)


async def count_before(database: Database, before: datetime) -> int:
    """Count the rows a prune at `before` would delete."""
    cutoff = floor_hour(before)
    statement = select(func.count()).where(requests.c.start_time < cutoff)
    async with reading(database) as connection:
        return int((await connection.execute(statement)).scalar_one())


async def prune(database: Database, before: datetime) -> int:
    """Delete rows from hours that end before `before`; return how many."""
    cutoff = floor_hour(before)
    try:
        async with database.engine.begin() as connection:
            result = await connection.execute(
                delete(requests).where(requests.c.start_time < cutoff)
            )
            await connection.execute(delete(HOURLY.table).where(HOURLY.time < cutoff))
            await prune_days(connection, cutoff)
    except SQLAlchemyError as error:
        raise StoreError(
            f"Could not prune {database.label}: {describe_error(error)}"
        ) from error
    return int(result.rowcount or 0)


async def prune_days(connection: AsyncConnection, cutoff: datetime) -> None:
    """Delete the days before the hour `cutoff`, and redo the day it cuts."""
    day = DAILY.floor(cutoff)
    await connection.execute(delete(DAILY.table).where(DAILY.time < day))
    if day < cutoff:
        # The day lost its first hours: sum the hours it has left again.
        await connection.execute(delete(DAILY.table).where(DAILY.time == day))
        await connection.execute(resum_day(day, cutoff))


def resum_day(day: datetime, since: datetime) -> Insert:
    """Sum the hourly rows of `day` from the hour `since` into its daily rows."""
    hourly = HOURLY.table.c
    labels = [hourly[name] for name in LABEL_COLUMNS]
    sums = [func.sum(hourly[name]) for name in SUM_COLUMNS]
    hours = (
        select(literal(day, UtcDateTime()), *labels, *sums)
        .where(*rollup_conditions(NO_FILTERS, HOURLY, (since, DAILY.ceil(since))))
        .group_by(*labels)
    )
    return DAILY.table.insert().from_select(DAILY.group_columns + SUM_COLUMNS, hours)
