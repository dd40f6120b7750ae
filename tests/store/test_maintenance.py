"""Pruning: whole hours go, and both rollups keep matching the rows left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lms_metrics_proxy.store import Database, Filters, queries
from lms_metrics_proxy.store.maintenance import count_before, prune

from .helpers import assert_rollups_match_rows, count_rows, fill, make_record

DAY0 = datetime(2026, 1, 17, tzinfo=UTC)
D = timedelta(days=1)
H = timedelta(hours=1)
M = timedelta(minutes=1)
# A row every 50 minutes over three days, so every hour and day has some.
ROWS = [
    make_record(
        start_time=DAY0 + i * 50 * M + 7 * i * timedelta(seconds=1),
        model=("a", "b", None)[i % 3],
        client=(None, "cli")[i % 2],
        http_status=(200, 200, 200, 502)[i % 4],
        input_tokens=10 + i,
    )
    for i in range(3 * 24 * 60 // 50)
]
# Selections whose plans read the daily row of the day a prune cuts.
CHOICES = [
    Filters(),
    Filters(since=DAY0 + D + 5 * H + 3 * M),
    Filters(until=DAY0 + 2 * D + 10 * H),
    Filters(model="b", since=DAY0, until=DAY0 + 3 * D),
]


async def assert_rollup_reads_equal_raw(database: Database) -> None:
    for chosen in CHOICES:
        for grouped in (queries.summary, queries.by_model, queries.by_client):
            rollup = await grouped(database, chosen)
            assert rollup == await grouped(database, chosen, use_rollup=False)
        for bucket in ("hour", "day"):
            series = await queries.timeseries(database, bucket, chosen)
            raw = await queries.timeseries(database, bucket, chosen, use_rollup=False)
            assert series == raw


@pytest.mark.parametrize(
    "before",
    [DAY0 + D + 13 * H, DAY0 + D + 13 * H + 20 * M, DAY0 + D + 30 * M, DAY0 + 2 * D],
    ids=["hour-inside-a-day", "inside-an-hour", "inside-a-days-first-hour", "midnight"],
)
async def test_prune_keeps_both_rollups_equal_to_the_rows_left(
    database: Database, before: datetime
) -> None:
    await fill(database, ROWS, 7)
    cutoff = before.replace(minute=0)
    expected = sum(row.start_time < cutoff for row in ROWS)

    counted = await count_before(database, before)
    deleted = await prune(database, before)

    assert counted == deleted == expected
    assert await count_rows(database) == len(ROWS) - expected
    await assert_rollups_match_rows(database)
    await assert_rollup_reads_equal_raw(database)


async def test_rows_written_after_a_prune_add_to_the_day_it_cut(
    database: Database,
) -> None:
    await fill(database, ROWS, 7)
    await prune(database, DAY0 + D + 13 * H)
    late = [make_record(start_time=DAY0 + D + hour * H) for hour in (12, 13, 20)]

    await fill(database, late, 2)

    await assert_rollups_match_rows(database)
    await assert_rollup_reads_equal_raw(database)


async def test_prune_of_an_empty_database_deletes_nothing(database: Database) -> None:
    deleted = await prune(database, DAY0 + D + 13 * H)

    assert deleted == 0
    await assert_rollups_match_rows(database)
