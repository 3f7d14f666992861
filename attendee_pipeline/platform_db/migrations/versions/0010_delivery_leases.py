"""Outbound delivery: claims with a lease, an in-flight mark, scheduled retries; the generic state.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

One delivery mechanism serves every outbound destination (``attendee_pipeline.platform_db.delivery``).
The e-mail outbox gains ``lease_expires_at`` and ``in_flight_at`` (its ``claim_token`` is the
lease owner) and a partial index of its claimed rows; the check-ins gain
``writeback_lease_expires_at``, ``writeback_in_flight_at`` and ``writeback_next_attempt_at`` (the
write-back's ``writeback_run_id`` is the lease owner). New tables ``delivery_state`` and
``delivery_dependencies`` hold the state of destinations without a table of their own. Only
nullable columns and new tables are added: no table is copied.

Rows left claimed (``sending``) by the code before this revision carry over as claims whose lease
has run out and whose send may have begun (that code did not record it): the next delivery
settles them as an unknown outcome -- an e-mail is failed and never resent (as before), a
check-in write-back (an idempotent "present") is retried.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _ts(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    op.add_column("email_outbox", _ts("lease_expires_at"))
    op.add_column("email_outbox", _ts("in_flight_at"))
    op.create_index(
        "ix_email_outbox_sending",
        "email_outbox",
        ["lease_expires_at"],
        sqlite_where=sa.text("status = 'sending'"),
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.add_column("check_ins", _ts("writeback_lease_expires_at"))
    op.add_column("check_ins", _ts("writeback_in_flight_at"))
    op.add_column("check_ins", _ts("writeback_next_attempt_at"))
    # claims of the earlier code: their lease has run out, their send may have begun
    op.execute(
        "UPDATE email_outbox SET lease_expires_at = COALESCE(claimed_at, created_at), "
        "in_flight_at = COALESCE(claimed_at, created_at) WHERE status = 'sending'"
    )
    op.execute(
        "UPDATE check_ins SET writeback_lease_expires_at = recorded_at, writeback_in_flight_at = recorded_at "
        "WHERE writeback = 'sending'"
    )
    op.create_table(
        "delivery_state",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("external_id", sa.Text, nullable=True),
        sa.Column("wanted_hash", sa.Text, nullable=True),
        sa.Column("delivered_hash", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("tombstoned", sa.Boolean, nullable=False),
        sa.Column("lease_owner", sa.Text, nullable=True),
        _ts("lease_expires_at"),
        _ts("in_flight_at"),
        _ts("next_attempt_at"),
        _ts("last_attempt_at"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_state"),
        sa.UniqueConstraint("destination", "entity", "key", name="uq_delivery_state_destination_entity_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name=op.f("ck_delivery_state_status")
        ),
    )
    op.create_index("ix_delivery_state_destination_status", "delivery_state", ["destination", "status"])
    op.create_table(
        "delivery_dependencies",
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("on_entity", sa.Text, nullable=False),
        sa.Column("on_key", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("destination", "entity", "key", "on_entity", "on_key", name="pk_delivery_dependencies"),
    )


def downgrade() -> None:
    op.drop_table("delivery_dependencies")
    op.drop_index("ix_delivery_state_destination_status", table_name="delivery_state")
    op.drop_table("delivery_state")
    op.drop_index("ix_email_outbox_sending", table_name="email_outbox")
    with op.batch_alter_table("check_ins") as batch:
        batch.drop_column("writeback_next_attempt_at")
        batch.drop_column("writeback_in_flight_at")
        batch.drop_column("writeback_lease_expires_at")
    with op.batch_alter_table("email_outbox") as batch:
        batch.drop_column("in_flight_at")
        batch.drop_column("lease_expires_at")
