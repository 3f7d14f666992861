"""The ``make bench`` run: floor, full sync, unchanged re-sync, 1 %-changed re-sync and a big full
sync in a child process, then the targets. See the package docstring for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from attendee_pipeline.bench.common import (
    Report,
    SandboxProcess,
    SyncResult,
    bench_env,
    dataset_config,
    event_entry,
    INSTANCE_KINDS,
    dagster_instance,
    platform_database,
    progress,
    quiet_warnings,
    require_success,
    sync_event,
    write_catalog,
)

BENCH_EVENT = "bench"
BIG_EVENT = "big"

#: Targets: full_sync / floor, unchanged_resync / fetch, big peak RSS (MiB).
FULL_OVER_FLOOR_MAX = 1.5
UNCHANGED_OVER_FETCH_MAX = 1.2
BIG_PEAK_RSS_MAX_MIB = 2048


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m attendee_pipeline.bench",
        description="Measure the attendee sync against a floor taken in the same run; one JSON line "
        "per figure on stdout, progress on stderr.",
    )
    parser.add_argument("--records", type=int, default=100_000, help="attendees of the bench event (100000)")
    parser.add_argument("--page-size", type=int, default=5_000, help="records per page (5000)")
    parser.add_argument(
        "--db-url",
        default=None,
        help="platform database: default a temporary SQLite file; a postgresql+psycopg2:// server URL "
        "(or 'postgres' for postgresql+psycopg2://postgres@127.0.0.1:5432) creates a uniquely named "
        "database there and drops it afterwards",
    )
    parser.add_argument("--big", type=int, default=1_000_000, help="attendees of the big child-process sync")
    parser.add_argument("--skip-big", action="store_true", help="skip the big sync")
    parser.add_argument("--skip-feed", action="store_true", help="skip the push feed benchmark (needs PostgreSQL)")
    parser.add_argument("--only-feed", action="store_true", help="run only the push feed benchmark")
    parser.add_argument("--skip-email", action="store_true", help="skip the e-mail benchmark (outbox, SMTP delivery)")
    parser.add_argument("--skip-procurios", action="store_true", help="skip the Procurios benchmark (bench/procurios.py)")
    parser.add_argument("--procurios-records", type=int, default=50_000, help="registrations of the Procurios event")
    parser.add_argument("--procurios-latency-ms", type=float, default=100.0, help="API latency of its remote incremental")
    parser.add_argument("--skip-catalog", action="store_true", help="skip the catalog benchmark (bench/catalog.py)")
    parser.add_argument("--catalog-events", type=int, default=5_000, help="events of the catalog benchmark (5000)")
    parser.add_argument("--skip-audience", action="store_true", help="skip the Audience benchmark (bench/audience.py)")
    parser.add_argument("--audience-records", type=int, default=100_000, help="guests of the Audience's live event")
    parser.add_argument("--audience-contacts", type=int, default=1_000_000, help="contacts the audience holds before it")
    parser.add_argument("--audience-import-events", type=int, default=50, help="past events of the Audience import (50)")
    parser.add_argument("--audience-import-records", type=int, default=20_000, help="guests of each past event (20000)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON lines to this file")
    parser.add_argument(
        "--instance",
        choices=INSTANCE_KINDS,
        default="sqlite",
        help="Dagster instance of the runs: a temporary SQLite one like the embedded default (default), "
        "PostgreSQL storage like dagster.yaml (a scratch database on 127.0.0.1:5432), or in-memory",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="floor and full sync measured this many times in turn, each pair in a fresh platform "
        "database; the best of each is kept (5)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed on stderr)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.page_size < 1 or args.big < 1 or args.repeats < 1:
        parser.error("--records, --page-size, --big and --repeats must be >= 1")
    return args


def report_steps(report: Report, prefix: str, sync: SyncResult) -> None:
    for step, seconds in sync.steps.items():
        report.figure(f"{prefix}.{step}", seconds)
    report.figure(f"{prefix}.dagster_overhead", max(0.0, sync.seconds - sum(sync.steps.values())))


def run(args: argparse.Namespace, report: Report, tmp: Path) -> None:
    records, page_size = args.records, args.page_size
    with SandboxProcess() as sandbox, contextlib.ExitStack() as databases:
        pid = sandbox.proc.pid if sandbox.proc else "?"
        kind = "sqlite" if not args.db_url or args.db_url == "sqlite" else "postgresql"
        progress(f"sandbox on {sandbox.url} (pid {pid}); database {kind}")
        report.figure(
            "config",
            {
                "records": records,
                "page_size": page_size,
                "database": kind,
                "instance": args.instance,
                "repeats": args.repeats,
                "big": None if args.skip_big else args.big,
                "python": sys.version.split()[0],
            },
        )
        sandbox.put_dataset(BENCH_EVENT, dataset_config(records, page_size))
        # one small untimed request so neither side pays first-request costs inside a timing
        sandbox.http.get(sandbox.event_url(BENCH_EVENT), params={"page": 1, "per_page": 10}, timeout=30)

        from attendee_pipeline.bench.floor import Floor, measure_floor
        from attendee_pipeline.cli.runs import load_sync_job
        from attendee_pipeline.platform_db.engine import ensure_schema

        catalog = tmp / "catalog.yaml"
        entries = [event_entry(BENCH_EVENT, sandbox.event_url(BENCH_EVENT), page_size)]
        if not args.skip_big:
            entries.append(event_entry(BIG_EVENT, sandbox.event_url(BIG_EVENT), page_size))
        write_catalog(catalog, *entries)
        raw_root = tmp / "raw"
        with dagster_instance(args.instance, tmp / "dagster_home") as instance:
            db = None

            def sync(label: str, force: bool = False) -> SyncResult:
                progress(f"{label}: materialising every attendee asset and check for {BENCH_EVENT!r}")
                result = sync_event(BENCH_EVENT, instance=instance, catalog_path=catalog, db_url=db.url,
                                    raw_root=raw_root, force=force)
                require_success(label, result)
                progress(f"{label}: {result.seconds:.2f}s, published {result.published}")
                return result

            # The floor and the full sync, ``repeats`` times in turn, each pair in a fresh platform
            # database (so every full sync is a first one); the best of each is kept, as a
            # machine's noise only ever adds time. The other figures use the last database.
            floors: list[Floor] = []
            fulls: list[SyncResult] = []
            for rep in range(args.repeats):
                db = databases.enter_context(platform_database(tmp / f"platform-{rep}", args.db_url))
                progress(f"floor {rep + 1}/{args.repeats}: fetching {records} records in pages of "
                         f"{page_size}, then one bulk insert")
                floor = measure_floor(db.url, sandbox.event_url(BENCH_EVENT), BENCH_EVENT, page_size)
                if floor.records != records:
                    raise RuntimeError(f"the floor fetched {floor.records} records, expected {records}")
                progress(f"floor {rep + 1}/{args.repeats}: {floor.seconds:.2f}s")
                floors.append(floor)
                if rep == 0:
                    # Set-up a deployment does once, timed on its own and not in the sync (as the
                    # floor's table is created before its clock starts): migrating the platform
                    # database, and loading the code location (importing the definitions,
                    # building the job), which a Dagster run worker does before a run starts.
                    setup = time.perf_counter()
                    ensure_schema(db.url)
                    report.figure("platform_db_migrate_seconds", time.perf_counter() - setup)
                    setup = time.perf_counter()
                    load_sync_job(BENCH_EVENT, catalog_path=str(catalog), db_url=db.url, raw_root=str(raw_root))
                    report.figure("code_location_load_seconds", time.perf_counter() - setup)
                fulls.append(sync(f"full sync {rep + 1}/{args.repeats}"))

            floor = min(floors, key=lambda f: f.seconds)
            report.figure("fetch_seconds", min(f.fetch_seconds for f in floors), records=floor.records,
                          pages=floor.pages, mib=round(floor.bytes_received / 2**20, 1),
                          runs=[round(f.fetch_seconds, 3) for f in floors])
            report.figure("write_seconds", min(f.write_seconds for f in floors), records=floor.records,
                          serialize_seconds=round(floor.serialize_seconds, 3),
                          runs=[round(f.write_seconds, 3) for f in floors])
            report.figure("floor_seconds", floor.seconds, records=floor.records,
                          runs=[round(f.seconds, 3) for f in floors])
            full = min(fulls, key=lambda r: r.seconds)
            report.figure("full_sync_seconds", full.seconds, records=records, runs=[round(r.seconds, 3) for r in fulls])
            report.figure("full_sync_over_floor_pairs", [round(r.seconds / f.seconds, 3) for r, f in zip(fulls, floors)])
            report.figure("full_added", int(full.published.get("added", 0)))
            report.figure("full_rows_written", int(full.published.get("rows_written", 0)))
            report_steps(report, "step_seconds", full)
            floor = min(floors, key=lambda f: f.fetch_seconds)  # the unchanged re-sync's yardstick

            unchanged = sync("unchanged re-sync")
            report.figure("unchanged_resync_seconds", unchanged.seconds, records=records)
            report.figure("unchanged_rows_written", int(unchanged.published.get("rows_written", 0)))
            report.figure("unchanged_unchanged", int(unchanged.published.get("unchanged", 0)))
            report.figure("unchanged_over_fetch", unchanged.seconds / floor.fetch_seconds)
            report.figure("unchanged_skipped_by_fingerprint", bool(unchanged.published.get("skipped_unchanged")))
            report_steps(report, "unchanged_step_seconds", unchanged)

            # The same unchanged input with force=true: every step runs (map, validate, diff) and
            # the apply engine itself must still write nothing.
            forced = sync("unchanged re-sync, forced", force=True)
            report.figure("unchanged_forced_resync_seconds", forced.seconds, records=records)
            report.figure("unchanged_forced_rows_written", int(forced.published.get("rows_written", 0)))
            report.figure("unchanged_forced_over_fetch", forced.seconds / floor.fetch_seconds)
            report_steps(report, "unchanged_forced_step_seconds", forced)

            changed_positions = sandbox.modify(BENCH_EVENT, "company", 0.01)
            report.figure("changed_count", len(changed_positions))
            changed = sync("1%-changed re-sync")
            report.figure("changed_resync_seconds", changed.seconds, records=records)
            report.figure("changed_rows_written", int(changed.published.get("rows_written", 0)))
            report.figure("changed_updated", int(changed.published.get("updated", 0)))
            report_steps(report, "changed_step_seconds", changed)

        # ------------------------------------------------------------- big, in a child process
        if not args.skip_big:
            from attendee_pipeline.bench.child import run_child

            sandbox.put_dataset(BIG_EVENT, dataset_config(args.big, page_size, seed=2))
            progress(f"big: full sync of {args.big} records in a child process")
            spec = {
                "event_id": BIG_EVENT,
                "catalog_path": str(catalog),
                "db_url": db.url,
                "raw_root": str(raw_root),
                "instance": args.instance,
                "instance_dir": str(tmp / "dagster_home_big"),
                "result_path": str(tmp / "big_result.json"),
            }
            big = run_child(spec, tmp / "big_spec.json")
            if not big.get("success") or not big.get("published"):
                why = big.get("failure") or "no published_attendees"
                raise RuntimeError(f"the big sync did not publish: {why}")
            progress(f"big: {big['seconds']:.2f}s, peak RSS {big['peak_rss_mib']} MiB")
            report.figure("big_sync_seconds", big["seconds"], records=args.big)
            report.figure("big_peak_rss_mib", big["peak_rss_mib"], records=args.big,
                          baseline_rss_mib=big["baseline_rss_mib"], ru_maxrss_mib=big["ru_maxrss_mib"])
            report.figure("big_added", int(big["published"].get("added", 0)))
            report.figure("big_child_wall_seconds", big["wall_seconds"])
            for step, seconds in big["steps"].items():
                report.figure(f"big_step_seconds.{step}", seconds)
            for step, rss in big.get("step_rss_mib", {}).items():
                report.figure(f"big_step_peak_rss_mib.{step}", rss["peak"], start_rss_mib=rss["start"])
            # The floor of the big list too (after the child, so it cannot touch the child's
            # memory figure): a run's fixed cost (the Dagster instance's bookkeeping) weighs
            # less there, which tells fixed from per-attendee costs.
            progress(f"big floor: fetching {args.big} records, then one bulk insert")
            big_floor = measure_floor(db.url, sandbox.event_url(BIG_EVENT), f"{BIG_EVENT}-floor", page_size)
            report.figure("big_floor_seconds", big_floor.seconds, records=big_floor.records,
                          fetch_seconds=round(big_floor.fetch_seconds, 3),
                          write_seconds=round(big_floor.write_seconds, 3))
            report.figure("big_sync_over_floor", big["seconds"] / big_floor.seconds)


def report_targets(report: Report, args: argparse.Namespace) -> None:
    f = report.figures

    def ratio(a: str, b: str) -> float | None:
        return f[a] / f[b] if a in f and b in f and f[b] else None

    full_over_floor = ratio("full_sync_seconds", "floor_seconds")
    # (informative, no target: big_sync_over_floor -- the same ratio for the big list)
    report.target("full_sync / floor", full_over_floor, FULL_OVER_FLOOR_MAX,
                  full_over_floor is not None and full_over_floor <= FULL_OVER_FLOOR_MAX)
    unchanged_rows = f.get("unchanged_rows_written")
    report.target("unchanged_rows_written", unchanged_rows, 0, unchanged_rows == 0)
    forced_rows = f.get("unchanged_forced_rows_written")
    report.target("unchanged_forced_rows_written", forced_rows, 0, forced_rows == 0)
    unchanged_over_fetch = ratio("unchanged_resync_seconds", "fetch_seconds")
    report.target("unchanged_resync / fetch", unchanged_over_fetch, UNCHANGED_OVER_FETCH_MAX,
                  unchanged_over_fetch is not None and unchanged_over_fetch <= UNCHANGED_OVER_FETCH_MAX)
    changed_rows, changed_count = f.get("changed_rows_written"), f.get("changed_count")
    report.target("changed_rows_written == changed count", changed_rows, changed_count,
                  changed_rows is not None and changed_rows == changed_count)
    if not args.skip_big:
        rss = f.get("big_peak_rss_mib")
        report.target(
            "big_peak_rss_mib", rss, BIG_PEAK_RSS_MAX_MIB, rss is not None and rss <= BIG_PEAK_RSS_MAX_MIB
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_warnings()
    tmp = Path(tempfile.mkdtemp(prefix="attendee-bench-"))
    bench_env(tmp)
    report = Report(args.out)
    started = time.perf_counter()
    code = 0
    try:
        if not args.only_feed:
            run(args, report, tmp)
        if not args.only_feed and not args.skip_email:
            from attendee_pipeline.bench.email import run_email_bench

            run_email_bench(report, tmp, records=args.records, db_url=args.db_url)
        if not args.skip_feed:
            from attendee_pipeline.bench.feed import run_feed_bench

            run_feed_bench(report, tmp)
        if not (args.skip_procurios or args.only_feed):
            from attendee_pipeline.bench.procurios import run_procurios_bench

            run_procurios_bench(report, tmp, args.procurios_records, args.procurios_latency_ms)
        if not (args.skip_catalog or args.only_feed):
            from attendee_pipeline.bench.catalog import run_catalog_bench

            run_catalog_bench(report, tmp, args.catalog_events)
        if not (args.skip_audience or args.only_feed):
            from attendee_pipeline.bench.audience import run_audience_bench

            run_audience_bench(report, tmp, db_url=args.db_url, records=args.audience_records,
                               contacts=args.audience_contacts, import_events=args.audience_import_events,
                               import_records=args.audience_import_records)
    except BaseException as exc:  # noqa: BLE001 - report, still print the targets, exit non-zero
        if isinstance(exc, KeyboardInterrupt):
            progress("interrupted")
        else:
            traceback.print_exc(file=sys.stderr)
        code = 1
    try:
        if not args.only_feed:
            report_targets(report, args)
        if not args.only_feed and not args.skip_email:
            from attendee_pipeline.bench.email import report_email_targets

            report_email_targets(report)
        from attendee_pipeline.bench.audience import report_audience_targets
        from attendee_pipeline.bench.catalog import report_catalog_targets
        from attendee_pipeline.bench.feed import report_feed_targets
        from attendee_pipeline.bench.procurios import report_procurios_targets

        report_feed_targets(report)
        report_procurios_targets(report)
        report_catalog_targets(report)
        report_audience_targets(report)
    finally:
        report.close()
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    outcome = "" if code == 0 else " -- FAILED (see above)"
    progress(f"done in {time.perf_counter() - started:.1f}s{outcome}")
    return code
