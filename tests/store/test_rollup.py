"""The hourly rollup gives exactly what the raw rows give, whatever the rows."""

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
from lms_metrics_proxy.store.batch import insert_batch

from .conftest import POSTGRES_URL, empty_postgres
from .helpers import make_record

START = datetime(2026, 1, 19, 9, tzinfo=UTC)
SPAN_MS = 5 * 3600 * 1000  # rows over five hours

tokens = st.one_of(st.none(), st.integers(0, 50_000))
records = st.builds(
    make_record,
    start_time=st.integers(0, SPAN_MS).map(
        lambda ms: START + timedelta(milliseconds=ms)
    ),
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
moments = st.one_of(
    st.none(),
    st.integers(-1800_000, SPAN_MS + 1800_000).map(
        lambda ms: START + timedelta(milliseconds=ms)
    ),
)
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


async def fill(database: Database, rows: list[Record], batch: int) -> None:
    """Insert the rows in batches, as the writer would."""
    for start in range(0, len(rows), batch):
        async with database.transaction() as connection:
            await insert_batch(connection, rows[start : start + batch])


async def compare(
    url: str, rows: list[Record], batch: int, choices: list[Filters]
) -> None:
    database = await open_database(Settings(database_url=url))
    try:
        await fill(database, rows, batch)
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
    max_examples=50,
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


def test_rollup_keeps_one_row_per_group_across_batches(tmp_path: Path) -> None:
    rows = [make_record(model=None, client=None) for _ in range(7)]

    async def run() -> int:
        database = await open_database(Settings(database_url=f"sqlite:{tmp_path}/r.db"))
        await fill(database, rows, 2)
        async with database.engine.connect() as connection:
            result = await connection.exec_driver_sql(
                "SELECT COUNT(*), SUM(requests) FROM usage_hourly"
            )
            count, total = result.one()
        await database.close()
        assert total == 7
        return int(count)

    assert asyncio.run(run()) == 1
