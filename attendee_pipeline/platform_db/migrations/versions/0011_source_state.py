"""Source state: read positions per (connection, stream, event), carried over from the ledger.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Creates ``source_state`` as ``attendee_pipeline.platform_db.tables`` defines it and fills it
with every event's current read position: the ``source_position`` of its latest ``published``
ledger row (what ``last_published_position`` read before), under the connection id of an inline
source (``event:<event id>``) and the stream ``attendees``. The ledger keeps its column as the
history of each publish's position.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_state",
        sa.Column("connection_id", sa.Text, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("position", sa.Text, nullable=True),
        sa.Column("ledger_id", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connection_id", "stream", "event_id", name="pk_source_state"),
    )
    op.create_index("ix_source_state_event_id", "source_state", ["event_id"])
    # each event's latest published ledger row (ids grow with time)
    op.execute(
        """
        INSERT INTO source_state (connection_id, stream, event_id, position, ledger_id, updated_at)
        SELECT 'event:' || l.event_id, 'attendees', l.event_id, l.source_position, l.id, l.finished_at
        FROM sync_ledger l
        WHERE l.id IN (
            SELECT MAX(id) FROM sync_ledger WHERE status = 'published' GROUP BY event_id
        )
        """
    )


def downgrade() -> None:
    op.drop_index("ix_source_state_event_id", table_name="source_state")
    op.drop_table("source_state")
