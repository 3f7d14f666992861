"""The e-mail and attendee-status commands of ``attendee-pipeline`` (registered by
:func:`register` in ``cli.main``):

* ``email preview EVENT --kind invite --attendee KEY`` -- the e-mail exactly as it would go out;
* ``invite EVENT --status not-invited [--group G] [--country C] [--dry-run]`` -- queue invites
  for a filtered set (the attendee list's "send invite" button);
* ``attendees EVENT [--status ...] [--group G] [--country C] [--format table|csv]`` -- the list
  with its invite statuses;
* ``record-status EVENT account-created|first-accessed --email E | --token T [--at TIME]`` --
  what the platform's hooks record, by hand;
* ``segment counts|access|page|message EVENT ... [--export FILE]`` -- who may access the event
  or a group-restricted page, who receives a message to groups / countries;
* ``outbox status [EVENT] [--failed]`` and ``outbox deliver`` -- the outbox per event, and a
  delivery run through Dagster (the same job the sensor launches) with progress.

These commands print attendee data (addresses, names) only where the operator asks for it
(``attendees``, ``segment ... --export``, ``preview``); outbox listings show attendee ids.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import click

from attendee_pipeline.cli.platform import platform_engine

STATUS_CHOICES = ("all", "not-invited", "invited-no-account", "account-not-accessed")


def _event(event_id: str) -> Any:
    from attendee_pipeline.catalog import CatalogError, load_catalog

    try:
        event = load_catalog().find(event_id)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    if event is None:
        raise click.UsageError(
            f"event {event_id!r} is not in the catalog (attendee-pipeline events lists them)"
        )
    return event


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if isinstance(value, dt.datetime) else ""


# --------------------------------------------------------------------------- email preview


@click.group("email")
def email_group() -> None:
    """Invite and cancellation e-mails of an event."""


@email_group.command("preview")
@click.argument("event_id")
@click.option("--kind", type=click.Choice(["invite", "cancellation"]), default="invite", show_default=True)
@click.option("--attendee", "key", required=True, help="The attendee's key: their e-mail address (any case).")
@click.option("--html/--no-html", default=True, show_default=True, help="Also print the HTML body.")
def email_preview(event_id: str, kind: str, key: str, html: bool) -> None:
    """Print the KIND e-mail of EVENT_ID for one attendee exactly as it would be sent.

    The attendee gets their personal link token now if they have none yet (the same the e-mail
    will carry); nothing is queued or sent.
    """
    import sqlalchemy as sa

    from attendee_pipeline.integrations.email.delivery import render_email
    from attendee_pipeline.platform_db.engine import write_transaction
    from attendee_pipeline.platform_db.outbox import ensure_link_tokens
    from attendee_pipeline.platform_db.statuses import UnknownAttendee, find_attendee
    from attendee_pipeline.platform_db.tables import attendees
    from attendee_pipeline.sync.email import EmailRenderError

    event = _event(event_id)
    if event.email_templates.get(kind) is None:
        raise click.ClickException(
            f"event {event_id!r} has no {kind} template (email_templates.{kind} in the catalog)"
        )
    with platform_engine() as engine, write_transaction(engine) as conn:
        try:
            attendee_id = find_attendee(conn, event_id, email=key)
        except UnknownAttendee as exc:
            raise click.ClickException(str(exc)) from None
        token = ensure_link_tokens(conn, event_id, [attendee_id])[attendee_id]
        row = dict(conn.execute(sa.select(attendees).where(attendees.c.id == attendee_id)).mappings().one())
    platform_url = os.environ.get("ATTENDEE_PIPELINE_PLATFORM_URL", "")
    try:
        rendered = render_email(event, kind, row, token, platform_url)
    except EmailRenderError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"To: {row['email']}")
    click.echo(f"Subject: {rendered.subject}")
    if row["status"] != "active":
        click.echo(f"(the attendee's status is {row['status']})")
    click.echo("")
    click.echo(rendered.text.rstrip("\n"))
    if html and rendered.html is not None:
        click.echo("\n--- HTML ---")
        click.echo(rendered.html.rstrip("\n"))
    if not platform_url:
        click.echo(
            "\n(note: ATTENDEE_PIPELINE_PLATFORM_URL is not set; delivery needs it for the personal link)",
            err=True,
        )


# --------------------------------------------------------------------------- attendees & invites


def _filters(func: Any) -> Any:
    func = click.option(
        "--country", "countries", multiple=True, help="Only attendees from this country (repeatable)."
    )(func)
    func = click.option("--group", "groups", multiple=True, help="Only members of this group (repeatable).")(
        func
    )
    return func


@click.command("attendees")
@click.argument("event_id")
@click.option(
    "--status",
    type=click.Choice(STATUS_CHOICES),
    default="all",
    show_default=True,
    help="not-invited: no invite sent; invited-no-account; account-not-accessed.",
)
@_filters
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True)
@click.option(
    "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout."
)
def attendees_command(
    event_id: str, status: str, groups: Sequence[str], countries: Sequence[str], fmt: str, output: str | None
) -> None:
    """List EVENT_ID's attendees (on the list, not removed) with their invite statuses."""
    from attendee_pipeline.platform_db.segments import STATUS_COLUMNS, list_attendees

    _event(event_id)
    with platform_engine() as engine:
        rows = list_attendees(engine, event_id, status, groups, countries)
    _write(rows, STATUS_COLUMNS, fmt, output)
    if output or fmt == "table":
        click.echo(f"{len(rows)} attendee(s)", err=bool(output) or fmt == "csv")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _write(rows: list[dict[str, Any]], columns: Sequence[str], fmt: str, output: str | None) -> None:
    """Rows as CSV or an aligned table, to ``output`` ('-' or None: stdout)."""
    with contextlib.ExitStack() as stack:
        out = (
            sys.stdout
            if output in (None, "-")
            else stack.enter_context(open(output, "w", newline="", encoding="utf-8"))
        )
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(columns)
            writer.writerows([[_cell(r.get(c)) for c in columns] for r in rows])
            return
        cells = [
            [_when(r.get(c)) if isinstance(r.get(c), dt.datetime) else _cell(r.get(c)) for c in columns]
            for r in rows
        ]
        widths = [min(max([len(c)] + [len(row[i]) for row in cells]), 40) for i, c in enumerate(columns)]
        out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
        for row in cells:
            out.write("  ".join(v[:w].ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


@click.command("invite")
@click.argument("event_id")
@click.option(
    "--status",
    type=click.Choice(STATUS_CHOICES),
    default="not-invited",
    show_default=True,
    help="Which attendees (see `attendees --status`).",
)
@_filters
@click.option("--dry-run", is_flag=True, help="Print how many would be queued; queue nothing.")
def invite_command(
    event_id: str, status: str, groups: Sequence[str], countries: Sequence[str], dry_run: bool
) -> None:
    """Queue invite e-mails for EVENT_ID's attendees that match the filters.

    Like the attendee list's "send invite" button: an attendee is never sent a second invite
    (one already pending or sent is left alone); a failed or skipped invite is queued again.
    The e-mail sensor (or `outbox deliver`) sends them.
    """
    from attendee_pipeline.platform_db.outbox import queue_manual
    from attendee_pipeline.platform_db.segments import list_attendees

    event = _event(event_id)
    if event.email_templates.invite is None:
        raise click.ClickException(
            f"event {event_id!r} has no invite template (email_templates.invite in the catalog)"
        )
    with platform_engine() as engine:
        rows = list_attendees(engine, event_id, status, groups, countries)
        ids = [int(r["attendee_id"]) for r in rows]
        chosen = _describe_filters(status, groups, countries)
        if dry_run:
            invited = sum(1 for r in rows if r["invite_sent_at"] is not None)
            click.echo(
                f"dry run: {len(ids)} attendee(s) of {event_id} match {chosen}; "
                f"{invited} of them already received an invite; nothing queued"
            )
            return
        result = queue_manual(engine, event_id, ids)
    click.echo(
        f"{len(ids)} attendee(s) of {event_id} match {chosen}: {result.queued} invite(s) queued, "
        f"{result.requeued} queued again after a failure, {result.already} already pending or sent"
    )


def _describe_filters(status: str, groups: Sequence[str], countries: Sequence[str]) -> str:
    parts = [f"status {status}"]
    if groups:
        parts.append("group " + " or ".join(groups))
    if countries:
        parts.append("country " + " or ".join(countries))
    return ", ".join(parts)


@click.command("record-status")
@click.argument("event_id")
@click.argument("what", type=click.Choice(["account-created", "first-accessed"]))
@click.option("--email", help="The attendee's e-mail address.")
@click.option("--token", help="The attendee's personal link token.")
@click.option("--at", "at_text", help="When (ISO 8601; default now; no offset = UTC).")
def record_status_command(
    event_id: str, what: str, email: str | None, token: str | None, at_text: str | None
) -> None:
    """Record that an attendee created an account / first accessed EVENT_ID (what the platform's
    hook endpoints record; the earliest time reported is kept)."""
    from attendee_pipeline.platform_db.statuses import UnknownAttendee, record_status
    from attendee_pipeline.services.platform_hooks import parse_at

    if bool(email) == bool(token):
        raise click.UsageError("give exactly one of --email or --token")
    try:
        at = parse_at(at_text) if at_text else None
    except ValueError as exc:
        raise click.UsageError(f"--at: {exc}") from None
    with platform_engine() as engine:
        try:
            row = record_status(engine, event_id, what.replace("-", "_"), email=email, token=token, at=at)
        except UnknownAttendee as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"attendee {row['attendee_id']}: invite sent {_when(row['invite_sent_at']) or '-'}, "
        f"account created {_when(row['account_created_at']) or '-'}, first accessed {_when(row['first_accessed_at']) or '-'}"
    )


# --------------------------------------------------------------------------- segments


@click.group("segment")
def segment_group() -> None:
    """Who may access an event or a group-restricted page, who receives a message."""


def _segment_out(event_id: str, label: str, rows: list[dict[str, Any]], export: str | None, fmt: str) -> None:
    from attendee_pipeline.platform_db.segments import EXPORT_COLUMNS

    click.echo(f"{label} of {event_id}: {len(rows)} attendee(s)", err=export == "-")
    if export:
        _write(rows, EXPORT_COLUMNS, fmt, export)
        if export != "-":
            click.echo(f"exported to {export}")


_export = click.option(
    "--export",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the attendees to this file ('-': stdout).",
)
_export_format = click.option(
    "--format", "fmt", type=click.Choice(["csv", "table"]), default="csv", show_default=True
)


@segment_group.command("counts")
@click.argument("event_id")
def segment_counts_command(event_id: str) -> None:
    """Attendees with access, members per group, attendees per country and per invite status."""
    from attendee_pipeline.platform_db.segments import segment_counts

    _event(event_id)
    with platform_engine() as engine:
        counts = segment_counts(engine, event_id)
    click.echo(f"{event_id}: {counts['access']} attendee(s) may access the event")
    for title, key in (
        ("by group", "groups"),
        ("by country", "countries"),
        ("by invite status", "invite_status"),
        ("status filters", "status_filters"),
    ):
        click.echo(f"{title}:")
        for name, n in counts[key].items():
            click.echo(f"  {name:<28} {n:>7}")
        if not counts[key]:
            click.echo("  (none)")


@segment_group.command("access")
@click.argument("event_id")
@_export
@_export_format
def segment_access_command(event_id: str, export: str | None, fmt: str) -> None:
    """Who may access EVENT_ID: its attendees on the list and not removed."""
    from attendee_pipeline.platform_db.segments import access_list

    _event(event_id)
    with platform_engine() as engine:
        rows = access_list(engine, event_id)
    _segment_out(event_id, "access list", rows, export, fmt)


@segment_group.command("page")
@click.argument("event_id")
@click.option(
    "--group", "groups", multiple=True, required=True, help="A group the page is restricted to (repeatable)."
)
@_export
@_export_format
def segment_page_command(event_id: str, groups: Sequence[str], export: str | None, fmt: str) -> None:
    """Who may access a page of EVENT_ID restricted to the given groups (members of any)."""
    from attendee_pipeline.platform_db.segments import page_access

    _event(event_id)
    with platform_engine() as engine:
        rows = page_access(engine, event_id, groups)
    _segment_out(event_id, f"page for {' or '.join(groups)}", rows, export, fmt)


@segment_group.command("message")
@click.argument("event_id")
@_filters
@_export
@_export_format
def segment_message_command(
    event_id: str, groups: Sequence[str], countries: Sequence[str], export: str | None, fmt: str
) -> None:
    """Recipients of a message to groups / countries of EVENT_ID: members of any of the groups
    or attendees from any of the countries (neither: everyone with access)."""
    from attendee_pipeline.platform_db.segments import message_recipients

    _event(event_id)
    with platform_engine() as engine:
        rows = message_recipients(engine, event_id, groups, countries)
    audience = (
        " or ".join([*(f"group {g}" for g in groups), *(f"country {c}" for c in countries)]) or "everyone"
    )
    _segment_out(event_id, f"message to {audience}", rows, export, fmt)


# --------------------------------------------------------------------------- outbox


@click.group("outbox")
def outbox_group() -> None:
    """The e-mail outbox: status per event, delivery."""


@outbox_group.command("status")
@click.argument("event_id", required=False)
@click.option("--failed", "show_failed", is_flag=True, help="List the failed e-mails with their reasons.")
@click.option("--limit", default=50, show_default=True, type=int, help="Rows listed with --failed.")
def outbox_status_command(event_id: str | None, show_failed: bool, limit: int) -> None:
    """Pending / sending / sent / failed / skipped e-mails per event (attendee ids, no addresses)."""
    from attendee_pipeline.platform_db.outbox import OUTBOX_STATUSES, counts_by_event, outbox_rows

    with platform_engine() as engine:
        counts = counts_by_event(engine, event_id)
        failed = outbox_rows(engine, event_id, ["failed"], limit) if show_failed else []
    click.echo(f"{'event':<24} " + " ".join(f"{s:>8}" for s in OUTBOX_STATUSES))
    for event, per in counts.items():
        click.echo(f"{event:<24} " + " ".join(f"{per[s]:>8}" for s in OUTBOX_STATUSES))
    if not counts:
        click.echo("(the outbox is empty)")
    for row in failed:
        click.echo(
            f"  #{row['id']} {row['event_id']} attendee {row['attendee_id']} {row['kind']} "
            f"after {row['attempts']} attempt(s): {row['last_error']}"
        )


def run_delivery(instance: Any, *, trigger: str = "cli", show_progress: bool = True) -> dict[str, Any]:
    """Run ``email_delivery_job`` in this process (recorded in ``instance`` like any run) and
    return the ``email_outbox`` materialisation's metadata plus ``success`` and ``run_id``.
    With ``show_progress`` a line on stderr follows the outbox while it runs."""
    import dagster as dg

    from attendee_pipeline.cli.runs import materialization_metadata
    from attendee_pipeline.instance.tags import TRIGGER_TAG
    from attendee_pipeline.platform_db.outbox import due_summary
    from attendee_pipeline.settings import environment_digest

    with platform_engine() as engine:
        due = due_summary(engine).due
        stop = threading.Event()
        watcher = (
            threading.Thread(target=_watch, args=(engine, due, stop), daemon=True)
            if show_progress and due
            else None
        )
        if watcher:
            watcher.start()
        try:
            job = dg.build_reconstructable_job(
                "attendee_pipeline.cli.runs",
                "sync_job",
                reconstructable_kwargs={
                    "environment": environment_digest(),
                    "job_name": "email_delivery_job",
                },
            )
            config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            with dg.execute_job(
                job,
                instance=instance,
                run_config=config,
                raise_on_error=False,
                tags={TRIGGER_TAG: trigger},
            ) as result:
                metadata = materialization_metadata(result, "email_outbox")
                metadata.update(success=result.success, run_id=result.run_id)
        finally:
            stop.set()
            if watcher:
                watcher.join(timeout=5)
    return metadata


def _watch(engine: Any, due: int, stop: threading.Event) -> None:
    """Progress on stderr: how many of the due e-mails have left the pending state."""
    from attendee_pipeline.platform_db.outbox import due_summary

    while not stop.wait(1.0):
        try:
            left = due_summary(engine).due
        except Exception:  # noqa: BLE001 - progress is best effort (a locked SQLite file, say)
            continue
        click.echo(f"\r  delivering: {max(due - left, 0)} of {due} e-mail(s) handled", nl=False, err=True)
    click.echo("", err=True)


def format_delivery(metadata: dict[str, Any]) -> str:
    keys = ("sent", "retried", "failed", "skipped", "deferred")
    line = " ".join(f"{k}={int(metadata.get(k, 0))}" for k in keys)
    if metadata.get("smtp_unavailable"):
        line += f"\nSMTP server unavailable: {metadata['smtp_unavailable']} (the e-mails stay pending)"
    return line


@outbox_group.command("deliver")
def outbox_deliver_command() -> None:
    """Deliver the due e-mails now: the same Dagster job the e-mail sensor launches (the run is
    in the Dagster instance). SMTP settings: ATTENDEE_PIPELINE_SMTP_* (see docs/settings.md)."""
    import dagster as dg

    from attendee_pipeline.instance import dagster_home

    dagster_home()
    with dg.DagsterInstance.get() as instance:
        metadata = run_delivery(instance)
    if not metadata.get("success"):
        raise click.ClickException(
            f"the delivery run {metadata.get('run_id')} failed; see it in the Dagster UI"
        )
    click.echo(f"delivery: {format_delivery(metadata)} (run {metadata['run_id']})")


# --------------------------------------------------------------------------- registration


COMMANDS = (
    email_group,
    attendees_command,
    invite_command,
    record_status_command,
    segment_group,
    outbox_group,
)


@click.command("smtp-sink")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback addresses only.")
@click.option("--port", default=2525, type=int, show_default=True)
def smtp_sink_command(host: str, port: int) -> None:
    """Serve a local SMTP sink that accepts and counts every e-mail (no addresses printed).

    Point the pipeline at it with ATTENDEE_PIPELINE_SMTP_HOST=127.0.0.1 and
    ATTENDEE_PIPELINE_SMTP_PORT=<port>.
    """
    from attendee_pipeline.integrations.email.sandbox import serve_forever

    try:
        serve_forever(host, port)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``attendee-pipeline`` group (and ``sandbox smtp-sink``)."""
    for command in COMMANDS:
        cli.add_command(command)
    sandbox = cli.commands.get("sandbox")
    if isinstance(sandbox, click.Group):
        sandbox.add_command(smtp_sink_command)


# the demo's e-mail part ------------------------------------------------------------------------


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


#: The platform URL of the demo's personal links (a loopback placeholder).
DEMO_PLATFORM_URL = "http://127.0.0.1:8000"


def dev_smtp_sink(stack: contextlib.ExitStack, port: int = 2525) -> str:
    """For ``attendee-pipeline dev``: unless ATTENDEE_PIPELINE_SMTP_HOST is set, serve a local
    SMTP sink (port 2525 when free) for the life of ``stack`` and point the settings at it (the
    Dagster processes started afterwards inherit them). Returns a line saying where e-mails go."""
    from attendee_pipeline.integrations.email.sandbox import SinkHandler, serve_smtp_sink

    if os.environ.get("ATTENDEE_PIPELINE_SMTP_HOST"):
        return f"e-mails go to the SMTP server {os.environ['ATTENDEE_PIPELINE_SMTP_HOST']} (ATTENDEE_PIPELINE_SMTP_HOST)"
    from attendee_pipeline.cli.main import _free_or_any

    sink = stack.enter_context(serve_smtp_sink(SinkHandler(keep_messages=False), port=_free_or_any(port)))
    os.environ.update(sink.env())
    os.environ.setdefault("ATTENDEE_PIPELINE_PLATFORM_URL", DEMO_PLATFORM_URL)
    return f"local SMTP sink on {sink.host}:{sink.port} receives the e-mails (they are counted and dropped)"


def demo_delivery(instance: Any) -> str:
    """Deliver the outbox to a local SMTP sink (never a real server, whatever the environment
    says) and describe what happened in one line."""
    from attendee_pipeline.integrations.email.sandbox import serve_smtp_sink

    with (
        serve_smtp_sink() as sink,
        _env(
            {
                **sink.env(),
                "ATTENDEE_PIPELINE_SMTP_USER": "",
                "ATTENDEE_PIPELINE_PLATFORM_URL": os.environ.get("ATTENDEE_PIPELINE_PLATFORM_URL")
                or DEMO_PLATFORM_URL,
            }
        ),
    ):
        metadata = run_delivery(instance, trigger="demo", show_progress=False)
        received = sink.handler.received
        connections = sink.handler.connections
    by_kind: dict[str, int] = {}
    for message in sink.messages:
        kind = str(message.message.get("X-Attendee-Pipeline-Email", "//")).split("/")[1]
        by_kind[kind] = by_kind.get(kind, 0) + 1
    line = (
        f"e-mail: {by_kind.get('invite', 0)} invite(s) and {by_kind.get('cancellation', 0)} cancellation(s) "
        f"delivered to a local SMTP sink ({received} message(s) over {connections} connection(s)); "
        f"{format_delivery(metadata)}"
    )
    return line if metadata.get("success") else line + f"\ndelivery run {metadata.get('run_id')} failed"
