"""Push feed: the names of the fields a push sent that seed 001 does not list.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

The feed service accepts a push with unknown fields, stores its known fields as before and keeps
the unknown fields' paths (as the sender wrote them; never their values) in the new nullable
``feed_inbox.ignored_fields`` column -- a compact JSON list, NULL when there were none, so every
row stored before this revision reads as "none ignored". A sync counts them in the extract
manifest. Adding a nullable column is in place on both backends; SQLite >= 3.35 drops it in
place on downgrade (no index or constraint names it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feed_inbox", sa.Column("ignored_fields", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("feed_inbox", "ignored_fields")
