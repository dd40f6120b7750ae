"""Alembic's entry point: run the migrations on the connection it is given.

At start-up the proxy passes its own connection in `config.attributes`
(see `lms_metrics_proxy.store.migration`). Run by hand with the `alembic`
command, it opens the synchronous URL given as `-x url=...`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from lms_metrics_proxy.store.schema import metadata


def run_on(connection: Connection) -> None:
    """Run the pending migrations inside the connection's transaction."""
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_by_hand() -> None:
    """Run from the `alembic` command line against `-x url=...`."""
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        raise SystemExit("Pass the database as -x url=sqlite:///path.db")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    with engine.begin() as connection:
        run_on(connection)
    engine.dispose()


given = context.config.attributes.get("connection")
if given is None:
    run_by_hand()
else:
    run_on(given)
