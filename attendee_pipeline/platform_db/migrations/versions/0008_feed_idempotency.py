"""Push feed: answers to pushes sent with an ``Idempotency-Key`` header.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

The feed service answers a repeated push (same ``Idempotency-Key``, same event and route) with
its first answer instead of storing the attendee again; the new ``feed_idempotency`` table keeps
those answers for the retention time (see ``attendee_pipeline.platform_db.feed``). A new table:
nothing existing changes, and the downgrade drops it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_idempotency",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feed_idempotency"),
        sa.UniqueConstraint(
            "event_id", "route", "idempotency_key", name="uq_feed_idempotency_event_id_route_idempotency_key"
        ),
    )
    op.create_index("ix_feed_idempotency_event_id_created_at", "feed_idempotency", ["event_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_feed_idempotency_event_id_created_at", table_name="feed_idempotency")
    op.drop_table("feed_idempotency")
