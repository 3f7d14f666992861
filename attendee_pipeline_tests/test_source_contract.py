"""The contract every registered source kind passes, against its own sandbox, through the real
sync step (``dagster.materialize`` of the sync assets): a first sync, an unchanged re-sync that
writes nothing, a change, a removal, a fault that fails the extract without publishing anything,
and a replay of a stored extract.

What belongs here: one driver per source kind (how to serve ten attendees, change one, remove
one, break the source) and the tests, parametrised over the registry
(:func:`attendee_pipeline.integrations.kinds`): a kind that is registered without a driver fails
:func:`test_every_registered_source_kind_has_a_driver`. What a removal means is the source's:
a pulled whole list loses the attendee, a Procurios cancellation removes the attendee, a zkipster
guest deleted is listed as deleted by the next incremental pull and removed, a push source never
removes (seed 001: a record not pushed again stays).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from attendee_pipeline.integrations import kinds
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.pipeline_harness import Harness, harness, materialized
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry

EVENT = "contract"
RECORDS = 10
NEW_COMPANY = "Contract Changed BV"


class Driver:
    """How the contract drives one source kind (subclasses per kind)."""

    kind: str
    #: What happens to a removed record's attendee: "removed", or "kept" for a push source.
    removal: str = "removed"

    def __init__(self, h: Harness, stack: contextlib.ExitStack, monkeypatch: pytest.MonkeyPatch) -> None:
        self.h, self.stack, self.monkeypatch = h, stack, monkeypatch

    def start(self) -> None: ...  # serve RECORDS attendees and write the catalog
    def change(self) -> str: ...  # change the company of one attendee; its source record id
    def remove(self) -> str: ...  # remove one attendee at the source; its source record id
    def break_source(self) -> None: ...  # the next extracts fail
    def requests(self) -> int:  # requests the source's sandbox has served so far
        return 0


class AttendeeApiDriver(Driver):
    kind = "rest_api"

    def start(self) -> None:
        from attendee_pipeline_tests.sandbox_fixtures import SandboxConfig, serve_sandbox

        self.api = self.stack.enter_context(serve_sandbox({}))
        self.api.add_dataset(EVENT, SandboxConfig(records=RECORDS, seed=41, pagination="page", page_size=4))
        source = {"kind": "rest_api", "url": self.api.event_url(EVENT), "pagination": {"style": "page", "size": 4}}
        # a whole list: an attendee missing from it is removed (the final pass over the keys seen)
        self.h.write_catalog(
            event_entry(EVENT, self.api.event_url(EVENT), source=source, sync={"apply": {"missing": "remove"}})
        )

    def _id(self, i: int) -> str:
        return str(self.api.records(EVENT)[i]["id"])

    def change(self) -> str:
        self.api.dataset(EVENT).set_field([2], "company", NEW_COMPANY)
        return self._id(2)

    def remove(self) -> str:
        removed = self._id(3)
        self.api.dataset(EVENT).remove([3])
        return removed

    def break_source(self) -> None:
        self.api.dataset(EVENT).server_error(count=None, status=401)  # a 4xx: fails at once

    def requests(self) -> int:
        return self.api.request_count()


class FeedDriver(Driver):
    kind = "feed"
    removal = "kept"

    def start(self) -> None:
        from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
        from attendee_pipeline.platform_db.feed import create_key
        from attendee_pipeline.services.feed import serve_feed_in_thread

        ensure_schema(self.h.db_url)
        self.h.write_catalog(
            {"id": EVENT, "name": "Contract feed", "timezone": "UTC", "start": "2027-03-01T09:00",
             "end": "2027-03-02T18:00", "source": {"kind": "feed"}}
        )
        engine = make_engine(self.h.db_url)
        self.stack.callback(engine.dispose)
        _, self.key = create_key(engine, EVENT)
        self.feed = self.stack.enter_context(serve_feed_in_thread(self.h.db_url))
        self.pushed = 0
        for i in range(RECORDS):
            self._push({"profile": {"email": f"person{i}@example.org", "firstName": f"P{i}", "lastName": "Contract"}})

    def _push(self, body: dict[str, Any]) -> None:
        response = requests.post(
            f"{self.feed.url}/events/{EVENT}/attendees", json=body, headers={"Api-Key": self.key}, timeout=10
        )
        response.raise_for_status()
        self.pushed += 1

    def change(self) -> str:
        self._push({"profile": {"email": "person2@example.org", "company": NEW_COMPANY}})
        return "person2@example.org"

    def remove(self) -> str:
        # a push source has no removal: the record is simply not pushed again
        return "person3@example.org"

    def break_source(self) -> None:
        # the push source reads the platform's inbox; what can fail its extract is the raw-extract
        # store it writes to: a file where the event's extract folder goes
        shutil.rmtree(self.h.raw_root / EVENT, ignore_errors=True)
        self.h.raw_root.mkdir(parents=True, exist_ok=True)
        (self.h.raw_root / EVENT).write_text("not a folder", encoding="utf-8")

    def requests(self) -> int:
        return self.pushed


class ProcuriosDriver(Driver):
    kind = "procurios"

    def start(self) -> None:
        from attendee_pipeline.integrations.procurios.sandbox import MeetingConfig, ProcuriosSandbox, serve_procurios
        from attendee_pipeline_tests.sandbox_fixtures import PROCURIOS_CREDENTIALS, PROCURIOS_ID_ENV, PROCURIOS_SECRET_ENV

        for name, value in PROCURIOS_CREDENTIALS.items():
            self.monkeypatch.setenv(name, value)
        sandbox = ProcuriosSandbox(
            clients={PROCURIOS_CREDENTIALS[PROCURIOS_ID_ENV]: {"secret": PROCURIOS_CREDENTIALS[PROCURIOS_SECRET_ENV]}}
        )
        self.server = self.stack.enter_context(serve_procurios(sandbox))
        self.meeting = sandbox.add_meeting("2001", MeetingConfig(registrations=RECORDS, seed=43))
        # existing: overwrite, so a changed registration updates its attendee (the automatic
        # sync keeps details by default, seed 002)
        self.h.write_catalog(procurios_entry(EVENT, self.server.url, "2001", sync={"apply": {"existing": "overwrite"}}))

    def change(self) -> str:
        self.meeting.set_person([2], "company", NEW_COMPANY)
        return self.meeting.registration_id(2)

    def remove(self) -> str:
        self.meeting.cancel([3])
        return self.meeting.registration_id(3)

    def break_source(self) -> None:
        self.meeting.faults.add("unauthorized", endpoint="registrations", count=None)

    def requests(self) -> int:
        return self.server.sandbox.count()


class ZkipsterDriver(Driver):
    kind = "zkipster"

    def start(self) -> None:
        from attendee_pipeline.integrations.zkipster.sandbox import EventConfig, ZkipsterSandbox, serve_zkipster
        from attendee_pipeline_tests.test_zkipster import TOKEN, TOKEN_ENV, write_zkipster_catalog, zkipster_entry

        self.monkeypatch.setenv(TOKEN_ENV, TOKEN)
        self.server = self.stack.enter_context(serve_zkipster(ZkipsterSandbox(tokens={TOKEN: "*"})))
        self.event = self.server.sandbox.add_event("5001", EventConfig(guests=RECORDS, seed=47))
        # the first sync is a full pull; the next ones list what changed and what was deleted
        write_zkipster_catalog(self.h, self.server.url, zkipster_entry(EVENT, "5001", page_size=4))

    def change(self) -> str:
        return self.event.update(2, company=NEW_COMPANY)

    def remove(self) -> str:
        return self.event.delete(3)[0]

    def break_source(self) -> None:
        self.server.sandbox.faults.add("unauthorized", endpoint="guests", count=None)

    def requests(self) -> int:
        return self.server.sandbox.count()


DRIVERS: dict[str, type[Driver]] = {
    d.kind: d for d in (AttendeeApiDriver, FeedDriver, ProcuriosDriver, ZkipsterDriver)
}


def test_every_registered_source_kind_has_a_driver():
    assert sorted(DRIVERS) == sorted(kinds())


@pytest.fixture(params=kinds())
def source(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Driver]:
    with harness(tmp_path, sqlite_url) as h, contextlib.ExitStack() as stack:
        driver = DRIVERS[request.param](h, stack, monkeypatch)
        driver.start()
        yield driver


def _sync(driver: Driver, **kwargs: Any) -> dict[str, Any]:
    result = driver.h.sync(EVENT, **kwargs)
    failures = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    published = materialized(result, "published_attendees")
    assert published is not None
    return {"published": published, "extract": materialized(result, "attendee_raw_extract")}


def _active(h: Harness) -> dict[str, dict[str, Any]]:
    frame = h.attendees(EVENT)
    active = frame[frame["status"] == "active"]
    return {str(row["email"]): row for row in active.to_dict("records")}


def _ledger_rows(h: Harness) -> int:
    return h.query("select count(*) from sync_ledger where event_id = :e", e=EVENT)[0][0]


def test_a_first_sync_publishes_every_record(source: Driver):
    published = _sync(source)["published"]
    assert published["added"] == RECORDS
    assert len(_active(source.h)) == RECORDS


def test_an_unchanged_re_sync_writes_nothing(source: Driver):
    _sync(source)
    before = source.h.attendees(EVENT)
    again = _sync(source)["published"]
    assert again.get("rows_written", 0) == 0 and again.get("added", 0) == 0 and again.get("updated", 0) == 0
    after = source.h.attendees(EVENT)
    assert after.equals(before)


def test_a_change_updates_that_attendee_only(source: Driver):
    _sync(source)
    source.change()
    published = _sync(source)["published"]
    assert published["updated"] == 1 and published["added"] == 0 and published["removed"] == 0
    companies = [row["company"] for row in _active(source.h).values()]
    assert companies.count(NEW_COMPANY) == 1 and len(companies) == RECORDS


def test_a_removal_at_the_source(source: Driver):
    _sync(source)
    source.remove()
    published = _sync(source)["published"]
    if source.removal == "removed":
        assert published["removed"] == 1
        assert len(_active(source.h)) == RECORDS - 1
    else:  # a push source keeps what is not pushed again
        assert published.get("removed", 0) == 0
        assert len(_active(source.h)) == RECORDS


def test_a_fault_fails_the_extract_and_publishes_nothing(source: Driver):
    _sync(source)
    before, ledger = source.h.attendees(EVENT), _ledger_rows(source.h)
    source.change()  # there is something to publish, had the extract worked
    source.break_source()
    result = source.h.sync(EVENT)
    assert not result.success
    assert materialized(result, "published_attendees") is None
    assert materialized(result, "attendee_raw_extract") is None
    assert source.h.attendees(EVENT).equals(before) and _ledger_rows(source.h) == ledger


def test_a_replay_publishes_the_stored_extract_without_the_source(source: Driver):
    first = _sync(source)
    extract = first["extract"]["extract_path"]
    source.change()
    _sync(source)  # the change is published ...
    served = source.requests()
    replay = {"ops": {"event_sync": {"config": {"replay_extract": str(extract), "force": True}}}}
    replayed = _sync(source, run_config=replay)
    assert source.requests() == served  # ... the replay reads the stored extract, not the source
    assert replayed["extract"]["records"] == first["extract"]["records"]
    assert len(_active(source.h)) == RECORDS
