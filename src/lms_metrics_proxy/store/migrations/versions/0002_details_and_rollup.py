"""Add `requests.details` and the hourly rollup `usage_hourly`, filled from rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-19

From here on the writer updates `usage_hourly` in the same transaction as it
inserts rows; this migration builds it once from the rows already there. A
missing model or client is stored as '' (a unique key treats NULLs as
distinct), and the status class is `2xx`..`5xx`, or `err` for no status.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SUMS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "duration_ms",
)

# The hour of a row, in the form each database stores UtcDateTime values.
HOUR = {
    "sqlite": "strftime('%Y-%m-%d %H:00:00.000000', start_time)",
    "postgresql": (
        "date_trunc('hour', start_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    ),
}

BACKFILL = """
INSERT INTO usage_hourly (hour, model, endpoint, client, status_class, usage_source,
    requests, errors, input_tokens, output_tokens, total_tokens, duration_ms)
SELECT {hour}, COALESCE(model, ''), COALESCE(endpoint, ''), COALESCE(client, ''),
    CASE WHEN http_status BETWEEN 100 AND 599
        THEN CAST(http_status / 100 AS TEXT) || 'xx' ELSE 'err' END,
    COALESCE(usage_source, 'none'),
    COUNT(*), SUM(CASE WHEN is_error THEN 1 ELSE 0 END),
    COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
    COALESCE(SUM(total_tokens), 0), COALESCE(SUM(duration_ms), 0)
FROM requests
WHERE {hour} IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6
"""


def upgrade() -> None:
    """Add the column and the rollup, then fill the rollup."""
    op.add_column("requests", sa.Column("details", sa.Text()))
    op.create_table(
        "usage_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("status_class", sa.Text(), nullable=False),
        sa.Column("usage_source", sa.Text(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint(
            "hour",
            "model",
            "endpoint",
            "client",
            "status_class",
            "usage_source",
            name="pk_usage_hourly",
        ),
    )
    hour = HOUR[op.get_context().dialect.name]
    op.execute(sa.text(BACKFILL.format(hour=hour)))


def downgrade() -> None:
    """Drop the rollup and the column."""
    op.drop_table("usage_hourly")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("details")
