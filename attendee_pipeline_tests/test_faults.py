"""The fault matrix: syncs that are killed, cut off from their database, raced by another sync of
their event or fed bad records end with the platform database equal (by content) to a clean sync
of the provider's current data, nothing duplicated, no run left holding its slot, and no attendee
e-mail address or name in any output.

Real processes throughout, on the production shape (``deployment``: the Dagster instance and the
platform database on PostgreSQL, ``dagster-daemon`` with the repository's ``dagster.yaml``): each
sync is ``attendee-pipeline sync EVENT --in-process`` in its own process group, killed with
SIGKILL or frozen with SIGSTOP at the point under test. Where a point is hard to hit by timing,
PostgreSQL holds the sync there for real: a per-row trigger that sleeps makes a COPY slow enough
to cut off mid-way, and a row lock on the Dagster instance's ``asset_keys`` row of
``published_attendees`` holds a run right after its publish committed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig
from attendee_pipeline.sync.model import CONTENT_COLUMNS
from attendee_pipeline_tests.conftest import _create_pg_database, _drop_pg_database
from attendee_pipeline_tests.deployment import Deployment, wait_until
from attendee_pipeline_tests.email_fixtures import TEMPLATES
from attendee_pipeline_tests.pipeline_harness import query_db

BIN = Path(sys.executable).parent
PAGED = {"pagination": {"style": "page", "page_param": "page", "size_param": "per_page", "size": 500}}
#: An attendee the provider no longer lists is removed: the list then equals the provider's.
MIRROR = {"apply": {"missing": "remove"}}

#: Everything the syncs of this module printed (stdout + stderr), for the personal-data scan.
OUTPUTS: list[str] = []


# --------------------------------------------------------------------------- helpers


def start_sync(deployment: Deployment, event_id: str, db_url: str | None = None) -> subprocess.Popen:
    """``attendee-pipeline sync EVENT --in-process`` in its own process group."""
    env = dict(deployment.env)
    if db_url:
        env["ATTENDEE_PIPELINE_DB_URL"] = db_url
    return subprocess.Popen(
        [str(BIN / "attendee-pipeline"), "sync", event_id, "--in-process"],
        cwd=deployment.tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    OUTPUTS.append(out + err)
    return proc.returncode, out + err


def kill(deployment: Deployment, proc: subprocess.Popen) -> str:
    """SIGKILL the sync's process group; the id of its run (the process recorded itself)."""
    assert proc.poll() is None, "the sync ended before the fault point"
    os.killpg(proc.pid, signal.SIGKILL)
    finish(proc)
    (run,) = deployment.ui.runs(tags={"attendee_pipeline/worker_pid": str(proc.pid)})
    return run["runId"]


def sync(deployment: Deployment, event_id: str, db_url: str | None = None) -> str:
    code, output = finish(start_sync(deployment, event_id, db_url))
    assert code == 0, output[-3000:]
    return output


def execute(db_url: str, *statements: str) -> None:
    engine = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def content(db_url: str, event_id: str) -> set[tuple[Any, ...]]:
    """The event's active attendees by content, each with its sorted group names."""
    columns = ", ".join(f"a.{c}" for c in ("attendee_key", *CONTENT_COLUMNS) if c != "groups")
    rows = query_db(db_url, f"""
        select {columns},
               coalesce((select string_agg(g.name, '|' order by g.name) from memberships m
                         join groups g on g.id = m.group_id where m.attendee_id = a.id), '')
        from attendees a where a.event_id = :e and a.status = 'active'""", e=event_id)
    return {tuple(row) for row in rows}


def clean_sync_content(deployment: Deployment, event_id: str) -> set[tuple[Any, ...]]:
    """What a clean sync of the provider's current data publishes: a sync into a new database."""
    name, url = _create_pg_database("ap_clean")
    try:
        sync(deployment, event_id, db_url=url)
        return content(url, event_id)
    finally:
        _drop_pg_database(name)


def assert_converged(deployment: Deployment, event_id: str) -> None:
    assert content(deployment.db_url, event_id) == clean_sync_content(deployment, event_id)
    duplicated = deployment.query(
        "select attendee_key from attendees where event_id = :e group by attendee_key having count(*) > 1",
        e=event_id,
    )
    assert duplicated == []
    reinvited = deployment.query(
        "select attendee_id from email_outbox where event_id = :e and kind = 'invite' "
        "group by attendee_id having count(*) > 1",
        e=event_id,
    )
    assert reinvited == []


def slow_writes(db_url: str, event_id: str, seconds_per_row: float) -> None:
    """A trigger that sleeps for each attendee row of ``event_id`` written: a publish's COPY and
    UPDATEs of that event take long enough to cut off half-way."""
    execute(
        db_url,
        f"""create or replace function fault_slow_row() returns trigger language plpgsql as $$
            begin if new.event_id = '{event_id}' then perform pg_sleep({seconds_per_row}); end if;
            return new; end $$""",
        "drop trigger if exists fault_slow on attendees",
        "create trigger fault_slow before insert or update on attendees for each row execute function fault_slow_row()",
    )


def fast_writes(db_url: str) -> None:
    execute(db_url, "drop trigger if exists fault_slow on attendees")


def writing_backend(db_url: str) -> int | None:
    """The pid of a backend that is writing attendee rows (COPY, INSERT or UPDATE)."""
    rows = query_db(
        db_url,
        "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() "
        "and state = 'active' and query ~* '^\\s*(copy|insert into|update) attendees'",
    )
    return rows[0][0] if rows else None


def run_ids(deployment: Deployment, event_id: str) -> list[str]:
    return [r["runId"] for r in deployment.ui.runs(tags={"dagster/partition": event_id})]


def change_provider(deployment: Deployment, event_id: str, round_: int) -> None:
    """Change, remove and add records at the provider."""
    dataset = deployment.sandbox.dataset(event_id)
    dataset.modify("company", fraction=0.1)
    dataset.remove(range(round_ * 7, dataset.size, 97))
    dataset.add_records(25)


# --------------------------------------------------------------------------- the matrix


def test_sigkill_at_fetch_publish_and_after_commit_loses_and_duplicates_nothing(deployment: Deployment):
    event = deployment.rest_event("kill", SandboxConfig(records=3000, seed=11, pagination="page", page_size=500),
                                  source=PAGED, sync=MIRROR, settings={"send_invites": True},
                                  email_templates={"invite": TEMPLATES["invite"]})
    sync(deployment, event)

    # 1. during the fetch: the provider answers slowly; the extract is half written
    change_provider(deployment, event, 1)
    deployment.sandbox.dataset(event).slow(2)
    proc = start_sync(deployment, event)
    raw = deployment.tmp / "data" / "raw" / event
    wait_until(lambda: any(p.name.startswith(".") and any(p.glob("page-*.json")) for p in raw.iterdir()),
               "a page of the extract", 60, deployment.log_tails)
    killed = [kill(deployment, proc)]
    deployment.sandbox.dataset(event).reset_faults()

    # 2. during the publish: its attendee rows are being written when the process dies
    change_provider(deployment, event, 2)
    slow_writes(deployment.db_url, event, 0.01)
    try:
        proc = start_sync(deployment, event)
        wait_until(lambda: writing_backend(deployment.db_url), "the publish to write rows", 90, deployment.log_tails)
        killed.append(kill(deployment, proc))
    finally:
        fast_writes(deployment.db_url)

    # 3. just after the publish committed: the run is held writing the result of the check it
    #    evaluates after the publish (its planned row, locked, waits for this test)
    change_provider(deployment, event, 3)
    deployment.sandbox.dataset(event).slow(0.3)  # time to take the lock before the publish
    known = run_ids(deployment, event)
    before = {r[0] for r in deployment.query("select id from sync_ledger where event_id = :e", e=event)}
    lock = sa.create_engine(_dagster_db_url(deployment)).connect()
    try:
        proc = start_sync(deployment, event)

        def locked() -> bool:
            rows = lock.execute(
                sa.text("select run_id from asset_check_executions where check_name = 'procurios_catalog_settings' "
                        "and not (run_id = any(:known)) for update"),
                {"known": known},
            ).all()
            return bool(rows)

        wait_until(locked, "the run's planned check", 60, deployment.log_tails, interval=0.05)

        def committed() -> bool:
            rows = deployment.query("select id, status from sync_ledger where event_id = :e", e=event)
            return any(i not in before and s == "published" for i, s in rows)

        wait_until(committed, "the publish to commit", 90, deployment.log_tails)
        time.sleep(0.5)
        killed.append(kill(deployment, proc))
    finally:
        lock.rollback()
        lock.close()
    deployment.sandbox.dataset(event).reset_faults()

    last_kill = time.monotonic()

    sync(deployment, event)
    assert_converged(deployment, event)
    # the daemon's run monitoring fails each killed run (its process is gone) within a minute of
    # the kill, so none holds the event's one run slot
    wait_until(lambda: all(deployment.ui.run(r)["status"] == "FAILURE" for r in killed),
               "the killed runs to be failed", max(1.0, 60 - (time.monotonic() - last_kill)),
               deployment.log_tails, interval=1)


def _dagster_db_url(deployment: Deployment) -> str:
    env = deployment.env
    return (f"postgresql+psycopg2://{env['DAGSTER_PG_USERNAME']}:{env['DAGSTER_PG_PASSWORD']}"
            f"@{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}/{env['DAGSTER_PG_DB']}")


def test_backend_terminated_mid_copy_is_told_by_cause_and_table_then_retried(deployment: Deployment):
    event = deployment.rest_event("cut", SandboxConfig(records=1500, seed=12, pagination="page", page_size=500),
                                  source=PAGED, sync=MIRROR)
    slow_writes(deployment.db_url, event, 0.01)
    try:
        proc = start_sync(deployment, event)
        pid = wait_until(lambda: writing_backend(deployment.db_url), "the COPY", 90, deployment.log_tails)
        time.sleep(0.5)  # some rows into the COPY
        execute(deployment.db_url, f"select pg_terminate_backend({pid})")
    finally:
        fast_writes(deployment.db_url)
    code, output = finish(proc)
    assert code == 0, output[-3000:]  # the step's retry synced the event
    (run_id,) = run_ids(deployment, event)
    errors = [e for e in _step_errors(deployment, run_id)]
    assert errors, "the cut-off attempt reported no error"
    assert any(
        "platform database error while writing table attendees: the database server terminated the connection" in e
        for e in errors
    ), errors
    assert_converged(deployment, event)


def _step_errors(deployment: Deployment, run_id: str) -> list[str]:
    """The error messages (with their causes) of the run's failed step attempts."""
    rows = query_db(
        _dagster_db_url(deployment),
        "select event from event_logs where run_id = :r and dagster_event_type in ('STEP_FAILURE', 'STEP_UP_FOR_RETRY')",
        r=run_id,
    )
    return [row[0] for row in rows]


def test_an_older_read_never_overwrites_a_newer_one(deployment: Deployment):
    """Run B starts, the provider changes, run A starts later and finishes first: B's older read
    is not applied (ledger ``superseded``), and each ledger row names its own run's extract."""
    event = deployment.rest_event("race", SandboxConfig(records=1000, seed=13, pagination="page", page_size=250),
                                  source=PAGED, sync=MIRROR)
    sync(deployment, event)
    dataset = deployment.sandbox.dataset(event)
    dataset.slow(0.5)
    raw = deployment.tmp / "data" / "raw" / event
    b = start_sync(deployment, event)
    try:
        wait_until(lambda: any(p.name.startswith(".") and any(p.glob("page-*.json")) for p in raw.iterdir()),
                   "run B's first page", 60, deployment.log_tails, interval=0.05)
        os.killpg(b.pid, signal.SIGSTOP)  # B has read part of the old data
        change_provider(deployment, event, 1)
        sync(deployment, event)  # run A: reads the new data, publishes first
    finally:
        os.killpg(b.pid, signal.SIGCONT)
    code, output = finish(b)
    assert code == 0, output[-3000:]
    assert re.search(r"^race\s+superseded\b", output, re.MULTILINE), output[-3000:]
    dataset.reset_faults()
    ledger = deployment.query(
        "select run_id, status, raw_extract_path, message from sync_ledger where event_id = :e order by id", e=event
    )
    assert [row.status for row in ledger][-2:] == ["published", "superseded"], ledger
    assert "not published" in ledger[-1].message
    for row in ledger:  # each row names its own run's extract (folder <stamp>-<run id prefix>)
        assert Path(row.raw_extract_path).name.endswith(row.run_id[:8]), row
    assert_converged(deployment, event)


def test_bad_records_are_quarantined_and_never_block_the_event(deployment: Deployment):
    """Half a surrogate pair, a NUL, one address in NFC and NFD, one group in three spellings:
    the event publishes its valid records, quarantines the others with their field, and its
    next sync publishes too."""
    event = deployment.rest_event("bad", SandboxConfig(records=40, seed=14), sync=MIRROR)
    dataset = deployment.sandbox.dataset(event)
    dataset.set_field([3], "first_name", "A\ud800B")
    dataset.set_field([5], "company", "Nul\x00Corp")
    dataset.set_field([8], "email", unicodedata.normalize("NFC", "josé.fault@example.org"))
    dataset.set_field([9], "email", unicodedata.normalize("NFD", "josé.fault@example.org"))
    for i, spelling in ((10, "Press"), (11, "press"), (12, "PRESS")):
        dataset.set_field([i], "groups", [spelling])
    sync(deployment, event)
    rejected = deployment.query(
        "select distinct source_row, field from rejected_records where event_id = :e order by 1", e=event
    )
    assert [(r.source_row, r.field) for r in rejected][:2] == [(3, "first_name"), (5, "company")]
    assert len(deployment.query(
        "select 1 from attendees where event_id = :e and attendee_key = :k", e=event, k="josé.fault@example.org"
    )) == 1
    press = deployment.query(
        "select distinct m.group_id from memberships m join attendees a on a.id = m.attendee_id "
        "where a.event_id = :e and lower(a.groups) like '%press%' and a.groups not like '%,%'", e=event
    )
    assert len(press) == 1
    dataset.modify("company", indices=[20])
    sync(deployment, event)
    assert_converged(deployment, event)


# --------------------------------------------------------------------------- the scan


def _personal_data(deployment: Deployment) -> set[str]:
    """Every e-mail address and full name the module's provider data held."""
    found: set[str] = set()
    for slug in deployment.sandbox.slugs:
        for record in deployment.sandbox.dataset(slug).iter_records():
            if isinstance(record.get("email"), str):
                found.add(record["email"].lower())
            first, last = record.get("firstName"), record.get("lastName")
            if isinstance(first, str) and isinstance(last, str):
                found.add(f"{first} {last}".lower())
    return found


def _outputs(deployment: Deployment) -> Iterator[tuple[str, str]]:
    """(where, text) of every output: CLI output, the processes' logs, Dagster's event log and
    compute logs, and the raw extracts' manifests."""
    for i, text in enumerate(OUTPUTS):
        yield f"sync output {i}", text
    for name, path in deployment.logs.items():
        yield f"{name} log", path.read_text(encoding="utf-8", errors="replace")
    for row in query_db(_dagster_db_url(deployment), "select run_id, event from event_logs"):
        yield f"event log of run {row[0]}", row[1]
    home = Path(deployment.env["DAGSTER_HOME"])
    for path in home.rglob("*"):
        if path.is_file() and path.suffix in (".out", ".err", ".log", ".txt", ".complete", ""):
            yield str(path), path.read_text(encoding="utf-8", errors="replace")
    for path in (deployment.tmp / "data" / "raw").rglob("manifest.json"):
        yield str(path), path.read_text(encoding="utf-8")


def _leaks(text: str, personal: set[str]) -> Iterator[str]:
    """The e-mail addresses and full names of ``personal`` that ``text`` holds."""
    lowered = text.lower()
    for address in re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", lowered):
        if address in personal:
            yield address
    words = re.findall(r"[^\W\d_]+", lowered)
    for n in (2, 3):  # "ada smit", "ada van dijk"
        for i in range(len(words) - n + 1):
            name = " ".join(words[i:i + n])
            if name in personal:
                yield name


def test_no_attendee_address_or_name_in_any_output(deployment: Deployment):
    """Runs last in the module: scans what the syncs above printed, logged and stored."""
    assert OUTPUTS, "run with the module's other tests"
    personal = _personal_data(deployment)
    leaks = [f"{where}: {found}" for where, text in _outputs(deployment) for found in _leaks(text, personal)]
    assert leaks == []
