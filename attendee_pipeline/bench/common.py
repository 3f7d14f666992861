"""Building blocks of the bench: the sandbox in its own process, the platform database, the
bench catalog, running the real sync assets with ``dagster.materialize`` and reporting figures.

Mirrors how the tests drive the pipeline (``dagster.materialize`` of every attendee asset and
check for one event partition, resources given explicitly) without importing test code.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import sqlalchemy as sa
import yaml

from attendee_pipeline.processes import stop_process

#: Field mapping of the bench events: the sandbox's default field names (as the test catalogs).
BENCH_MAPPING: dict[str, str] = {
    "source_record_id": "id",
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "titles": "titles",
    "job_title": "jobTitle",
    "company": "company",
    "country": "country",
    "biography": "biography",
    "badge_url": "badge",
    "groups": "groups",
}

PG_SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

#: Keep Dagster's console quiet during the runs (events are still stored in the instance).


def quiet_warnings() -> None:
    """Silence the preview / beta warnings Dagster raises for partitioned asset checks."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the JSON figures)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ru_maxrss_mib() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (KiB on Linux, bytes on macOS).

    Caveat: Linux carries the parent's peak over into a child started with fork/vfork + exec (the
    pre-exec address space's high-water mark is folded into the child's ``maxrss``), so in a
    child this is max(parent's peak when it spawned the child, the child's own peak).
    """
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        peak /= 1024
    return round(peak / 1024, 1)


def vm_hwm_mib() -> float | None:
    """This process's own peak RSS since its exec (``VmHWM`` of /proc/self/status), in MiB;
    None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def current_rss_mib() -> float | None:
    """This process's resident set size now (/proc/self/statm), in MiB; None without /proc."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Samples the current RSS every ``interval`` seconds in a background thread, so the peak
    can be attributed to the step that was running (see :func:`step_rss`)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time.time(), MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = current_rss_mib()
            if rss is None:
                return
            self.samples.append((time.time(), rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def step_windows(instance: Any, run_id: str) -> dict[str, tuple[float, float]]:
    """Step key -> (start, end) wall-clock timestamps, from the run's event log."""
    starts: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}
    for entry in instance.all_logs(run_id):
        kind = entry.dagster_event_type.value if entry.dagster_event_type else None
        if not entry.step_key or kind is None:
            continue
        if kind == "STEP_START":
            starts[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in starts:
            out[entry.step_key] = (starts[entry.step_key], entry.timestamp)
    return out


def step_rss(
    samples: list[tuple[float, float]], windows: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Step key -> {"start": RSS when it started, "peak": highest RSS sampled while it ran} (MiB)."""
    out: dict[str, dict[str, float]] = {}
    for step, (start, end) in windows.items():
        inside = [rss for t, rss in samples if start <= t <= end]
        before = [rss for t, rss in samples if t <= start]
        if inside:
            start_rss = before[-1] if before else inside[0]
            out[step] = {"start": round(start_rss, 1), "peak": round(max(inside), 1)}
    return out


def peak_rss_mib() -> float:
    """This process's own peak RSS in MiB: VmHWM on Linux, else ru_maxrss."""
    own = vm_hwm_mib()
    return own if own is not None else ru_maxrss_mib()


# --------------------------------------------------------------------------- reporting


class Report:
    """Prints one JSON line per figure / target to stdout (and to ``--out`` when given)."""

    def __init__(self, out: Path | None = None) -> None:
        self.figures: dict[str, Any] = {}
        self._out: IO[str] | None = open(out, "w", encoding="utf-8") if out else None  # noqa: SIM115

    def _emit(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, separators=(", ", ": "))
        print(text, flush=True)
        if self._out is not None:
            self._out.write(text + "\n")
            self._out.flush()

    def figure(self, name: str, value: Any, **extra: Any) -> Any:
        if isinstance(value, float):
            value = round(value, 3)
        self.figures[name] = value
        self._emit({"figure": name, "value": value, **extra})
        return value

    def target(self, name: str, value: Any, limit: Any, ok: bool) -> None:
        if isinstance(value, float):
            value = round(value, 3)
        self._emit({"target": name, "value": value, "limit": limit, "ok": bool(ok)})

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


# --------------------------------------------------------------------------- sandbox process


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class SandboxProcess:
    """A sandbox (the attendee API's unless ``main`` names another) served by uvicorn in a separate
    Python process (own GIL)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        main: str = "attendee_pipeline.integrations.attendee_api.sandbox",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        #: The sandbox module whose ``main(host=, port=)`` serves (the attendee API's, Procurios').
        self.main = main
        self.url = f"http://{host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.http = requests.Session()

    def start(self, timeout: float = 30.0) -> "SandboxProcess":
        code = (
            f"from {self.main} import main; "
            f"main(host={self.host!r}, port={self.port})"
        )
        # stderr to a file: a pipe nobody reads could fill up and stall the server
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._stderr.seek(0)
                err = self._stderr.read().decode(errors="replace")
                raise RuntimeError(f"the sandbox process exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                if self.http.get(f"{self.url}/_control/state", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox did not answer on {self.url} within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.http.close()
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> "SandboxProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # control API
    def _control(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        resp = self.http.request(method, f"{self.url}/_control/{path}", json=payload, timeout=120)
        if not resp.ok:
            raise RuntimeError(f"sandbox control {method} {path}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def put_dataset(self, slug: str, config: dict[str, Any]) -> dict[str, Any]:
        return self._control("PUT", f"events/{slug}", {"config": config})

    def modify(self, slug: str, field_name: str, fraction: float) -> list[int]:
        result = self._control("POST", f"events/{slug}/modify", {"field": field_name, "fraction": fraction})
        return list(result["positions"])

    def event_url(self, slug: str) -> str:
        return f"{self.url}/events/{slug}/attendees"


def dataset_config(records: int, page_size: int, seed: int = 1) -> dict[str, Any]:
    """The bench dataset: page-number pagination, badges on 30 %, groups (default), no deletes."""
    return {
        "records": records,
        "seed": seed,
        "pagination": "page",
        "page_size": page_size,
        "max_page_size": 100_000,
        "badge_fraction": 0.3,
        "deleted_fraction": 0.0,
    }


# --------------------------------------------------------------------------- catalog


def event_entry(event_id: str, url: str, page_size: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "name": f"Bench {event_id}",
        "timezone": "UTC",
        "start": "2027-03-01T09:00",
        "end": "2027-03-02T18:00",
        "source": {"kind": "rest_api", "url": url, "pagination": {"style": "page", "size": page_size}},
        "mapping": dict(BENCH_MAPPING),
        "delete_flag": {"field": "deleted", "values": [True]},
    }


def write_catalog(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"events": list(entries)}, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- platform database


@dataclass
class Database:
    url: str  # with the password: for engines only, never printed
    kind: str  # sqlite | postgresql
    name: str


@contextlib.contextmanager
def platform_database(tmp: Path, db_url: str | None) -> Iterator[Database]:
    """A fresh platform database: a SQLite file under ``tmp`` (default), or a new uniquely named
    PostgreSQL database on the server of ``db_url`` (dropped afterwards)."""
    if not db_url or db_url == "sqlite":
        path = tmp / "platform.sqlite3"
        yield Database(f"sqlite:///{path}", "sqlite", path.name)
        return
    if db_url in ("postgres", "postgresql", "pg"):
        db_url = PG_SERVER_URL
    server = sa.engine.make_url(db_url)
    if server.get_backend_name() == "sqlite":
        yield Database(server.render_as_string(hide_password=False), "sqlite", server.database or "")
        return
    if server.get_backend_name() != "postgresql":
        raise ValueError("--db-url must be a postgresql:// server URL (or 'sqlite' / 'postgres')")
    if server.host not in (None, "127.0.0.1", "localhost", "::1"):
        raise ValueError("the bench only talks to loopback database servers (127.0.0.1)")
    with scratch_pg_database(server, "attendee_bench") as url:
        yield Database(url, "postgresql", sa.engine.make_url(url).database or "")


@contextlib.contextmanager
def scratch_pg_database(server: sa.URL, prefix: str) -> Iterator[str]:
    """A new uniquely named database on ``server`` (its URL), dropped afterwards."""
    admin_url = server.set(database=server.database or "postgres")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --------------------------------------------------------------------------- running the pipeline


#: Dagster instance kinds of the bench (``--instance``).
INSTANCE_KINDS = ("sqlite", "postgres", "ephemeral")


@contextlib.contextmanager
def dagster_instance(kind: str, folder: Path) -> Iterator[Any]:
    """A throw-away Dagster instance: ``sqlite`` (a temp DAGSTER_HOME with SQLite storage, like
    the embedded default), ``postgres`` (PostgreSQL storage as in the repository's dagster.yaml,
    in a new database on the local server, dropped afterwards) or ``ephemeral`` (in memory)."""
    import dagster as dg

    folder.mkdir(parents=True, exist_ok=True)
    no_telemetry = {"telemetry": {"enabled": False}}
    if kind == "ephemeral":
        instance = dg.DagsterInstance.ephemeral(tempdir=str(folder), settings=no_telemetry)
    elif kind == "sqlite":
        instance = dg.DagsterInstance.local_temp(tempdir=str(folder), overrides=no_telemetry)
    elif kind == "postgres":
        with scratch_pg_database(sa.engine.make_url(PG_SERVER_URL), "attendee_bench_instance") as url:
            parsed = sa.engine.make_url(url)
            config = {
                "storage": {
                    "postgres": {
                        "postgres_db": {
                            "username": parsed.username or "postgres",
                            "hostname": parsed.host or "127.0.0.1",
                            "port": parsed.port or 5432,
                            "db_name": parsed.database,
                            "scheme": "postgresql+psycopg2",
                        }
                    }
                },
                **no_telemetry,
            }
            (folder / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            instance = dg.DagsterInstance.from_config(str(folder))
            try:
                yield instance
            finally:
                instance.dispose()
        return
    else:
        raise ValueError(f"unknown instance kind {kind!r}")
    try:
        yield instance
    finally:
        instance.dispose()


@dataclass
class SyncResult:
    success: bool
    seconds: float
    run_id: str
    published: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)  # step key -> seconds
    failure: str = ""
    extract: dict[str, Any] = field(default_factory=dict)  # the raw extract's metadata


def _step_seconds(result: Any) -> dict[str, float]:
    """Step key -> seconds, from the STEP_SUCCESS / STEP_FAILURE events (they carry durations)."""
    out: dict[str, float] = {}
    for event in result.all_events:
        if event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key:
            duration = getattr(event.event_specific_data, "duration_ms", None)
            if duration is not None:
                out[event.step_key] = round(duration / 1000, 3)
    return out


def _failure(result: Any) -> str:
    from attendee_pipeline.cli.runs import first_failure

    return first_failure(result, with_step=True) or ("" if result.success else "run failed")


def sync_event(
    event_id: str,
    *,
    instance: Any,
    catalog_path: Path,
    db_url: str,
    raw_root: Path,
    force: bool = False,
    full_import: bool = False,
) -> SyncResult:
    """Run the attendee sync job (every asset and check) for one event partition, exactly as
    ``attendee-pipeline sync`` does (``dagster.execute_job``); time the run end to end, from
    launching it on the loaded code location to its result.

    An unchanged input is not mapped or written (see attendee_pipeline.sync.fingerprint); then
    ``published`` says so (``rows_written`` 0, ``skipped_unchanged`` true). ``force`` runs every
    step anyway; ``full_import`` asks a Procurios extract for every registration.
    """
    from attendee_pipeline.cli.runs import load_sync_job, materialization_metadata, sync_run
    from attendee_pipeline.platform_db.engine import ensure_schema

    quiet_warnings()
    # Before the clock starts, as in a deployment: the platform database is migrated, and the
    # code location is loaded (a Dagster run worker loads it before a run starts). make bench
    # times both on their own (platform_db_migrate_seconds, code_location_load_seconds).
    ensure_schema(db_url)
    load_sync_job(event_id, catalog_path=str(catalog_path), db_url=db_url, raw_root=str(raw_root))
    started = time.perf_counter()
    with sync_run(
        event_id,
        instance=instance,
        trigger="bench",
        run_config={"ops": {"event_sync": {"config": {"force": force, "full_import": full_import}}}},
        log_level="WARNING",
        catalog_path=str(catalog_path),
        db_url=db_url,
        raw_root=str(raw_root),
    ) as result:
        seconds = time.perf_counter() - started
        return _sync_result(result, seconds, materialization_metadata)


def _sync_result(result: Any, seconds: float, materialization_metadata: Any) -> SyncResult:
    published = materialization_metadata(result, "published_attendees")
    extract = materialization_metadata(result, "attendee_raw_extract")
    if result.success and extract.get("unchanged"):
        published = {
            "rows_written": 0,
            "unchanged": int(extract.get("unchanged_attendees", 0)),
            "skipped_unchanged": True,
        }
    return SyncResult(
        success=result.success,
        seconds=seconds,
        run_id=result.run_id,
        published=published,
        changes=materialization_metadata(result, "attendee_changes"),
        steps=_step_seconds(result),
        failure=_failure(result),
        extract=extract,
    )


def require_success(label: str, sync: SyncResult) -> SyncResult:
    if not sync.success or not sync.published:
        raise RuntimeError(f"{label}: the sync did not publish ({sync.failure or 'no published_attendees'})")
    return sync


def bench_env(tmp: Path) -> None:
    """Keep the embedded defaults (data dir, Dagster home) inside the bench's temp folder."""
    os.environ["ATTENDEE_PIPELINE_DATA_DIR"] = str(tmp / "data")
    os.environ.pop("ATTENDEE_PIPELINE_DB_URL", None)
    os.environ.pop("ATTENDEE_PIPELINE_CATALOG", None)
