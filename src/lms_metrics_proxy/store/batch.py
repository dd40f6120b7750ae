"""What one batch writes: the rows, and the rollup counts they add.

`insert_batch` runs inside the writer's transaction, so a batch's rows and its
`usage_hourly` increments land together or not at all. The rollup increments
are summed here, in Python, so each batch sends one upsert per group
(INSERT ... ON CONFLICT DO UPDATE, on SQLite 3.24+ and PostgreSQL alike).

The writer shares the proxy's event loop, so rows skip SQLAlchemy's per-row
parameter processing: both statements are compiled once per dialect and run
with plain tuples, the values converted here as UtcDateTime would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import orjson
from sqlalchemy import Dialect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.store.schema import (
    GROUP_COLUMNS,
    SUM_COLUMNS,
    as_utc,
    floor_hour,
    requests,
    status_class,
    usage_hourly,
)

# Every column but `id`: the two times first and `details` last, as below.
ROW_COLUMNS = tuple(c.name for c in requests.columns if c.name != "id")
PLAIN_VALUES = attrgetter(*ROW_COLUMNS[2:-1])

GroupKey = tuple[datetime, str, str, str, str, str]
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Statements:
    """The two statements of a batch as driver SQL, and how to write times."""

    insert: str
    upsert: str
    time: Callable[[datetime], Any]
    clean: bool


COMPILED: dict[type[Dialect], Statements] = {}


async def insert_batch(connection: AsyncConnection, records: Sequence[Record]) -> None:
    """Insert `records` and add them to `usage_hourly`."""
    statements = compiled(connection.dialect)
    rows = [row_values(record, statements) for record in records]
    await connection.exec_driver_sql(statements.insert, rows)
    await connection.exec_driver_sql(
        statements.upsert, rollup_values(records, statements)
    )


def row_values(record: Record, statements: Statements) -> Row:
    """Return one row of `requests` in ROW_COLUMNS order, ready for the driver."""
    try:
        start = statements.time(record.start_time)
        end = statements.time(record.end_time)
    except (AttributeError, TypeError) as error:
        raise ValueError(f"Record times are not datetimes: {error}") from None
    details = None
    if record.details is not None:
        # default=str: an odd value in the extras must not lose the whole row.
        details = orjson.dumps(record.details, default=str).decode()
    row = (start, end, *PLAIN_VALUES(record), details)
    if statements.clean:
        row = tuple(without_nul(value) for value in row)
    return row


def without_nul(value: Any) -> Any:
    """Replace NUL in text, which PostgreSQL cannot store, with U+FFFD."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def rollup_values(records: Iterable[Record], statements: Statements) -> list[Row]:
    """Return one upsert row per group, in GROUP_COLUMNS + SUM_COLUMNS order."""
    rows = [
        (statements.time(key[0]), *key[1:], *sums)
        for key, sums in rollup_deltas(records).items()
    ]
    if statements.clean:
        rows = [tuple(without_nul(value) for value in row) for row in rows]
    return rows


def rollup_deltas(records: Iterable[Record]) -> dict[GroupKey, list[int]]:
    """Sum `records` by rollup group, each sum in SUM_COLUMNS order."""
    sums: dict[GroupKey, list[int]] = {}
    for record in records:
        key = (
            floor_hour(record.start_time),
            record.model or "",
            record.endpoint,
            record.client or "",
            status_class(record.http_status),
            record.usage_source,
        )
        group = sums.setdefault(key, [0] * len(SUM_COLUMNS))
        group[0] += 1
        group[1] += 1 if record.is_error else 0
        group[2] += record.input_tokens or 0
        group[3] += record.output_tokens or 0
        group[4] += record.total_tokens or 0
        group[5] += record.duration_ms
    return sums


def compiled(dialect: Dialect) -> Statements:
    """Return both statements for `dialect`, compiled on first use."""
    statements = COMPILED.get(type(dialect))
    if statements is None:
        statements = COMPILED[type(dialect)] = compile_statements(dialect)
    return statements


def compile_statements(dialect: Dialect) -> Statements:
    """Compile both statements, checking that parameters come in our order."""
    insert = requests.insert().compile(dialect=dialect, column_keys=list(ROW_COLUMNS))
    upsert = rollup_upsert(dialect.name).compile(dialect=dialect)
    if tuple(insert.positiontup or ()) != ROW_COLUMNS:
        raise AssertionError(f"Unexpected INSERT parameters: {insert.positiontup}")
    if tuple(upsert.positiontup or ()) != GROUP_COLUMNS + SUM_COLUMNS:
        raise AssertionError(f"Unexpected upsert parameters: {upsert.positiontup}")
    if dialect.name == "postgresql":
        return Statements(str(insert), str(upsert), as_utc, clean=True)
    return Statements(str(insert), str(upsert), sqlite_time, clean=False)


def sqlite_time(moment: datetime) -> str:
    """Write a time as SQLAlchemy's SQLite DATETIME does: UTC, microseconds."""
    return as_utc(moment).replace(tzinfo=None).isoformat(" ", "microseconds")


def rollup_upsert(dialect: str) -> Insert:
    """Build the statement that adds one group's increments to its row."""
    if dialect == "postgresql":
        pg_statement = postgresql.insert(usage_hourly)
        return pg_statement.on_conflict_do_update(
            index_elements=list(GROUP_COLUMNS),
            set_=increments(pg_statement.excluded),
        )
    sqlite_statement = sqlite.insert(usage_hourly)
    return sqlite_statement.on_conflict_do_update(
        index_elements=list(GROUP_COLUMNS),
        set_=increments(sqlite_statement.excluded),
    )


def increments(excluded: Any) -> dict[str, Any]:
    """Return SET clauses adding the proposed row's sums to the stored ones."""
    return {name: usage_hourly.c[name] + excluded[name] for name in SUM_COLUMNS}
