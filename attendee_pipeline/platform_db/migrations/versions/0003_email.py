"""E-mail: the outbox of invite / cancellation e-mails, attendee invite statuses, and the SQL
views of statuses and segments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-03

Written by hand to match ``attendee_pipeline.platform_db.tables`` exactly (constraint names follow
its naming convention); ``test_platform_db`` checks that migrating an empty database leaves no
difference to the metadata. The views are plain SQL that SQLite and PostgreSQL both read; they
are not part of the metadata (``attendee_pipeline.platform_db.segments`` reads them):

* ``attendee_invite_statuses`` -- every active attendee with the three status timestamps and one
  ``invite_status`` label (not_invited / invited_no_account / account_not_accessed / accessed);
* ``attendees_not_invited``, ``attendees_invited_no_account``, ``attendees_account_not_accessed``
  -- the three filters organisers use (seed 000);
* ``event_access_list`` -- who may access an event: its attendees that are on the list and not
  removed;
* ``event_group_members`` -- the same people per group of the event (groups are shared between
  events, memberships are per event): a page restricted to groups X, Y is open to the members of
  X or Y, a message to groups X / country C goes to the members of X or the attendees from C.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


_PEOPLE = (
    "a.id AS attendee_id, a.event_id, a.attendee_key, a.email, a.first_name, a.name_infix, "
    "a.last_name, a.company, a.country"
)

_STATUS_COLUMNS = "s.invite_sent_at, s.account_created_at, s.first_accessed_at"

_ACTIVE_WITH_STATUS = (
    "FROM attendees a LEFT JOIN attendee_statuses s ON s.attendee_id = a.id WHERE a.status = 'active'"
)

VIEWS: dict[str, str] = {
    "attendee_invite_statuses": f"""
        SELECT {_PEOPLE}, {_STATUS_COLUMNS},
               CASE WHEN s.first_accessed_at IS NOT NULL THEN 'accessed'
                    WHEN s.account_created_at IS NOT NULL THEN 'account_not_accessed'
                    WHEN s.invite_sent_at IS NOT NULL THEN 'invited_no_account'
                    ELSE 'not_invited' END AS invite_status
        {_ACTIVE_WITH_STATUS}""",
    "attendees_not_invited": f"""
        SELECT {_PEOPLE}, {_STATUS_COLUMNS}
        {_ACTIVE_WITH_STATUS} AND s.invite_sent_at IS NULL""",
    "attendees_invited_no_account": f"""
        SELECT {_PEOPLE}, {_STATUS_COLUMNS}
        {_ACTIVE_WITH_STATUS} AND s.invite_sent_at IS NOT NULL AND s.account_created_at IS NULL""",
    "attendees_account_not_accessed": f"""
        SELECT {_PEOPLE}, {_STATUS_COLUMNS}
        {_ACTIVE_WITH_STATUS} AND s.account_created_at IS NOT NULL AND s.first_accessed_at IS NULL""",
    "event_access_list": f"""
        SELECT {_PEOPLE}
        FROM attendees a WHERE a.status = 'active'""",
    "event_group_members": f"""
        SELECT g.id AS group_id, g.name AS group_name, {_PEOPLE}
        FROM memberships m
        JOIN groups g ON g.id = m.group_id
        JOIN attendees a ON a.id = m.attendee_id
        WHERE a.status = 'active'""",
}


def upgrade() -> None:
    op.create_table(
        "email_outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("attendee_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=True),
        _ts("created_at", False),
        sa.Column("attempts", sa.Integer, nullable=False),
        _ts("next_attempt_at", False),
        _ts("last_attempt_at", True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("claim_token", sa.Text, nullable=True),
        _ts("claimed_at", True),
        _ts("sent_at", True),
        sa.Column("message_id", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_email_outbox"),
        sa.UniqueConstraint(
            "event_id", "attendee_id", "kind", name="uq_email_outbox_event_id_attendee_id_kind"
        ),
        sa.CheckConstraint("kind IN ('invite', 'cancellation')", name="ck_email_outbox_kind"),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name="ck_email_outbox_status"
        ),
    )
    op.create_index(
        "ix_email_outbox_pending",
        "email_outbox",
        ["id"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "attendee_statuses",
        sa.Column("attendee_id", sa.Integer, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("link_token", sa.Text, nullable=False),
        _ts("invite_sent_at", True),
        _ts("account_created_at", True),
        _ts("first_accessed_at", True),
        _ts("updated_at", False),
        sa.ForeignKeyConstraint(
            ["attendee_id"], ["attendees.id"], name="fk_attendee_statuses_attendee_id_attendees"
        ),
        sa.PrimaryKeyConstraint("attendee_id", name="pk_attendee_statuses"),
        sa.UniqueConstraint("link_token", name="uq_attendee_statuses_link_token"),
    )
    op.create_index("ix_attendee_statuses_event_id", "attendee_statuses", ["event_id"])
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select.strip()}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_index("ix_attendee_statuses_event_id", table_name="attendee_statuses")
    op.drop_table("attendee_statuses")
    op.drop_index("ix_email_outbox_pending", table_name="email_outbox")
    op.drop_table("email_outbox")
