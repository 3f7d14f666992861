"""``make bench``, the Audience (seed 003): the live sync of a big event's publishes into an
audience that already holds a million contacts, and the import of past events as one Dagster
backfill run by a real ``dagster-daemon``.

* **Live sync** (``audience.live.*`` on PostgreSQL, ``audience.live_sqlite.*`` on SQLite): an
  audience fed by one event of ``--audience-records`` (100,000) guests already holds
  ``--audience-contacts`` (1,000,000) contacts, seeded in bulk (PostgreSQL: one COPY, then
  VACUUM ANALYZE) before the clock starts. 10 % of the guests (every tenth) have a contact with
  their e-mail and an older company, so they match and update it; the other 90 % become new
  contacts, and the rest of the contacts are people the event does not know. The event's first
  publish (the real sync job, timed as the main syncs) is followed by the audience's live sync
  (the ``audience_contacts`` partition, materialised in this process); target: audience run /
  the event's own sync run <= 1.5 (their steps' ratio beside it). Then 1 % of the guests change
  (``company``): the re-sync's audience run writes a contact and a history row per changed
  guest; then a forced re-sync that changed nothing: its audience run writes no row (target 0).
* **Import** (``audience.import.*``): ``--audience-import-events`` (50) past events of
  ``--audience-import-records`` (20,000) guests, published first through the same sync job (their
  run times summed), then imported into a fresh audience as ONE asset backfill of
  ``audience_contacts`` over their partitions (``import_guests: true``, launched as
  ``attendee-pipeline audience import`` launches it) on a PostgreSQL Dagster instance with the
  repository's dagster.yaml (queued runs, its limits, the run launcher), executed by
  ``dagster-daemon run``, each run in its own process. Events come in pairs sharing their guests
  (an event and its next edition), so half the imports create contacts and half match the
  contacts of the edition before. Reported: the backfill's wall time (submitted to its last run
  finished), the sum of the runs' step times, the peak RSS of each run's process (its ``VmHWM``,
  sampled from /proc; target: the largest <= 1 GiB), and the wall time / the sum of the events'
  own sync run times.

``python -m attendee_pipeline.bench.audience`` runs this part alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from attendee_pipeline.bench.common import (
    PG_SERVER_URL,
    Report,
    SandboxProcess,
    _step_seconds,
    dagster_instance,
    dataset_config,
    event_entry,
    platform_database,
    progress,
    quiet_warnings,
    require_success,
    scratch_pg_database,
    sync_event,
)

LIVE_EVENT = "aud-live"
AUDIENCE = "bench-audience"
IMPORT_AUDIENCE = "bench-import"
LIVE_SEED = 31

#: Targets.
LIVE_OVER_PUBLISH_MAX = 1.5
IMPORT_RUN_PEAK_RSS_MAX_MIB = 1024


# --------------------------------------------------------------------------- catalog, runs


def write_audience_catalog(path: Path, events: list[dict[str, Any]], audiences: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"events": events, "audiences": audiences}, sort_keys=False), encoding="utf-8")
    return path


def audience_run(event_id: str, *, instance: Any, catalog_path: Path, db_url: str,
                 config: dict[str, Any] | None = None) -> tuple[float, dict[str, Any], float | None]:
    """Materialise the event's partition of ``audience_contacts`` in this process (as the UI's
    Materialize does, the code already loaded); (seconds, the asset's metadata, its step's seconds)."""
    import dagster as dg

    from attendee_pipeline.cli.runs import materialization_metadata
    from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource
    from attendee_pipeline.integrations.audience.defs.assets import ASSET, audience_contacts

    quiet_warnings()
    started = time.perf_counter()
    result = dg.materialize(
        [audience_contacts],
        partition_key=event_id,
        instance=instance,
        resources={"catalog": EventCatalogResource(path=str(catalog_path)),
                   "platform_db": PlatformDatabaseResource(url=db_url)},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                    **({"ops": {ASSET: {"config": config}}} if config else {})},
        raise_on_error=False,
        tags={"dagster/partition": event_id},
    )
    seconds = time.perf_counter() - started
    if not result.success:
        from attendee_pipeline.cli.runs import first_failure

        raise RuntimeError(f"the audience run of {event_id!r} failed: {first_failure(result, with_step=True)}")
    return seconds, materialization_metadata(result, ASSET), _step_seconds(result).get(ASSET)


# --------------------------------------------------------------------------- seeding contacts


def guest_emails(records: int, seed: int, positions: range) -> list[str]:
    """The e-mail addresses the attendee sandbox gives records ``positions`` of a dataset."""
    from attendee_pipeline.integrations.attendee_api.sandbox.config import SandboxConfig
    from attendee_pipeline.integrations.attendee_api.sandbox.generator import _Generator

    gen = _Generator(SandboxConfig(records=records, seed=seed))
    return [gen.values(i, "")["email"] for i in positions]


def seed_contacts(db_url: str, audience_id: str, total: int, matching_emails: list[str]) -> None:
    """``total`` contacts in ``audience_id``: first one per ``matching_emails`` (an older company,
    so a guest with that e-mail updates it), then people no event of the bench knows. PostgreSQL:
    one COPY; SQLite: one executemany."""
    from attendee_pipeline.platform_db.engine import make_engine
    from attendee_pipeline.platform_db.sql import utcnow
    from attendee_pipeline.sync.model import email_key

    now = utcnow()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    engine = make_engine(db_url)
    try:
        rows: list[tuple[Any, ...]] = []
        for n in range(total):
            if n < len(matching_emails):
                email, company = matching_emails[n], "Old Company"
            else:
                email, company = f"contact.{n}@audience.example.net", f"Company {n % 997}"
            rows.append((n + 1, audience_id, email, email_key(email), email, f"First{n % 500}", f"Last{n % 700}",
                         company, (n * 2654435761) % (2**62), "seed", stamp, stamp))
        columns = ("id", "audience_id", "uid", "uid_key", "email", "first_name", "last_name", "company",
                   "content_hash", "created_from_event", "created_at", "updated_at")
        if engine.dialect.name == "postgresql":
            raw = engine.raw_connection()
            try:
                buffer = io.StringIO()
                for row in rows:
                    buffer.write("\t".join(map(str, row)))
                    buffer.write("\n")
                buffer.seek(0)
                del rows
                with raw.cursor() as cur:
                    cur.copy_expert(f"COPY audience_contacts ({', '.join(columns)}) FROM STDIN", buffer)
                    cur.execute("SELECT setval(pg_get_serial_sequence('audience_contacts', 'id'), %s)", (total,))
                raw.commit()
            finally:
                raw.close()
            # as autovacuum leaves a table that has held its contacts for a while
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE audience_contacts")
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    f"INSERT INTO audience_contacts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    rows,
                )
                conn.exec_driver_sql("ANALYZE audience_contacts")
    finally:
        engine.dispose()


def rows_written(meta: dict[str, Any], audience_id: str) -> dict[str, int]:
    """Contact and history rows an audience run wrote (from its metadata)."""
    get = lambda key: int(meta.get(f"{audience_id}/{key}", 0))  # noqa: E731
    return {
        "contacts": get("created") + get("updated"),
        "history": get("history_written") + get("removals_recorded"),
        "rows_written": get("rows_written"),
    }


# --------------------------------------------------------------------------- live sync


def run_live(report: Report, tmp: Path, db_url_arg: str | None, records: int, contacts: int, overlap: float,
             page_size: int = 5_000, prefix: str = "audience.live") -> None:
    """The live-sync figures (see the module docstring), named ``prefix.*``."""
    from attendee_pipeline.platform_db.engine import ensure_schema

    matched = max(1, int(records * overlap))
    step = max(1, records // matched)
    with SandboxProcess() as sandbox, platform_database(tmp / prefix, db_url_arg) as db:
        (tmp / prefix).mkdir(exist_ok=True)
        sandbox.put_dataset(LIVE_EVENT, dataset_config(records, page_size, seed=LIVE_SEED))
        catalog = write_audience_catalog(
            tmp / f"{prefix}-catalog.yaml",
            [event_entry(LIVE_EVENT, sandbox.event_url(LIVE_EVENT), page_size)],
            [{"id": AUDIENCE, "events": [LIVE_EVENT]}],
        )
        report.figure(f"{prefix}.config", {"guests": records, "contacts": contacts, "matching_contacts": matched,
                                               "matching": f"every {step}th guest's e-mail", "database": db.kind})
        ensure_schema(db.url)
        progress(f"{prefix}: seeding {contacts} contacts ({matched} with a guest's e-mail)")
        started = time.perf_counter()
        seed_contacts(db.url, AUDIENCE, contacts, guest_emails(records, LIVE_SEED, range(0, step * matched, step)))
        report.figure(f"{prefix}.seed_seconds", time.perf_counter() - started, contacts=contacts)
        raw_root = tmp / f"{prefix}-raw"
        with dagster_instance("sqlite", tmp / f"{prefix}-dagster_home") as instance:

            def publish(label: str, force: bool = False) -> Any:
                sync = require_success(label, sync_event(LIVE_EVENT, instance=instance, catalog_path=catalog,
                                                         db_url=db.url, raw_root=raw_root, force=force))
                progress(f"{prefix} {label}: sync {sync.seconds:.2f}s, published {sync.published}")
                return sync

            def apply(label: str) -> tuple[float, dict[str, Any], float | None]:
                seconds, meta, step = audience_run(LIVE_EVENT, instance=instance, catalog_path=catalog, db_url=db.url)
                progress(f"{prefix} {label}: audience run {seconds:.2f}s, {rows_written(meta, AUDIENCE)}")
                return seconds, meta, step

            first = publish("first publish")
            seconds, meta, step = apply("first publish")
            sync_step = first.steps.get("event_sync")
            report.figure(f"{prefix}.publish_sync_seconds", first.seconds, guests=records, sync_step_seconds=sync_step)
            report.figure(f"{prefix}.audience_run_seconds", seconds, **{
                k: int(meta.get(f"{AUDIENCE}/{k}", 0)) for k in ("created", "updated", "unchanged", "history_written")
            }, contacts_after=int(meta.get(f"{AUDIENCE}/contacts", 0)), step_seconds=step)
            report.figure(f"{prefix}.over_publish", seconds / first.seconds)
            if sync_step and step:
                report.figure(f"{prefix}.step_over_sync_step", step / sync_step)

            changed_positions = sandbox.modify(LIVE_EVENT, "company", 0.01)
            changed = publish("1%-changed re-sync")
            seconds, meta, _ = apply("1%-changed re-sync")
            written = rows_written(meta, AUDIENCE)
            report.figure(f"{prefix}.changed_count", len(changed_positions),
                          published_updated=int(changed.published.get("updated", 0)))
            report.figure(f"{prefix}.changed_rows_written", written["contacts"] + written["history"], **written,
                          contacts_share=round(written["contacts"] / records, 4))
            report.figure(f"{prefix}.changed_audience_run_seconds", seconds)

            publish("unchanged re-sync (forced)", force=True)
            seconds, meta, _ = apply("unchanged re-sync (forced)")
            written = rows_written(meta, AUDIENCE)
            report.figure(f"{prefix}.unchanged_rows_written", written["rows_written"], **written)
            report.figure(f"{prefix}.unchanged_audience_run_seconds", seconds)


# --------------------------------------------------------------------------- import backfill

#: Seconds between the daemon's iterations (backfills, run queue) in the bench: Dagster's is a
#: constant of 30 s, not a setting (attendee_pipeline_tests/deployment.py does the same).
DAEMON_LOOP_SECONDS = 2
_DAEMON_MAIN = (
    "import dagster._daemon.controller as c; c.DEFAULT_DAEMON_INTERVAL_SECONDS = {seconds}; "
    "from dagster._daemon.cli import main; main()"
)
_RUN_PID = re.compile(r"Started process for run \(pid: (\d+)\)")
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _import_seed(k: int) -> int:
    """Events come in pairs with the same guests: an event and its next edition."""
    return 1000 + k // 2


def _instance_yaml(root: Path) -> dict[str, Any]:
    """The repository's dagster.yaml (PostgreSQL storage from DAGSTER_PG_*, the queued run
    coordinator with its limits, the run launcher), the queue dequeued every second."""
    config = yaml.safe_load((root / "dagster.yaml").read_text(encoding="utf-8"))
    config.setdefault("run_coordinator", {}).setdefault("config", {})["dequeue_interval_seconds"] = 1
    return config


def _children(pids: set[int]) -> set[int]:
    """Every descendant of ``pids`` (from /proc/*/stat)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                parent[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = set(pids)
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _message(entry: Any) -> str:
    """An event log entry's message (a Dagster event's own, else the user's)."""
    event = entry.dagster_event
    return (event.message if event is not None else None) or entry.user_message or ""


def run_import(report: Report, tmp: Path, events: int, records: int, page_size: int = 5_000) -> None:
    """The import figures (see the module docstring): publish ``events`` events of ``records``
    guests, then import them all as one backfill run by ``dagster-daemon``."""
    import dagster as dg

    from attendee_pipeline.defs.partitions import events_partitions
    from attendee_pipeline.integrations.audience.imports import import_config, launch_import
    from attendee_pipeline.platform_db.audiences import audience_summary
    from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
    from attendee_pipeline.processes import start_logged, stop_process

    root = Path(__file__).resolve().parents[2]
    folder = tmp / "audience-import"
    folder.mkdir(exist_ok=True)
    event_ids = [f"past-{k:02d}" for k in range(events)]
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(SandboxProcess())
        db = stack.enter_context(platform_database(folder, "postgres"))
        dagster_url = sa.engine.make_url(stack.enter_context(scratch_pg_database(
            sa.engine.make_url(PG_SERVER_URL), "attendee_bench_daemon")))
        entries = []
        for k, event_id in enumerate(event_ids):
            sandbox.put_dataset(event_id, dataset_config(records, page_size, seed=_import_seed(k)))
            entries.append(event_entry(event_id, sandbox.event_url(event_id), page_size))
        catalog = write_audience_catalog(folder / "catalog.yaml", entries, [{"id": IMPORT_AUDIENCE, "events": event_ids}])
        report.figure("audience.import.config", {"events": events, "guests_per_event": records,
                                                 "shared_guests": "events in pairs (an event and its next edition)",
                                                 "database": "postgresql", "instance": "postgresql + dagster-daemon"})
        ensure_schema(db.url)

        # the events' own publishes, through the same sync job as the other sections
        publish_seconds = []
        with dagster_instance("sqlite", folder / "publish_home") as publish_instance:
            for event_id in event_ids:
                sync = require_success(f"publish {event_id}", sync_event(
                    event_id, instance=publish_instance, catalog_path=catalog, db_url=db.url, raw_root=folder / "raw"))
                publish_seconds.append(sync.seconds)
        progress(f"audience import: {events} events published, {sum(publish_seconds):.1f}s in all")
        report.figure("audience.import.publish_seconds_sum", sum(publish_seconds), events=events,
                      runs=[round(s, 2) for s in publish_seconds])

        home = folder / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(_instance_yaml(root)), encoding="utf-8")
        (folder / "workspace.yaml").write_text((root / "workspace.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ATTENDEE_PIPELINE_", "DAGSTER_"))},
            "PYTHONUNBUFFERED": "1",
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": dagster_url.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(dagster_url.port or 5432),
            "DAGSTER_PG_USERNAME": dagster_url.username or "postgres",
            "DAGSTER_PG_PASSWORD": dagster_url.password or "unused",  # trust authentication on loopback
            "DAGSTER_PG_DB": dagster_url.database or "",
            "ATTENDEE_PIPELINE_DB_URL": db.url,
            "ATTENDEE_PIPELINE_CATALOG": str(catalog),
            "ATTENDEE_PIPELINE_DATA_DIR": str(folder / "data"),
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # this process's instance: the same dagster.yaml and database
        stack.callback(lambda: [os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
                                for k, v in saved.items()])
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        instance.add_dynamic_partitions(events_partitions.name, event_ids)
        # the live sync's sensor would apply the same publishes before the import does
        stopped = subprocess.run([str(Path(sys.executable).with_name("dagster")), "sensor", "stop", "audience_sensor",
                                  "-w", "workspace.yaml"], cwd=folder, env=env, capture_output=True, text=True,
                                 timeout=300, check=False)
        if stopped.returncode != 0:
            raise RuntimeError(f"dagster sensor stop audience_sensor failed: {stopped.stderr[-1500:]}")
        daemon = start_logged([sys.executable, "-c", _DAEMON_MAIN.format(seconds=DAEMON_LOOP_SECONDS), "run",
                               "-w", "workspace.yaml"], env, folder, folder / "daemon.log")
        stack.callback(stop_process, daemon, 30)
        time.sleep(5)  # the daemon's first iteration: its code location loaded
        progress(f"audience import: one backfill of {events} partitions of audience_contacts (dagster-daemon pid {daemon.pid})")
        submitted = time.time()
        # as ``attendee-pipeline audience import`` launches it
        backfill_id = launch_import(instance, event_ids, import_config(), title="bench audience import")
        peaks: dict[int, float] = {}
        runs: list[Any] = []
        deadline = time.monotonic() + 3600
        next_poll = 0.0
        while True:
            for pid in _children({daemon.pid}):
                peak = _vm_hwm_mib(pid)
                if peak is not None:
                    peaks[pid] = max(peaks.get(pid, 0.0), peak)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 2
                runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                done = [r for r in runs if r.dagster_run.status.value in FINISHED]
                if len(runs) >= events and len(done) == len(runs):
                    break
                if daemon.poll() is not None:
                    raise RuntimeError(f"dagster-daemon stopped (see {folder / 'daemon.log'})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the import backfill did not finish within an hour ({len(runs)} runs)")
            time.sleep(0.25)
        failed = [r.dagster_run.run_id for r in runs if r.dagster_run.status.value != "SUCCESS"]
        if failed:
            raise RuntimeError(f"{len(failed)} run(s) of the import backfill failed, e.g. {failed[0]} (see the instance)")
        wall = max(r.end_time for r in runs if r.end_time) - submitted
        run_peaks, step_seconds = [], []
        for record in runs:
            logs = instance.all_logs(record.dagster_run.run_id)
            pid = next((int(m.group(1)) for entry in logs if (m := _RUN_PID.search(_message(entry)))), None)
            if pid is not None and pid in peaks:
                run_peaks.append(peaks[pid])
            step_seconds += [entry.dagster_event.event_specific_data.duration_ms / 1000 for entry in logs
                             if entry.dagster_event is not None and entry.dagster_event.event_type_value == "STEP_SUCCESS"]
        durations = [r.end_time - r.start_time for r in runs if r.end_time and r.start_time]
        engine = make_engine(db.url)
        try:
            summary = audience_summary(engine, IMPORT_AUDIENCE)
        finally:
            engine.dispose()
        progress(f"audience import: {len(runs)} runs in {wall:.1f}s, peak RSS of a run "
                 f"{max(run_peaks) if run_peaks else '?'} MiB; {summary}")
        report.figure("audience.import.backfill_wall_seconds", wall, runs=len(runs), backfill_id=backfill_id,
                      daemon_loop_seconds=DAEMON_LOOP_SECONDS)
        report.figure("audience.import.run_seconds_mean", sum(durations) / len(durations) if durations else None,
                      max=round(max(durations), 2) if durations else None)
        # the step alone (the apply, waiting for the audience's lock while another run applies, and
        # the summary); the rest of a run is its process starting and loading the code location
        report.figure("audience.import.step_seconds_sum", sum(step_seconds), steps=len(step_seconds),
                      mean=round(sum(step_seconds) / len(step_seconds), 2) if step_seconds else None)
        report.figure("audience.import.run_peak_rss_mib", round(max(run_peaks), 1) if run_peaks else None,
                      measured_runs=len(run_peaks), median_mib=round(sorted(run_peaks)[len(run_peaks) // 2], 1)
                      if run_peaks else None)
        report.figure("audience.import.over_publish_sum", wall / sum(publish_seconds))
        report.figure("audience.import.audience", summary)


def report_audience_targets(report: Report) -> None:
    f = report.figures
    for prefix, kind in (("audience.live", "PostgreSQL"), ("audience.live_sqlite", "SQLite")):
        config = f.get(f"{prefix}.config")
        if not config:
            continue
        size = f"{config['guests']} guests, {config['contacts']} contacts, {kind}"
        ratio = f.get(f"{prefix}.over_publish")
        report.target(f"audience live sync / the event's own sync ({size})", ratio,
                      LIVE_OVER_PUBLISH_MAX, ratio is not None and ratio <= LIVE_OVER_PUBLISH_MAX)
        changed, count = f.get(f"{prefix}.changed_rows_written"), f.get(f"{prefix}.changed_count")
        # about 1 %: a contact and a history row per changed guest
        report.target(f"audience 1%-changed rows written, contacts + history == 2 x changed guests ({kind})", changed,
                      None if count is None else 2 * count, changed is not None and changed == 2 * (count or 0))
        unchanged = f.get(f"{prefix}.unchanged_rows_written")
        report.target(f"audience unchanged publish rows written ({kind})", unchanged, 0, unchanged == 0)
    if "audience.import.config" in f:
        peak = f.get("audience.import.run_peak_rss_mib")
        report.target("audience import: peak RSS of one run (MiB)", peak, IMPORT_RUN_PEAK_RSS_MAX_MIB,
                      peak is not None and peak <= IMPORT_RUN_PEAK_RSS_MAX_MIB)


def run_audience_bench(report: Report, tmp: Path, *, db_url: str | None = None, records: int = 100_000,
                       contacts: int = 1_000_000, overlap: float = 0.1, import_events: int = 50,
                       import_records: int = 20_000, sqlite: bool = True, skip_import: bool = False) -> None:
    """The Audience figures: the live sync on PostgreSQL (a scratch database on ``db_url``'s
    server when it names one, else on 127.0.0.1:5432) and, with ``sqlite``, on SQLite too; then
    the import backfill (PostgreSQL)."""
    server = db_url if db_url and db_url != "sqlite" else "postgres"
    run_live(report, tmp, server, records, contacts, overlap)
    if sqlite:
        run_live(report, tmp, "sqlite", records, contacts, overlap, prefix="audience.live_sqlite")
    if not skip_import:
        run_import(report, tmp, import_events, import_records)


def main(argv: list[str] | None = None) -> int:
    """``python -m attendee_pipeline.bench.audience``: this part alone."""
    import argparse
    import shutil
    import tempfile

    from attendee_pipeline.bench.common import bench_env

    parser = argparse.ArgumentParser(prog="python -m attendee_pipeline.bench.audience")
    parser.add_argument("--db-url", default=None, help="PostgreSQL server of the live sync (default 127.0.0.1:5432)")
    parser.add_argument("--skip-sqlite", action="store_true", help="the live sync on PostgreSQL only")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--overlap", type=float, default=0.1)
    parser.add_argument("--import-events", type=int, default=50)
    parser.add_argument("--import-records", type=int, default=20_000)
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args(argv)
    quiet_warnings()
    tmp = Path(tempfile.mkdtemp(prefix="attendee-bench-audience-"))
    bench_env(tmp)
    report = Report(options.out)
    try:
        if not options.skip_live:
            run_audience_bench(report, tmp, db_url=options.db_url, records=options.records, contacts=options.contacts,
                               overlap=options.overlap, sqlite=not options.skip_sqlite, skip_import=True)
        if not options.skip_import:
            run_import(report, tmp, options.import_events, options.import_records)
    finally:
        report_audience_targets(report)
        report.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
