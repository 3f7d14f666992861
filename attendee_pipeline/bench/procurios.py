"""``make bench``, Procurios (seed 002): an event of 50,000 registrations -- its fetch floor, the
first (initial) import, a full import ("reset import") and an incremental sync with 1 % new and
1 % cancelled registrations, each with its time and peak memory, at two list sizes.

The Procurios sandbox runs in its own process (``SandboxProcess``). For each list size (half of
``--procurios-records``, then all of it) the bench measures, against a fresh platform database:

* ``fetch_floor``: the same requests a sync sends -- a token, every registration page (25 per
  page) until the empty one, the session pages -- with a bare ``requests.Session``, bodies
  parsed, nothing else done;
* ``initial`` (the first sync: every registration added), ``full_import`` (``full_import:
  true`` over the imported list) and ``incremental`` (after 1 % of the list registered and 1 %
  cancelled) -- each the real Dagster job in a child process (:func:`child_main`, like
  ``bench.child``) so its peak RSS is its own, timed by ``bench.common.sync_event`` as the main
  syncs are (from a migrated database and a loaded code location); the incremental's floor is the same pages
  (``since`` the last publish) fetched the same bare way right before it.

An incremental sync's pages are few, so on loopback its time is mostly the fixed cost of a
Dagster run; the bench therefore also runs one incremental with the sandbox answering every API
request after ``--procurios-latency-ms`` (default 100 ms, a remote SaaS API), floor and sync
alike. Targets: incremental / its floor <= 1.3 at that latency (the loopback ratio is reported
beside it), and memory flat in list size: each sync's peak RSS at the full size at most 10 %
above its peak at half the size.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from attendee_pipeline.bench.common import (
    Report,
    SandboxProcess,
    platform_database,
    progress,
    write_catalog,
)

MEETING_ID = "5000"
ID_ENV, SECRET_ENV = "DEMO_PROCURIOS_CLIENT_ID", "DEMO_PROCURIOS_CLIENT_SECRET"
ACCEPT = "application/vnd.procurios.meeting2+json"

#: Targets.
INCREMENTAL_OVER_FLOOR_MAX = 1.3
PEAK_GROWTH_MAX = 1.10  # peak RSS at the full size / at half the size


@dataclass
class Floor:
    seconds: float
    requests: int
    pages: int
    records: int
    bytes: int


def fetch_floor(base_url: str, meeting_id: str, since: str | None = None) -> Floor:
    """A token, the registration pages (``since``) and the session pages, fetched with a bare
    session and parsed: the least any sync of that meeting has to do."""
    started = time.perf_counter()
    requests_sent = pages = records = received = 0
    with requests.Session() as http:
        token = http.post(
            f"{base_url}/l/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": os.environ[ID_ENV],
                  "client_secret": os.environ[SECRET_ENV]},
            timeout=60,
        )
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}", "Accept": ACCEPT}
        requests_sent += 1
        for path, params in (("registrations", {"since": since} if since else {}), ("sessions", {})):
            page = 1
            while True:
                response = http.get(f"{base_url}/l/meeting2_api/meetings/{meeting_id}/{path}",
                                    params={**params, "page": page}, headers=headers, timeout=60)
                response.raise_for_status()
                data = response.json()["data"]
                requests_sent += 1
                received += len(response.content)
                if path == "registrations":
                    pages += 1
                    records += len(data)
                if not data:
                    break
                page += 1
    return Floor(time.perf_counter() - started, requests_sent, pages, records, received)


def _event_entry(event_id: str, base_url: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "name": f"Bench congress {event_id}",
        "timezone": "Europe/Amsterdam",
        "start": "2027-06-10T09:00",
        "end": "2027-06-11T17:00",
        "source": {
            "kind": "procurios",
            "base_url": base_url,
            "client_id_env": ID_ENV,
            "client_secret_env": SECRET_ENV,
            "meeting_id": MEETING_ID,
            "settings": {"event_tag": True},
        },
    }


# --------------------------------------------------------------------------- child


def child_main(spec_path: str) -> int:
    """One sync in this (fresh) process; writes seconds, counts and peak RSS to the spec's file."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    from attendee_pipeline.bench.common import (
        RssSampler,
        dagster_instance,
        peak_rss_mib,
        quiet_warnings,
        step_rss,
        step_windows,
        sync_event,
    )

    quiet_warnings()
    import attendee_pipeline.definitions  # noqa: F401 - imports before the baseline

    baseline = peak_rss_mib()
    with dagster_instance("sqlite", Path(spec["instance_dir"])) as instance:
        with RssSampler() as sampler:
            # timed as make bench's main syncs: migrated database, code location loaded first
            sync = sync_event(
                spec["event_id"], instance=instance, catalog_path=Path(spec["catalog_path"]), db_url=spec["db_url"],
                raw_root=Path(spec["raw_root"]), full_import=bool(spec["full_import"]),
            )
        extract = sync.extract
        steps_rss = step_rss(sampler.samples, step_windows(instance, sync.run_id))
    out = {
        "success": sync.success,
        "seconds": sync.seconds,
        "published": sync.published,
        "changes": sync.changes,
        "extract": {
            **{k: extract.get(k) for k in ("records", "pages", "requests", "mode")},
            "token_requests": (extract.get("extra") or {}).get("token_requests"),
        },
        "steps": sync.steps,
        "failure": sync.failure,
        "step_rss_mib": steps_rss,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
    }
    Path(spec["result_path"]).write_text(json.dumps(out, default=str), encoding="utf-8")
    return 0 if sync.success else 1


# --------------------------------------------------------------------------- parent


def _sync(label: str, event_id: str, tmp: Path, db_url: str, full_import: bool = False) -> dict[str, Any]:
    from attendee_pipeline.bench.child import run_child

    spec = {
        "event_id": event_id,
        "catalog_path": str(tmp / "procurios_catalog.yaml"),
        "db_url": db_url,
        "raw_root": str(tmp / "procurios_raw"),
        "instance_dir": str(tmp / "procurios_dagster_home"),
        "result_path": str(tmp / f"{event_id}-{label}.json"),
        "full_import": full_import,
    }
    result = run_child(spec, tmp / f"{event_id}-{label}-spec.json", module="attendee_pipeline.bench.procurios")
    if not result.get("success") or not result.get("published"):
        raise RuntimeError(f"procurios {label} of {event_id} did not publish: {result.get('failure')}")
    progress(f"procurios {event_id} {label}: {result['seconds']:.2f}s, peak RSS {result['peak_rss_mib']} MiB, "
             f"published {result['published']}")
    return result


def _since(db_url: str, event_id: str) -> str | None:
    from attendee_pipeline.platform_db.engine import make_engine
    from attendee_pipeline.platform_db.publish import last_published_position

    engine = make_engine(db_url)
    try:
        return last_published_position(engine, event_id)
    finally:
        engine.dispose()


def _change(sandbox: SandboxProcess, size: int, rng: random.Random, already: set[int]) -> int:
    """1 % new registrations and 1 % of the list cancelled; returns the count of each."""
    n = max(1, size // 100)
    sandbox._control("POST", f"meetings/{MEETING_ID}/add", {"count": n})
    cancel = rng.sample(sorted(set(range(size)) - already), n)
    already.update(cancel)
    sandbox._control("POST", f"meetings/{MEETING_ID}/cancel", {"indices": cancel})
    return n


def run_procurios_bench(report: Report, tmp: Path, records: int = 50_000, latency_ms: float = 100.0) -> None:
    """The Procurios figures at half of ``records`` and at ``records``."""
    os.environ.setdefault(ID_ENV, "bench-procurios-client")
    os.environ.setdefault(SECRET_ENV, "bench-procurios-" + os.urandom(8).hex())
    sizes = sorted({max(100, records // 2), records})
    with SandboxProcess(main="attendee_pipeline.integrations.procurios.sandbox") as sandbox:
        progress(f"procurios sandbox on {sandbox.url} (pid {sandbox.proc.pid if sandbox.proc else '?'})")
        report.figure("procurios.config", {"sizes": sizes, "latency_ms": latency_ms, "page_size": 25, "batch_size": 500})
        for size in sizes:
            event_id = f"procurios-{size}"
            rng = random.Random(size)
            cancelled: set[int] = set()
            sandbox._control("PUT", f"meetings/{MEETING_ID}",
                             {"config": {"registrations": size, "seed": 7, "sessions": 40, "max_sessions": 3}})
            sandbox._control("POST", "latency", {"ms": 0})
            write_catalog(tmp / "procurios_catalog.yaml", _event_entry(event_id, sandbox.url))
            with platform_database(tmp / f"procurios-{size}", None) as db:
                (tmp / f"procurios-{size}").mkdir(exist_ok=True)
                prefix = f"procurios.{size}"
                floor = fetch_floor(sandbox.url, MEETING_ID)
                report.figure(f"{prefix}.fetch_floor_seconds", floor.seconds, requests=floor.requests, pages=floor.pages,
                              records=floor.records, mib=round(floor.bytes / 2**20, 1))
                for label, full in (("initial", False), ("full_import", True)):
                    result = _sync(label, event_id, tmp, db.url, full_import=full)
                    report.figure(f"{prefix}.{label}_seconds", result["seconds"], **_counts(result))
                    report.figure(f"{prefix}.{label}_peak_rss_mib", result["peak_rss_mib"],
                                  baseline_rss_mib=result["baseline_rss_mib"])
                    report.figure(f"{prefix}.{label}_over_floor", result["seconds"] / floor.seconds)
                for label, latency in (("incremental", 0.0), ("incremental_remote", latency_ms)):
                    changed = _change(sandbox, size, rng, cancelled)
                    sandbox._control("POST", "latency", {"ms": latency})
                    incremental_floor = fetch_floor(sandbox.url, MEETING_ID, since=_since(db.url, event_id))
                    result = _sync(label, event_id, tmp, db.url)
                    sandbox._control("POST", "latency", {"ms": 0})
                    published = result["published"]
                    if (int(published.get("added", 0)), int(published.get("removed", 0))) != (changed, changed):
                        raise RuntimeError(f"procurios {label}: expected {changed} added and removed, got {published}")
                    report.figure(f"{prefix}.{label}_fetch_floor_seconds", incremental_floor.seconds,
                                  requests=incremental_floor.requests, records=incremental_floor.records, latency_ms=latency)
                    report.figure(f"{prefix}.{label}_seconds", result["seconds"], **_counts(result), latency_ms=latency)
                    report.figure(f"{prefix}.{label}_peak_rss_mib", result["peak_rss_mib"],
                                  baseline_rss_mib=result["baseline_rss_mib"])
                    report.figure(f"{prefix}.{label}_over_floor", result["seconds"] / incremental_floor.seconds)
                    for step, seconds in result["steps"].items():
                        report.figure(f"{prefix}.{label}_step_seconds.{step}", seconds)


def _counts(result: dict[str, Any]) -> dict[str, Any]:
    published = result["published"]
    return {k: int(published.get(k, 0)) for k in ("added", "updated", "removed", "unchanged", "rows_written")} | {
        "records": result["extract"].get("records")
    }


def report_procurios_targets(report: Report) -> None:
    f = report.figures
    sizes = (f.get("procurios.config") or {}).get("sizes") or []
    if not sizes:
        return
    full = sizes[-1]
    ratio = f.get(f"procurios.{full}.incremental_remote_over_floor")
    report.target("procurios incremental / its fetch floor (remote latency)", ratio, INCREMENTAL_OVER_FLOOR_MAX,
                  ratio is not None and ratio <= INCREMENTAL_OVER_FLOOR_MAX)
    # (the loopback ratio, procurios.<size>.incremental_over_floor, is a figure, not a target: a
    # floor of a few dozen loopback requests is hundredths of a second, a Dagster run is not)
    if len(sizes) == 2:
        for label in ("initial", "full_import", "incremental"):
            small, large = f.get(f"procurios.{sizes[0]}.{label}_peak_rss_mib"), f.get(f"procurios.{full}.{label}_peak_rss_mib")
            growth = large / small if small and large else None
            report.target(f"procurios {label} peak RSS {full} / {sizes[0]} registrations", growth, PEAK_GROWTH_MAX,
                          growth is not None and growth <= PEAK_GROWTH_MAX)


def main(argv: list[str] | None = None) -> int:
    """``python -m attendee_pipeline.bench.procurios`` runs the Procurios part alone (``--records``,
    ``--latency-ms``); with a spec file argument it is the child of one sync."""
    import argparse
    import shutil
    import tempfile

    args = sys.argv[1:] if argv is None else argv
    if args and args[0].endswith(".json"):
        return child_main(args[0])
    parser = argparse.ArgumentParser(prog="python -m attendee_pipeline.bench.procurios")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args(args)
    from attendee_pipeline.bench.common import bench_env, quiet_warnings

    quiet_warnings()
    tmp = Path(tempfile.mkdtemp(prefix="attendee-bench-procurios-"))
    bench_env(tmp)
    report = Report(options.out)
    try:
        run_procurios_bench(report, tmp, options.records, options.latency_ms)
    finally:
        report_procurios_targets(report)
        report.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
