"""How a batch writes times for SQLite: the text SQLAlchemy's DATETIME writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from lms_metrics_proxy.store.batch import sqlite_time
from lms_metrics_proxy.store.schema import UtcDateTime

zones = st.sampled_from(
    [UTC, UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min, None]
)
# Hypothesis draws naive times between naive bounds; the zone comes after.
first, last = datetime(1, 1, 2), datetime(9999, 12, 30)  # noqa: DTZ001
moments = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone),
    st.datetimes(min_value=first, max_value=last),
    zones,
)


@given(moments)
def test_time_text_is_what_sqlalchemy_binds(moment: datetime) -> None:
    bind = UtcDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    assert bind is not None

    assert sqlite_time(moment) == bind(UtcDateTime().process_bind_param(moment, None))


def test_whole_seconds_keep_their_microseconds() -> None:
    moment = datetime(2026, 1, 19, 10, 30, 45, tzinfo=UTC)

    assert sqlite_time(moment) == "2026-01-19 10:30:45.000000"
