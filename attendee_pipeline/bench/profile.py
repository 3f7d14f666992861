"""Where a full sync spends its time: one full sync under cProfile.

``python -m attendee_pipeline.bench.profile [--records N] [--page-size N] [--db-url URL]
[--top 25] [--stats FILE]`` starts the sandbox in its own process, syncs a fresh event into a
fresh platform database exactly as ``make bench`` does (every attendee asset and check through
``dagster.materialize``) with the profiler on, and prints the top functions by cumulative and by
own time (``--stats`` also saves the raw profile for snakeviz / pstats). cProfile slows
Python-heavy code more than C-heavy code, so read the shares, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from attendee_pipeline.bench.common import (
    SandboxProcess,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attendee_pipeline.bench.profile", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=5_000)
    parser.add_argument("--db-url", default=None, help="as for make bench (default: temporary SQLite)")
    parser.add_argument("--instance", choices=INSTANCE_KINDS, default="sqlite")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--stats", type=Path, default=None, help="save the raw profile here")
    parser.add_argument(
        "--resync",
        choices=("unchanged", "forced"),
        default=None,
        help="sync once unprofiled, then profile an unchanged re-sync (skipped by its input "
        "fingerprint) or a forced one (every step runs)",
    )
    args = parser.parse_args(argv)
    quiet_warnings()
    tmp = Path(tempfile.mkdtemp(prefix="attendee-bench-profile-"))
    bench_env(tmp)
    try:
        with SandboxProcess() as sandbox, platform_database(tmp, args.db_url) as db:
            sandbox.put_dataset("bench", dataset_config(args.records, args.page_size))
            catalog = write_catalog(
                tmp / "catalog.yaml", event_entry("bench", sandbox.event_url("bench"), args.page_size)
            )
            with dagster_instance(args.instance, tmp / "dagster_home") as instance:
                if args.resync:
                    progress(f"first (unprofiled) sync of {args.records} records ({db.kind})")
                    require_success("first sync", sync_event(
                        "bench", instance=instance, catalog_path=catalog, db_url=db.url, raw_root=tmp / "raw"
                    ))
                # as in make bench: the database migrated and the code location loaded first
                from attendee_pipeline.cli.runs import load_sync_job
                from attendee_pipeline.platform_db.engine import ensure_schema

                ensure_schema(db.url)
                load_sync_job("bench", catalog_path=str(catalog), db_url=db.url, raw_root=str(tmp / "raw"))
                what = f"{args.resync} re-sync" if args.resync else "full sync"
                progress(f"profiling a {what} of {args.records} records ({db.kind})")
                profiler = cProfile.Profile()
                started = time.perf_counter()
                profiler.enable()
                sync = sync_event(
                    "bench", instance=instance, catalog_path=catalog, db_url=db.url, raw_root=tmp / "raw",
                    force=args.resync == "forced",
                )
                profiler.disable()
                seconds = time.perf_counter() - started
            require_success(f"profiled {what}", sync)
        progress(f"{what} under the profiler: {seconds:.2f}s (unprofiled step times are in make bench)")
        if args.stats:
            profiler.dump_stats(str(args.stats))
        for order in ("cumulative", "tottime"):
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer)
            stats.sort_stats(order).print_stats(args.top)
            print(f"==== top {args.top} by {order} (profiled wall {seconds:.2f}s)")
            print(buffer.getvalue())
        print("==== steps (profiled):", {k: v for k, v in sync.steps.items()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
