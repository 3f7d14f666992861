"""The platform database schema as SQLAlchemy Core tables (no ORM).

``events`` mirrors the event catalog (rows are never deleted: an event that leaves the catalog is
marked ``in_catalog = false``); ``attendees`` is each event's published attendee list, one row per
(event, attendee_key) for ever -- a removed attendee keeps its row with ``status = 'removed'`` and
gets the same id back when it returns; ``groups`` are shared between events (one row per name,
matched in any case and Unicode normalisation: ``name_key``)
and ``memberships`` link active attendees to them; ``sync_ledger`` has one row per publish (or
held / dry-run sync) with its counts and, for a push source, how far the publish read
(``source_position``); ``rejected_records`` keeps every quarantined record with its reason.
``feed_keys`` holds the push feed's API keys (only their SHA-256 hashes) per event and
``feed_inbox`` every attendee record the feed accepted, in arrival order, with the names of the
fields it ignored, and ``feed_idempotency`` the answers to pushes sent with an idempotency key
(see ``attendee_pipeline.platform_db.feed``). ``email_outbox`` queues invite
and cancellation e-mails and ``attendee_statuses`` keeps invite statuses (see the e-mail section
at the end). The alembic migrations create exactly this metadata (a test compares them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from attendee_pipeline.sync.model import CONTENT_COLUMNS, PROFILE_FIELDS

#: Deterministic constraint names on every backend (alembic needs names to alter constraints).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC that always reads back as an aware UTC ``datetime``.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is converted to UTC
    and stored naive. Naive values written from Python are taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


#: Attendee status values.
ACTIVE = "active"
REMOVED = "removed"

#: sync_ledger status values.
#: ``unchanged``: the raw extract and the event's catalog entry were identical to those of the
#: last publish, so nothing was mapped or written (see attendee_pipeline.sync.fingerprint).
#: ``superseded``: a sync whose extract began before that of the event's last publish, which it
#: would have overwritten with older data: nothing was written (see platform_db.publish).
LEDGER_STATUSES = ("published", "held", "dry_run", "unchanged", "superseded")


events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=True),
    sa.Column("ends_at", UTCDateTime, nullable=True),
    sa.Column("source_kind", sa.Text, nullable=True),
    sa.Column("in_catalog", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("removed_from_catalog_at", UTCDateTime, nullable=True),
)

attendees = sa.Table(
    "attendees",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("attendee_key", sa.Text, nullable=False),
    *(sa.Column(name, sa.Text, nullable=True) for name in PROFILE_FIELDS),
    sa.Column("custom_fields", sa.Text, nullable=True),
    sa.Column("groups", sa.Text, nullable=True),
    sa.Column("source_record_id", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("row_hash", sa.BigInteger, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_changed_at", UTCDateTime, nullable=False),
    sa.Column("removed_at", UTCDateTime, nullable=True),
    sa.Column("last_run_id", sa.Text, nullable=True),
    # a guest's tags and relations (sync.model: canonical JSON), for the sources that have them
    sa.Column("tags", sa.Text, nullable=True),
    sa.Column("relations", sa.Text, nullable=True),
    sa.UniqueConstraint("event_id", "attendee_key"),
    sa.CheckConstraint("status IN ('active', 'removed')", name="status"),
    sa.Index(None, "event_id", "status"),
    # what a publish changed, for the audiences (migration 0013)
    sa.Index(None, "event_id", "last_run_id"),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # what makes a group: its name in NFC and case-folded (sync.model.group_key), written by
    # every publish; nullable and a unique index because SQLite adds neither a NOT NULL column
    # nor a unique constraint to a table in place (migration 0007)
    sa.Column("name_key", sa.Text, nullable=True),
    sa.UniqueConstraint("name"),
    sa.Index(None, "name_key", unique=True),
)

memberships = sa.Table(
    "memberships",
    metadata,
    # denormalised from attendees (no foreign key: one less check per row in bulk writes)
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("attendee_id", sa.Integer, sa.ForeignKey("attendees.id"), primary_key=True),
    sa.Column("group_id", sa.Integer, sa.ForeignKey("groups.id"), primary_key=True),
    sa.Index(None, "event_id"),
    sa.Index(None, "group_id"),
)

sync_ledger = sa.Table(
    "sync_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("source_kind", sa.Text, nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=False),
    *(
        sa.Column(name, sa.Integer, nullable=False)
        for name in ("added", "restored", "updated", "removed", "unchanged", "rejected", "skipped")
    ),
    sa.Column("raw_extract_path", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("input_fingerprint", sa.Text, nullable=True),
    # a push source's read position when the publish ran (e.g. the last feed_inbox id it saw)
    sa.Column("source_position", sa.Text, nullable=True),
    sa.CheckConstraint("status IN ('published', 'held', 'dry_run', 'unchanged', 'superseded')", name="status"),
    sa.Index(None, "event_id"),
)

rejected_records = sa.Table(
    "rejected_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("source_row", sa.Integer, nullable=True),
    sa.Column("source_record_id", sa.Text, nullable=True),
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw_record", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "event_id", "run_id"),
)

feed_keys = sa.Table(
    "feed_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    # public id ("fk_" + 10 hex characters): what the CLI lists and revokes
    sa.Column("key_id", sa.Text, nullable=False),
    # SHA-256 hex digest of the plain key (the plain key is never stored)
    sa.Column("key_hash", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("key_id"),
    sa.Index(None, "event_id"),
)

#: 64-bit ids on PostgreSQL; SQLite only autoincrements an ``INTEGER PRIMARY KEY`` (64-bit anyway).
INBOX_ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

feed_inbox = sa.Table(
    "feed_inbox",
    metadata,
    sa.Column("id", INBOX_ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    # the normalized attendee record as compact JSON with sorted keys
    sa.Column("record", sa.Text, nullable=False),
    # paths of the fields the push sent that the seed does not list, as a compact JSON list
    # (names only, never values); NULL when there were none (migration 0006)
    sa.Column("ignored_fields", sa.Text, nullable=True),
    sa.Index(None, "event_id", "id"),
)

#: The feed's answers to pushes sent with an ``Idempotency-Key`` header (migration 0008): a repeat
#: of the key for the same event and route within the retention time gets the stored answer
#: instead of being stored again. Only accepted (200) answers are kept; ``request_hash`` is the
#: SHA-256 of the request body (without its ``key``) so that a different body under the same key
#: is told apart. Rows older than the retention time are deleted as the event's pushes arrive.
feed_idempotency = sa.Table(
    "feed_idempotency",
    metadata,
    sa.Column("id", INBOX_ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    # "attendees" or "attendees:batch"
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    # the answer's JSON body, as sent
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("event_id", "route", "idempotency_key"),
    sa.Index(None, "event_id", "created_at"),
)

#: Attendee columns a publish writes from a change set (besides bookkeeping columns).
ATTENDEE_CONTENT_COLUMNS: tuple[str, ...] = CONTENT_COLUMNS


# --------------------------------------------------------------------------- e-mail (migration 0003)
#
# ``email_outbox`` holds every invite / cancellation e-mail a publish (or a manual ``invite``)
# queued: one row per (event, attendee, kind) for ever -- the unique constraint is what makes an
# e-mail go out at most once, whatever retries or re-runs happen -- with its delivery state
# (attempts, last error without any address, next attempt time). ``attendee_statuses`` holds
# the invite statuses organisers filter on (invite sent / account created / first accessed) and
# the token of each attendee's personal link; rows are created on first need. The SQL views of
# statuses and segments (see ``attendee_pipeline.platform_db.segments``) are created by the same
# migration; views are not part of this metadata.

#: email_outbox.kind values.
OUTBOX_KINDS = ("invite", "cancellation")

#: email_outbox.status values: ``pending`` (due at ``next_attempt_at``), ``sending`` (claimed by
#: a delivery), ``sent``, ``failed`` (given up, or refused for good: see ``last_error``),
#: ``skipped`` (no longer applies: an invite to an attendee removed before delivery, ...).
OUTBOX_STATUSES = ("pending", "sending", "sent", "failed", "skipped")

email_outbox = sa.Table(
    "email_outbox",
    metadata,
    sa.Column("id", INBOX_ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    # attendees.id (no foreign key: one less check per row when a publish queues 100k invites)
    sa.Column("attendee_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    # what queued it: ``sync`` (a publish; run_id is its Dagster run) or ``manual`` (the CLI)
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    # the reason of the last failed attempt; never an address, a name or a body
    sa.Column("last_error", sa.Text, nullable=True),
    # the delivery claim (see attendee_pipeline.platform_db.delivery): its owner, when it was
    # taken, when its lease runs out, and when this row's one SMTP send began (in flight)
    sa.Column("claim_token", sa.Text, nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("message_id", sa.Text, nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("in_flight_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("event_id", "attendee_id", "kind"),
    sa.CheckConstraint("kind IN ('invite', 'cancellation')", name="kind"),
    sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name="status"),
    # the pending rows in queue order, for the delivery (a partial index: an integer key that
    # only grows, so queueing 100k invites in a publish adds little; sent rows leave it)
    sa.Index(
        "ix_email_outbox_pending",
        "id",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
    # the claimed rows, for finding those whose lease ran out (few; sent rows leave it)
    sa.Index(
        "ix_email_outbox_sending",
        "lease_expires_at",
        sqlite_where=sa.text("status = 'sending'"),
        postgresql_where=sa.text("status = 'sending'"),
    ),
)

attendee_statuses = sa.Table(
    "attendee_statuses",
    metadata,
    sa.Column("attendee_id", sa.Integer, sa.ForeignKey("attendees.id"), primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False),
    # random URL-safe token of the attendee's personal link (``personal_link`` in templates)
    sa.Column("link_token", sa.Text, nullable=False),
    sa.Column("invite_sent_at", UTCDateTime, nullable=True),
    sa.Column("account_created_at", UTCDateTime, nullable=True),
    sa.Column("first_accessed_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("link_token"),
    sa.Index(None, "event_id"),
)


# --------------------------------------------------------------------------- Procurios (seed 002)
#
# ``sessions``: the programme of an event as its source lists it (external id, title, start,
# end, room, track); rows are never deleted (a session the source no longer lists is marked
# ``removed``), so schedules and a later outbound sync (Swoogo, PRODUCT.md integration 5) can
# rely on the ids. ``personal_schedule``: which sessions each attendee signed up for.
# ``tags`` / ``attendee_tags``: hidden tags such as the per-event tag every imported attendee of
# a Procurios event gets. ``check_ins``: the platform's check-ins (on-site / online / hybrid)
# with the state of their write-back to the source (see attendee_pipeline.platform_db.procurios).

#: check-in kinds and write-back states.
CHECK_IN_KINDS = ("on_site", "online", "hybrid")
WRITEBACK_STATES = ("pending", "sending", "sent", "failed", "skipped")

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.id"), nullable=False),
    # where the session comes from ('procurios') and its id there
    sa.Column("source_kind", sa.Text, nullable=False),
    sa.Column("external_id", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=True),
    sa.Column("ends_at", UTCDateTime, nullable=True),
    sa.Column("room", sa.Text, nullable=True),
    sa.Column("track", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("event_id", "source_kind", "external_id"),
    sa.CheckConstraint("status IN ('active', 'removed')", name="status"),
)

personal_schedule = sa.Table(
    "personal_schedule",
    metadata,
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("attendee_id", sa.Integer, sa.ForeignKey("attendees.id"), primary_key=True),
    sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id"), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "event_id"),
    sa.Index(None, "session_id"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    # hidden tags are for targeting (e-mails, access rules), not shown to attendees
    sa.Column("hidden", sa.Boolean, nullable=False),
    # set for the automatic tag of one event (one per event)
    sa.Column("event_id", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("event_id"),
)

attendee_tags = sa.Table(
    "attendee_tags",
    metadata,
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("attendee_id", sa.Integer, sa.ForeignKey("attendees.id"), primary_key=True),
    sa.Column("tag_id", sa.Integer, sa.ForeignKey("tags.id"), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "event_id"),
    sa.Index(None, "tag_id"),
)

check_ins = sa.Table(
    "check_ins",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("attendee_id", sa.Integer, sa.ForeignKey("attendees.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("checked_in_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    # who recorded it ('api' = the platform's hook, 'cli') and the platform's own id, if any
    sa.Column("recorded_by", sa.Text, nullable=False),
    sa.Column("external_id", sa.Text, nullable=True),
    sa.Column("writeback", sa.Text, nullable=False),
    sa.Column("writeback_attempts", sa.Integer, nullable=False),
    # why a write-back failed or was skipped
    sa.Column("writeback_detail", sa.Text, nullable=True),
    sa.Column("writeback_at", UTCDateTime, nullable=True),
    # the write-back claim (see attendee_pipeline.platform_db.delivery): the run holding it, when
    # its lease runs out, when its one attendance POST began, and when a retry is due (NULL: now)
    sa.Column("writeback_run_id", sa.Text, nullable=True),
    sa.Column("writeback_lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("writeback_in_flight_at", UTCDateTime, nullable=True),
    sa.Column("writeback_next_attempt_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("event_id", "external_id"),
    sa.CheckConstraint("kind IN ('on_site', 'online', 'hybrid')", name="kind"),
    sa.CheckConstraint("writeback IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name="writeback"),
    sa.Index(None, "event_id", "writeback"),
    sa.Index(None, "attendee_id"),
)


# --------------------------------------------------------------------------- outbound delivery
#
# ``delivery_state``: the delivery state of items of destinations that have no table of their
# own (a Swoogo push of speakers and sessions), one row per (destination, entity, key): the id
# the destination gave it, the hash of what was last delivered and of what is wanted, status,
# attempts, last error, the tombstone ("deleted at the destination": never delivered again) and
# the claim (lease owner, lease expiry, in flight, next attempt). ``delivery_dependencies``: an
# item waits until each item it names is delivered (a session until its speakers are). The
# e-mail outbox and the check-ins carry the same state in their own columns; the one mechanism
# over all three is attendee_pipeline.platform_db.delivery.

#: Delivery status values, shared by email_outbox.status, check_ins.writeback and delivery_state.
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "skipped")

delivery_state = sa.Table(
    "delivery_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("entity", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("external_id", sa.Text, nullable=True),
    sa.Column("wanted_hash", sa.Text, nullable=True),
    sa.Column("delivered_hash", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("tombstoned", sa.Boolean, nullable=False),
    sa.Column("lease_owner", sa.Text, nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("in_flight_at", UTCDateTime, nullable=True),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("destination", "entity", "key"),
    sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name="status"),
    sa.Index(None, "destination", "status"),
)

delivery_dependencies = sa.Table(
    "delivery_dependencies",
    metadata,
    sa.Column("destination", sa.Text, primary_key=True),
    sa.Column("entity", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("on_entity", sa.Text, primary_key=True),
    sa.Column("on_key", sa.Text, primary_key=True),
)

# --------------------------------------------------------------------------- source state
#
# ``source_state``: how far each source has been read, per (connection, stream, event): a pull's
# next ``since``, a feed's last inbox id. Written in the transaction of the publish that reached
# it (``ledger_id``), so a position never runs ahead of what is published; an inline source's
# connection is ``event:<event id>`` (see attendee_pipeline.platform_db.source_state). The
# ledger's ``source_position`` keeps each publish's position as history.

source_state = sa.Table(
    "source_state",
    metadata,
    sa.Column("connection_id", sa.Text, primary_key=True),
    sa.Column("stream", sa.Text, primary_key=True),
    # '' for a stream of the connection that belongs to no one event
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("position", sa.Text, nullable=True),
    sa.Column("ledger_id", sa.Integer, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "event_id"),
)


# --------------------------------------------------------------------------- Audience (seed 003)
#
# One contact database per audience, fed by the published guest lists of the events it listens
# to (see attendee_pipeline.platform_db.audiences). ``audience_contacts``: one row per person,
# matched on the audience's unique identifier (``uid_key``: the UID as matched; NULL for a
# blank-UID contact, which nothing ever matches); ``audience_fields``: the audience's custom
# field definitions; ``audience_history``: one row per (audience, event, guest) -- the guest
# lists, the status, first and last seen, removed from the list at; ``audience_relationships``:
# companion / plus-one links between contacts. Nothing here is ever deleted automatically.

#: audience_history.status values.
HISTORY_STATUSES = ("registered", "checked_in", "cancelled")

audience_contacts = sa.Table(
    "audience_contacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("audience_id", sa.Text, nullable=False),
    # the UID as the guest had it, and as matched (e-mail: its attendee key; other fields:
    # stripped, NFC, case-folded)
    sa.Column("uid", sa.Text, nullable=True),
    sa.Column("uid_key", sa.Text, nullable=True),
    *(sa.Column(name, sa.Text, nullable=True) for name in PROFILE_FIELDS),
    sa.Column("custom_fields", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=True),
    sa.Column("content_hash", sa.BigInteger, nullable=False),
    sa.Column("created_from_event", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("audience_id", "uid_key"),
)

audience_fields = sa.Table(
    "audience_fields",
    metadata,
    sa.Column("audience_id", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, primary_key=True),
    sa.Column("created_from_event", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

audience_history = sa.Table(
    "audience_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("audience_id", sa.Text, nullable=False),
    sa.Column("contact_id", sa.Integer, sa.ForeignKey("audience_contacts.id"), nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("attendee_key", sa.Text, nullable=False),
    # attendees.id (no foreign key: the history outlives whatever happens to the list)
    sa.Column("attendee_id", sa.Integer, nullable=True),
    sa.Column("source_record_id", sa.Text, nullable=True),
    sa.Column("guest_lists", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("source_hash", sa.BigInteger, nullable=True),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("removed_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("audience_id", "event_id", "attendee_key"),
    sa.CheckConstraint("status IN ('registered', 'checked_in', 'cancelled')", name="status"),
    sa.Index(None, "contact_id"),
)

audience_relationships = sa.Table(
    "audience_relationships",
    metadata,
    sa.Column("audience_id", sa.Text, nullable=False),
    sa.Column("contact_id", sa.Integer, sa.ForeignKey("audience_contacts.id"), primary_key=True),
    sa.Column("related_contact_id", sa.Integer, sa.ForeignKey("audience_contacts.id"), primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "related_contact_id"),
)
