"""``make bench``, the event catalog at scale: a catalog of 5,000 events (``--catalog-events``),
copies of the demo catalog's ``demo-summit`` (hourly and daily) and ``demo-congress``
(Procurios, inside and outside its 20-minute window), so that every schedule has due events.

Measured, each as the daemon evaluates it (``evaluate_tick`` of the definition, resources
given, against a SQLite Dagster instance and platform database):

* the ``event_catalog_sensor``'s tick: the first one with nothing cached (informative), a
  steady one, the first one after one entry changed, and a steady one again;
* the tick of each schedule (``hourly_attendee_sync``, ``daily_attendee_sync``,
  ``procurios_window_sync``, ``procurios_nightly_sync``) at a scheduled time at which its
  events are due, found by name in the code location so that a change to their logic does not
  break the bench: Dagster's whole ``evaluate_tick`` as the daemon calls it (the target), and
  beside it the schedule's function alone;
* the catalog's share of one ``attendee-pipeline sync <event> --force --in-process`` in a child
  process (the same data folder, so what the sensor's process cached on disk is there, as in a
  deployment): the time spent in ``load_catalog`` and in the catalog's methods, by the CLI and
  by the run in one process, beside the sync's wall time. (Submitted to the queue, the run
  does the same in its own process, which reads the catalog from the same disk cache.)

Targets: every tick <= 2 s, the catalog's share <= 0.2 s.
``python -m attendee_pipeline.bench.catalog`` runs this part alone.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from attendee_pipeline.bench.common import Report, SandboxProcess, dagster_instance, progress

#: Targets.
TICK_MAX_SECONDS = 2.0
CLI_SHARE_MAX_SECONDS = 0.2

SCHEDULES = ("hourly_attendee_sync", "daily_attendee_sync", "procurios_window_sync", "procurios_nightly_sync")

#: A scheduled time per schedule at which the bench catalog has due events: every event is in
#: UTC, so the daily hour (sync.auto.daily_at, default 09:00) and the nightly hour are the same
#: in the events' local time.
TICKS = {
    "hourly_attendee_sync": dt.datetime(2027, 1, 5, 10, 0, tzinfo=dt.timezone.utc),
    "daily_attendee_sync": dt.datetime(2027, 1, 5, 9, 0, tzinfo=dt.timezone.utc),
    "procurios_window_sync": dt.datetime(2027, 1, 5, 10, 20, tzinfo=dt.timezone.utc),
    "procurios_nightly_sync": dt.datetime(2027, 1, 5, 3, 0, tzinfo=dt.timezone.utc),
}

#: The event the CLI sync runs (an hourly copy of demo-summit) and its sandbox dataset.
CLI_EVENT = "scale-0001"
SUMMIT_KEY_ENV = "DEMO_SUMMIT_API_KEY"


def scale_entries(count: int) -> list[dict[str, Any]]:
    """``count`` catalog entries: of every five, two hourly and one daily copy of demo-summit,
    one Procurios copy of demo-congress inside its window in January 2027 and one a year later
    (outside it: the nightly schedule's). Each Procurios copy has its own meeting."""
    demo = Path(__file__).resolve().parent.parent / "catalog" / "demo_catalog.yaml"
    events = {e["id"]: e for e in yaml.safe_load(demo.read_text(encoding="utf-8"))["events"]}
    summit, congress = events["demo-summit"], events["demo-congress"]
    entries = []
    for i in range(count):
        kind = i % 5
        entry = copy.deepcopy(congress if kind >= 3 else summit)
        entry.update(id=f"scale-{i:04d}", name=f"Scale event {i}", timezone="UTC")
        if kind < 3:
            entry["sync"]["auto"] = {"interval": "daily" if kind == 2 else "hourly"}
        else:
            year = 2027 if kind == 3 else 2028
            entry.update(start=f"{year}-03-09T09:00", end=f"{year}-03-11T18:00")
            entry["source"]["meeting_id"] = str(10_000 + i)
        entries.append(entry)
    return entries


def write_scale_catalog(path: Path, count: int) -> Path:
    path.write_text(yaml.safe_dump({"events": scale_entries(count)}, sort_keys=False), encoding="utf-8")
    return path


def rename_one(path: Path, index: int) -> None:
    """Change one entry's name in place (the change a tick after an edit sees)."""
    text = path.read_text(encoding="utf-8")
    old = f"name: Scale event {index}\n"
    if old not in text:
        raise RuntimeError(f"the bench catalog has no line {old!r}")
    path.write_text(text.replace(old, f"name: Scale event {index} (renamed)\n", 1), encoding="utf-8")


# --------------------------------------------------------------------------- ticks


def _definitions() -> Any:
    from attendee_pipeline.definitions import defs

    return defs


def _resources(catalog: Path, db_url: str) -> dict[str, Any]:
    from attendee_pipeline.defs.resources import EventCatalogResource, PlatformDatabaseResource

    return {"catalog": EventCatalogResource(path=str(catalog)), "platform_db": PlatformDatabaseResource(url=db_url)}


class SensorTicks:
    """Evaluates the catalog sensor like the daemon: ``evaluate_tick``, then its partition
    requests and asset events applied to the instance and its cursor kept for the next tick."""

    def __init__(self, instance: Any, catalog: Path, db_url: str) -> None:
        self.instance = instance
        self.resources = _resources(catalog, db_url)
        self.sensor = _definitions().resolve_sensor_def("event_catalog_sensor")
        self.cursor: str | None = None

    def tick(self) -> tuple[float, float, Any]:
        """(seconds to evaluate, seconds to apply, the tick's data)."""
        import dagster as dg

        with dg.build_sensor_context(
            instance=self.instance,
            resources=self.resources,
            cursor=self.cursor,
            repository_def=_definitions().get_repository_def(),
        ) as context:
            started = time.perf_counter()
            data = self.sensor.evaluate_tick(context)
            evaluated = time.perf_counter() - started
        started = time.perf_counter()
        for request in data.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
        for event in getattr(data, "asset_events", None) or []:
            self.instance.report_runless_asset_event(event)
        self.cursor = data.cursor
        return evaluated, time.perf_counter() - started, data


def schedule_tick(instance: Any, catalog: Path, db_url: str, name: str) -> tuple[float, float, int]:
    """(seconds of the schedule's function, seconds of Dagster's whole ``evaluate_tick``, run
    requests) of one tick of schedule ``name`` at its bench time. ``evaluate_tick`` calls the
    function and resolves each run request it returns (the schedules hand them over resolved:
    see ``with_partitions``)."""
    import dagster as dg

    schedule = _definitions().resolve_schedule_def(name)
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=TICKS[name],
        resources=_resources(catalog, db_url),
        repository_def=_definitions().get_repository_def(),
    ) as context:
        started = time.perf_counter()
        result = schedule(context)
        own = time.perf_counter() - started
        started = time.perf_counter()
        data = schedule.evaluate_tick(context)
        whole = time.perf_counter() - started
    if not isinstance(result, list) or len(result) != len(data.run_requests or []):
        raise RuntimeError(f"{name}: no due events at {TICKS[name].isoformat()} ({result})")
    return own, whole, len(result)


# --------------------------------------------------------------------------- the CLI sync child


class CatalogClock:
    """Adds up the time spent in the catalog's entry points (outermost calls only)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0

    def wrap(self, function: Any) -> Any:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1
                self._depth -= 1

        return timed

    def instrument(self) -> None:
        """Time ``load_catalog`` and every public method and property of ``Catalog`` (where a
        catalog's entries are validated). Call it before the code that binds ``load_catalog``
        at import (the resources module) is imported."""
        import attendee_pipeline.catalog as package
        from attendee_pipeline.catalog import loader

        timed = self.wrap(loader.load_catalog)
        loader.load_catalog = package.load_catalog = timed  # type: ignore[assignment]
        cls = package.Catalog
        for name, attribute in list(vars(cls).items()):
            if name.startswith("_") or name.startswith("model_"):
                continue
            if isinstance(attribute, property) and attribute.fget is not None:
                setattr(cls, name, property(self.wrap(attribute.fget)))
            elif inspect.isfunction(attribute):
                setattr(cls, name, self.wrap(attribute))


def child_main(spec_path: str) -> int:
    """One ``attendee-pipeline sync <event> --force --in-process`` with the catalog's time measured."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    os.environ.update(spec["env"])
    clock = CatalogClock()
    clock.instrument()
    from attendee_pipeline.cli.main import cli

    started = time.perf_counter()
    try:
        argv = ["sync", spec["event_id"], "--force", "--in-process"]
        cli.main(argv, prog_name="attendee-pipeline", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    seconds = time.perf_counter() - started
    result = {"exit_code": code, "seconds": seconds, "catalog_seconds": clock.seconds, "catalog_calls": clock.calls}
    Path(spec["result_path"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def cli_sync(tmp: Path, catalog: Path, data_dir: Path, sandbox_url: str, key: str) -> dict[str, Any]:
    from attendee_pipeline.bench.child import run_child

    spec = {
        "event_id": CLI_EVENT,
        "result_path": str(tmp / "catalog_cli_result.json"),
        "env": {
            "ATTENDEE_PIPELINE_CATALOG": str(catalog),
            "ATTENDEE_PIPELINE_DATA_DIR": str(data_dir),
            "ATTENDEE_PIPELINE_SANDBOX_URL": sandbox_url,
            SUMMIT_KEY_ENV: key,
            "DAGSTER_HOME": str(data_dir / "dagster_home"),
        },
    }
    return run_child(spec, tmp / "catalog_cli_spec.json", module="attendee_pipeline.bench.catalog")


# --------------------------------------------------------------------------- the run


def run_catalog_bench(report: Report, tmp: Path, count: int = 5_000) -> None:
    from attendee_pipeline.bench.common import quiet_warnings

    quiet_warnings()
    folder = tmp / "catalog-bench"
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("ATTENDEE_PIPELINE_DATA_DIR")
    os.environ["ATTENDEE_PIPELINE_DATA_DIR"] = str(data_dir)  # where the catalog's parse is cached
    try:
        _run(report, folder, data_dir, count)
    finally:
        if previous is None:
            os.environ.pop("ATTENDEE_PIPELINE_DATA_DIR", None)
        else:
            os.environ["ATTENDEE_PIPELINE_DATA_DIR"] = previous


def _run(report: Report, folder: Path, data_dir: Path, count: int) -> None:
    import secrets

    catalog = write_scale_catalog(folder / "catalog.yaml", count)
    db_url = f"sqlite:///{folder / 'platform.sqlite3'}"
    report.figure("catalog.config", {"events": count, "bytes": catalog.stat().st_size,
                                     "ticks": {k: v.isoformat() for k, v in TICKS.items()}})
    progress(f"catalog: {count} events, {catalog.stat().st_size / 2**20:.1f} MiB")
    with dagster_instance("sqlite", folder / "dagster_home") as instance:
        ticks = SensorTicks(instance, catalog, db_url)
        for label in ("cold", "steady", "after_change", "steady_after_change"):
            if label == "after_change":
                rename_one(catalog, 7)
            seconds, applied, data = ticks.tick()
            added = sum(len(r.partition_keys) for r in data.dynamic_partitions_requests or []
                        if type(r).__name__ == "AddDynamicPartitionsRequest")
            report.figure(f"catalog.sensor_tick_seconds.{label}", seconds, apply_seconds=round(applied, 3),
                          partitions_added=added, asset_events=len(getattr(data, "asset_events", None) or []))
            progress(f"catalog sensor tick ({label}): {seconds:.2f}s")
        for name in SCHEDULES:
            own, whole, requested = schedule_tick(instance, catalog, db_url, name)
            report.figure(f"catalog.schedule_tick_seconds.{name}", whole, run_requests=requested,
                          function_seconds=round(own, 3))
            progress(f"catalog schedule {name}: {whole:.2f}s for {requested} run requests "
                     f"(its function {own:.2f}s)")

    key = secrets.token_urlsafe(12)
    with SandboxProcess() as sandbox:
        sandbox.put_dataset("summit", {"records": 240, "seed": 2027, "pagination": "page", "page_size": 100,
                                       "auth": "header", "credentials": {"X-Api-Key": key}})
        progress(f"catalog: attendee-pipeline sync {CLI_EVENT} --force --in-process in a child process")
        result = cli_sync(folder, catalog, data_dir, sandbox.url, key)
    if result["exit_code"] != 0:
        raise RuntimeError(f"attendee-pipeline sync {CLI_EVENT} exited with {result['exit_code']}")
    report.figure("catalog.cli_sync_seconds", result["seconds"], event=CLI_EVENT)
    report.figure("catalog.cli_sync_catalog_seconds", result["catalog_seconds"], calls=result["catalog_calls"])


def report_catalog_targets(report: Report) -> None:
    f = report.figures
    if "catalog.config" not in f:
        return
    for name, value in f.items():
        if name.startswith(("catalog.sensor_tick_seconds.", "catalog.schedule_tick_seconds.")):
            if name.endswith(".cold"):
                continue  # nothing cached yet: once per deployment, informative
            label = name.removeprefix("catalog.").replace("_seconds", "")
            report.target(f"catalog {label} (s)", value, TICK_MAX_SECONDS, value <= TICK_MAX_SECONDS)
    share = f.get("catalog.cli_sync_catalog_seconds")
    report.target("catalog share of a one-event CLI sync (s)", share, CLI_SHARE_MAX_SECONDS,
                  share is not None and share <= CLI_SHARE_MAX_SECONDS)


def main(argv: list[str] | None = None) -> int:
    """``python -m attendee_pipeline.bench.catalog [--catalog-events N] [--out FILE]``; with a
    spec file argument it is the child that runs the CLI sync."""
    import argparse
    import shutil
    import tempfile

    args = sys.argv[1:] if argv is None else argv
    if args and args[0].endswith(".json"):
        return child_main(args[0])
    parser = argparse.ArgumentParser(prog="python -m attendee_pipeline.bench.catalog")
    parser.add_argument("--catalog-events", type=int, default=5_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed on stderr)")
    options = parser.parse_args(args)
    from attendee_pipeline.bench.common import bench_env

    tmp = Path(tempfile.mkdtemp(prefix="attendee-bench-catalog-"))
    bench_env(tmp)
    report = Report(options.out)
    try:
        run_catalog_bench(report, tmp, options.catalog_events)
    finally:
        report_catalog_targets(report)
        report.close()
        if options.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
