"""The platform database this project owns: what is published for each event.

``tables`` declares the schema (SQLAlchemy Core ``MetaData``; the alembic migrations in
``migrations/`` create exactly these tables), ``engine`` makes engines for SQLite (the embedded
default: WAL, foreign keys, busy timeout) and PostgreSQL (production) and runs the migrations,
and ``publish`` writes a sync's change set, the rejected records and the sync ledger in one
transaction per publish and reads back what is published. No Dagster imports here.
"""
