"""Audience: contacts, their custom field definitions, history per event and relationships.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Creates ``audience_contacts``, ``audience_fields``, ``audience_history`` and
``audience_relationships`` as ``attendee_pipeline.platform_db.tables`` defines them, and an
index on ``attendees (event_id, last_run_id)``: the live sync reads the rows a publish wrote.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from attendee_pipeline.sync.model import PROFILE_FIELDS

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audience_contacts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("audience_id", sa.Text, nullable=False),
        sa.Column("uid", sa.Text, nullable=True),
        sa.Column("uid_key", sa.Text, nullable=True),
        *(sa.Column(name, sa.Text, nullable=True) for name in PROFILE_FIELDS),
        sa.Column("custom_fields", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=True),
        sa.Column("content_hash", sa.BigInteger, nullable=False),
        sa.Column("created_from_event", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audience_contacts"),
        sa.UniqueConstraint("audience_id", "uid_key", name="uq_audience_contacts_audience_id_uid_key"),
    )
    op.create_table(
        "audience_fields",
        sa.Column("audience_id", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("created_from_event", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("audience_id", "label", name="pk_audience_fields"),
    )
    op.create_table(
        "audience_history",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("audience_id", sa.Text, nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("attendee_key", sa.Text, nullable=False),
        sa.Column("attendee_id", sa.Integer, nullable=True),
        sa.Column("source_record_id", sa.Text, nullable=True),
        sa.Column("guest_lists", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("source_hash", sa.BigInteger, nullable=True),
        sa.Column("first_seen_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("removed_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audience_history"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["audience_contacts.id"], name="fk_audience_history_contact_id_audience_contacts"
        ),
        sa.UniqueConstraint(
            "audience_id", "event_id", "attendee_key", name="uq_audience_history_audience_id_event_id_attendee_key"
        ),
        sa.CheckConstraint("status IN ('registered', 'checked_in', 'cancelled')", name="status"),
    )
    op.create_index("ix_audience_history_contact_id", "audience_history", ["contact_id"])
    op.create_table(
        "audience_relationships",
        sa.Column("audience_id", sa.Text, nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("related_contact_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "related_contact_id", "kind", name="pk_audience_relationships"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["audience_contacts.id"], name="fk_audience_relationships_contact_id_audience_contacts"
        ),
        sa.ForeignKeyConstraint(
            ["related_contact_id"],
            ["audience_contacts.id"],
            name="fk_audience_relationships_related_contact_id_audience_contacts",
        ),
    )
    op.create_index("ix_audience_relationships_related_contact_id", "audience_relationships", ["related_contact_id"])
    op.create_index("ix_attendees_event_id_last_run_id", "attendees", ["event_id", "last_run_id"])


def downgrade() -> None:
    op.drop_index("ix_attendees_event_id_last_run_id", "attendees")
    op.drop_table("audience_relationships")
    op.drop_table("audience_history")
    op.drop_table("audience_fields")
    op.drop_table("audience_contacts")
