"""Sync ledger: the ``superseded`` status.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A sync whose extract began before the extract of the event's last publish is not applied (it
would overwrite newer data with older); its ledger row says ``superseded``. This revision lets the
status column's CHECK constraint accept the new value. PostgreSQL replaces the constraint;
SQLite's table definition in ``sqlite_master`` is edited as SQLite documents for changes that
leave the stored rows valid (``writable_schema``, then a new ``schema_version``), as revision
0005 does: no table is copied.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD = "status IN ('published', 'held', 'dry_run', 'unchanged')"
NEW = "status IN ('published', 'held', 'dry_run', 'unchanged', 'superseded')"


def _replace(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.execute("ALTER TABLE sync_ledger DROP CONSTRAINT ck_sync_ledger_status")
        op.execute(f"ALTER TABLE sync_ledger ADD CONSTRAINT ck_sync_ledger_status CHECK ({new})")
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = 'sync_ledger'",
            (old, new),
        )
        bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")


def upgrade() -> None:
    _replace(OLD, NEW)


def downgrade() -> None:
    op.execute("DELETE FROM sync_ledger WHERE status = 'superseded'")
    _replace(NEW, OLD)
