"""Bring a database's schema to the newest revision with Alembic, at start-up.

Runs on a synchronous connection (the caller uses `AsyncConnection.run_sync`)
inside the caller's transaction. A database made by the original Rust proxy
has table `requests` and no `alembic_version`: it is adopted (its timestamps
made canonical, missing indexes added) and stamped with the baseline before
the upgrade, so no row is lost. This module does not open or close engines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from lms_metrics_proxy.errors import StoreError
from lms_metrics_proxy.store.schema import requests

logger = logging.getLogger(__name__)

BASELINE = "0001"
MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE_COLUMNS = tuple(c.name for c in requests.columns if c.name != "details")

# Any one number shared by every proxy process, so that two of them starting
# at once on one PostgreSQL database migrate one after the other.
PG_LOCK_KEY = 7_263_544_001

# SQLite keeps times as text that must compare in time order. The Rust proxy
# wrote RFC 3339 (`2026-01-19T10:30:45.123+00:00`); SQLAlchemy writes
# `2026-01-19 10:30:45.123000`. Adoption rewrites the first into the second.
CANONICAL_TIME = "____-__-__ __:__:__.______"
REWRITE_TIME = """
UPDATE requests SET {column} = strftime('%Y-%m-%d %H:%M:%f', {column}) || '000'
WHERE {column} NOT LIKE '{canonical}'
  AND strftime('%Y-%m-%d %H:%M:%f', {column}) IS NOT NULL
"""
# An unreadable end (the Rust proxy's empty string) becomes the start.
REPAIR_END = """
UPDATE requests SET end_time = start_time
WHERE strftime('%f', end_time) IS NULL AND strftime('%f', start_time) IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What `upgrade_schema` did: revisions before and after, and adoption."""

    before: str | None
    after: str | None
    adopted: bool


def upgrade_schema(connection: Connection) -> Upgrade:
    """Adopt a Rust-era table if there is one, then upgrade to the newest."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
    config = alembic_config(connection)
    before = current_revision(connection)

    adopted = before is None and inspect(connection).has_table("requests")
    if adopted:
        adopt_table(connection)
        command.stamp(config, BASELINE)
        before = BASELINE

    command.upgrade(config, "head")
    return Upgrade(before, current_revision(connection), adopted)


def alembic_config(connection: Connection) -> Config:
    """Point Alembic at the packaged scripts and at `connection`."""
    config = Config()
    # Config values go through configparser, which reads `%` as interpolation.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    """Return the revision the database is at, or None when never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def adopt_table(connection: Connection) -> None:
    """Make a Rust-era `requests` table equal to the baseline."""
    present = {column["name"] for column in inspect(connection).get_columns("requests")}
    missing = [name for name in BASELINE_COLUMNS if name not in present]
    # TODO(older-rust-schema-reported): tables of early Rust releases (an
    # `output` column, no `usage_source`) are refused, not converted.
    if missing:
        raise StoreError(
            f"Table requests lacks columns {', '.join(missing)}, so it was not "
            "written by a compatible proxy; move the database aside or point "
            "DATABASE_URL elsewhere"
        )
    if connection.dialect.name == "sqlite":
        rewrite_times(connection)
    add_indexes(connection)


def rewrite_times(connection: Connection) -> None:
    """Rewrite RFC 3339 times as SQLAlchemy's text form (SQLite only)."""
    for column in ("start_time", "end_time"):
        sql = REWRITE_TIME.format(column=column, canonical=CANONICAL_TIME)
        connection.exec_driver_sql(sql)
    connection.exec_driver_sql(REPAIR_END)


def add_indexes(connection: Connection) -> None:
    """Create the SPEC indexes that no index of the table already covers."""
    existing = inspect(connection).get_indexes("requests")
    covered = {tuple(index["column_names"]) for index in existing}
    for index in requests.indexes:
        if tuple(column.name for column in index.columns) not in covered:
            index.create(connection)
