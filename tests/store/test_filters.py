"""Which days and hours come from the rollups and which from raw rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lms_metrics_proxy.store import Filters
from lms_metrics_proxy.store.filters import Read, plan_reads, rollups_for
from lms_metrics_proxy.store.schema import DAILY, HOURLY, ROLLUPS

T10 = datetime(2026, 1, 19, 10, tzinfo=UTC)
D19 = datetime(2026, 1, 19, tzinfo=UTC)
D = timedelta(days=1)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def test_no_time_filter_reads_only_the_daily_rollup() -> None:
    reads = plan_reads(Filters(model="a"))

    assert reads == [Read(DAILY, (None, None))]


def test_whole_days_hours_and_minutes_each_come_from_their_source() -> None:
    since, until = D19 + 10 * H + 15 * M, D19 + 3 * D + 2 * H + 20 * M

    reads = plan_reads(Filters(since=since, until=until))

    assert reads == [
        Read(DAILY, (D19 + D, D19 + 3 * D)),
        Read(HOURLY, (D19 + 11 * H, D19 + D)),
        Read(None, (since, D19 + 11 * H)),
        Read(HOURLY, (D19 + 3 * D, D19 + 3 * D + 2 * H)),
        Read(None, (D19 + 3 * D + 2 * H, until)),
    ]


def test_midnight_bounds_read_only_days() -> None:
    reads = plan_reads(Filters(since=D19, until=D19 + 2 * D))

    assert reads == [Read(DAILY, (D19, D19 + 2 * D))]


def test_hour_bounds_inside_days_need_no_raw_rows() -> None:
    reads = plan_reads(Filters(since=D19 + 22 * H, until=D19 + D + 3 * H))

    assert reads == [Read(HOURLY, (D19 + 22 * H, D19 + D + 3 * H))]


def test_cut_hours_at_both_ends_are_read_raw() -> None:
    reads = plan_reads(Filters(since=T10 + 15 * M, until=T10 + 3 * H + 20 * M))

    assert reads == [
        Read(HOURLY, (T10 + H, T10 + 3 * H)),
        Read(None, (T10 + 15 * M, T10 + H)),
        Read(None, (T10 + 3 * H, T10 + 3 * H + 20 * M)),
    ]


def test_open_ends_read_the_daily_rollup_to_the_end() -> None:
    since_only = plan_reads(Filters(since=T10 + M))
    until_only = plan_reads(Filters(until=T10 + M))

    assert since_only == [
        Read(DAILY, (D19 + D, None)),
        Read(HOURLY, (T10 + H, D19 + D)),
        Read(None, (T10 + M, T10 + H)),
    ]
    assert until_only == [
        Read(DAILY, (None, D19)),
        Read(HOURLY, (D19, T10)),
        Read(None, (T10, T10 + M)),
    ]


def test_range_within_one_hour_is_read_raw() -> None:
    since, until = T10 + 10 * M, T10 + 50 * M

    reads = plan_reads(Filters(since=since, until=until))

    assert reads == [Read(None, (since, until))]


def test_empty_range_is_read_raw_and_finds_nothing() -> None:
    since, until = D19 + 3 * D, D19

    reads = plan_reads(Filters(since=since, until=until))

    assert reads == [Read(None, (since, until))]


def test_raw_only_when_no_rollup_is_given() -> None:
    reads = plan_reads(Filters(since=T10), ())

    assert reads == [Read(None, (T10, None))]


@pytest.mark.parametrize(
    ("key", "expected"),
    [(None, ROLLUPS), ("model", ROLLUPS), ("client", ROLLUPS), ("day", ROLLUPS),
     ("hour", (HOURLY,)), ("minute", ())],
)  # fmt: skip
def test_a_time_bucket_reads_no_rollup_coarser_than_itself(
    key: str | None, expected: tuple
) -> None:
    assert rollups_for(key) == expected


def test_hour_series_reads_hours_where_a_day_would_fit() -> None:
    reads = plan_reads(Filters(since=D19, until=D19 + 2 * D), rollups_for("hour"))

    assert reads == [Read(HOURLY, (D19, D19 + 2 * D))]


def test_units_are_utc_whatever_the_offset() -> None:
    india = timezone(timedelta(hours=5, minutes=30))

    assert HOURLY.ceil(datetime(2026, 1, 19, 15, 30, tzinfo=india)) == T10
    assert HOURLY.ceil(datetime(2026, 1, 19, 15, 31, tzinfo=india)) == T10 + H
    assert DAILY.ceil(datetime(2026, 1, 19, 5, 30, tzinfo=india)) == D19
    assert DAILY.floor(datetime(2026, 1, 19, 5, 29, tzinfo=india)) == D19 - D


def test_last_hour_of_the_calendar_does_not_overflow() -> None:
    end = datetime(9999, 12, 31, 23, 30, tzinfo=UTC)

    assert HOURLY.ceil(end) is None
    assert DAILY.ceil(end) is None
    assert plan_reads(Filters(since=end)) == [Read(None, (end, None))]
