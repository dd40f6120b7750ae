"""Statistics: SPEC §4 shapes, rounding, filters, and the empty database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from lms_metrics_proxy.store import Database, Filters, Record, Writer, queries
from lms_metrics_proxy.store.queries import average, round_half_up

from .helpers import BASE_TIME, make_record

SPEC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
HOUR = datetime(2026, 1, 19, 10, tzinfo=UTC)


async def write(writer: Writer, *records: Record) -> None:
    for record in records:
        writer.put(record)
    await writer.flush()


async def test_empty_database_gives_zeros_not_nulls(database: Database) -> None:
    summary = await queries.summary(database)

    assert summary == {
        "total_requests": 0,
        "successful_requests": 0,
        "failed_requests": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_tokens": 0,
        "average_input_tokens": 0.0,
        "average_output_tokens": 0.0,
        "total_duration_ms": 0,
        "average_duration_ms": 0.0,
        "upstream_usage_requests": 0,
        "estimated_usage_requests": 0,
        "no_usage_requests": 0,
    }
    assert await queries.by_model(database) == {"models": []}
    assert await queries.by_client(database) == {"clients": []}
    assert await queries.recent(database) == {"requests": []}
    assert await queries.timeseries(database) == {"bucket": "hour", "points": []}
    assert await queries.request(database, 1) is None


async def test_summary_matches_the_spec_example(
    database: Database, writer: Writer
) -> None:
    # 150 requests whose sums are SPEC §4's: 12543 in, 45621 out, 2 failed.
    records = [
        make_record(input_tokens=84, output_tokens=306, total_tokens=390,
                    duration_ms=841)
        for _ in range(147)
    ] + [
        make_record(input_tokens=84, output_tokens=306, total_tokens=390,
                    duration_ms=841, http_status=500, is_error=True)
        for _ in range(2)
    ] + [
        make_record(input_tokens=27, output_tokens=27, total_tokens=54,
                    duration_ms=121, usage_source="estimated")
    ]  # fmt: skip
    await write(writer, *records)

    summary = await queries.summary(database)

    assert summary == {
        "total_requests": 150,
        "successful_requests": 148,
        "failed_requests": 2,
        "total_input_tokens": 12543,
        "total_output_tokens": 45621,
        "total_tokens": 58164,
        "average_input_tokens": 83.6,
        "average_output_tokens": 304.1,
        "total_duration_ms": 125430,
        "average_duration_ms": 836.2,
        "upstream_usage_requests": 149,
        "estimated_usage_requests": 1,
        "no_usage_requests": 0,
    }


@pytest.mark.parametrize(
    ("total", "count", "expected"),
    [(1, 4, 0.3), (1, 3, 0.3), (2, 3, 0.7), (5, 100, 0.1), (4, 100, 0.0),
     (12543, 150, 83.6), (0, 0, 0.0), (7, 1, 7.0)],
)  # fmt: skip
def test_averages_round_halves_up_to_one_decimal(
    total: int, count: int, expected: float
) -> None:
    assert average(total, count) == expected


def test_integer_averages_round_halves_up() -> None:
    assert [round_half_up(t, 2) for t in (1, 3, 5)] == [1, 2, 3]
    assert round_half_up(10, 0) == 0


async def test_averages_count_requests_without_usage(
    database: Database, writer: Writer
) -> None:
    await write(
        writer,
        make_record(input_tokens=10, output_tokens=None, total_tokens=None),
        make_record(input_tokens=None, output_tokens=None, total_tokens=None,
                    usage_source="none"),
    )  # fmt: skip

    summary = await queries.summary(database)

    assert summary["average_input_tokens"] == 5.0
    assert summary["total_output_tokens"] == 0
    assert summary["no_usage_requests"] == 1


async def test_by_model_sorts_by_total_tokens_with_integer_durations(
    database: Database, writer: Writer
) -> None:
    await write(
        writer,
        make_record(model="small", total_tokens=10, duration_ms=100),
        make_record(model="small", total_tokens=10, duration_ms=101),
        make_record(model="big", total_tokens=5000, duration_ms=3000),
        make_record(model=None, total_tokens=50, input_tokens=None),
    )

    models = (await queries.by_model(database))["models"]

    assert [m["model"] for m in models] == ["big", None, "small"]
    small = models[2]
    assert small["request_count"] == 2
    assert small["avg_duration_ms"] == 101
    assert isinstance(small["avg_duration_ms"], int)
    assert small["avg_input_tokens"] == 80.0
    assert small["total_tokens"] == 20
    assert models[1]["avg_input_tokens"] == 0.0
    assert set(small) >= {
        "model", "request_count", "total_input_tokens", "total_output_tokens",
        "total_tokens", "avg_input_tokens", "avg_output_tokens", "avg_duration_ms",
        "upstream_usage_requests", "estimated_usage_requests", "no_usage_requests",
    }  # fmt: skip


async def test_by_client_groups_by_client_name(
    database: Database, writer: Writer
) -> None:
    await write(
        writer,
        make_record(client="cli"),
        make_record(client="cli"),
        make_record(client=None, total_tokens=1),
    )

    clients = (await queries.by_client(database))["clients"]

    assert [(c["client"], c["request_count"]) for c in clients] == [
        ("cli", 2),
        (None, 1),
    ]


async def test_recent_lists_newest_first_without_text(
    database: Database, writer: Writer
) -> None:
    await write(
        writer,
        *(make_record(start_time=BASE_TIME + timedelta(minutes=n), client=f"c{n}")
          for n in range(5)),
    )  # fmt: skip

    rows = (await queries.recent(database, limit=3))["requests"]

    assert [r["client"] for r in rows] == ["c4", "c3", "c2"]
    first = rows[0]
    assert first["start_time"] == "2026-01-19T10:34:45Z"
    assert SPEC_TIME.fullmatch(first["end_time"])
    assert first["is_error"] is False
    assert first["was_streamed"] is False
    assert {"prompt", "response", "details"}.isdisjoint(first)
    assert set(first) >= {
        "id", "endpoint", "model", "client", "input_tokens", "output_tokens",
        "total_tokens", "duration_ms", "start_time", "is_error", "was_streamed",
        "http_status", "usage_source",
    }  # fmt: skip


async def test_request_returns_the_whole_row_with_details_parsed(
    database: Database, writer: Writer
) -> None:
    details = {"model_info": {"arch": "qwen3"}, "runtime": "llama.cpp"}
    await write(writer, make_record(details=details, was_streamed=True, ttft_ms=42))
    [row] = (await queries.recent(database))["requests"]

    detail = await queries.request(database, row["id"])
    other_model = await queries.request(database, row["id"], Filters(model="x"))

    assert detail is not None
    assert detail["details"] == details
    assert detail["prompt"] == '[{"role": "user", "content": "Hello"}]'
    assert detail["response"] == "Hi there"
    assert detail["was_streamed"] is True
    assert detail["ttft_ms"] == 42
    assert detail["start_time"] == "2026-01-19T10:30:45Z"
    assert other_model is None


async def test_time_filters_are_half_open(database: Database, writer: Writer) -> None:
    times = [HOUR + timedelta(minutes=m) for m in (0, 30, 60, 90, 150)]
    await write(writer, *(make_record(start_time=t) for t in times))

    async def count(since: datetime | None, until: datetime | None) -> int:
        chosen = Filters(since=since, until=until)
        return int((await queries.summary(database, chosen))["total_requests"])

    assert await count(HOUR, HOUR + timedelta(hours=1)) == 2
    assert await count(HOUR + timedelta(minutes=30), None) == 4
    assert await count(None, HOUR + timedelta(minutes=90)) == 3
    assert await count(HOUR + timedelta(hours=9), None) == 0


async def test_label_filters_apply_to_every_statistic(
    database: Database, writer: Writer
) -> None:
    await write(
        writer,
        make_record(model="a", client="cli", endpoint="/v1/embeddings"),
        make_record(model="a", client="web"),
        make_record(model="b", client="cli"),
    )
    only = Filters(model="a", client="cli")

    summary = await queries.summary(database, only)
    models = await queries.by_model(database, Filters(endpoint="/v1/embeddings"))
    recent = await queries.recent(database, 100, only)
    series = await queries.timeseries(database, "day", Filters(client="web"))

    assert summary["total_requests"] == 1
    assert [m["model"] for m in models["models"]] == ["a"]
    assert [r["endpoint"] for r in recent["requests"]] == ["/v1/embeddings"]
    assert [p["requests"] for p in series["points"]] == [1]


async def test_timeseries_buckets_by_minute_hour_and_day(
    database: Database, writer: Writer
) -> None:
    later = [timedelta(0), timedelta(seconds=10), timedelta(seconds=70),
             timedelta(seconds=75), timedelta(hours=25)]  # fmt: skip
    await write(writer, *(make_record(start_time=BASE_TIME + d) for d in later))

    minutes = await queries.timeseries(database, "minute")
    hours = await queries.timeseries(database, "hour")
    days = await queries.timeseries(database, "day")

    assert [(p["time"], p["requests"]) for p in minutes["points"]] == [
        ("2026-01-19T10:30:00Z", 2),
        ("2026-01-19T10:31:00Z", 1),
        ("2026-01-19T10:32:00Z", 1),
        ("2026-01-20T11:30:00Z", 1),
    ]
    assert [(p["time"], p["requests"]) for p in hours["points"]] == [
        ("2026-01-19T10:00:00Z", 4),
        ("2026-01-20T11:00:00Z", 1),
    ]
    assert [(p["time"], p["requests"]) for p in days["points"]] == [
        ("2026-01-19T00:00:00Z", 4),
        ("2026-01-20T00:00:00Z", 1),
    ]
    assert hours["points"][0]["total_tokens"] == 4 * 380


async def test_unknown_bucket_is_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="bucket must be one of minute, hour, day"):
        await queries.timeseries(database, "week")
