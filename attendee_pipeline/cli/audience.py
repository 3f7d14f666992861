"""The Audience commands of ``attendee-pipeline`` (seed 003): what each audience holds, and the
import of past events as a Dagster backfill that this command launches on the instance and
follows with a progress line.

``cli/main.py`` registers the group with one line. Nothing here prints an e-mail address or a
name: counts only.
"""

from __future__ import annotations

import sys
import time

import click

from attendee_pipeline.cli.platform import platform_engine

#: What the summary line counts, in order: (heading, metadata key of a run).
RUN_COUNTS = (("created", "created"), ("updated", "updated"), ("skipped", "skipped_by_policy"), ("rows", "rows_written"))


def audience_lines(engine, audiences, runs: dict[str, dict[str, int]] | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """One line per audience: its contacts, blank-UID contacts and contacts seen at more than one
    event, and (``runs``: audience id -> summed run counts) what this command's runs did."""
    from attendee_pipeline.platform_db.audiences import audience_summary

    lines = [f"{'audience':<16} {'contacts':>8} {'created':>7} {'updated':>7} {'skipped':>7} {'blank-UID':>9} "
             f"{'>1 event':>8} {'rows':>6}"]
    for audience in audiences:
        s = audience_summary(engine, audience.id)
        r = (runs or {}).get(audience.id, {})
        state = "" if audience.enabled else "  (disabled)"
        lines.append(
            f"{audience.id:<16} {s['contacts']:>8} {r.get('created', 0):>7} {r.get('updated', 0):>7} "
            f"{r.get('skipped_by_policy', 0):>7} {s['blank_uid']:>9} {s['multi_event']:>8} {r.get('rows_written', 0):>6}"
            f"{state}"
        )
    return lines


def add_run_counts(totals: dict[str, dict[str, int]], metadata: dict) -> None:  # type: ignore[type-arg]
    """Sum an ``audience_contacts`` run's per-audience counts (``<audience>/<count>``) into ``totals``."""
    for key, value in metadata.items():
        if "/" in key and isinstance(value, int):
            audience, count = key.split("/", 1)
            totals.setdefault(audience, {})
            totals[audience][count] = totals[audience].get(count, 0) + value


@click.group("audience")
def audience() -> None:
    """Audiences: contact databases fed by every event's guest list (see docs/audience.md)."""


@audience.command("status")
@click.argument("audience_ids", nargs=-1)
def audience_status(audience_ids: tuple[str, ...]) -> None:
    """What each audience of the catalog holds (or only AUDIENCE_IDS)."""
    from attendee_pipeline.catalog import load_catalog

    catalog = load_catalog()
    for problem in catalog.audience_problems:
        click.echo(f"catalog: {problem}", err=True)
    chosen = [a for a in catalog.audiences if not audience_ids or a.id in audience_ids]
    unknown = sorted(set(audience_ids) - {a.id for a in chosen})
    if unknown:
        raise click.UsageError(f"no audience {', '.join(unknown)} in the catalog")
    with platform_engine() as engine:
        for line in audience_lines(engine, chosen):
            click.echo(line)


def _field_match(values: tuple[str, ...]) -> dict[str, str]:
    from attendee_pipeline.integrations.audience.settings import check_field

    matches = {}
    for value in values:
        if "=" not in value:
            raise click.BadParameter(f"{value!r}: write GUEST_FIELD=CONTACT_FIELD", param_hint="--match")
        guest_field, contact_field = (part.strip() for part in value.split("=", 1))
        try:
            matches[check_field(guest_field)] = check_field(contact_field)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--match") from None
    return matches


@audience.command("import")
@click.argument("event_ids", nargs=-1, required=True)
@click.option("--audience", "audience_ids", multiple=True, help="Import into this audience (repeatable; default: every enabled audience each event feeds).")
@click.option("--guest-list", "guest_lists", multiple=True, help="Only guests on this guest list (repeatable; one event only).")
@click.option("--uid", default=None, help="The UID for this import instead of the audience's (a platform field or custom_fields.<label>).")
@click.option("--relationships/--no-relationships", default=None, help="Import companion / plus-one links (default: the audience's setting).")
@click.option("--tag", "tags", multiple=True, help="Add this tag to the contacts the import creates or updates (repeatable).")
@click.option("--match", "matches", multiple=True, help="GUEST_FIELD=CONTACT_FIELD for fields whose names differ (repeatable).")
@click.option("--custom-field", "custom_fields", multiple=True, help="Import only these custom fields, by label (repeatable; default: all).")
@click.option("--no-wait", is_flag=True, help="Launch the backfill and return (follow it in the Dagster UI).")
def audience_import(
    event_ids: tuple[str, ...], audience_ids: tuple[str, ...], guest_lists: tuple[str, ...], uid: str | None,
    relationships: bool | None, tags: tuple[str, ...], matches: tuple[str, ...], custom_fields: tuple[str, ...],
    no_wait: bool,
) -> None:
    """Import the guests of past events (EVENT_IDS) into the audiences.

    Launches one Dagster backfill of the ``audience_contacts`` asset over the events' partitions
    (a dagster-daemon must serve the instance: `make dev` starts one) and follows it. Importing an
    event again changes nothing. Exits 1 when an event's run failed.
    """
    import dagster as dg

    from attendee_pipeline.catalog import load_catalog
    from attendee_pipeline.cli import runs
    from attendee_pipeline.instance import dagster_home
    from attendee_pipeline.integrations.audience.imports import import_config, import_metadata, launch_import
    from attendee_pipeline.integrations.audience.settings import check_field

    if guest_lists and len(event_ids) > 1:
        raise click.UsageError("--guest-list applies to an import of one event")
    catalog = load_catalog()
    unknown = [e for e in event_ids if catalog.find(e) is None]
    if unknown:
        raise click.UsageError(f"not in the catalog: {', '.join(unknown)}")
    for audience_id in audience_ids:
        found = catalog.audience(audience_id)
        if found is None:
            raise click.UsageError(f"no audience {audience_id!r} in the catalog")
        if not found.enabled:
            raise click.UsageError(f"audience {audience_id!r} is disabled (enabled: false): enable it to import")
    targets = [catalog.audience(a) for a in audience_ids] or [
        a for a in catalog.audiences if a.enabled and any(a.feeds(catalog.get(e)) for e in event_ids)
    ]
    if not targets:
        raise click.UsageError("no enabled audience is fed by these events: name one with --audience")
    if uid:
        try:
            uid = check_field(uid, "--uid")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--uid") from None
    config = import_config(
        audiences=list(audience_ids), guest_lists=list(guest_lists), uid=uid, relationships=relationships,
        tags=list(tags), field_map=_field_match(matches), custom_fields=list(custom_fields) or None,
    )
    dagster_home()
    with dg.DagsterInstance.get() as instance:
        try:
            runs.require_daemon(instance)
        except runs.NoDaemonError as exc:
            raise click.ClickException(str(exc)) from None
        backfill_id = launch_import(instance, list(event_ids), config)
        click.echo(f"import of {len(event_ids)} event(s) into {', '.join(a.id for a in targets)}: backfill {backfill_id} launched")
        if no_wait:
            return
        progress = follow_import(instance, backfill_id, len(event_ids))
        totals: dict[str, dict[str, int]] = {}
        for metadata in import_metadata(instance, backfill_id):
            add_run_counts(totals, metadata)
    with platform_engine() as engine:
        for line in audience_lines(engine, targets, totals):
            click.echo(line)
    if progress.failed:
        click.echo(f"failed: {', '.join(progress.failed)} (see the backfill {backfill_id} in the Dagster UI)")
        sys.exit(1)


def follow_import(instance, backfill_id: str, events: int, poll_seconds: float = 1.0, until: float | None = None):  # type: ignore[no-untyped-def]
    """Print the import's progress line until every event's run has finished (or the monotonic
    time ``until`` has come); the last progress."""
    from attendee_pipeline.integrations.audience.imports import import_progress

    tty = sys.stdout.isatty()
    last = ""
    while True:
        progress = import_progress(instance, backfill_id, events)
        line = progress.line()
        if line != last:
            if tty:
                click.echo("\r" + line.ljust(len(last)), nl=False)
            else:
                click.echo(line)
            last = line
        if progress.done or (until is not None and time.monotonic() > until):
            if tty:
                click.echo("")
            return progress
        time.sleep(poll_seconds)


def demo_audiences(instance, catalog, echo, timeout: float = 240.0) -> list[str]:  # type: ignore[no-untyped-def]
    """The demo's audiences: the live sync of every event that feeds one (the runs the audience
    sensor would launch, in this process), then the import of the events that have ended into
    every enabled audience, as a backfill run by a ``dagster-daemon`` started for it; the summary
    lines (see :func:`audience_lines`)."""
    import datetime as dt
    import os
    from pathlib import Path

    from attendee_pipeline import settings
    from attendee_pipeline.integrations.audience.imports import (
        import_config,
        import_metadata,
        launch_import,
        run_audience_in_process,
    )
    from attendee_pipeline.processes import running_daemon

    audiences = [a for a in catalog.audiences if a.enabled]
    if not audiences:
        return []
    now = dt.datetime.now(dt.timezone.utc)
    totals: dict[str, dict[str, int]] = {}
    for event in catalog.events:
        if any(a.feeds(event) for a in audiences):
            echo(f"audiences: live sync of {event.id} ...")
            ok, metadata = run_audience_in_process(instance, event.id, trigger="demo")
            if not ok:
                raise click.ClickException(f"the audience run of {event.id} failed (see the Dagster UI)")
            add_run_counts(totals, metadata)
    past = [e.id for e in catalog.events if e.end.astimezone(dt.timezone.utc) < now]
    if past:
        config = import_config(audiences=[a.id for a in audiences], tags=["Imported"])
        backfill_id = launch_import(instance, past, config, title="demo: import of past events")
        echo(f"audiences: import of {', '.join(past)} as backfill {backfill_id}; starting dagster-daemon to run it ...")
        checkout = Path(__file__).resolve().parents[2]
        log = settings.data_dir() / "demo-daemon.log"
        with running_daemon(dict(os.environ), checkout, log):
            progress = follow_import(instance, backfill_id, len(past), until=time.monotonic() + timeout)
        if not progress.done:
            raise click.ClickException(f"the import backfill did not finish in {timeout:.0f}s (see {log})")
        if progress.failed:
            raise click.ClickException(f"the import of {', '.join(progress.failed)} failed (see the Dagster UI)")
        for metadata in import_metadata(instance, backfill_id):
            add_run_counts(totals, metadata)
    from attendee_pipeline.platform_db.engine import make_engine

    engine = make_engine(settings.db_url())
    try:
        return audience_lines(engine, catalog.audiences, totals)
    finally:
        engine.dispose()
