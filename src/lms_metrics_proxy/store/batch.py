"""What one batch writes: the rows, and the rollup counts they add.

`insert_batch` runs inside the writer's transaction, so a batch's rows and its
increments to every rollup (hourly, daily) land together or not at all. The
increments are summed here, in Python, so each batch sends one upsert per
group and rollup (INSERT ... ON CONFLICT DO UPDATE, on SQLite 3.24+ and
PostgreSQL alike); a day's increments are summed from the hours'.

The writer shares the proxy's event loop, so rows skip SQLAlchemy's per-row
parameter processing: the statements are compiled once per dialect and run
with plain tuples, the values converted here as UtcDateTime would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import orjson
from sqlalchemy import Dialect, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.store.schema import (
    ROLLUPS,
    SUM_COLUMNS,
    as_utc,
    requests,
    status_class,
)

# Every column but `id`: the two times first and `details` last, as below.
ROW_COLUMNS = tuple(c.name for c in requests.columns if c.name != "id")
PLAIN_VALUES = attrgetter(*ROW_COLUMNS[2:-1])

GroupKey = tuple[datetime, str, str, str, str, str]
Deltas = dict[GroupKey, list[int]]
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Statements:
    """A batch's statements as driver SQL, and how to write times.

    `upserts` has one statement per rollup, in ROLLUPS order.
    """

    insert: str
    upserts: tuple[str, ...]
    time: Callable[[datetime], Any]
    clean: bool


COMPILED: dict[type[Dialect], Statements] = {}


async def insert_batch(connection: AsyncConnection, records: Sequence[Record]) -> None:
    """Insert `records` and add them to every rollup."""
    statements = compiled(connection.dialect)
    rows = [row_values(record, statements) for record in records]
    await connection.exec_driver_sql(statements.insert, rows)

    # Summed once by the finest unit; each rollup regroups the previous sums.
    deltas = rollup_deltas(records, ROLLUPS[0].floor)
    for rollup, upsert in zip(ROLLUPS, statements.upserts, strict=True):
        deltas = regroup(deltas, rollup.floor)
        await connection.exec_driver_sql(upsert, rollup_values(deltas, statements))


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


def rollup_values(deltas: Deltas, statements: Statements) -> list[Row]:
    """Return one upsert row per group, in key then SUM_COLUMNS order."""
    rows = [(statements.time(key[0]), *key[1:], *sums) for key, sums in deltas.items()]
    if statements.clean:
        rows = [tuple(without_nul(value) for value in row) for row in rows]
    return rows


def rollup_deltas(
    records: Iterable[Record], floor: Callable[[datetime], datetime]
) -> Deltas:
    """Sum `records` by rollup group, the time cut by `floor`, in SUM_COLUMNS order."""
    sums: Deltas = {}
    for record in records:
        key = (
            floor(record.start_time),
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


def regroup(deltas: Deltas, floor: Callable[[datetime], datetime]) -> Deltas:
    """Sum groups again with their times cut by a coarser `floor`."""
    coarser: Deltas = {}
    for key, sums in deltas.items():
        coarse_key = (floor(key[0]), *key[1:])
        group = coarser.setdefault(coarse_key, [0] * len(SUM_COLUMNS))
        for index, value in enumerate(sums):
            group[index] += value
    return coarser


def compiled(dialect: Dialect) -> Statements:
    """Return both statements for `dialect`, compiled on first use."""
    statements = COMPILED.get(type(dialect))
    if statements is None:
        statements = COMPILED[type(dialect)] = compile_statements(dialect)
    return statements


def compile_statements(dialect: Dialect) -> Statements:
    """Compile the statements, checking that parameters come in our order."""
    insert = requests.insert().compile(dialect=dialect, column_keys=list(ROW_COLUMNS))
    if tuple(insert.positiontup or ()) != ROW_COLUMNS:
        raise AssertionError(f"Unexpected INSERT parameters: {insert.positiontup}")
    upserts = []
    for rollup in ROLLUPS:
        upsert = rollup_upsert(dialect.name, rollup.table).compile(dialect=dialect)
        if tuple(upsert.positiontup or ()) != rollup.group_columns + SUM_COLUMNS:
            raise AssertionError(f"Unexpected upsert parameters: {upsert.positiontup}")
        upserts.append(str(upsert))
    if dialect.name == "postgresql":
        return Statements(str(insert), tuple(upserts), as_utc, clean=True)
    return Statements(str(insert), tuple(upserts), sqlite_time, clean=False)


def sqlite_time(moment: datetime) -> str:
    """Write a time as SQLAlchemy's SQLite DATETIME does: UTC, microseconds."""
    if moment.tzinfo is UTC:  # the relay's clock: cut "+00:00" off the text
        return moment.isoformat(" ", "microseconds")[:26]
    return as_utc(moment).replace(tzinfo=None).isoformat(" ", "microseconds")


def rollup_upsert(dialect: str, table: Table) -> Insert:
    """Build the statement that adds one group's increments to its row."""
    key = [column.name for column in table.primary_key]
    if dialect == "postgresql":
        pg_statement = postgresql.insert(table)
        return pg_statement.on_conflict_do_update(
            index_elements=key, set_=increments(table, pg_statement.excluded)
        )
    sqlite_statement = sqlite.insert(table)
    return sqlite_statement.on_conflict_do_update(
        index_elements=key, set_=increments(table, sqlite_statement.excluded)
    )


def increments(table: Table, excluded: Any) -> dict[str, Any]:
    """Return SET clauses adding the proposed row's sums to the stored ones."""
    return {name: table.c[name] + excluded[name] for name in SUM_COLUMNS}
