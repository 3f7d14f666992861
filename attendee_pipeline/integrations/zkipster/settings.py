"""The catalog settings of a ``zkipster`` source (seed 003, the Events side): the account (base
URL, the token's environment variable and the rate limit, normally from a catalog connection
that the account's events share), the zkipster event, and how it is pulled and mapped -- each
with a default, described in docs/zkipster.md -- plus the rules that tie them to the event's
entry (the default mapping, a full pull removes who is gone, an incremental one never does)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from attendee_pipeline.catalog.fields import (
    ConnectionRef,
    EnvName,
    RateLimit,
    _SourceSettings,
    _env_name,
    _http_url,
    _with_apply_defaults,
)

#: The platform field -> guest field mapping a zkipster event gets; an entry's ``mapping``
#: amends it (e.g. ``titles: salutation``). ``guest_lists`` is not a field of the API's guest:
#: the source puts the names of the guest's guest lists there (from their ids) before mapping.
DEFAULT_MAPPING: dict[str, str] = {
    "source_record_id": "id",
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "company": "company",
    "job_title": "job_title",
    "phone": "phone",
    "groups": "guest_lists",
    "tags": "tags",
}

#: The guest's relationships the mapping reads unless ``import_relations`` is off: relation
#: kind -> the guest field holding the related guest's id.
DEFAULT_RELATIONS: dict[str, str] = {"companion_of": "companion_of"}

#: The apply policy of a zkipster event unless its entry says otherwise: a full pull (the first,
#: a full import, the periodic reconciliation) creates, overwrites and removes the guests that
#: are gone; an incremental pull keeps whom it does not list (see source.Zkipster.apply_policy).
DEFAULT_POLICY: dict[str, str] = {"new": "create", "existing": "overwrite", "flagged": "remove", "missing": "remove"}


class ZkipsterSource(_SourceSettings):
    """Seed 003: the guests of one zkipster event, pulled incrementally (changed and deleted
    guests since the server time the last pull reached), with a full pull the first time, on a
    full import and every ``full_pull_every_hours``."""

    kind: Literal["zkipster"]
    connection: ConnectionRef = None
    #: The account's API, e.g. https://api.zkipster.com (from the connection).
    base_url: str
    #: The environment variable that holds the account's API token (from the connection).
    token_env: EnvName
    #: The zkipster event whose guests this catalog event holds.
    zkipster_event_id: str
    #: Hours after which a scheduled pull is a full pull again: it lists every guest, so guests
    #: deleted in a way the deleted listing did not report (or a renamed guest list) are
    #: reconciled. 0: every pull is a full pull.
    full_pull_every_hours: float = Field(default=24.0, ge=0, le=24 * 365)
    #: Only guests on these guest lists (names or ids; None: every list). A guest on none of
    #: them is not an attendee (one who leaves them is removed).
    guest_lists: list[str] | None = Field(default=None, min_length=1)
    #: Every custom field of a guest, under its label. Off: only those the entry's
    #: ``mapping.custom_fields`` names (``label: custom_fields.<zkipster label>``).
    import_custom_fields: bool = True
    #: The guest's relationships (its companion link) as the attendee's ``relations``; off: none
    #: (unless the entry's ``mapping.relations`` names some).
    import_relations: bool = True
    #: Records asked for per page (the API allows 1..500).
    page_size: int = Field(default=100, ge=1, le=500)
    timeout_seconds: float = Field(default=30.0, gt=0)
    #: The longest ``Retry-After`` (on a 429 or 5xx) honoured per retry; a longer one is cut to this.
    retry_after_max_seconds: float = Field(default=300.0, ge=0)
    rate_limit: RateLimit | None = None

    _check_env = field_validator("token_env")(lambda v: _env_name(v))

    @field_validator("zkipster_event_id", mode="before")
    @classmethod
    def _event(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str) and not v.strip():
            raise ValueError("the zkipster event id must not be empty")
        return v.strip() if isinstance(v, str) else v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")

    @field_validator("guest_lists")
    @classmethod
    def _lists(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not str(name).strip() for name in v):
            raise ValueError("a guest list name or id must not be empty")
        return None if v is None else [str(name).strip() for name in v]

    @classmethod
    def entry_defaults(cls, entry: dict[str, Any]) -> dict[str, Any]:
        entry = dict(entry)
        mapping = entry.get("mapping")
        source = entry.get("source") if isinstance(entry.get("source"), dict) else {}
        relations = {} if source.get("import_relations") is False else dict(DEFAULT_RELATIONS)
        if mapping is None or isinstance(mapping, dict):
            entry["mapping"] = {**DEFAULT_MAPPING, "relations": relations, **(mapping or {})}
        return _with_apply_defaults(entry, DEFAULT_POLICY)

    def check_entry(self, entry: Any) -> None:
        if entry.delete_flag is not None:
            raise ValueError(
                "delete_flag: not used by a zkipster source: deleted guests come from the API's "
                "deleted-guests listing (remove the key)"
            )
        if entry.sync.apply.existing == "update_provided":
            raise ValueError(
                "sync.apply.existing: 'overwrite' or 'keep' for a zkipster source (a guest always "
                "comes whole, so there is nothing to merge)"
            )


#: The model the registry gives the catalog for this kind.
SETTINGS = ZkipsterSource
