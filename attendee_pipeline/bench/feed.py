"""The push feed benchmark (issue 3): the feed service in its own process on 127.0.0.1, backed
by a scratch PostgreSQL database, under a load generator on loopback.

The service runs as ``serve-feed --workers 2`` (one process per core of this machine).

* ``feed_accepted_per_second``: closed loop, ``workers`` keep-alive connections posting distinct
  attendees as fast as the service answers, for ``seconds``; every 200 is checked against the
  inbox afterwards (``feed_durable``: the rows committed equal the 200s).
* ``feed_latency_p50_ms`` / ``feed_latency_p99_ms``: open loop at ``rate`` requests/s, each
  latency counted from the moment the request was due (no coordinated omission).
* ``feed_publish_run_seconds``: one sync run of the feed event after a push; with the inbox
  sensor's default interval a push is published ``interval / 2 + run`` after its 200 on
  average and ``interval + run`` at worst (``feed_time_to_publish_expected/worst``).
* ``feed_time_to_publish_daemon_*``: the same measured end to end -- ``dagster-daemon`` running
  the workspace (embedded SQLite instance, runs launched in their own processes), three pushes
  at random phases of the sensor's tick, each timed from its 200 to its attendee row.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from attendee_pipeline.bench.common import PG_SERVER_URL, Report, progress, scratch_pg_database
from attendee_pipeline.processes import stop_process

FEED_EVENT = "bench-feed"
#: Targets of issue 3.
ACCEPTED_PER_SECOND_MIN = 1000
P99_MS_MAX = 50.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _payload(n: int) -> bytes:
    return json.dumps(
        {
            "profile": {"email": f"load{n}@example.org", "firstName": f"First{n}", "lastName": f"Last{n}",
                        "company": "ACME", "customFields": [{"fieldName": "seq", "fieldValue": str(n)}]},
            "eventInfo": {"groups": {"groupNames": ["Load"]}},
        }
    ).encode()


class _Client:
    """One keep-alive HTTP/1.1 connection to the service."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Content-Type": "application/json", "Api-Key": key}

    def post(self, body: bytes) -> int:
        self.conn.request("POST", f"/events/{FEED_EVENT}/attendees", body=body, headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self.conn.close()


def _closed_loop(port: int, key: str, workers: int, seconds: float) -> tuple[int, int, float]:
    """(200s, other answers, elapsed) with ``workers`` connections posting back to back."""
    counter = iter(range(10**9))
    lock = threading.Lock()
    ok = [0]
    other = [0]
    stop = time.perf_counter() + seconds

    def work() -> None:
        client = _Client(port, key)
        try:
            while time.perf_counter() < stop:
                with lock:
                    n = next(counter)
                status = client.post(_payload(n))
                with lock:
                    if status == 200:
                        ok[0] += 1
                    else:
                        other[0] += 1
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok[0], other[0], time.perf_counter() - started


def _open_loop(port: int, key: str, rate: float, seconds: float, workers: int) -> list[float]:
    """Latencies (s) of requests due every 1/rate s, spread over ``workers`` connections."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        client = _Client(port, key)
        mine: list[float] = []
        try:
            for i in range(offset, total, workers):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                status = client.post(_payload(10**8 + i))
                if status == 200:
                    mine.append(time.perf_counter() - due)
        finally:
            client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(latencies)


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_feed_bench(
    report: Report,
    tmp: Path,
    seconds: float = 5.0,
    workers: int = 16,
    rate: float = 500,
    processes: int = 2,
    daemon: bool = True,
) -> None:
    from attendee_pipeline.bench.common import sync_event, write_catalog
    from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
    from attendee_pipeline.platform_db.feed import create_key
    from attendee_pipeline.platform_db.tables import feed_inbox

    with scratch_pg_database(sa.engine.make_url(PG_SERVER_URL), "attendee_bench_feed") as url:
        ensure_schema(url)
        engine = make_engine(url)
        key = create_key(engine, FEED_EVENT)[1]
        port = _free_port()
        log = (tmp / "feed-service.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "attendee_pipeline.cli.main", "serve-feed", "--port", str(port),
             "--workers", str(processes)],
            env={**os.environ, "ATTENDEE_PIPELINE_DB_URL": url},
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the feed service did not start (see {tmp / 'feed-service.log'})")
                time.sleep(0.1)

            progress(f"feed: closed loop, {workers} connections for {seconds:.0f}s (PostgreSQL inbox)")
            ok, other, elapsed = _closed_loop(port, key, workers, seconds)
            with engine.connect() as conn:
                rows = conn.execute(sa.select(sa.func.count()).select_from(feed_inbox)).scalar_one()
            report.figure("feed_accepted_per_second", round(ok / elapsed, 1), accepted=ok, other=other,
                          seconds=round(elapsed, 2), connections=workers, server_processes=processes)
            report.figure("feed_durable", rows == ok, inbox_rows=rows, accepted=ok)

            progress(f"feed: open loop at {rate:.0f} requests/s for {seconds:.0f}s")
            latencies = _open_loop(port, key, rate, seconds, workers)
            report.figure("feed_latency_p50_ms", round(_percentile(latencies, 50) * 1000, 2), rate=rate,
                          requests=len(latencies))
            report.figure("feed_latency_p99_ms", round(_percentile(latencies, 99) * 1000, 2), rate=rate)

            progress("feed: one sync run of the feed event after the load")
            _Client(port, key).post(_payload(-1))
            catalog = write_catalog(tmp / "feed-catalog.yaml", {
                "id": FEED_EVENT, "name": "Feed bench", "timezone": "UTC",
                "start": "2027-03-01T09:00", "end": "2027-03-02T18:00", "source": {"kind": "feed"},
            })
            from attendee_pipeline.bench.common import dagster_instance
            from attendee_pipeline.integrations.feed.defs.sensors import FEED_SENSOR_INTERVAL_SECONDS

            # a first run publishes the load (thousands of pushes); the timed one, what came after
            with dagster_instance("sqlite", tmp / "feed_dagster_home") as instance:
                first = sync_event(FEED_EVENT, instance=instance, catalog_path=catalog, db_url=url,
                                   raw_root=tmp / "feed_raw")
                report.figure("feed_publish_load_seconds", round(first.seconds, 3),
                              added=int(first.published.get("added", 0)))
                _Client(port, key).post(_payload(-2))
                run = sync_event(FEED_EVENT, instance=instance, catalog_path=catalog, db_url=url,
                                 raw_root=tmp / "feed_raw")
            report.figure("feed_publish_run_seconds", round(run.seconds, 3), added=int(run.published.get("added", 0)))
            report.figure("feed_time_to_publish_expected_seconds",
                          round(FEED_SENSOR_INTERVAL_SECONDS / 2 + run.seconds, 1),
                          sensor_interval=FEED_SENSOR_INTERVAL_SECONDS)
            report.figure("feed_time_to_publish_worst_seconds", round(FEED_SENSOR_INTERVAL_SECONDS + run.seconds, 1))
            if daemon:
                progress("feed: a push published by a running dagster-daemon (sensor + queued run)")
                waits = _published_by_daemon(port, key, url, catalog, tmp)
                report.figure("feed_time_to_publish_daemon_mean_seconds", round(sum(waits) / len(waits), 1),
                              samples=[round(w, 1) for w in waits], sensor_interval=FEED_SENSOR_INTERVAL_SECONDS)
                report.figure("feed_time_to_publish_daemon_max_seconds", round(max(waits), 1))
        finally:
            stop_process(proc)
            log.close()
            engine.dispose()


def _published_by_daemon(
    port: int, key: str, db_url: str, catalog: Path, tmp: Path, samples: int = 3, timeout: float = 180
) -> list[float]:
    """Seconds from the 200 of a new push to its attendee row, for ``samples`` pushes at random
    phases of the sensor's tick, with ``dagster-daemon`` running
    the project's workspace (embedded SQLite instance, default sensor intervals, runs launched
    in their own processes as in production)."""
    from attendee_pipeline.integrations.feed.defs.sensors import FEED_SENSOR_INTERVAL_SECONDS
    from attendee_pipeline.defs.partitions import events_partitions
    from attendee_pipeline.instance import EMBEDDED_DAGSTER_YAML
    from attendee_pipeline.processes import running_daemon
    from attendee_pipeline.platform_db.engine import make_engine
    from attendee_pipeline.platform_db.tables import attendees

    import dagster as dg

    home = tmp / "feed_daemon_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML, encoding="utf-8")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the partition exists already
        instance.add_dynamic_partitions(events_partitions.name, [FEED_EVENT])
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DAGSTER_HOME": str(home), "ATTENDEE_PIPELINE_CATALOG": str(catalog),
           "ATTENDEE_PIPELINE_DB_URL": db_url, "ATTENDEE_PIPELINE_DATA_DIR": str(tmp / "feed_daemon_data")}
    engine = make_engine(db_url)
    try:
        with running_daemon(env, root, tmp / "feed-daemon.log") as daemon:
            time.sleep(FEED_SENSOR_INTERVAL_SECONDS + 5)  # the sensor's first tick takes what came before
            waits: list[float] = []
            for sample in range(samples):
                time.sleep(random.uniform(0, FEED_SENSOR_INTERVAL_SECONDS))  # a random phase of the tick
                email = f"daemon-timed-{sample}@example.org"
                body = json.dumps({"profile": {"email": email, "firstName": "Timed", "lastName": "Push"}}).encode()
                client = _Client(port, key)  # a new connection: the server closes idle ones
                assert client.post(body) == 200
                acked = time.perf_counter()
                client.close()
                query = sa.select(sa.func.count()).select_from(attendees).where(attendees.c.attendee_key == email)
                while True:
                    with engine.connect() as conn:
                        if conn.execute(query).scalar_one():
                            waits.append(time.perf_counter() - acked)
                            break
                    if daemon.poll() is not None:
                        raise RuntimeError(f"dagster-daemon stopped (see {tmp / 'feed-daemon.log'})")
                    if time.perf_counter() - acked > timeout:
                        raise RuntimeError(
                            f"a push was not published within {timeout:.0f}s (see {tmp / 'feed-daemon.log'})"
                        )
                    time.sleep(0.25)
            return waits
    finally:
        engine.dispose()


def report_feed_targets(report: Report) -> None:
    f = report.figures
    if "feed_accepted_per_second" not in f:
        return
    rate = f["feed_accepted_per_second"]
    report.target("feed accepted/s (durable)", rate, ACCEPTED_PER_SECOND_MIN,
                  rate >= ACCEPTED_PER_SECOND_MIN and bool(f.get("feed_durable")))
    p99 = f.get("feed_latency_p99_ms")
    report.target("feed p99 ms at 500/s", p99, P99_MS_MAX, p99 is not None and p99 <= P99_MS_MAX)


__all__ = ["run_feed_bench", "report_feed_targets"]

