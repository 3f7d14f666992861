"""The floor: the least work any sync of the dataset has to do, measured in the same run.

(a) fetch every page with a plain ``requests.Session`` and ``resp.json()``; (b) write one row per
record (event id, row number, the record's JSON text) into ``bench_raw_rows`` in the platform
database with one SQLAlchemy Core ``conn.execute(table.insert(), rows)`` in one transaction,
through the project's own engine factory (same SQLite pragmas / PostgreSQL executemany mode).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests
import sqlalchemy as sa

from attendee_pipeline.platform_db.engine import make_engine

bench_metadata = sa.MetaData()

bench_raw_rows = sa.Table(
    "bench_raw_rows",
    bench_metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("row_number", sa.Integer, primary_key=True),
    sa.Column("record", sa.Text, nullable=False),
)


@dataclass
class Floor:
    fetch_seconds: float
    write_seconds: float
    serialize_seconds: float  # part of write_seconds: json.dumps + building the row dicts
    records: int
    pages: int
    bytes_received: int

    @property
    def seconds(self) -> float:
        return self.fetch_seconds + self.write_seconds


def fetch_all(url: str, page_size: int, timeout: float = 120.0) -> tuple[list[Any], int, int, float]:
    """Every record of a page-number paginated list: (records, pages, bytes, seconds)."""
    records: list[Any] = []
    pages = received = 0
    started = time.perf_counter()
    with requests.Session() as http:
        page = 1
        while True:
            resp = http.get(url, params={"page": page, "per_page": page_size}, timeout=timeout)
            resp.raise_for_status()
            body = resp.json()
            received += len(resp.content)
            pages += 1
            records.extend(body)
            if len(body) < page_size:  # empty or short page: the end
                break
            page += 1
    return records, pages, received, time.perf_counter() - started


def write_raw_rows(db_url: str, event_id: str, records: list[Any]) -> tuple[float, float]:
    """Bulk-insert the raw rows in one transaction: (seconds, of which serialising)."""
    engine = make_engine(db_url)
    try:
        bench_metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(bench_raw_rows.delete().where(bench_raw_rows.c.event_id == event_id))
        started = time.perf_counter()
        rows = [
            {"event_id": event_id, "row_number": n, "record": json.dumps(rec, ensure_ascii=False)}
            for n, rec in enumerate(records)
        ]
        serialized = time.perf_counter() - started
        with engine.begin() as conn:
            conn.execute(bench_raw_rows.insert(), rows)
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return seconds, serialized


def measure_floor(db_url: str, url: str, event_id: str, page_size: int) -> Floor:
    records, pages, received, fetch_seconds = fetch_all(url, page_size)
    write_seconds, serialize_seconds = write_raw_rows(db_url, event_id, records)
    return Floor(fetch_seconds, write_seconds, serialize_seconds, len(records), pages, received)
