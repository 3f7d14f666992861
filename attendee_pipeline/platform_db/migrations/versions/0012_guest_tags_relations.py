"""Guest tags and relations: two nullable text columns on ``attendees``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

``tags`` and ``relations`` hold a guest's tags and its links to other guests of the event
(a companion, a plus-one) as canonical JSON (see ``attendee_pipeline.sync.model``), for the
sources that have them (the zkipster Events source). Existing rows keep NULL: their row hashes
do not change (an optional content column is hashed only where it holds a value).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attendees", sa.Column("tags", sa.Text, nullable=True))
    op.add_column("attendees", sa.Column("relations", sa.Text, nullable=True))


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite 3.35+): a batch copy of ``attendees`` would break the views on it
    op.drop_column("attendees", "relations")
    op.drop_column("attendees", "tags")
