"""Baseline: table `requests` exactly as SPEC §3 and the Rust proxy have it.

Revision ID: 0001
Revises:
Create Date: 2026-01-19

A database written by the original Rust proxy already has this table and no
`alembic_version`; it is stamped with this revision instead of running it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

INDEXED = ("model", "endpoint", "start_time", "is_error", "client")


def upgrade() -> None:
    """Create `requests` and its indexes."""
    op.create_table(
        "requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("ttft_ms", sa.BigInteger()),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("model", sa.Text()),
        sa.Column("requested_model", sa.Text()),
        sa.Column("client", sa.Text()),
        sa.Column("input_tokens", sa.BigInteger()),
        sa.Column("output_tokens", sa.BigInteger()),
        sa.Column("total_tokens", sa.BigInteger()),
        sa.Column("cached_input_tokens", sa.BigInteger()),
        sa.Column("reasoning_tokens", sa.BigInteger()),
        sa.Column(
            "usage_source", sa.Text(), nullable=False, server_default=sa.text("'none'")
        ),
        sa.Column("tokens_per_second", sa.Float()),
        sa.Column("prompt", sa.Text()),
        sa.Column("response", sa.Text()),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("is_error", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("error_message", sa.Text()),
        sa.Column(
            "was_streamed", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
        sa.Column("finish_reason", sa.Text()),
        sa.Column(
            "request_bytes",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("0"),
        ),
        sa.Column(
            "response_bytes",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("0"),
        ),
        sqlite_autoincrement=True,
    )
    for column in INDEXED:
        op.create_index(f"ix_requests_{column}", "requests", [column])


def downgrade() -> None:
    """Drop `requests` and every row in it."""
    op.drop_table("requests")
