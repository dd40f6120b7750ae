"""Read the query and path parameters of /stats/* into typed values.

Every function raises InvalidParameter, whose message names the parameter
and the accepted form, so that no user input can reach the database in a
shape it would choke on (a NUL byte, a number past 64 bits, a year past 9999).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from lms_metrics_proxy.api.responses import InvalidParameter, NotFound
from lms_metrics_proxy.store import Filters

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
BUCKETS = ("minute", "hour", "day")
MAX_ID = 2**63 - 1
UNIX_SECONDS = re.compile(r"[0-9]{1,11}(\.[0-9]+)?")
LEAP_SECOND = re.compile(r"(?<=\d\d:\d\d):60")
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
TIME_FORM = "an ISO 8601 time such as 2026-01-19T10:30:45Z, or Unix seconds"


def read_filters(query: Mapping[str, str]) -> Filters:
    """Read since, until, model, endpoint and client; absent or empty is None."""
    # since after until is no error: it selects nothing.
    return Filters(
        since=read_time(query, "since"),
        until=read_time(query, "until"),
        model=read_text(query, "model"),
        endpoint=read_text(query, "endpoint"),
        client=read_text(query, "client"),
    )


def read_time(query: Mapping[str, str], name: str) -> datetime | None:
    """Read an ISO 8601 time (UTC when it has no offset) or Unix seconds."""
    text = query.get(name, "").strip()
    if not text:
        return None
    try:
        return parse_time(text)
    except (ValueError, OverflowError, OSError):
        raise InvalidParameter(f"{name} must be {TIME_FORM}") from None


def parse_time(text: str) -> datetime:
    """Parse Unix seconds, or an ISO 8601 / RFC 3339 time, into UTC."""
    if UNIX_SECONDS.fullmatch(text):
        return datetime.fromtimestamp(float(text), UTC)
    # RFC 3339 allows a lower-case t and z, and a leap second; Python neither.
    text = text.upper()
    leap = LEAP_SECOND.search(text)
    if leap is not None:
        text = f"{text[: leap.start()]}:59{text[leap.end() :]}"
    moment = datetime.fromisoformat(text)
    if leap is not None:
        moment += timedelta(seconds=1)
    return to_utc(moment)


def to_utc(moment: datetime) -> datetime:
    """Convert to UTC; a time beyond year 1 to 9999 in UTC is clamped to it."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Only offsets can push a valid local time past the calendar's ends.
        ahead = (moment.utcoffset() or timedelta(0)) > timedelta(0)
        return EARLIEST if ahead else LATEST


def read_text(query: Mapping[str, str], name: str) -> str | None:
    """Read a label filter: any text but NUL, which no database stores."""
    value = query.get(name, "")
    if not value:
        return None
    if "\x00" in value or not is_utf8(value):
        raise InvalidParameter(f"{name} must be text without NUL characters")
    return value


def read_limit(query: Mapping[str, str]) -> int:
    """Read `limit`: 1 to 1000, default 100; larger values are cut to 1000."""
    text = query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise InvalidParameter(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return min(limit, MAX_LIMIT)


def read_bucket(query: Mapping[str, str]) -> str:
    """Read `bucket`: minute, hour (the default) or day."""
    bucket = query.get("bucket", "hour")
    if bucket not in BUCKETS:
        raise InvalidParameter(f"bucket must be one of {', '.join(BUCKETS)}")
    return bucket


def read_id(text: str) -> int:
    """Read a request id; one that cannot exist is simply not found."""
    try:
        request_id = int(text)
    except ValueError:
        raise InvalidParameter("id must be a whole number") from None
    if not 1 <= request_id <= MAX_ID:
        raise NotFound(f"No request with id {request_id}")
    return request_id


def is_utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (it may hold undecodable surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
