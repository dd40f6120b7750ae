"""The one writer task: drains the queue of Records into the database in batches.

The relay calls `put`, which never waits and never fails: the request path
never touches the database. The writer takes up to `batch_rows` rows at a
time, lingering up to `interval` seconds to fill a batch, and writes each
batch with its rollup increments in one transaction. A batch that fails is
kept and retried with backoff, so a locked, full, read-only or vanished
database loses nothing while the queue has room; past `max_rows`, new rows are
dropped and counted. `health()` reports all of this for /health.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import suppress
from typing import Any

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    ProgrammingError,
    StatementError,
)

from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store.batch import insert_batch
from lms_metrics_proxy.store.database import Database, describe_error
from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.tasks import spawn

logger = logging.getLogger(__name__)

# A failing batch is retried after 0.1 s, then twice as long each time, up to
# 5 s: quick when a lock is released, quiet while a server is down.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


class Writer:
    """Queue Records and write them in batches from one background task."""

    def __init__(
        self,
        database: Database,
        max_rows: int = 100_000,
        batch_rows: int = 500,
        interval: float = 0.05,
    ) -> None:
        self.database = database
        self.max_rows = max_rows
        self.batch_rows = batch_rows
        self.interval = interval
        self.accepted = 0
        self.written = 0
        self.dropped = 0
        self.refused = 0
        self.failure: str | None = None
        self._pending: deque[Record] = deque()
        self._batch: list[Record] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._stopped = asyncio.Event()
        self._progress = asyncio.Condition()
        self._hurry = 0
        self._dropping = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Rows accepted but not yet written, the batch in flight included."""
        return len(self._pending) + len(self._batch)

    def put(self, record: Record) -> None:
        """Queue `record` for writing; never waits, never raises."""
        if self._closed or self.queued >= self.max_rows:
            self.note_drop()
            return
        self._dropping = False
        self._pending.append(record)
        self.accepted += 1
        self._arrived.set()
        if len(self._pending) >= self.batch_rows:
            self._full.set()

    def note_drop(self) -> None:
        """Count a dropped row; log once for a whole run of drops."""
        self.dropped += 1
        if self._dropping:
            return
        self._dropping = True
        why = "the writer has stopped" if self._closed else "the write queue is full"
        logger.warning(
            "Dropping new rows because %s queued=%s max_rows=%s",
            why,
            self.queued,
            self.max_rows,
        )

    def health(self) -> dict[str, Any]:
        """Return /health's fields: status, reason when degraded, counters."""
        reason = self.failure
        if reason is None and self._task is not None and self._task.done():
            reason = "writer stopped"
        # Full now, not "dropped since the last accepted row": a queue that
        # has drained is healthy even before the next request comes.
        if reason is None and self.queued >= self.max_rows:
            reason = "write queue full"
        state: dict[str, Any] = {"status": "ok" if reason is None else "degraded"}
        if reason is not None:
            state["reason"] = reason
        state.update(
            queued=self.queued,
            dropped=self.dropped,
            written=self.written,
            refused=self.refused,
        )
        return state

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = spawn(self.run(), name="store-writer")

    # The deadline is ours, not the caller's: past it we decide to give up rows.
    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Write every pending row, then end the task; give up after `timeout`."""
        self._closed = True
        self._stopped.set()
        self.wake()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            logger.error(
                "Writer stopped after %.1f s with rows not written rows=%s reason=%s",
                timeout,
                self.queued,
                self.failure,
            )

    async def flush(self) -> None:
        """Wait until every row queued so far is written (or refused)."""
        if self._task is None or self._task.done():
            raise StoreError("The writer is not running; call start() first")
        target = self.accepted
        self._hurry += 1
        self.wake()
        try:
            async with self._progress:
                await self._progress.wait_for(
                    lambda: self.written + self.refused >= target
                )
        finally:
            self._hurry -= 1

    def wake(self) -> None:
        """Make the writer write what it has now, without lingering."""
        self._arrived.set()
        self._full.set()

    async def run(self) -> None:
        """Write batches until stopped and drained."""
        delay = BACKOFF_FIRST
        while True:
            if not self._batch:
                await self.gather()
                if not self._pending:
                    return
                count = min(self.batch_rows, len(self._pending))
                self._batch = [self._pending.popleft() for _ in range(count)]
            if await self.write():
                delay = BACKOFF_FIRST
                continue
            await self.pause(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def gather(self) -> None:
        """Wait for a first row, then up to `interval` for a full batch."""
        while not self._pending and not self._closed:
            self._arrived.clear()
            await self._arrived.wait()
        if len(self._pending) >= self.batch_rows or self._closed or self._hurry:
            return
        self._full.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), self.interval)

    async def pause(self, delay: float) -> None:
        """Sleep before a retry; a stop cuts the sleep short once."""
        if self._stopped.is_set():
            await asyncio.sleep(delay)
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay)

    async def write(self) -> bool:
        """Write the current batch; say whether the writer may go on."""
        try:
            await self.insert(self._batch)
        except Exception as error:
            if not is_refusal(error):
                self.note_failure(error)
                return False
            logger.exception(
                "Database refused a batch; writing its rows one by one rows=%s",
                len(self._batch),
            )
            return await self.write_singly()
        await self.settle(len(self._batch))
        return True

    async def write_singly(self) -> bool:
        """Write the batch row by row, dropping the rows the database refuses."""
        while self._batch:
            record = self._batch[0]
            try:
                await self.insert([record])
            except Exception as error:
                if not is_refusal(error):
                    self.note_failure(error)
                    return False
                self.refused += 1
                logger.exception(
                    "Row refused by the database and dropped endpoint=%s",
                    record.endpoint,
                )
                self._batch.pop(0)
                continue
            self._batch.pop(0)
            self.written += 1
        await self.settle(0)
        return True

    async def insert(self, records: list[Record]) -> None:
        """Run one transaction; reopen the database first after a failure."""
        if self.failure is not None:
            await self.database.reconnect()
        await self.database.ensure_file()
        async with self.database.transaction() as connection:
            await insert_batch(connection, records)

    async def settle(self, count: int) -> None:
        """Count `count` written rows, end a failure streak, wake flushers."""
        self.written += count
        self._batch = []
        if self.failure is not None:
            logger.info("Database writes resumed queued=%s", self.queued)
            self.failure = None
        async with self._progress:
            self._progress.notify_all()

    def note_failure(self, error: BaseException) -> None:
        """Remember why writing failed; log once per run of failures."""
        reason = describe_error(error)
        if self.failure is None:
            logger.warning(
                "Database write failed; keeping the rows and retrying "
                "rows=%s reason=%s",
                self.queued,
                reason,
            )
        self.failure = reason


def is_refusal(error: BaseException) -> bool:
    """Whether the rows themselves are bad, so that retrying cannot help.

    Constraint and data errors, and values that cannot be bound, are the
    rows' fault. Every other database error (locked, read-only, disk full,
    connection lost) is the database's, and worth retrying.
    """
    if isinstance(error, IntegrityError | DataError | ProgrammingError):
        return True
    if isinstance(error, DBAPIError):
        return False
    return isinstance(error, StatementError | TypeError | ValueError)
