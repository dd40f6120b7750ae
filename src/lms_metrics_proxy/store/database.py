"""Open the database: the async engine, per-connection settings, migrations.

SQLite goes through aiosqlite, in WAL mode with `synchronous=NORMAL` and a
busy timeout on every connection, so readers never block the writer and
several proxy processes can share one file. PostgreSQL goes through asyncpg.
Either way the schema is brought to the newest revision before `open_database`
returns. This module owns the engine; it neither writes rows nor reads them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from sqlalchemy import URL, Connection, event, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from lms_metrics_proxy.config import Settings
from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store.migration import Upgrade, upgrade_schema

logger = logging.getLogger(__name__)

# How BEGIN is spelled for a connection, set as an execution option. The
# writer takes SQLite's write lock up front (IMMEDIATE) so that the busy
# timeout applies, instead of failing at once when a read upgrades to a write.
BEGIN_OPTION = "lms_begin"


class Database:
    """An open database: its engine, and how to reopen it after a failure."""

    def __init__(self, settings: Settings, busy_timeout: float = 5.0) -> None:
        self.label = settings.database_label
        self.path = expand(settings.sqlite_path)
        self.busy_timeout = busy_timeout
        self.url = engine_url(settings.database_url, self.path)
        self.engine = self.create_engine()
        self._file_id: tuple[int, int] | None = None

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect name: `sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @property
    def is_file(self) -> bool:
        """Whether this is an SQLite file (not PostgreSQL, not `:memory:`)."""
        return self.path not in (None, ":memory:")

    def create_engine(self) -> AsyncEngine:
        """Create the engine for `self.url`, with the SQLite connection hooks."""
        if self.path is None:
            return create_postgres_engine(self.url)
        memory = self.path == ":memory:"
        engine = create_async_engine(
            self.url,
            hide_parameters=True,
            connect_args={"timeout": self.busy_timeout},
            # One shared connection, or each connection sees its own database.
            poolclass=StaticPool if memory else None,
        )
        event.listen(engine.sync_engine, "connect", self.configure_sqlite)
        event.listen(engine.sync_engine, "begin", begin_sqlite)
        return engine

    def configure_sqlite(self, dbapi_connection: Any, record: Any) -> None:
        """Set the busy timeout, `synchronous` and WAL on a new connection."""
        # Let SQLAlchemy emit BEGIN itself (see begin_sqlite): the sqlite3
        # module would otherwise run DDL outside any transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if not is_wal(cursor):
            switch_to_wal(cursor)
        cursor.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Open a write transaction, committed when the block ends."""
        async with self.engine.connect() as connection:
            await connection.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            async with connection.begin():
                yield connection

    async def migrate(self) -> Upgrade:
        """Bring the schema to the newest revision; StoreError if impossible."""
        try:
            upgrade = await self.upgrade()
        except (SQLAlchemyError, OSError, CommandError) as error:
            raise StoreError(self.describe_failure(error)) from error
        self._file_id = self.file_id()
        log_upgrade(upgrade, self.label)
        return upgrade

    async def upgrade(self) -> Upgrade:
        """Run the migrations, waiting out another process's switch to WAL."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                async with self.transaction() as connection:
                    return await connection.run_sync(upgrade_schema)
            except OperationalError as error:
                # SQLite answers a journal mode change at once with BUSY,
                # without its busy timeout; wait here instead.
                if not is_busy(error) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)

    async def ensure_file(self) -> bool:
        """Open a new SQLite file if ours was deleted or replaced; say if so.

        An open SQLite connection keeps writing into a deleted file without
        any error, so the writer asks before each batch (one `stat` call).
        """
        if not self.is_file or self.file_id() == self._file_id:
            return False
        await self.engine.dispose()
        await self.migrate()
        logger.warning("Database file was deleted or replaced; created %s", self.path)
        return True

    async def reconnect(self) -> None:
        """Close pooled connections so the next use opens fresh ones."""
        if self.path != ":memory:":
            await self.engine.dispose()

    async def close(self) -> None:
        """Close every connection; the Database is not used after this."""
        await self.engine.dispose()

    def file_id(self) -> tuple[int, int] | None:
        """Return the SQLite file's device and inode, or None if it is gone."""
        if not self.is_file:
            return None
        try:
            info = os.stat(str(self.path))
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def describe_failure(self, error: BaseException) -> str:
        """Say why the database could not be opened and what to do."""
        reason = describe_error(error)
        if self.path is not None:
            return (
                f"Cannot open the SQLite database {self.path}: {reason}; check "
                "that its folder exists and is writable, or point DATABASE_URL "
                "elsewhere"
            )
        return (
            f"Cannot open the database {self.label}: {reason}; check that "
            "PostgreSQL is running and that DATABASE_URL names a database "
            "this user may change"
        )


async def open_database(settings: Settings, busy_timeout: float = 5.0) -> Database:
    """Open the database of `settings.database_url` and migrate it.

    Raises StoreError, naming the database and what to do, when it cannot be
    opened or migrated. `busy_timeout` is in seconds.
    """
    database = Database(settings, busy_timeout)
    try:
        await database.migrate()
    except BaseException:
        await database.close()
        raise
    return database


def expand(path: str | None) -> str | None:
    """Expand `~` in an SQLite path; keep None and `:memory:` as they are."""
    if path is None or path == ":memory:":
        return path
    return str(Path(path).expanduser())


def engine_url(database_url: str, sqlite_path: str | None) -> URL:
    """Turn DATABASE_URL into the URL of an async SQLAlchemy driver."""
    if sqlite_path is not None:
        return URL.create("sqlite+aiosqlite", database=sqlite_path)
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise StoreError(
            "DATABASE_URL is not a valid PostgreSQL URL; expected "
            "postgresql://USER:PASSWORD@HOST/DB"
        ) from None
    query = dict(url.query)
    # libpq spells it sslmode; asyncpg takes the same values as ssl.
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return url.set(drivername="postgresql+asyncpg", query=query)


def create_postgres_engine(url: URL) -> AsyncEngine:
    """Create the asyncpg engine; StoreError when asyncpg is not installed."""
    try:
        return create_async_engine(url, hide_parameters=True, pool_pre_ping=True)
    except ImportError:
        raise StoreError(
            "PostgreSQL needs the asyncpg driver: "
            "pip install 'lms-metrics-proxy[postgres]'"
        ) from None


def is_busy(error: OperationalError) -> bool:
    """Whether SQLite said SQLITE_BUSY: another connection holds the lock."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_BUSY


def is_wal(cursor: Any) -> bool:
    """Whether the database file is in WAL mode (a setting kept in the file)."""
    cursor.execute("PRAGMA journal_mode")
    return str(cursor.fetchone()[0]).lower() == "wal"


def switch_to_wal(cursor: Any) -> None:
    """Put the file in WAL mode, unless another connection just did.

    Changing the journal mode fails at once, without the busy timeout, while
    another connection holds a lock: as when several processes open a new
    file together, and the first has switched it and begun migrating.
    """
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        if not is_wal(cursor):
            raise


def begin_sqlite(connection: Connection) -> None:
    """Emit BEGIN, or BEGIN IMMEDIATE when the connection asks for it."""
    mode = connection.get_execution_options().get(BEGIN_OPTION, "")
    connection.exec_driver_sql(f"BEGIN {mode}".strip())


def describe_error(error: BaseException) -> str:
    """Return the cause of a database error in one short line, no SQL."""
    cause: BaseException = error
    if isinstance(error, DBAPIError) and error.orig is not None:
        cause = error.orig
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text[:300]


def log_upgrade(upgrade: Upgrade, label: str) -> None:
    """Log what the migrations did, at info when they changed anything."""
    if upgrade.adopted:
        logger.info("Adopted the Rust proxy's requests table database=%s", label)
    if upgrade.before != upgrade.after:
        logger.info(
            "Migrations applied database=%s from=%s to=%s",
            label,
            upgrade.before or "empty",
            upgrade.after,
        )
    else:
        logger.debug("Database schema is current revision=%s", upgrade.after)
