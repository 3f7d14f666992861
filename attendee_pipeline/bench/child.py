"""One full sync in a child process, so its peak memory (``ru_maxrss``) is its own.

``python -m attendee_pipeline.bench.child SPEC.json``: the spec names the event, catalog,
platform database URL, raw-extract folder, Dagster instance folder and kind, and the file the
child writes its result to (seconds, counts, steps, peak RSS before and after the sync). The
parent starts it with :func:`run_child`: a fresh interpreter, not a fork. The peak reported is
the child's own high-water mark (``VmHWM``) because on Linux the child's ``ru_maxrss`` also
carries the parent's peak over the fork + exec; ``ru_maxrss`` is reported beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


def run_child(
    spec: dict[str, Any], spec_path: Path, timeout: float | None = None, module: str = "attendee_pipeline.bench.child"
) -> dict[str, Any]:
    """Run the child ``module`` with ``spec``; returns its result (raises when it failed)."""
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", module, str(spec_path)],
        stdout=sys.stderr,  # keep stdout for the figures
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - started
    result_path = Path(spec["result_path"])
    if proc.returncode != 0 or not result_path.is_file():
        raise RuntimeError(f"the child sync of {spec['event_id']!r} failed (exit code {proc.returncode})")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["wall_seconds"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))

    from attendee_pipeline.bench.common import (
        RssSampler,
        dagster_instance,
        peak_rss_mib,
        quiet_warnings,
        ru_maxrss_mib,
        step_rss,
        step_windows,
        sync_event,
    )

    quiet_warnings()
    import attendee_pipeline.defs.attendees.assets  # noqa: F401 - imports before the baseline
    import attendee_pipeline.defs.attendees.checks  # noqa: F401

    baseline = peak_rss_mib()
    with dagster_instance(spec.get("instance", "sqlite"), Path(spec["instance_dir"])) as instance:
        with RssSampler() as sampler:
            sync = sync_event(
                spec["event_id"],
                instance=instance,
                catalog_path=Path(spec["catalog_path"]),
                db_url=spec["db_url"],
                raw_root=Path(spec["raw_root"]),
            )
        steps_rss = step_rss(sampler.samples, step_windows(instance, sync.run_id))
    result = {
        **asdict(sync),
        "step_rss_mib": steps_rss,
        "baseline_rss_mib": baseline,  # after the imports, before the sync
        "peak_rss_mib": peak_rss_mib(),  # the child's own peak (VmHWM on Linux)
        "ru_maxrss_mib": ru_maxrss_mib(),  # may include the parent's peak (see ru_maxrss_mib)
    }
    Path(spec["result_path"]).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0 if sync.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
