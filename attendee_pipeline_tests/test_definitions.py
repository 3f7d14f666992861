"""The code location loads and validates, and has the shape the README describes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from attendee_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)


def test_assets_checks_schedules_sensors():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "attendee_raw_extract",
        "mapped_attendees",
        "rejected_attendees",
        "attendee_group_memberships",
        "attendee_changes",
        "published_attendees",
        "published_groups",
        "email_outbox",
        # Procurios (seed 002): after the publish, and the check-in write-back
        "procurios_sessions",
        "personal_programmes",
        "event_tags",
        "procurios_checkin_writeback",
        # the catalog file, observed by the catalog sensor (external)
        "event_catalog",
        # the audiences (seed 003): after the publish, in runs of their own
        "audience_contacts",
    }
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {
        "mapped_attendees_schema",
        "rejects_within_limit",
        "mass_removal_guard",
        "emails_flowing",
        "no_failed_emails",
        "procurios_catalog_settings",
        "checkin_writeback_failures",
        "catalog_entries_valid",
    }
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        if key.to_user_string() in ("email_outbox", "event_catalog"):  # one for every event
            assert partitions is None
        elif key.to_user_string() == "procurios_checkin_writeback":  # only a Procurios event has it
            assert partitions.name == "procurios_events"
        else:
            assert partitions.name == "events"
    assert {s.name for s in defs.schedules} == {
        "hourly_attendee_sync",
        "daily_attendee_sync",
        "procurios_window_sync",
        "procurios_nightly_sync",
    }
    assert {s.name for s in defs.sensors} == {
        "event_catalog_sensor",
        "feed_inbox_sensor",
        "email_outbox_sensor",
        "procurios_checkin_sensor",
        "audience_sensor",
    }
    job = defs.resolve_job_def("attendee_sync_job")
    assert job.partitions_def.name == "events"
    assert "email_outbox" not in {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    delivery = defs.resolve_job_def("email_delivery_job")
    assert {k.to_user_string() for k in delivery.asset_layer.executable_asset_keys} == {"email_outbox"}
    # one job syncs every kind of event: the attendee chain and the source's programme, which is
    # one step that cannot be subset (see defs/attendees/assets.py); not the write-back
    synced = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert synced == keys - {"email_outbox", "procurios_checkin_writeback", "event_catalog", "audience_contacts"}
    (sync_step,) = {graph.get(k).assets_def for k in job.asset_layer.selected_asset_keys}
    assert not sync_step.can_subset
    # a backfill runs each event on its own, tagged dagster/partition like any other run of it
    assert sync_step.backfill_policy is None
    assert {k.to_user_string() for k in sync_step.keys} == synced
    assert {k.name for k in sync_step.check_keys} == checks - {
        "emails_flowing", "no_failed_emails", "checkin_writeback_failures", "catalog_entries_valid"
    }
    assert {j.name for j in defs.jobs if not j.name.startswith("__")} == {
        "attendee_sync_job", "email_delivery_job", "procurios_checkin_job", "audience_sync_job"
    }
    audience = defs.resolve_job_def("audience_sync_job")
    assert audience.partitions_def.name == "events"
    assert {k.to_user_string() for k in audience.asset_layer.selected_asset_keys} == {"audience_contacts"}
    assert graph.get(dg.AssetKey("audience_contacts")).parent_keys == {dg.AssetKey("published_attendees")}
    for schedule in defs.schedules:
        assert schedule.job_name == "attendee_sync_job"
    assert defs.resolve_job_def("procurios_checkin_job").partitions_def.name == "procurios_events"


def test_every_check_of_a_partitioned_asset_has_a_result_per_partition():
    # without partitions_def a check keeps one result for all events: one event's pass would
    # hide another's failure (e.g. a held publish shown green)
    graph = defs.resolve_asset_graph()
    for key in graph.asset_check_keys:
        asset_partitions = graph.get(key.asset_key).partitions_def
        assert graph.get(key).partitions_def == asset_partitions, key.to_user_string()


def test_workspace_pins_the_code_location_name():
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    (location,) = workspace["load_from"]
    assert location["python_module"] == {
        "module_name": "attendee_pipeline.definitions",
        "location_name": "attendee_pipeline",
    }


def test_secrets_are_not_in_the_catalog_or_definitions():
    text = (ROOT / "attendee_pipeline" / "catalog" / "demo_catalog.yaml").read_text()
    assert "DEMO_SUMMIT_API_KEY" in text and "demo-summit-key" not in text


def test_every_setting_is_documented_once_in_docs_settings():
    from attendee_pipeline.settings import SETTINGS

    table = (ROOT / "docs" / "settings.md").read_text()
    for name in SETTINGS:
        assert table.count(f"`{name}`") == 1, name
    assert "(docs/settings.md)" in (ROOT / "README.md").read_text()  # the README links it
