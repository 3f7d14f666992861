"""``attendee-pipeline check-connection CONNECTION_OR_EVENT``: verify a catalog connection, or the
connection of one event, for every connection kind.

A pulled source (``rest_api``, ``procurios``, ``zkipster``) is checked step by step as a sync
would meet it: its credentials are set, an OAuth2 client gets a token, and each event's list
(or meeting) answers -- through the connectors' own checks. A push source (``feed``) has nothing to call: the
check says so and looks at what the feed service writes to, the platform database (reachable
and migrated, the inbox and keys of each event). One line per step; a failed step says what to
check; exit status 1 when a step failed. Nothing here prints credentials, e-mail addresses or
names. ``cli/main.py`` registers the command with one line.
"""

from __future__ import annotations

import sys
from typing import Any

import click


def _target(name: str) -> tuple[Any, list[Any], str]:
    """(connection-like settings, events, label) of a connection id or an event id."""
    from attendee_pipeline.catalog import CatalogError, load_catalog
    from attendee_pipeline.catalog.connections import connection_id_of

    try:
        catalog = load_catalog()
        connection = catalog.connection(name)
        if connection is not None:
            events = [e for e in catalog.events if e.source.connection == name]
            return connection, events, f"connection {name} ({connection.kind})"
        event = catalog.find(name)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    if event is None:
        broken = [p for p in catalog.connection_problems if p.startswith(f"connection {name!r}:")]
        if broken:
            raise click.ClickException("\n".join(broken))
        raise click.UsageError(f"{name} is neither a connection nor an event of the catalog")
    return event.source, [event], f"{event.id} through {connection_id_of(event)} ({event.source.kind})"


def _print(checks: list[Any]) -> bool:
    for check in checks:
        click.echo(f"  {'ok    ' if check.ok else 'FAILED'} {check.step:<14} {check.message}")
    return all(check.ok for check in checks)


def _check_pulled(kind: str, settings: Any, events: list[Any], one_event: bool = False) -> bool:
    """A rest_api, procurios or zkipster connection: the connection alone when no event uses it,
    else each event's source."""
    if kind == "procurios":
        from attendee_pipeline.integrations.procurios.client import check_connection as check
    elif kind == "zkipster":
        from attendee_pipeline.integrations.zkipster.client import check_connection as check
    else:
        from attendee_pipeline.connectors.rest import check_source as check
    if not events:
        if kind not in ("procurios", "zkipster"):  # a REST connection's check needs an event's URL
            click.echo("  no event uses this connection: its credentials are checked with the first event's list")
            return _check_rest_credentials(settings)
        return _print(check(settings))
    ok = True
    for event in events:
        source = event.source
        if not one_event:
            where = {"procurios": f"meeting {getattr(source, 'meeting_id', '')}",
                     "zkipster": f"event {getattr(source, 'zkipster_event_id', '')}"}.get(kind, "its list")
            click.echo(f" {event.id}: {where}")
        ok = _print(check(source)) and ok
    return ok


def _check_rest_credentials(connection: Any) -> bool:
    from attendee_pipeline.connectors.auth import AuthError, OAuth2ClientCredentials, auth_strategy
    from attendee_pipeline.connectors.http import MissingSecretError
    from attendee_pipeline.connectors.rest import ConnectionCheck

    try:
        auth = auth_strategy(connection.auth, max_retries=1, backoff_factor=0.2)
    except MissingSecretError as exc:
        return _print([ConnectionCheck("credentials", False, str(exc))])
    try:
        checks = [ConnectionCheck("credentials", True, ", ".join(auth.env_names) + " set" if auth.env_names else "no auth")]
        if isinstance(auth, OAuth2ClientCredentials):
            try:
                auth.token()
                checks.append(ConnectionCheck("token", True, f"{auth.token_url} issued an access token"))
            except AuthError as exc:
                checks.append(ConnectionCheck(exc.step, False, exc.problem))
        return _print(checks)
    finally:
        auth.close()


def _check_feed(events: list[Any]) -> bool:
    """A push source: what the feed service writes to."""
    import sqlalchemy as sa

    from attendee_pipeline import settings
    from attendee_pipeline.connectors.rest import ConnectionCheck
    from attendee_pipeline.platform_db.engine import current_revision, head_revision, make_engine
    from attendee_pipeline.platform_db.feed import list_keys
    from attendee_pipeline.platform_db.publish import last_published_position
    from attendee_pipeline.platform_db.tables import feed_inbox

    click.echo("  push-only: the provider sends each attendee to the feed service (serve-feed); nothing is called")
    checks: list[ConnectionCheck] = []
    engine = make_engine(settings.db_url())
    try:
        try:
            at = current_revision(engine)
        except sa.exc.SQLAlchemyError as exc:
            return _print([ConnectionCheck("database", False, f"cannot reach the platform database ({type(exc).__name__}) "
                                           "-- check ATTENDEE_PIPELINE_DB_URL")])
        if at != head_revision():
            return _print([ConnectionCheck("database", False, f"the platform database is at migration {at!r}, not "
                                           f"{head_revision()!r} -- run `attendee-pipeline db upgrade`")])
        checks.append(ConnectionCheck("database", True, f"the platform database is reachable and at migration {at}"))
        for event in events:
            keys = [k for k in list_keys(engine, event.id) if not k.get("revoked_at")]
            with engine.connect() as conn:
                received = conn.execute(
                    sa.select(sa.func.count(), sa.func.max(feed_inbox.c.id)).where(feed_inbox.c.event_id == event.id)
                ).one()
            position = int(last_published_position(engine, event.id) or 0)
            waiting = received[1] is not None and int(received[1]) > position
            checks.append(ConnectionCheck(
                f"{event.id}", bool(keys),
                (f"{len(keys)} active feed key(s), {received[0]} push(es) in the inbox, published up to inbox id {position}"
                 + (f", newer pushes waiting (inbox id {received[1]})" if waiting else ""))
                if keys else f"no active feed key: the provider cannot push -- `attendee-pipeline feed-key create {event.id}`",
            ))
    finally:
        engine.dispose()
    return _print(checks)


@click.command("check-connection")
@click.argument("connection_or_event")
def check_connection(connection_or_event: str) -> None:
    """Verify a catalog connection, or an event's connection: credentials, token, the provider's
    answer for each event (a feed: push-only, the platform database and its feed keys).

    Prints one line per step with what to check when it fails; exits 1 when a step failed.
    """
    settings_of, events, label = _target(connection_or_event)
    kind = settings_of.kind
    if kind == "procurios" and events and settings_of is events[0].source:
        source = settings_of
        click.echo(f"checking {events[0].id}: Procurios {source.base_url}, meeting {source.meeting_id}")
    else:
        click.echo(f"checking {label}")
    if kind == "feed":
        ok = _check_feed(events)
    else:
        ok = _check_pulled(kind, settings_of, events, one_event=settings_of is not None and len(events) == 1
                           and settings_of is events[0].source)
    if not ok:
        sys.exit(1)
    click.echo("connection OK")
