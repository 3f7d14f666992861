"""The Procurios commands of ``attendee-pipeline`` (seed 002): record check-ins and follow their
write-back, and serve the Procurios sandbox (``check-connection`` is in cli/connections.py).

``cli/main.py`` registers each command with one line. Nothing here prints credentials, e-mail
addresses or names.
"""

from __future__ import annotations

import datetime as dt

import click

from attendee_pipeline.cli.platform import platform_engine


def _procurios_event(event_id: str):  # type: ignore[no-untyped-def]
    from attendee_pipeline.catalog import CatalogError, load_catalog

    try:
        event = load_catalog().find(event_id)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    if event is None:
        raise click.UsageError(f"{event_id} is not in the catalog")
    return require_procurios(event)


def require_procurios(event):  # type: ignore[no-untyped-def]
    """``event`` (a catalog entry) when it is a Procurios event, else a usage error."""
    from attendee_pipeline.integrations import is_kind, kind_of

    if not is_kind(event, "procurios"):
        raise click.UsageError(f"{event.id} is not a Procurios event (its source kind is {kind_of(event)})")
    return event


@click.command("checkin")
@click.argument("event_id")
@click.option("--attendee-id", type=int, default=None, help="The attendee's platform id.")
@click.option("--email", default=None, help="Or the attendee's e-mail address.")
@click.option("--kind", type=click.Choice(["on_site", "online", "hybrid"]), default="on_site", show_default=True)
@click.option("--at", "at", default=None, help="When (ISO 8601 with timezone; default now).")
@click.option("--id", "external_id", default=None, help="The platform's id of the check-in (repeats are ignored).")
def checkin(event_id: str, attendee_id: int | None, email: str | None, kind: str, at: str | None,
            external_id: str | None) -> None:
    """Record a check-in of an attendee of EVENT_ID, as the platform's hook does.

    An on-site check-in of a Procurios event is written back to Procurios as "present" by
    procurios_checkin_sensor (or `attendee-pipeline checkins EVENT_ID --send`).
    """
    from attendee_pipeline.platform_db.procurios import CheckInError, record_check_in

    when = None
    if at is not None:
        try:
            when = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter("not an ISO 8601 time", param_hint="--at") from None
    with platform_engine() as engine:
        try:
            check_in, created = record_check_in(
                engine, event_id, kind=kind, attendee_id=attendee_id, email=email, checked_in_at=when,
                recorded_by="cli", external_id=external_id,
            )
        except CheckInError as exc:
            raise click.ClickException(str(exc)) from None
    state = check_in["writeback"] + (f" ({check_in['writeback_detail']})" if check_in["writeback_detail"] else "")
    click.echo(f"check-in {check_in['id']} {'recorded' if created else 'already recorded'}: "
               f"attendee {check_in['attendee_id']}, {kind}; write-back {state}")


@click.command("checkins")
@click.argument("event_id")
@click.option("--retry-failed", is_flag=True, help="Queue the failed write-backs again.")
@click.option("--send", is_flag=True, help="Send the pending write-backs now (runs procurios_checkin_job).")
def checkins(event_id: str, retry_failed: bool, send: bool) -> None:
    """Show the check-in write-back of EVENT_ID: counts per state, failures per reason."""
    from attendee_pipeline.platform_db.procurios import requeue, writeback_summary

    with platform_engine() as engine:
        if retry_failed:
            click.echo(f"{requeue(engine, event_id)} failed write-back(s) queued again")
        if send:
            _send(event_id)
        summary = writeback_summary(engine, event_id)
    click.echo(f"check-in write-back of {event_id}:")
    for state in ("pending", "sending", "sent", "failed", "skipped"):
        click.echo(f"  {state:<8} {summary[state]}")
    for reason, count in summary["failed_reasons"].items():
        click.echo(f"    {count} x {reason}")
    if summary["sending"]:
        click.echo("  (sending: claimed by a run; a run that died leaves them claimed until its lease runs out, "
                   "then the sensor's next tick takes them again)")


def _send(event_id: str) -> None:
    import dagster as dg

    from attendee_pipeline.definitions import defs
    from attendee_pipeline.integrations.procurios.defs.partitions import procurios_events_partitions
    from attendee_pipeline.instance.tags import TRIGGER_TAG
    from attendee_pipeline.instance import dagster_home

    _procurios_event(event_id)
    dagster_home()
    with dg.DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(procurios_events_partitions.name, event_id):
            instance.add_dynamic_partitions(procurios_events_partitions.name, [event_id])
        job = defs.resolve_job_def("procurios_checkin_job")
        result = job.execute_in_process(instance=instance, partition_key=event_id, raise_on_error=False,
                                        tags={TRIGGER_TAG: "cli"})
    click.echo(f"write-back run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")


@click.command("procurios")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback addresses only.")
@click.option("--port", default=8790, type=int, show_default=True)
@click.option("--registrations", default=None, type=int, help="Registrations of the demo meeting (default 150).")
@click.option("--token-ttl", default=3600.0, type=float, show_default=True, help="Seconds an access token lives.")
@click.option("--latency-ms", default=0.0, type=float, show_default=True, help="Added to every API answer.")
def sandbox_procurios(host: str, port: int, registrations: int | None, token_ttl: float, latency_ms: float) -> None:
    """Serve the Procurios sandbox (the demo meeting 2027) until interrupted.

    Its client credentials are DEMO_PROCURIOS_CLIENT_ID / DEMO_PROCURIOS_CLIENT_SECRET (export
    the same values where you run `attendee-pipeline sync`). Faults and data changes go through
    its /_control/ endpoints (see docs/cli.md, "Sandbox providers").
    """
    from attendee_pipeline.integrations.procurios.sandbox import main

    try:
        main(host=host, port=port, registrations=registrations, token_ttl=token_ttl, latency_ms=latency_ms)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
