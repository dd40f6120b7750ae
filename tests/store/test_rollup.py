"""The rollups give exactly what the raw rows give, whatever the rows."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.store import Database, Filters, Record, open_database, queries
from lms_metrics_proxy.store.schema import ROLLUPS

from .conftest import POSTGRES_URL, empty_postgres
from .helpers import assert_rollups_match_rows, fill, make_record, read_rollup

# Rows over three days from 21:00, so that midnights fall inside.
START = datetime(2026, 1, 18, 21, tzinfo=UTC)
SPAN_HOURS = 3 * 24
HOUR_MS = 3600 * 1000


def moments_within(first_hour: int, last_hour: int) -> st.SearchStrategy[datetime]:
    """Times in the hours given, often on or next to an hour's (or day's) edge."""
    into_hour = st.one_of(
        st.sampled_from([0, 1, HOUR_MS - 1]), st.integers(0, HOUR_MS - 1)
    )
    return st.builds(
        lambda hour, ms: START + timedelta(hours=hour, milliseconds=ms),
        st.integers(first_hour, last_hour),
        into_hour,
    )


tokens = st.one_of(st.none(), st.integers(0, 50_000))
records = st.builds(
    make_record,
    start_time=moments_within(0, SPAN_HOURS),
    model=st.sampled_from(["a", "b", None, ""]),
    endpoint=st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]),
    client=st.sampled_from([None, "cli", "web"]),
    http_status=st.sampled_from([200, 400, 502, 0]),
    is_error=st.booleans(),
    usage_source=st.sampled_from(["upstream", "estimated", "none"]),
    input_tokens=tokens,
    output_tokens=tokens,
    total_tokens=tokens,
    duration_ms=st.integers(0, 600_000),
)
moments = st.one_of(st.none(), moments_within(-2, SPAN_HOURS + 2))
# Mostly no label filter, so that the time edges have rows to get wrong.
filters = st.builds(
    Filters,
    since=moments,
    until=moments,
    model=st.sampled_from([None, None, None, "a", "b"]),
    endpoint=st.sampled_from([None, None, "/v1/embeddings"]),
    client=st.sampled_from([None, None, "cli"]),
)


def expected_summary(rows: list[Record], chosen: Filters) -> dict[str, int]:
    """The summary's sums, computed in Python from the rows themselves."""
    kept = [r for r in rows if matches(r, chosen)]
    return {
        "total_requests": len(kept),
        "failed_requests": sum(r.is_error for r in kept),
        "total_input_tokens": sum(r.input_tokens or 0 for r in kept),
        "total_output_tokens": sum(r.output_tokens or 0 for r in kept),
        "total_tokens": sum(r.total_tokens or 0 for r in kept),
        "total_duration_ms": sum(r.duration_ms for r in kept),
    }


def matches(row: Record, chosen: Filters) -> bool:
    if chosen.since is not None and row.start_time < chosen.since:
        return False
    if chosen.until is not None and row.start_time >= chosen.until:
        return False
    labels = ("model", "endpoint", "client")
    return all(getattr(chosen, name) in (None, getattr(row, name)) for name in labels)


async def compare(
    url: str, rows: list[Record], batch: int, choices: list[Filters]
) -> None:
    database = await open_database(Settings(database_url=url))
    try:
        await fill(database, rows, batch)
        await assert_rollups_match_rows(database)
        for chosen in choices:
            await compare_one(database, rows, chosen)
    finally:
        await database.close()


async def compare_one(database: Database, rows: list[Record], chosen: Filters) -> None:
    summary = await queries.summary(database, chosen)
    assert summary == await queries.summary(database, chosen, use_rollup=False)
    expected = expected_summary(rows, chosen)
    assert {name: summary[name] for name in expected} == expected
    for grouped in (queries.by_model, queries.by_client):
        by_rollup = await grouped(database, chosen)
        assert by_rollup == await grouped(database, chosen, use_rollup=False)
    for bucket in ("hour", "day"):
        series = await queries.timeseries(database, bucket, chosen)
        assert series == await queries.timeseries(
            database, bucket, chosen, use_rollup=False
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not POSTGRES_URL:
        pytest.skip("TEST_POSTGRES_URL is not set")
    return str(request.param)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(records, min_size=1, max_size=80),
    batch=st.integers(1, 25),
    choices=st.lists(filters, min_size=1, max_size=8),
)
def test_rollup_equals_raw_rows(
    backend: str, rows: list[Record], batch: int, choices: list[Filters]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:{Path(folder) / 'h.db'}"
        if backend == "postgres":
            assert POSTGRES_URL is not None
            asyncio.run(empty_postgres(POSTGRES_URL))
            url = POSTGRES_URL
        asyncio.run(compare(url, rows, batch, choices))


def test_each_rollup_keeps_one_row_per_group_across_batches(tmp_path: Path) -> None:
    hours = [START + timedelta(hours=4 + i % 2) for i in range(7)]  # one day
    rows = [make_record(start_time=t, model=None, client=None) for t in hours]

    async def run() -> list[dict[tuple, list[int]]]:
        database = await open_database(Settings(database_url=f"sqlite:{tmp_path}/r.db"))
        await fill(database, rows, 2)
        tables = [await read_rollup(database, rollup) for rollup in ROLLUPS]
        await database.close()
        return tables

    hourly, daily = asyncio.run(run())

    assert sorted(sums[0] for sums in hourly.values()) == [3, 4]
    assert [sums[0] for sums in daily.values()] == [7]


MIDNIGHT = datetime(2026, 1, 20, tzinfo=UTC)
US = timedelta(microseconds=1)
AROUND_MIDNIGHT = [MIDNIGHT + offset for offset in (-US, 0 * US, US)]


@pytest.mark.parametrize(
    "chosen",
    [
        Filters(),
        Filters(since=MIDNIGHT),
        Filters(until=MIDNIGHT),
        Filters(since=MIDNIGHT - US, until=MIDNIGHT + US),
        Filters(since=MIDNIGHT - timedelta(days=1), until=MIDNIGHT),
        Filters(since=MIDNIGHT - timedelta(hours=1), until=MIDNIGHT + 2 * US),
        Filters(since=MIDNIGHT - timedelta(days=1, minutes=1)),
        Filters(until=MIDNIGHT + timedelta(days=1, hours=1, seconds=1)),
    ],
    ids=[
        "all",
        "from-midnight",
        "until-midnight",
        "one-microsecond-each-side",
        "the-day-before",
        "last-hour-and-a-bit",
        "ragged-since-a-day-earlier",
        "ragged-until-a-day-later",
    ],
)
def test_rows_next_to_midnight_fall_on_the_right_side(
    backend: str, tmp_path: Path, chosen: Filters
) -> None:
    earlier = [t - timedelta(days=1) for t in AROUND_MIDNIGHT]
    rows = [make_record(start_time=t) for t in earlier + AROUND_MIDNIGHT]
    url = f"sqlite:{tmp_path / 'm.db'}"
    if backend == "postgres":
        assert POSTGRES_URL is not None
        asyncio.run(empty_postgres(POSTGRES_URL))
        url = POSTGRES_URL

    asyncio.run(compare(url, rows, 2, [chosen]))
