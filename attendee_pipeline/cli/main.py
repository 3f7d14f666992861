"""The ``attendee-pipeline`` command: sync events, validate the catalog, run the demo, the
sandbox providers and the Dagster UI. Long steps print progress; nothing prints attendee
e-mail addresses or names except where the operator asks for attendee data explicitly.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import warnings

import click

from attendee_pipeline import settings
from attendee_pipeline.cli.email import register as register_email_commands
from attendee_pipeline.cli.platform import platform_engine

# Dagster flags partitioned asset checks as "preview"; that is not news to a CLI user.
warnings.filterwarnings("ignore", message=".*is currently in preview.*")


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are about the input or the world, not a bug in this program: a bad or
    missing catalog, an unknown event, a provider that cannot be reached or refuses us, a
    missing secret or setting, a platform database at a migration this code does not have or
    that cannot be connected to.
    Imported when one is raised, so ``--help`` stays fast."""
    from attendee_pipeline.catalog import CatalogError, UnknownEventError
    from attendee_pipeline.connectors.http import MissingSecretError
    from attendee_pipeline.integrations.procurios.client import ProcuriosError
    from attendee_pipeline.connectors.raw_store import ExtractError
    from attendee_pipeline.integrations.email.delivery import DeliveryConfigError
    from attendee_pipeline.instance import DagsterHomeError
    from attendee_pipeline.platform_db.engine import UnknownRevisionError, UnversionedDatabaseError
    from attendee_pipeline.platform_db.errors import DatabaseConnectError

    return (CatalogError, UnknownEventError, ExtractError, ProcuriosError, MissingSecretError,
            DeliveryConfigError, DagsterHomeError, UnknownRevisionError, UnversionedDatabaseError,
            DatabaseConnectError)


class _Commands(click.Group):
    """The command group: an expected error ends the command with ``Error: <what went
    wrong>`` and exit code 1, not a traceback, and so does a platform database error (told by its
    kind and table: its own text may quote attendee data); anything else still shows its
    traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - re-raised unless expected
            if isinstance(exc, click.ClickException):
                raise
            if not isinstance(exc, _expected_errors()):
                from attendee_pipeline.platform_db.errors import describe_database_error

                # a database error: its kind and table, never the rows its text may quote
                description = describe_database_error(exc)
                if description is None:
                    raise
                raise click.ClickException(description) from None
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attendee_pipeline")
def cli() -> None:
    """Keep event platforms' attendee lists in sync with registration systems."""


# --------------------------------------------------------------------------- catalog


@cli.group()
def catalog() -> None:
    """Inspect the event catalog."""


@catalog.command("validate")
@click.option("--catalog", "path", type=click.Path(dir_okay=False), help="Catalog file (default: setting).")
def catalog_validate(path: str | None) -> None:
    """Validate the catalog; errors name the event and the key. Exits 1 listing every problem
    when an entry is broken (the pipeline skips such an entry and syncs the others)."""
    from attendee_pipeline.catalog import CatalogError, load_catalog

    from attendee_pipeline.catalog.warnings import catalog_warnings

    try:
        loaded = load_catalog(path).require_valid()
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    audiences = f", {len(loaded.audiences)} audience(s)" if loaded.audiences else ""
    click.echo(f"catalog OK: {len(loaded.events)} event(s){audiences}")
    for warning in catalog_warnings(loaded):
        click.echo(f"warning: {warning}")


@cli.command("events")
def events() -> None:
    """List the catalog's events with their source and automatic sync."""
    from attendee_pipeline.catalog import load_catalog
    from attendee_pipeline.integrations import kind_of, source_of

    rows = []
    catalog = load_catalog()
    for event in catalog.events:
        auto = event.sync.auto
        schedule = "manual" if auto.interval == "off" else f"{auto.interval} until {event.auto_until:%Y-%m-%d %H:%M %Z}"
        schedule = source_of(event).schedule_label(event) or schedule
        rows.append((event.id, kind_of(event), schedule, event.name))
    # columns as wide as their widest value (at least 24, 10 and 36), the name last
    widths = [max([least, *(len(row[i]) for row in rows)]) for i, least in enumerate((24, 10, 36))]
    for *columns, name in rows:
        click.echo(" ".join(f"{value:<{width}}" for value, width in zip(columns, widths)) + f" {name}")
    broken = catalog.broken
    if broken:
        noun = "entry" if len(broken) == 1 else "entries"
        click.echo(
            f"{len(broken)} broken catalog {noun} skipped: {', '.join(b.label for b in broken)} "
            "(attendee-pipeline catalog validate says why)",
            err=True,
        )


# --------------------------------------------------------------------------- database


@cli.group()
def db() -> None:
    """Manage the platform database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the platform database migrations (ATTENDEE_PIPELINE_DB_URL or the SQLite default)."""
    from attendee_pipeline.platform_db.engine import upgrade

    upgrade(settings.db_url())
    click.echo("platform database is at the latest migration")


@db.command("stamp")
def db_stamp() -> None:
    """Record that a platform database made without the migrations (create_all) is at the latest
    migration, when its tables match this version's exactly; then `db upgrade` works on it."""
    from attendee_pipeline.platform_db.engine import head_revision, stamp

    at = stamp(settings.db_url())
    if at is not None:
        click.echo(f"platform database is already at migration {at!r}: nothing to stamp (use `db upgrade`)")
        return
    click.echo(f"platform database stamped at migration {head_revision()!r}")


# --------------------------------------------------------------------------- sync


@cli.command("sync")
@click.argument("event_id")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Fetch, map and diff; print the changes and whether the mass-removal guard would hold them; publish nothing.",
)
@click.option("--allow-mass-removal", is_flag=True, help="Release a publish held by the mass-removal guard.")
@click.option("--replay", type=click.Path(exists=True, file_okay=False), help="Replay a stored raw extract.")
@click.option(
    "--force",
    is_flag=True,
    help="Map, diff and publish even when the extract and catalog entry equal the last publish's.",
)
@click.option("--full", is_flag=True, help="Procurios, zkipster: full import -- read every registration (guest), "
              "overwrite every attendee.")
@click.option(
    "--in-process",
    is_flag=True,
    help="Run the sync in this process instead of submitting it to the run queue (for debugging: "
    "outside the queue's limits and the daemon's run monitoring).",
)
def sync(
    event_id: str, dry_run: bool, allow_mass_removal: bool, replay: str | None, force: bool, full: bool,
    in_process: bool,
) -> None:
    """Sync one event now (the same job the schedules and the UI run).

    The run is submitted to the Dagster instance's run queue, under the same limits as every other
    run (one per event, so many per provider, a maximum run time), and this command waits for it
    and prints what it did: a dagster-daemon must serve the instance (`make dev` starts one).
    Exits 0 when the run published or found nothing to do (status "unchanged"), 1 when it was
    held by the mass-removal guard or failed.
    """
    from attendee_pipeline.catalog import load_catalog

    event = load_catalog().get(event_id)  # an unknown event or a broken entry stops here
    if settings.db_url_is_from_env():
        from attendee_pipeline.platform_db.engine import ensure_schema

        # the run opens the same database: say now, not after the run's retries, that it cannot
        ensure_schema(settings.db_url())
    if full and event.source.kind != "zkipster":  # a zkipster full import: a full pull that overwrites
        from attendee_pipeline.cli.procurios import require_procurios

        require_procurios(event)  # a usage error for any other event
    if dry_run:
        _dry_run(event, replay, full, allow_mass_removal)
        return
    from attendee_pipeline.cli import runs
    from attendee_pipeline.instance import dagster_home

    import dagster as dg

    dagster_home()
    extract_config: dict[str, object] = {}
    if replay:
        extract_config["replay_extract"] = str(Path(replay).resolve())
    if force:
        extract_config["force"] = True
    if full:
        extract_config["full_import"] = True
    run_config = {"ops": {"event_sync": {"config": extract_config}}} if extract_config else None
    with dg.DagsterInstance.get() as instance:
        if in_process:
            click.echo(f"syncing {event_id} in this process ...")
            summary = runs.run_sync(
                event_id, instance=instance, allow_mass_removal=allow_mass_removal, run_config=run_config
            )
        else:
            try:
                runs.require_daemon(instance)
            except runs.NoDaemonError as exc:
                raise click.ClickException(str(exc)) from None
            run_id = runs.submit_sync(
                event_id, instance=instance, source_kind=event.source.kind,
                allow_mass_removal=allow_mass_removal, run_config=run_config,
            )
            click.echo(f"syncing {event_id}: run {run_id} submitted to the run queue")
            try:
                result = runs.wait_for_run(instance, run_id, click.echo)
            except KeyboardInterrupt:
                click.echo(f"stopped waiting; run {run_id} goes on (see the Dagster UI)")
                sys.exit(130)
            summary = runs.summarize(event_id, result)
    click.echo(runs.format_summary(summary))
    if summary.status == "held":
        click.echo(f"{'':<24} to release it: attendee-pipeline sync {event_id} --allow-mass-removal")
    click.echo(f"run id: {summary.run_id}")
    if not summary.success:
        sys.exit(1)


def _dry_run(  # type: ignore[no-untyped-def]
    event, replay: str | None, full: bool = False, allow_mass_removal: bool = False
) -> None:
    """Fetch, map and diff ``event`` (its catalog entry); print the changes, publish nothing."""
    import tempfile

    from attendee_pipeline import steps
    from attendee_pipeline.defs.resources import HttpAttendeeSource
    from attendee_pipeline.integrations import source_of
    from attendee_pipeline.integrations.base import FULL_IMPORT, SCHEDULED

    source = source_of(event)
    with tempfile.TemporaryDirectory(prefix="attendee-dry-run-") as tmp:
        dest = Path(tmp) / "extract"

        def progress(pages: int, records: int) -> None:
            click.echo(f"\r  fetched {pages} page(s), {records} record(s)", nl=False, err=True)

        with platform_engine() as engine:
            manifest = steps.extract_event(
                event, dest, engine=engine, http=HttpAttendeeSource(), replay_from=replay, progress=progress,
                mode=FULL_IMPORT if full else SCHEDULED,
            )
            click.echo("", err=True)
            # the steps of a sync (its source's processing), batch files on a scratch folder
            mapped, changes = source.processing.dry_run(source, event, dest, manifest, engine, Path(tmp) / "batches")
    click.echo(f"dry run for {event.id}: {manifest.get('records', 0)} record(s) fetched, nothing published")
    for key, value in changes.counts.items():
        click.echo(f"  {key:<15} {value}")
    click.echo(f"  {'rejected':<15} {mapped.rejects['source_row'].nunique() if len(mapped.rejects) else 0}")
    for (field, reason), n in mapped.rejects.groupby(["field", "reason"]).size().items() if len(mapped.rejects) else []:
        click.echo(f"    {n} x {field}: {reason}")
    guard = event.sync.mass_removal
    verdict = changes.verdict(guard.max_share, guard.min_count)
    if verdict.held and allow_mass_removal:
        click.echo(f"mass-removal guard: released by --allow-mass-removal: {verdict.message}")
    elif verdict.held:  # what the real sync's mass_removal_guard would do
        click.echo(
            f"mass-removal guard: the sync would be held and publish nothing: {verdict.message} "
            f"(or: attendee-pipeline sync {event.id} --allow-mass-removal)"
        )
    frame = changes.frame
    if len(frame):
        from attendee_pipeline.sync.model import python_values

        click.echo("changes (provider record id, extract row or platform attendee id; change):")
        head = frame.head(50)
        for record_id, row, attendee_id, change in zip(
            python_values(head["source_record_id"]),
            python_values(head["source_row"]),
            python_values(head["attendee_id"]),
            head["change"],
        ):
            # an attendee missing from the extract has neither record id nor row: its platform id
            label = record_id or (f"row {row}" if row is not None else f"attendee {attendee_id}")
            click.echo(f"  {label:<20} {change}")
        if len(frame) > 50:
            click.echo(f"  ... and {len(frame) - 50} more")


# --------------------------------------------------------------------------- demo


def _demo_secrets() -> None:
    """The demo sandbox's credentials: random per process unless already set in the env."""
    for name in ("DEMO_SUMMIT_API_KEY", "DEMO_MEETUP_USERNAME", "DEMO_MEETUP_SECRET",
                 "DEMO_PROCURIOS_CLIENT_ID", "DEMO_PROCURIOS_CLIENT_SECRET", "DEMO_ZKIPSTER_TOKEN"):
        os.environ.setdefault(name, "demo-" + secrets.token_urlsafe(12))


@cli.command("demo")
@click.option("--port", default=8765, type=int, show_default=True, help="Sandbox port (0: a free port).")
def demo(port: int) -> None:
    """Start the sandbox, sync every demo event through the Dagster job, print a summary."""
    import dagster as dg

    from attendee_pipeline.catalog import load_catalog
    from attendee_pipeline.cli.runs import format_summary, run_sync
    from attendee_pipeline.instance import dagster_home
    from attendee_pipeline.integrations import source_of
    from attendee_pipeline.integrations.attendee_api.sandbox import serve_sandbox

    _demo_secrets()
    home = dagster_home()
    with serve_sandbox(_demo_datasets(), port=_free_or_any(port)) as sandbox, _demo_procurios(8790) as procurios:
        os.environ["ATTENDEE_PIPELINE_SANDBOX_URL"] = sandbox.url
        os.environ["ATTENDEE_PIPELINE_PROCURIOS_URL"] = procurios.url
        catalog = load_catalog()
        click.echo(f"sandbox attendee API on {sandbox.url}; platform DB {_safe_url(settings.db_url())}")
        click.echo(f"sandbox Procurios on {procurios.url}")
        click.echo(f"Dagster instance: {home}")
        for event in catalog.events:
            source_of(event).prepare_demo(event, click.echo)
        summaries = []
        with dg.DagsterInstance.get() as instance:
            for event in catalog.events:
                click.echo(f"syncing {event.id} ...")
                started = time.monotonic()
                summary = run_sync(event.id, instance=instance, trigger="demo", log_level="WARNING")
                summaries.append(summary)
                click.echo(f"  done in {time.monotonic() - started:.1f}s")
            from attendee_pipeline.cli.email import demo_delivery

            email_line = demo_delivery(instance)  # the invites the syncs queued, to a local SMTP sink
            from attendee_pipeline.cli.audience import demo_audiences

            audience_lines = demo_audiences(instance, catalog, click.echo)
    click.echo("")
    click.echo(f"{'event':<24} {'status':<9} counts")
    for summary in summaries:
        click.echo(format_summary(summary))
    click.echo(email_line)
    click.echo("")
    _print_platform_state([s.event_id for s in summaries])
    _print_source_state(catalog.events)
    click.echo("")
    for line in audience_lines:
        click.echo(line)
    click.echo("")
    click.echo("Open the same in the Dagster UI: make dev  (then http://127.0.0.1:3000)")
    if not all(s.success for s in summaries):
        sys.exit(1)


def _print_platform_state(event_ids: list[str]) -> None:
    """What the platform database holds now, per event (counts only)."""
    import sqlalchemy as sa

    from attendee_pipeline.platform_db.engine import make_engine

    engine = make_engine(settings.db_url())
    sql = sa.text(
        "select count(*) filter (where status = 'active'), count(*) filter (where status = 'removed'), "
        "count(*) filter (where status = 'active' and badge_url is not null), "
        "(select count(distinct m.group_id) from memberships m where m.event_id = :e), "
        "(select message from sync_ledger where event_id = :e order by id desc limit 1) "
        "from attendees where event_id = :e"
    )
    click.echo(f"{'platform database':<24} {'active':>6} {'removed':>7} {'badges':>6} {'groups':>6}  last sync")
    with engine.connect() as conn:
        for event_id in event_ids:
            active, removed, badges, groups, message = conn.execute(sql, {"e": event_id}).one()
            click.echo(f"{event_id:<24} {active:>6} {removed:>7} {badges:>6} {groups:>6}  {message or ''}")
        total_groups = conn.execute(sa.text("select count(*) from groups")).scalar_one()
    engine.dispose()
    click.echo(f"groups shared between events: {total_groups}")


def _demo_procurios(port: int):  # type: ignore[no-untyped-def]
    """The demo's Procurios sandbox (meeting 2027) with the demo client's credentials."""
    from attendee_pipeline.integrations.procurios.sandbox import demo_sandbox, serve_procurios

    sandbox = demo_sandbox(os.environ["DEMO_PROCURIOS_CLIENT_ID"], os.environ["DEMO_PROCURIOS_CLIENT_SECRET"])
    return serve_procurios(sandbox, port=_free_or_any(port))


def _print_source_state(events: list) -> None:
    """What each source's own tables hold for its events (e.g. a Procurios event's sessions)."""
    from attendee_pipeline.integrations import events_of, kinds, source

    engine = None
    try:
        for kind in kinds():
            ids = [e.id for e in events_of(events, kind)]
            if not ids:
                continue
            if engine is None:
                from attendee_pipeline.platform_db.engine import make_engine

                engine = make_engine(settings.db_url())
            for line in source(kind).state_lines(engine, ids):
                click.echo(line)
    finally:
        if engine is not None:
            engine.dispose()


def _demo_datasets() -> dict:
    """The demo sandbox's events, with badge URLs that do not depend on the port it got."""
    from attendee_pipeline.integrations.attendee_api.sandbox import demo_datasets

    return {slug: c.replace(badge_base_url=DEMO_BADGE_BASE) for slug, c in demo_datasets().items()}


DEMO_BADGE_BASE = "http://127.0.0.1:8765/badges"


def _free_or_any(port: int) -> int:
    """``port`` when it is free on 127.0.0.1, else 0 (any free port)."""
    import socket

    if port == 0:
        return 0
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@cli.command("dev")
@click.option("--sandbox-port", default=8765, type=int, show_default=True, help="Attendee API sandbox port (0: a free port).")
@click.option("--procurios-port", default=8790, type=int, show_default=True,
              help="Procurios sandbox port (taken or 0: a free port).")
@click.option("--port", default=3000, type=int, show_default=True, help="Dagster UI port.")
@click.option("--feed-port", default=8780, type=int, show_default=True, help="Push feed service port (0: a free port).")
def dev(sandbox_port: int, procurios_port: int, port: int, feed_port: int) -> None:
    """Run the demo sandboxes, the push feed service, an SMTP sink and the Dagster UI (dagster
    dev) on 127.0.0.1 until Ctrl-C or SIGTERM, which stop all of them."""
    from attendee_pipeline.platform_db.engine import ensure_schema

    ensure_schema(settings.db_url())  # an unreachable database stops here, before anything starts
    from attendee_pipeline.instance import dagster_home
    from attendee_pipeline.integrations.attendee_api.sandbox import serve_sandbox
    from attendee_pipeline.services.feed import serve_feed_in_thread

    _demo_secrets()
    dagster_home()
    root = Path(__file__).resolve().parents[2]
    with _signals_as_interrupt():
        try:
            with serve_sandbox(_demo_datasets(), port=sandbox_port) as sandbox, \
                    serve_feed_in_thread(settings.db_url(), port=feed_port) as feed, \
                    _demo_procurios(procurios_port) as procurios, \
                    contextlib.ExitStack() as stack:
                os.environ["ATTENDEE_PIPELINE_SANDBOX_URL"] = sandbox.url
                os.environ["ATTENDEE_PIPELINE_PROCURIOS_URL"] = procurios.url
                click.echo(f"sandbox attendee API on {sandbox.url}")
                click.echo(f"sandbox Procurios on {procurios.url} "
                           f"(check-ins: POST {feed.url}/events/demo-congress/check-ins)")
                click.echo(f"push feed service on {feed.url} (keys: attendee-pipeline feed-key create demo-expo)")
                from attendee_pipeline.integrations.zkipster.source import serve_demo

                click.echo(f"sandbox zkipster on {serve_demo()[0]} (the demo account: demo-gala, demo-partner-summit)")
                from attendee_pipeline.cli.email import dev_smtp_sink

                click.echo(dev_smtp_sink(stack))  # e-mails go to a local sink unless an SMTP server is set
                cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(root / "workspace.yaml"),
                       "-h", "127.0.0.1", "-p", str(port)]
                _run_until_interrupted(cmd, cwd=root)
        except KeyboardInterrupt:  # before dagster dev started: the servers above are stopped
            pass
    click.echo("stopped")


@contextlib.contextmanager
def _signals_as_interrupt():  # type: ignore[no-untyped-def]
    """Within the block SIGTERM and SIGINT raise KeyboardInterrupt (SIGINT too: a process started
    in the background by a shell without job control inherits it ignored), so both unwind the
    same way: every server started in a ``with`` is stopped."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: Seconds ``dagster dev`` gets to stop its webserver, daemon and code servers before they are killed.
DEV_STOP_SECONDS = 15.0


def _run_until_interrupted(cmd: list[str], cwd: Path) -> None:
    """Run ``cmd`` (``dagster dev``) in its own process group until it ends or this process is
    interrupted (Ctrl-C or SIGTERM, see :func:`_signals_as_interrupt`); then stop the group.

    Its own group, so a Ctrl-C in the terminal reaches only this process, which then sends
    SIGINT to the whole group exactly once -- what a Ctrl-C to ``dagster dev`` alone would do:
    it stops its webserver, daemon and code servers. Whatever of the group is still running
    after :data:`DEV_STOP_SECONDS` (or at once, on a second Ctrl-C) is killed, so nothing it
    started outlives this command."""
    import signal

    proc = subprocess.Popen(cmd, cwd=cwd, process_group=0)
    try:
        proc.wait()
    except KeyboardInterrupt:
        click.echo("stopping the Dagster UI, daemon and code server ...")
        _signal_group(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + DEV_STOP_SECONDS
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=DEV_STOP_SECONDS)
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # the webserver, daemon and code servers finishing their shutdown
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Where /proc exists, a zombie (exited,
    waiting for its parent to collect it) does not count: an orphan's zombie stays until init
    collects it, which not every container's init does."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# --------------------------------------------------------------------------- push feed


@cli.command("serve-feed")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback addresses only (use a TLS proxy).")
@click.option("--port", default=8780, type=int, show_default=True)
@click.option("--workers", default=1, type=click.IntRange(1, 64), show_default=True, help="Server processes.")
@click.option("--access-log", is_flag=True, help="Log each request line (never bodies, headers or keys).")
def serve_feed(host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve the push feed (Attendees Data Feed API) until interrupted.

    Accepts POST /events/EVENT/attendees (one attendee) and /events/EVENT/attendees:batch
    (up to 1000), authenticated with the event's keys (see `feed-key`), into the platform
    database's inbox (ATTENDEE_PIPELINE_DB_URL or the SQLite default).
    """
    from attendee_pipeline.services.listen import check_feed_host

    try:
        check_feed_host(host)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    from attendee_pipeline.platform_db.engine import ensure_schema

    ensure_schema(settings.db_url())  # an unreachable database stops here, before the server starts
    from attendee_pipeline.services.feed import serve_feed as serve

    click.echo(f"feed service on http://{host}:{port}; platform DB {_safe_url(settings.db_url())}")
    serve(host=host, port=port, db_url=settings.db_url(), workers=workers, access_log=access_log)


@cli.group("feed-key")
def feed_key() -> None:
    """Manage the push feed's API keys of an event.

    Only a hash of each key is stored: the plain key is shown once, by `create`. To rotate a
    key, create a new one, switch the sender to it, then revoke the old one.
    """


@feed_key.command("create")
@click.argument("event_id")
def feed_key_create(event_id: str) -> None:
    """Create an API key for EVENT_ID (a feed event of the catalog) and print it (once)."""
    from attendee_pipeline.catalog import load_catalog
    from attendee_pipeline.integrations import source_of
    from attendee_pipeline.platform_db.feed import create_key

    event = load_catalog().find(event_id)  # a broken entry: its problems
    if event is None or not source_of(event).pushed:
        raise click.UsageError(f"{event_id} is not a feed event of the catalog (source: {{kind: feed}})")
    with platform_engine() as engine:
        try:
            key_id, plain = create_key(engine, event_id)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    click.echo(f"key id: {key_id}")
    click.echo(f"api key: {plain}")
    click.echo("This key is shown only once: store it now (send it as the Api-Key header or the body's \"key\").")


@feed_key.command("list")
@click.argument("event_id")
def feed_key_list(event_id: str) -> None:
    """List EVENT_ID's keys: key id, created, revoked (never the keys)."""
    from attendee_pipeline.platform_db.feed import list_keys

    with platform_engine() as engine:
        keys = list_keys(engine, event_id)
    if not keys:
        click.echo(f"no keys for {event_id}")
        return
    click.echo(f"{'key id':<16} {'created (UTC)':<20} revoked (UTC)")
    for key in keys:
        revoked = f"{key['revoked_at']:%Y-%m-%d %H:%M:%S}" if key["revoked_at"] else "-"
        click.echo(f"{key['key_id']:<16} {key['created_at']:%Y-%m-%d %H:%M:%S}  {revoked}")


@feed_key.command("revoke")
@click.argument("event_id")
@click.argument("key_id")
def feed_key_revoke(event_id: str, key_id: str) -> None:
    """Revoke KEY_ID of EVENT_ID (requests with it get 401 from now on)."""
    from attendee_pipeline.platform_db.feed import revoke_key

    with platform_engine() as engine:
        revoked = revoke_key(engine, event_id, key_id)
    if not revoked:
        raise click.ClickException(f"{event_id} has no active key {key_id}")
    click.echo(f"revoked {key_id} of {event_id}")


# --------------------------------------------------------------------------- sandboxes


@cli.group()
def sandbox() -> None:
    """Local HTTP servers that behave like the registration providers."""


@sandbox.command("attendee-api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback addresses only.")
@click.option("--port", default=8765, type=int, show_default=True)
@click.option("--records", default=None, type=int, help="Attendees per event (default: the demo sizes).")
@click.option("--page-size", default=None, type=int, help="Records per page (default: per demo event).")
@click.option(
    "--pagination",
    type=click.Choice(["none", "page", "offset", "cursor", "link"]),
    default=None,
    help="Pagination style of every event (default: per demo event).",
)
@click.option(
    "--auth",
    type=click.Choice(["none", "basic", "header", "query"]),
    default=None,
    help="Auth of every event, with the DEMO_* credentials (default: per demo event).",
)
@click.option("--seed", default=None, type=int, help="Seed of the generated attendees.")
@click.option("--access-log", is_flag=True, help="Log each request line (never bodies or credentials).")
def sandbox_attendee_api(
    host: str,
    port: int,
    records: int | None,
    page_size: int | None,
    pagination: str | None,
    auth: str | None,
    seed: int | None,
    access_log: bool,
) -> None:
    """Serve the seed-000 attendee API sandbox (the demo events) until interrupted.

    It expects the credentials in DEMO_SUMMIT_API_KEY, DEMO_MEETUP_USERNAME and
    DEMO_MEETUP_SECRET; export the same values where you run `attendee-pipeline sync`.
    Faults (429 with Retry-After, 500, slow or malformed pages, a page that disappears) and
    data changes are switched on at run time through the /_control/ endpoints listed in
    docs/cli.md ("Sandbox providers").
    """
    from attendee_pipeline.integrations.attendee_api.sandbox import main as sandbox_main

    try:
        sandbox_main(
            host=host,
            port=port,
            records=records,
            page_size=page_size,
            pagination=pagination,
            auth=auth,
            seed=seed,
            access_log=access_log,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


register_email_commands(cli)  # email preview, invite, attendees, record-status, segment, outbox
# --------------------------------------------------------------------------- Procurios (seed 002)

from attendee_pipeline.cli import procurios as procurios_cli  # noqa: E402
from attendee_pipeline.cli.connections import check_connection  # noqa: E402
from attendee_pipeline.cli import audience as audience_cli  # noqa: E402

cli.add_command(check_connection)
cli.add_command(audience_cli.audience)
cli.add_command(procurios_cli.checkin)
cli.add_command(procurios_cli.checkins)
sandbox.add_command(procurios_cli.sandbox_procurios)


if __name__ == "__main__":  # pragma: no cover
    cli()
