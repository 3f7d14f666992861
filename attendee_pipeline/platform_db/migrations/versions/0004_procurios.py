"""Procurios (seed 002): sessions, personal schedules, hidden tags, check-ins with write-back state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Written by hand to match ``attendee_pipeline.platform_db.tables`` exactly (constraint names follow
its naming convention); ``test_platform_db`` checks that migrating an empty database leaves no
difference to the metadata. (Revision 0003 is the e-mail outbox of another branch; when both are
merged this one is re-chained after it.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("source_kind", sa.Text, nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        _ts("starts_at", True),
        _ts("ends_at", True),
        sa.Column("room", sa.Text, nullable=True),
        sa.Column("track", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.CheckConstraint("status IN ('active', 'removed')", name="ck_sessions_status"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_sessions_event_id_events"),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint(
            "event_id", "source_kind", "external_id", name="uq_sessions_event_id_source_kind_external_id"
        ),
    )
    op.create_table(
        "personal_schedule",
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("attendee_id", sa.Integer, nullable=False),
        sa.Column("session_id", sa.Integer, nullable=False),
        _ts("created_at", False),
        sa.ForeignKeyConstraint(["attendee_id"], ["attendees.id"], name="fk_personal_schedule_attendee_id_attendees"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_personal_schedule_session_id_sessions"),
        sa.PrimaryKeyConstraint("attendee_id", "session_id", name="pk_personal_schedule"),
    )
    op.create_index("ix_personal_schedule_event_id", "personal_schedule", ["event_id"])
    op.create_index("ix_personal_schedule_session_id", "personal_schedule", ["session_id"])
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hidden", sa.Boolean, nullable=False),
        sa.Column("event_id", sa.Text, nullable=True),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("id", name="pk_tags"),
        sa.UniqueConstraint("event_id", name="uq_tags_event_id"),
    )
    op.create_table(
        "attendee_tags",
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("attendee_id", sa.Integer, nullable=False),
        sa.Column("tag_id", sa.Integer, nullable=False),
        _ts("created_at", False),
        sa.ForeignKeyConstraint(["attendee_id"], ["attendees.id"], name="fk_attendee_tags_attendee_id_attendees"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name="fk_attendee_tags_tag_id_tags"),
        sa.PrimaryKeyConstraint("attendee_id", "tag_id", name="pk_attendee_tags"),
    )
    op.create_index("ix_attendee_tags_event_id", "attendee_tags", ["event_id"])
    op.create_index("ix_attendee_tags_tag_id", "attendee_tags", ["tag_id"])
    op.create_table(
        "check_ins",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("attendee_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        _ts("checked_in_at", False),
        _ts("recorded_at", False),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("external_id", sa.Text, nullable=True),
        sa.Column("writeback", sa.Text, nullable=False),
        sa.Column("writeback_attempts", sa.Integer, nullable=False),
        sa.Column("writeback_detail", sa.Text, nullable=True),
        _ts("writeback_at", True),
        sa.Column("writeback_run_id", sa.Text, nullable=True),
        sa.CheckConstraint("kind IN ('on_site', 'online', 'hybrid')", name="ck_check_ins_kind"),
        sa.CheckConstraint(
            "writeback IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name="ck_check_ins_writeback"
        ),
        sa.ForeignKeyConstraint(["attendee_id"], ["attendees.id"], name="fk_check_ins_attendee_id_attendees"),
        sa.PrimaryKeyConstraint("id", name="pk_check_ins"),
        sa.UniqueConstraint("event_id", "external_id", name="uq_check_ins_event_id_external_id"),
    )
    op.create_index("ix_check_ins_event_id_writeback", "check_ins", ["event_id", "writeback"])
    op.create_index("ix_check_ins_attendee_id", "check_ins", ["attendee_id"])


def downgrade() -> None:
    op.drop_index("ix_check_ins_attendee_id", table_name="check_ins")
    op.drop_index("ix_check_ins_event_id_writeback", table_name="check_ins")
    op.drop_table("check_ins")
    op.drop_index("ix_attendee_tags_tag_id", table_name="attendee_tags")
    op.drop_index("ix_attendee_tags_event_id", table_name="attendee_tags")
    op.drop_table("attendee_tags")
    op.drop_table("tags")
    op.drop_index("ix_personal_schedule_session_id", table_name="personal_schedule")
    op.drop_index("ix_personal_schedule_event_id", table_name="personal_schedule")
    op.drop_table("personal_schedule")
    op.drop_table("sessions")
