"""Push feed: API keys per event, the inbox of accepted records, a source position on the ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02

Written by hand to match ``attendee_pipeline.platform_db.tables`` exactly (constraint names follow
its naming convention); ``test_platform_db`` checks that migrating an empty database leaves no
difference to the metadata. ``feed_inbox.id`` is BIGINT (BIGSERIAL) on PostgreSQL and INTEGER on
SQLite, where only an ``INTEGER PRIMARY KEY`` autoincrements (it is 64-bit there anyway).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "feed_keys",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("key_hash", sa.Text, nullable=False),
        _ts("created_at", False),
        _ts("revoked_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_feed_keys"),
        sa.UniqueConstraint("key_id", name="uq_feed_keys_key_id"),
    )
    op.create_index("ix_feed_keys_event_id", "feed_keys", ["event_id"])
    op.create_table(
        "feed_inbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("event_id", sa.Text, nullable=False),
        _ts("received_at", False),
        sa.Column("record", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feed_inbox"),
    )
    op.create_index("ix_feed_inbox_event_id_id", "feed_inbox", ["event_id", "id"])
    op.add_column("sync_ledger", sa.Column("source_position", sa.Text, nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place (the ledger's CHECK does not name it)
    op.drop_column("sync_ledger", "source_position")
    op.drop_index("ix_feed_inbox_event_id_id", table_name="feed_inbox")
    op.drop_table("feed_inbox")
    op.drop_index("ix_feed_keys_event_id", table_name="feed_keys")
    op.drop_table("feed_keys")
