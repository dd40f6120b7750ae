"""Add the daily rollup `usage_daily`, filled from `usage_hourly`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

From here on the writer updates `usage_daily` in the same transaction as the
rows and `usage_hourly`; this migration builds it once from the hourly rollup,
which already sums every row (0002 filled it), so it reads a few rows per
hour instead of every request. Times are UTC days, in the form each database
stores UtcDateTime values.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LABELS = ("model", "endpoint", "client", "status_class", "usage_source")
SUMS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "duration_ms",
)

# The day of an hour, written as the proxy writes times: SQLite compares the
# text, so it must be exactly SQLAlchemy's `YYYY-MM-DD HH:MM:SS.ffffff`.
DAY = {
    "sqlite": "strftime('%Y-%m-%d 00:00:00.000000', hour)",
    "postgresql": "date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
}

BACKFILL = """
INSERT INTO usage_daily (day, {labels}, {sums})
SELECT {day}, {labels}, {totals}
FROM usage_hourly
GROUP BY {day}, {labels}
"""


def upgrade() -> None:
    """Create the daily rollup, then fill it from the hourly one."""
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Text(), nullable=False) for name in LABELS),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint("day", *LABELS, name="pk_usage_daily"),
    )
    backfill = BACKFILL.format(
        day=DAY[op.get_context().dialect.name],
        labels=", ".join(LABELS),
        sums=", ".join(SUMS),
        totals=", ".join(f"SUM({name})" for name in SUMS),
    )
    op.execute(sa.text(backfill))


def downgrade() -> None:
    """Drop the daily rollup; the hourly one still has every sum."""
    op.drop_table("usage_daily")
