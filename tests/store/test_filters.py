"""Which hours come from the rollup and which from raw rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from lms_metrics_proxy.store import Filters
from lms_metrics_proxy.store.filters import ceil_hour, plan_reads

T10 = datetime(2026, 1, 19, 10, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def test_no_time_filter_reads_only_the_rollup() -> None:
    plan = plan_reads(Filters(model="a"))

    assert plan.rollup == (None, None)
    assert plan.raw == []


def test_cut_hours_at_both_ends_are_read_raw() -> None:
    plan = plan_reads(Filters(since=T10 + 15 * M, until=T10 + 3 * H + 20 * M))

    assert plan.rollup == (T10 + H, T10 + 3 * H)
    assert plan.raw == [(T10 + 15 * M, T10 + H), (T10 + 3 * H, T10 + 3 * H + 20 * M)]


def test_whole_hour_bounds_need_no_raw_rows() -> None:
    plan = plan_reads(Filters(since=T10, until=T10 + 2 * H))

    assert plan.rollup == (T10, T10 + 2 * H)
    assert plan.raw == []


def test_open_ends_read_the_rollup_to_the_end() -> None:
    since_only = plan_reads(Filters(since=T10 + M))
    until_only = plan_reads(Filters(until=T10 + M))

    assert since_only.rollup == (T10 + H, None)
    assert since_only.raw == [(T10 + M, T10 + H)]
    assert until_only.rollup == (None, T10)
    assert until_only.raw == [(T10, T10 + M)]


def test_range_within_one_hour_is_read_raw() -> None:
    since, until = T10 + 10 * M, T10 + 50 * M

    plan = plan_reads(Filters(since=since, until=until))

    assert plan.rollup is None
    assert plan.raw == [(since, until)]


def test_raw_only_when_asked() -> None:
    plan = plan_reads(Filters(since=T10), use_rollup=False)

    assert plan.rollup is None
    assert plan.raw == [(T10, None)]


def test_hours_are_utc_hours_whatever_the_offset() -> None:
    india = timezone(timedelta(hours=5, minutes=30))

    assert ceil_hour(datetime(2026, 1, 19, 15, 30, tzinfo=india)) == T10
    assert ceil_hour(datetime(2026, 1, 19, 15, 31, tzinfo=india)) == T10 + H


def test_last_hour_of_the_calendar_does_not_overflow() -> None:
    end = datetime(9999, 12, 31, 23, 30, tzinfo=UTC)

    assert ceil_hour(end) is None
    assert plan_reads(Filters(since=end)).raw == [(end, None)]
