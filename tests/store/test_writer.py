"""The writer task: batches, draining, a bounded queue, and failures survived."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store import Database, Record, Writer, open_database, queries
from lms_metrics_proxy.store import writer as writer_module

from .helpers import count_rows, make_record

WRITER_LOGGER = "lms_metrics_proxy.store.writer"
DATABASE_LOGGER = "lms_metrics_proxy.store.database"


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {seconds} s")
        await asyncio.sleep(0.01)


def logged(
    caplog: pytest.LogCaptureFixture, level: int, name: str = WRITER_LOGGER
) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == name and r.levelno == level
    ]


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every batch the writer tries to insert."""
    sizes: list[int] = []
    real = writer_module.insert_batch

    async def counting(connection: Any, records: Sequence[Record]) -> None:
        sizes.append(len(records))
        await real(connection, records)

    monkeypatch.setattr(writer_module, "insert_batch", counting)
    return sizes


@pytest.fixture
def exclusive_lock(database: Database) -> Iterator[sqlite3.Connection]:
    """A second connection to the same file, holding its write lock."""
    if database.dialect != "sqlite":
        pytest.skip("SQLite file locks only")
    other = sqlite3.connect(str(database.path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    yield other
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


async def test_queued_rows_are_written_in_batches_of_batch_rows(
    database: Database, batch_sizes: list[int]
) -> None:
    writer = Writer(database, batch_rows=500)
    for _ in range(1200):
        writer.put(make_record())

    await writer.start()
    await writer.flush()
    await writer.stop()

    assert batch_sizes == [500, 500, 200]
    assert await count_rows(database) == 1200


async def test_rows_put_close_together_share_one_transaction(
    database: Database, batch_sizes: list[int]
) -> None:
    writer = Writer(database, interval=0.3)
    await writer.start()

    for _ in range(10):
        writer.put(make_record())
        await asyncio.sleep(0.005)
    await eventually(lambda: writer.written == 10)
    await writer.stop()

    assert batch_sizes == [10]


async def test_stop_writes_every_pending_row_first(database: Database) -> None:
    writer = Writer(database, interval=1.0)
    await writer.start()
    for _ in range(2000):
        writer.put(make_record())

    await writer.stop()

    assert await count_rows(database) == 2000
    assert writer.health()["queued"] == 0


async def test_full_queue_drops_new_rows_and_logs_once_per_burst(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer(database, max_rows=100)

    for _ in range(150):
        writer.put(make_record())
    first_burst = writer.health()
    await writer.start()
    await writer.flush()
    for _ in range(250):
        writer.put(make_record())
    await writer.stop()

    assert first_burst["dropped"] == 50
    assert first_burst["status"] == "degraded"
    assert first_burst["reason"] == "write queue full"
    assert writer.dropped == 200
    assert await count_rows(database) == 200
    message = (
        "Dropping new rows because the write queue is full queued=100 max_rows=100"
    )
    assert logged(caplog, logging.WARNING) == [message, message]


async def test_rows_put_after_stop_are_dropped_and_logged_once(
    writer: Writer, caplog: pytest.LogCaptureFixture
) -> None:
    await writer.stop()

    writer.put(make_record())
    writer.put(make_record())

    assert writer.dropped == 2
    assert logged(caplog, logging.WARNING) == [
        "Dropping new rows because the writer has stopped queued=0 max_rows=10000"
    ]


async def test_locked_database_degrades_then_every_row_lands(
    database: Database,
    writer: Writer,
    exclusive_lock: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, WRITER_LOGGER)
    for _ in range(50):
        writer.put(make_record())
    await eventually(lambda: writer.health()["status"] == "degraded")
    degraded = writer.health()
    await asyncio.sleep(0.5)  # a few retries, still one warning

    exclusive_lock.execute("COMMIT")
    await asyncio.wait_for(writer.flush(), 10)

    assert degraded["reason"] == "database is locked"
    assert degraded["queued"] == 50
    assert logged(caplog, logging.WARNING) == [
        "Database write failed; keeping the rows and retrying rows=50 "
        "reason=database is locked"
    ]
    assert logged(caplog, logging.INFO) == ["Database writes resumed queued=0"]
    assert writer.health() == {
        "status": "ok",
        "queued": 0,
        "dropped": 0,
        "written": 50,
        "refused": 0,
    }
    assert await count_rows(database) == 50


async def test_read_only_database_degrades_then_recovers(
    database: Database, writer: Writer
) -> None:
    if database.dialect != "sqlite":
        pytest.skip("SQLite's query_only stands in for a read-only file")

    def read_only(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.cursor().execute("PRAGMA query_only=1")

    event.listen(database.engine.sync_engine, "connect", read_only)
    await database.reconnect()
    writer.put(make_record())
    await eventually(lambda: writer.failure is not None)
    reason = writer.failure

    event.remove(database.engine.sync_engine, "connect", read_only)
    await asyncio.wait_for(writer.flush(), 10)

    assert reason == "attempt to write a readonly database"
    assert await count_rows(database) == 1


async def test_deleted_file_is_created_anew_and_rows_land_there(
    database: Database, writer: Writer, caplog: pytest.LogCaptureFixture
) -> None:
    if database.dialect != "sqlite":
        pytest.skip("SQLite files only")
    path = Path(str(database.path))
    for _ in range(3):
        writer.put(make_record())
    await writer.flush()

    delete_database_files(path)
    writer.put(make_record())
    writer.put(make_record())
    await asyncio.wait_for(writer.flush(), 10)

    assert database.file_id() is not None
    assert (await queries.summary(database))["total_requests"] == 2
    assert logged(caplog, logging.WARNING, DATABASE_LOGGER) == [
        f"Database file was deleted or replaced; created {path}"
    ]


def delete_database_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_deleted_folder_degrades_until_it_is_back(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    settings = Settings(database_url=f"sqlite:{folder / 'proxy.db'}")
    database = await open_database(settings, busy_timeout=0.2)
    writer = Writer(database, interval=0.01)
    await writer.start()

    shutil.rmtree(folder)
    writer.put(make_record())
    await eventually(lambda: writer.failure is not None)
    reason = writer.failure
    folder.mkdir()
    await asyncio.wait_for(writer.flush(), 10)
    await writer.stop()
    rows = await count_rows(database)
    await database.close()

    assert reason is not None
    assert "unable to open database file" in reason
    assert rows == 1


async def test_failed_batch_is_kept_and_written_once_after_retries(
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = writer_module.insert_batch
    attempts: list[float] = []

    async def flaky(connection: Any, records: Sequence[Record]) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise OperationalError(
                "INSERT", {}, Exception("server closed the connection")
            )
        await real(connection, records)

    monkeypatch.setattr(writer_module, "insert_batch", flaky)
    writer = Writer(database)
    await writer.start()

    for _ in range(10):
        writer.put(make_record())
    await asyncio.wait_for(writer.flush(), 10)
    await writer.stop()

    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(attempts) == 4
    assert gaps[0] >= 0.09
    assert gaps[1] >= 0.19
    assert gaps[2] >= 0.39
    assert await count_rows(database) == 10
    assert len(logged(caplog, logging.WARNING)) == 1


async def test_row_the_database_refuses_is_dropped_alone(
    database: Database, writer: Writer, caplog: pytest.LogCaptureFixture
) -> None:
    bad = make_record(endpoint="/v1/bad")
    bad.start_time = "not a time"  # type: ignore[assignment]  # a relay bug

    writer.put(make_record())
    writer.put(bad)
    writer.put(make_record())
    await asyncio.wait_for(writer.flush(), 10)

    assert await count_rows(database) == 2
    assert writer.health()["refused"] == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "Database refused a batch; writing its rows one by one rows=3",
        "Row refused by the database and dropped endpoint=/v1/bad",
    ]
    assert all(r.exc_info for r in errors)


async def test_stop_gives_up_after_its_timeout_and_says_so(
    database: Database,
    exclusive_lock: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = Writer(database)
    await writer.start()
    for _ in range(5):
        writer.put(make_record())

    started = time.monotonic()
    await writer.stop(0.5)
    took = time.monotonic() - started

    assert 0.5 <= took < 2
    assert logged(caplog, logging.ERROR) == [
        "Writer stopped after 0.5 s with rows not written rows=5 "
        "reason=database is locked"
    ]


async def test_flush_needs_a_started_writer(database: Database) -> None:
    writer = Writer(database)

    with pytest.raises(StoreError, match="not running"):
        await writer.flush()


async def test_put_is_quick(database: Database) -> None:
    writer = Writer(database, max_rows=200_000)
    record = make_record()

    started = time.perf_counter()
    for _ in range(100_000):
        writer.put(record)
    per_put = (time.perf_counter() - started) / 100_000

    assert per_put < 5e-6


async def test_text_with_nul_is_stored(database: Database, writer: Writer) -> None:
    writer.put(make_record(prompt="a\x00b", response=None))
    await writer.flush()

    [row] = (await queries.recent(database))["requests"]
    detail = await queries.request(database, row["id"])

    # PostgreSQL text cannot hold NUL: it becomes U+FFFD there.
    expected = "a\ufffdb" if database.dialect == "postgresql" else "a\x00b"
    assert detail is not None
    assert detail["prompt"] == expected


async def test_killed_postgres_connections_are_replaced(
    database: Database, writer: Writer, database_url: str
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("PostgreSQL only")
    import asyncpg

    writer.put(make_record())
    await writer.flush()
    admin = await asyncpg.connect(database_url)
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    await admin.close()

    writer.put(make_record())
    await asyncio.wait_for(writer.flush(), 10)

    assert await count_rows(database) == 2
