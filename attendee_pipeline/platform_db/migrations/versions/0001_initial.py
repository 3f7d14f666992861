"""Initial platform schema: events, attendees, groups, memberships, sync ledger, rejected records.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Written by hand to match ``attendee_pipeline.platform_db.tables`` exactly (constraint names follow
its naming convention); ``test_platform_db`` checks that migrating an empty database leaves no
difference to the metadata. The profile columns are listed explicitly (not derived from
``PROFILE_FIELDS``) so that this revision never changes when the model does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PROFILE_COLUMNS = (
    "email",
    "first_name",
    "name_infix",
    "last_name",
    "titles",
    "job_title",
    "department",
    "company",
    "phone",
    "mobile_phone",
    "website",
    "facebook",
    "twitter",
    "linkedin",
    "instagram",
    "city",
    "state",
    "country",
    "assistant_name",
    "assistant_phone",
    "assistant_email",
    "motto",
    "biography",
    "third_party_id",
    "badge_url",
)


def _ts(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        _ts("starts_at", True),
        _ts("ends_at", True),
        sa.Column("source_kind", sa.Text, nullable=True),
        sa.Column("in_catalog", sa.Boolean, nullable=False),
        _ts("created_at", False),
        _ts("updated_at", False),
        _ts("removed_from_catalog_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_table(
        "attendees",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("attendee_key", sa.Text, nullable=False),
        *(sa.Column(name, sa.Text, nullable=True) for name in PROFILE_COLUMNS),
        sa.Column("custom_fields", sa.Text, nullable=True),
        sa.Column("groups", sa.Text, nullable=True),
        sa.Column("source_record_id", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("row_hash", sa.BigInteger, nullable=False),
        _ts("first_seen_at", False),
        _ts("last_changed_at", False),
        _ts("removed_at", True),
        sa.Column("last_run_id", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_attendees"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_attendees_event_id_events"),
        sa.UniqueConstraint("event_id", "attendee_key", name="uq_attendees_event_id_attendee_key"),
        sa.CheckConstraint("status IN ('active', 'removed')", name="ck_attendees_status"),
    )
    op.create_index("ix_attendees_event_id_status", "attendees", ["event_id", "status"])
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("id", name="pk_groups"),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    op.create_table(
        "memberships",
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("attendee_id", sa.Integer, nullable=False),
        sa.Column("group_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("attendee_id", "group_id", name="pk_memberships"),
        sa.ForeignKeyConstraint(
            ["attendee_id"], ["attendees.id"], name="fk_memberships_attendee_id_attendees"
        ),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name="fk_memberships_group_id_groups"),
    )
    op.create_index("ix_memberships_event_id", "memberships", ["event_id"])
    op.create_index("ix_memberships_group_id", "memberships", ["group_id"])
    op.create_table(
        "sync_ledger",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=True),
        sa.Column("source_kind", sa.Text, nullable=True),
        _ts("started_at", True),
        _ts("finished_at", False),
        *(
            sa.Column(name, sa.Integer, nullable=False)
            for name in ("added", "restored", "updated", "removed", "unchanged", "rejected", "skipped")
        ),
        sa.Column("raw_extract_path", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("input_fingerprint", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_ledger"),
        sa.CheckConstraint(
            "status IN ('published', 'held', 'dry_run', 'unchanged')", name="ck_sync_ledger_status"
        ),
    )
    op.create_index("ix_sync_ledger_event_id", "sync_ledger", ["event_id"])
    op.create_table(
        "rejected_records",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("source_row", sa.Integer, nullable=True),
        sa.Column("source_record_id", sa.Text, nullable=True),
        sa.Column("field", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw_record", sa.Text, nullable=True),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_records"),
    )
    op.create_index("ix_rejected_records_event_id_run_id", "rejected_records", ["event_id", "run_id"])


def downgrade() -> None:
    op.drop_table("rejected_records")
    op.drop_table("sync_ledger")
    op.drop_table("memberships")
    op.drop_table("groups")
    op.drop_table("attendees")
    op.drop_table("events")
