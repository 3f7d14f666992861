"""Name the CHECK constraints as ``attendee_pipeline.platform_db.tables`` does.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Revisions 0001, 0003 and 0004 gave their CHECK constraints names that already followed the
naming convention (``ck_attendees_status``), and alembic applied the convention to them again:
the databases have ``ck_attendees_ck_attendees_status``, so a migration that drops or alters a
constraint by its declared name finds nothing. This revision renames them; the constraints
themselves do not change. PostgreSQL renames in place; SQLite cannot rename a constraint, so its
table definitions in ``sqlite_master`` are edited as SQLite documents for changes that leave the
stored rows as they are (``writable_schema``, then a new ``schema_version``): no table is
copied, and the foreign keys and views that refer to these tables are not touched.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: table -> its CHECK constraints, by the name tables.py gives (before the naming convention)
CHECKS = {
    "attendees": ("status",),
    "sync_ledger": ("status",),
    "email_outbox": ("kind", "status"),
    "sessions": ("status",),
    "check_ins": ("kind", "writeback"),
}


def _rename(pairs: list[tuple[str, str, str]]) -> None:
    """(table, old name, new name) of each CHECK constraint."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        for table, old, new in pairs:
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        for table, old, new in pairs:
            bind.exec_driver_sql(
                "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = ?",
                (f"CONSTRAINT {old} CHECK", f"CONSTRAINT {new} CHECK", table),
            )
        bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")


def upgrade() -> None:
    _rename([(t, f"ck_{t}_ck_{t}_{c}", f"ck_{t}_{c}") for t, checks in CHECKS.items() for c in checks])


def downgrade() -> None:
    _rename([(t, f"ck_{t}_{c}", f"ck_{t}_ck_{t}_{c}") for t, checks in CHECKS.items() for c in checks])
