"""End to end through Dagster: the real sync assets and checks materialised with
``dagster.materialize`` against the sandbox attendee API over HTTP (seed 000)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline.settings import ALLOW_MASS_REMOVAL_TAG
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.pipeline_harness import Harness, check_evaluation, harness, materialized


@pytest.fixture
def api() -> Iterator:
    with serve_sandbox({}) as handle:
        yield handle


@pytest.fixture
def h(tmp_path: Path, sqlite_url: str) -> Iterator[Harness]:
    with harness(tmp_path, sqlite_url) as value:
        yield value


def _event(api, h: Harness, slug: str, config: SandboxConfig, **overrides) -> str:
    api.add_dataset(slug, config)
    if config.pagination != "none" and "source" not in overrides:
        overrides["source"] = {
            "kind": "rest_api",
            "url": api.event_url(slug),
            "pagination": {"style": config.pagination, "size": config.page_size},
            "record_path": config.record_path,
        }
    entry = event_entry(slug, api.event_url(slug), **overrides)
    existing = getattr(h, "_entries", {})
    existing[slug] = entry
    h._entries = existing  # type: ignore[attr-defined]
    h.write_catalog(*existing.values())
    return slug


def _published(result) -> dict:
    meta = materialized(result, "published_attendees")
    assert meta is not None, "published_attendees was not materialised"
    return meta


def test_flagged_attendees_are_removed_and_restored_not_duplicated(api, h):
    ev = _event(api, h, "flags", SandboxConfig(records=40, seed=1, pagination="page", page_size=15))
    first = h.sync(ev)
    assert first.success
    assert _published(first)["added"] == 40

    api["flags"].mark_deleted([3, 4, 5])
    second = h.sync(ev)
    meta = _published(second)
    assert (meta["removed"], meta["unchanged"], meta["added"]) == (3, 37, 0)
    rows = h.attendees(ev)
    assert len(rows) == 40 and (rows["status"] == "removed").sum() == 3
    assert rows.loc[rows["status"] == "removed", "removed_at"].notna().all()
    # the removed attendees lose their memberships
    removed_ids = rows.loc[rows["status"] == "removed", "id"].tolist()
    memberships = h.query("select count(*) from memberships where event_id = :e", e=ev)[0][0]
    assert memberships > 0
    assert not h.query(
        f"select 1 from memberships where attendee_id in ({','.join(map(str, removed_ids))})"
    )

    api["flags"].undelete([3, 4, 5])
    third = _published(h.sync(ev))
    assert third["restored"] == 3 and third["added"] == 0
    after = h.attendees(ev)
    assert len(after) == 40 and (after["status"] == "active").all()
    assert sorted(after["id"]) == sorted(rows["id"])  # same rows, not duplicates


def test_groups_are_shared_between_two_events(api, h):
    pool = ("Speakers", "Sponsors", "Press", "VIP")
    a = _event(api, h, "event-a", SandboxConfig(records=30, seed=2, groups=pool))
    b = _event(api, h, "event-b", SandboxConfig(records=30, seed=3, groups=pool))
    assert h.sync(a).success and h.sync(b).success
    groups = h.query("select name from groups order by name")
    names = [g[0] for g in groups]
    assert len(names) == len(set(names)) and set(names) <= set(pool) and len(names) >= 3
    per_event = dict(h.query(
        "select m.event_id, count(distinct m.group_id) from memberships m group by m.event_id"
    ))
    assert per_event[a] >= 2 and per_event[b] >= 2
    shared = h.query(
        "select count(*) from (select group_id from memberships group by group_id "
        "having count(distinct event_id) = 2) s"
    )[0][0]
    assert shared >= 1
    # memberships match what the provider sent
    rows = h.attendees(a)
    sample = rows.iloc[0]
    expected = sorted(json.loads(sample["groups"]))
    got = sorted(r[0] for r in h.query(
        "select g.name from memberships m join groups g on g.id = m.group_id where m.attendee_id = :i",
        i=int(sample["id"]),
    ))
    assert got == expected


FORCE = {"ops": {"event_sync": {"config": {"force": True}}}}


def test_rerun_is_idempotent(api, h):
    ev = _event(api, h, "idem", SandboxConfig(records=60, seed=4, badge_fraction=0.5))
    assert _published(h.sync(ev))["added"] == 60
    before = h.attendees(ev)
    time.sleep(0.01)

    # Same extract, same catalog entry: the run stops after the extract and says so.
    again = h.sync(ev)
    assert again.success
    extract = materialized(again, "attendee_raw_extract")
    assert extract["unchanged"] is True and extract["unchanged_attendees"] == 60
    assert materialized(again, "published_attendees")["rows_written"] == 0  # nothing mapped or written

    # Forced, every step runs and the apply engine itself writes nothing.
    meta = _published(h.sync(ev, run_config=FORCE))
    assert (meta["added"], meta["updated"], meta["removed"], meta["unchanged"]) == (0, 0, 0, 60)
    assert meta["rows_written"] == 0
    after = h.attendees(ev)
    assert before.equals(after)
    ledger = h.query("select added, updated, removed, unchanged, status from sync_ledger where event_id = :e order by id", e=ev)
    assert [tuple(r) for r in ledger] == [
        (60, 0, 0, 0, "published"),
        (0, 0, 0, 60, "unchanged"),
        (0, 0, 0, 60, "published"),
    ]


def test_catalog_change_reruns_the_mapping_on_an_unchanged_extract(api, h):
    ev = _event(api, h, "remap", SandboxConfig(records=12, seed=14))
    h.sync(ev)
    assert materialized(h.sync(ev), "attendee_raw_extract")["unchanged"] is True
    # The same provider data with a different catalog entry is a different input.
    entry = h._entries[ev]  # type: ignore[attr-defined]
    entry["mapping"]["company"] = entry["mapping"]["job_title"]
    h.write_catalog(*h._entries.values())  # type: ignore[attr-defined]
    meta = _published(h.sync(ev))
    assert meta["updated"] > 0 and meta["added"] == 0
    rows = h.attendees(ev)
    assert rows["company"].fillna("").tolist() == rows["job_title"].fillna("").tolist()
    # ... but when it is synced is not: a new schedule cannot change what a sync publishes
    entry["sync"] = {**entry.get("sync", {}), "auto": {"interval": "daily", "daily_at": "07:30"}}
    h.write_catalog(*h._entries.values())  # type: ignore[attr-defined]
    assert materialized(h.sync(ev), "attendee_raw_extract")["unchanged"] is True


def test_corrected_record_path_does_not_reuse_the_old_page_counts(api, h):
    # Every record's groups list is empty, so a record_path pointing into the first record's
    # groups finds an empty list on page 1: the first sync reads 1 page, 0 records.
    config = SandboxConfig(
        records=25, seed=15, pagination="page", page_size=10, record_path="data.users", max_groups=0
    )
    source = {"kind": "rest_api", "url": api.event_url("repath"), "pagination": {"style": "page", "size": 10}}
    ev = _event(api, h, "repath", config, source={**source, "record_path": "data.users.0.groups"})
    first = materialized(h.sync(ev), "attendee_raw_extract")
    assert (first["pages"], first["records"]) == (1, 0)
    # The path is corrected; page 1 comes back byte for byte, but holds 10 records now, not 0.
    h._entries[ev]["source"]["record_path"] = "data.users"  # type: ignore[attr-defined]
    h.write_catalog(*h._entries.values())  # type: ignore[attr-defined]
    result = h.sync(ev)
    assert result.success
    extract = materialized(result, "attendee_raw_extract")
    assert (extract["pages"], extract["records"]) == (3, 25)  # 10 + 10 + 5
    assert _published(result)["added"] == 25
    # With the same settings again the pages of that sync are known: none is parsed.
    again = materialized(h.sync(ev), "attendee_raw_extract")
    assert again["unchanged"] is True and again["pages_mapped_while_fetching"] == 0


def test_changed_attendee_is_updated_in_place(api, h):
    ev = _event(api, h, "upd", SandboxConfig(records=20, seed=5))
    h.sync(ev)
    api["upd"].set_field([7], "company", "New Company BV")
    meta = _published(h.sync(ev))
    assert (meta["updated"], meta["unchanged"]) == (1, 19)
    rows = h.attendees(ev)
    assert (rows["company"] == "New Company BV").sum() == 1


def test_bad_rows_are_quarantined_and_good_rows_publish(api, h):
    ev = _event(
        api, h, "bad",
        SandboxConfig(records=25, seed=6, bad_records={2: "invalid_email", 9: "missing_last_name"}),
    )
    result = h.sync(ev)
    assert result.success
    meta = _published(result)
    assert meta["added"] == 23 and meta["rejected"] == 2
    rejects = h.query("select source_row, source_record_id, field, reason, raw_record from rejected_records where event_id = :e order by source_row", e=ev)
    assert [(r[0], r[2]) for r in rejects] == [(2, "email"), (9, "last_name")]
    assert all(r[1] and r[4] for r in rejects)  # the record id and the raw record are kept
    # 2 of 25 is above the default limit of 5 %: a warning (the valid records are published)
    warn = check_evaluation(result, "rejects_within_limit")
    assert warn is not None and not warn.passed and warn.severity.value == "WARN"
    assert "2 of 25 record(s) quarantined (8.0%, above the limit of 5%)" in warn.description
    schema = check_evaluation(result, "mapped_attendees_schema")
    assert schema.passed
    # the raw extract is kept on disk, replayable
    extract = Path(materialized(result, "attendee_raw_extract")["extract_path"])
    assert (extract / "manifest.json").exists() and list(extract.glob("page-*.json"))


def test_a_quarantined_record_never_removes_its_published_attendee(api, h):
    # under missing: remove, an attendee whose record turned bad was taken for a missing one
    # and removed (memberships deleted, a cancellation queued when enabled): it is kept as
    # published, and the rejection says why its record was not applied
    ev = _event(api, h, "keep", SandboxConfig(records=20, seed=15), sync={"apply": {"missing": "remove"}})
    assert _published(h.sync(ev))["added"] == 20
    api["keep"].set_field([7], "badge", "https://cdn.example.com/badges/7.gif")
    api["keep"].set_field([11], "first_name", ["not", "text"])  # a mapping reject: wrong shape
    result = h.sync(ev)
    meta = _published(result)
    assert (meta["removed"], meta["rejected"], meta["unchanged"]) == (0, 2, 18)
    assert materialized(result, "attendee_changes")["rejected_kept"] == 2
    rows = h.attendees(ev)
    assert (rows["status"] == "active").sum() == 20
    # the provider drops the record altogether: now it is missing, and removed
    api["keep"].remove([7])
    assert _published(h.sync(ev))["removed"] == 1


def test_an_old_flagged_registration_listed_first_does_not_remove_the_attendee(api, h):
    ev = _event(api, h, "oldreg", SandboxConfig(records=5, seed=3))
    assert _published(h.sync(ev))["added"] == 5
    records = api.records(ev)
    # the provider now also lists person 1's old, cancelled registration, before the current one
    old = {**records[1], "id": "old-1", "email": records[1]["email"].upper(), "deleted": True}
    api[ev].replace_records([records[0], old, *records[1:]])
    result = h.sync(ev)
    meta = _published(result)
    assert (meta["removed"], meta["unchanged"], meta["rejected"]) == (0, 5, 1)
    rows = h.attendees(ev)
    assert (rows["status"] == "active").all() and len(rows) == 5
    rejects = h.query(
        "select source_row, source_record_id, field, reason from rejected_records where event_id = :e", e=ev
    )
    assert [tuple(r[:3]) for r in rejects] == [(1, "old-1", "email")]
    assert f"the record kept is source row 2, id {records[1]['id']}" in rejects[0][3]
    assert check_evaluation(result, "mapped_attendees_schema").passed


def test_each_reject_keeps_its_own_raw_record_across_pages(api, h):
    ev = _event(
        api, h, "badpages",
        SandboxConfig(records=35, seed=14, pagination="page", page_size=10,
                      bad_records={3: "invalid_email", 9: "missing_last_name", 20: "invalid_email", 31: "invalid_email"}),
    )
    assert h.sync(ev).success
    rejects = h.query("select source_row, source_record_id, raw_record from rejected_records where event_id = :e order by source_row", e=ev)
    assert [r[0] for r in rejects] == [3, 9, 20, 31]  # first and last rows of pages too
    assert [str(json.loads(r[2])["id"]) for r in rejects] == [r[1] for r in rejects]


def test_rate_limit_with_retry_after_is_honoured(api, h):
    ev = _event(api, h, "busy", SandboxConfig(records=30, seed=7, pagination="page", page_size=10))
    api["busy"].rate_limit(count=1, retry_after=1)
    started = time.monotonic()
    result = h.sync(ev)
    elapsed = time.monotonic() - started
    assert result.success and _published(result)["added"] == 30
    statuses = [r.status for r in api.log.list("busy")]
    assert statuses[0] == 429 and statuses.count(200) >= 3
    assert elapsed >= 1.0  # waited the Retry-After second (backoff alone is 0.05 s)
    assert materialized(result, "attendee_raw_extract")["retries"] >= 1


def test_mass_removal_is_held_then_released_by_the_override(api, h):
    ev = _event(
        api, h, "mass", SandboxConfig(records=100, seed=8),
        sync={"apply": {"missing": "remove"}},
    )
    assert _published(h.sync(ev))["added"] == 100

    api["mass"].empty()  # the provider suddenly returns an empty list
    held = h.sync(ev)
    assert materialized(held, "published_attendees") is None and not held.success
    guard = check_evaluation(held, "mass_removal_guard")
    assert guard is not None and not guard.passed
    assert "100 of 100" in guard.description and ALLOW_MASS_REMOVAL_TAG in guard.description
    assert (h.attendees(ev)["status"] == "active").sum() == 100  # nothing removed
    ledger = h.query("select status, message from sync_ledger where event_id = :e order by id", e=ev)
    assert ledger[-1][0] == "held" and "100 of 100" in ledger[-1][1]

    released = h.sync(ev, tags={ALLOW_MASS_REMOVAL_TAG: "true"})
    assert _published(released)["removed"] == 100
    assert (h.attendees(ev)["status"] == "removed").all()


#: Every asset the one sync step materialises, for every event and every successful run.
SYNC_ASSETS = (
    "attendee_raw_extract", "mapped_attendees", "rejected_attendees", "attendee_group_memberships",
    "attendee_changes", "published_attendees", "published_groups",
    "procurios_sessions", "personal_programmes", "event_tags",
)


def test_a_subset_of_the_sync_is_refused_before_it_starts(api, h):
    """Materialising one asset of the chain alone would publish a stale frame without calling
    the provider: Dagster refuses it, naming what to select instead, and nothing runs."""
    ev = _event(api, h, "subset", SandboxConfig(records=30, seed=13))
    for selection in (["published_attendees"], ["attendee_changes"], ["mapped_attendees", "rejected_attendees"]):
        with pytest.raises(dg.DagsterInvalidDefinitionError) as refused:
            h.sync(ev, selection=selection)
        reason = str(refused.value.__cause__)  # materialize() wraps the subset error
        assert "does not support subsetting" in reason
        assert "published_groups" in reason and "personal_programmes" in reason
    assert h.instance.get_runs() == []  # no run was even created
    assert api.requests("subset") == []  # the provider was never called


def test_every_run_materialises_every_asset_of_the_event(api, h):
    """Also an unchanged input and a non-Procurios event's Procurios assets: nothing is left
    "missing" in the UI, and an asset backfill counts every asset as done."""
    ev = _event(api, h, "whole", SandboxConfig(records=30, seed=13, bad_records={4: "invalid_email"}))
    first, again = h.sync(ev), h.sync(ev)
    for result, unchanged in ((first, False), (again, True)):
        assert result.success
        for asset in SYNC_ASSETS:
            assert materialized(result, asset) is not None, asset
        assert materialized(result, "attendee_raw_extract")["unchanged"] is unchanged
        assert materialized(result, "personal_programmes")["synced"] is False
        assert "rest_api event" in materialized(result, "procurios_sessions")["reason"]
        # one bad record of 30 is within the event's limit (5 %): counted, not a warning
        rejected = check_evaluation(result, "rejects_within_limit")
        assert rejected.severity == dg.AssetCheckSeverity.WARN
        assert (rejected.metadata["rejected_records"].value, rejected.metadata["records"].value) == (1, 30)
        for name in ("rejects_within_limit", "mapped_attendees_schema", "mass_removal_guard", "procurios_catalog_settings"):
            assert check_evaluation(result, name).passed, name
    assert materialized(again, "published_attendees")["rows_written"] == 0
    assert materialized(again, "attendee_changes")["unchanged_since_run"] == first.run_id


def test_small_removals_are_not_held(api, h):
    ev = _event(api, h, "few", SandboxConfig(records=100, seed=9))
    h.sync(ev)
    api["few"].mark_deleted(range(20))  # 20 % but fewer than 25 attendees
    meta = _published(h.sync(ev))
    assert meta["removed"] == 20


def test_failed_extract_publishes_nothing(api, h):
    ev = _event(api, h, "broken", SandboxConfig(records=30, seed=10, pagination="page", page_size=10))
    h.sync(ev)
    api["broken"].drop_page(2)
    result = h.sync(ev)
    assert not result.success
    assert materialized(result, "published_attendees") is None
    assert (h.attendees(ev)["status"] == "active").sum() == 30


def test_a_fault_in_the_source_settings_fails_at_once_without_step_retries(api, h):
    # a provider serving at most 10 records per page while the catalog asks for 25: retrying
    # the step (15 s, then 30 s) cannot help; the run fails at once and says what to set
    ev = _event(api, h, "capped", SandboxConfig(records=30, seed=16, pagination="page", page_size=25, max_page_size=10))
    result = h.sync(ev)
    assert not result.success
    failures = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1 and "set pagination.size to 10" in failures[0]
    assert api.request_count(ev) == 2  # page 1, and page 2 that shows the cap: no retry of the step


def _keep(n: int) -> dict:
    return {"ops": {"event_sync": {"config": {"keep_extracts": n}}}}


def test_pruning_keeps_the_extract_of_the_run_and_of_the_last_publish(api, h):
    ev = _event(api, h, "prune", SandboxConfig(records=30, seed=17, pagination="page", page_size=10))
    published = materialized(h.sync(ev, run_config=_keep(1)), "attendee_raw_extract")["extract_path"]
    # Unchanged re-syncs keeping one extract: the published one stays, so its pages stay known
    # and are not parsed again (the 2nd unchanged sync parsed all 3 pages: the 1st pruned them).
    for _ in range(2):
        again = materialized(h.sync(ev, run_config=_keep(1)), "attendee_raw_extract")
        assert again["unchanged"] is True and again["pages_mapped_while_fetching"] == 0
        assert Path(published, "manifest.json").is_file() and Path(again["extract_path"]).is_dir()
    # keep_extracts 0 keeps only what the run itself and the last publish read (it deleted
    # the run's own extract and the run failed mapping it)
    api["prune"].mark_deleted([1])
    result = h.sync(ev, run_config=_keep(0))
    assert result.success and _published(result)["removed"] == 1
    latest = materialized(result, "attendee_raw_extract")["extract_path"]
    assert sorted((h.raw_root / ev).iterdir()) == sorted([Path(published), Path(latest)])
    # a negative count is refused with the key named, before anything is fetched (it acted like 0)
    requests_before = api.request_count(ev)
    refused = h.sync(ev, run_config=_keep(-1))
    assert not refused.success and api.request_count(ev) == requests_before
    failures = [e.event_specific_data.error.message for e in refused.all_events if e.is_step_failure]
    assert "keep_extracts" in failures[0] and "greater than or equal to 0" in failures[0], failures


def test_replay_of_a_stored_extract_needs_no_network(api, h):
    ev = _event(api, h, "replay", SandboxConfig(records=15, seed=12))
    first = h.sync(ev)
    extract = materialized(first, "attendee_raw_extract")["extract_path"]
    api.remove_dataset("replay")
    replay = {"ops": {"event_sync": {"config": {"replay_extract": extract}}}}
    result = h.sync(ev, run_config=replay)
    assert result.success and materialized(result, "attendee_raw_extract")["unchanged"] is True
    replay["ops"]["event_sync"]["config"]["force"] = True
    result = h.sync(ev, run_config=replay)
    assert result.success and _published(result)["unchanged"] == 15


def test_each_event_keeps_its_own_check_results(api, h):
    # the checks are per event partition: another event's passing guard does not hide that
    # this event's publish is held
    from dagster import AssetCheckKey, AssetKey
    from dagster._core.event_api import PartitionKeyFilter

    held_ev = _event(api, h, "held-ev", SandboxConfig(records=100, seed=8), sync={"apply": {"missing": "remove"}})
    fine_ev = _event(api, h, "fine-ev", SandboxConfig(records=10, seed=9))
    assert h.sync(held_ev).success
    api["held-ev"].empty()
    held = h.sync(held_ev)
    assert check_evaluation(held, "mass_removal_guard").partition == held_ev
    assert h.sync(fine_ev).success

    guard = AssetCheckKey(AssetKey("attendee_changes"), "mass_removal_guard")
    storage = h.instance.event_log_storage
    latest = storage.get_latest_asset_check_execution_by_key([guard], partition_filter=PartitionKeyFilter(key=held_ev))
    assert latest[guard].run_id == held.run_id and latest[guard].status.value == "FAILED"
    for name in ("mapped_attendees_schema", "rejects_within_limit"):
        assert check_evaluation(held, name).partition == held_ev


def test_a_run_that_would_fail_again_is_not_retried(api, tmp_path: Path, sqlite_url: str):
    # run_retries (on in both instance configurations) re-executes a failed run; a held publish
    # or a fault in the source's settings would only fail (and, held, log another held row) again
    import dagster as dg

    retries = {"run_retries": {"enabled": True, "max_retries": 2}}
    with dg.instance_for_test(overrides=retries) as instance, harness(tmp_path, sqlite_url, instance=instance) as h:
        ev = _event(api, h, "mass", SandboxConfig(records=100, seed=8), sync={"apply": {"missing": "remove"}})
        assert h.sync(ev).success
        api["mass"].empty()
        held = h.sync(ev)
        assert check_evaluation(held, "mass_removal_guard").passed is False
        capped = _event(api, h, "capped", SandboxConfig(records=30, seed=16, pagination="page", page_size=25,
                                                          max_page_size=10))
        broken = h.sync(capped)
        assert not broken.success
        for result in (held, broken):
            tags = instance.get_run_by_id(result.run_id).tags
            assert tags.get("dagster/will_retry") == "false", tags
