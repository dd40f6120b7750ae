"""Housekeeping for the command line: export rows, prune old ones.

Pruning works in whole hours so that the hourly rollup and the raw rows
always describe the same requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store.database import Database, describe_error
from lms_metrics_proxy.store.filters import Filters, raw_conditions
from lms_metrics_proxy.store.queries import plain_row, reading
from lms_metrics_proxy.store.schema import floor_hour, requests, usage_hourly

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
            await connection.execute(
                delete(usage_hourly).where(usage_hourly.c.hour < cutoff)
            )
    except SQLAlchemyError as error:
        raise StoreError(
            f"Could not prune {database.label}: {describe_error(error)}"
        ) from error
    return int(result.rowcount or 0)
