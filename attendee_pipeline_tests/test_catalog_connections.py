"""The catalog's ``connections:`` list: events refer to a connection by id and get its settings,
an event may still write its source inline, and a broken or unknown connection breaks only the
events that name it -- every problem names the connection or the event and the key."""

from __future__ import annotations

from pathlib import Path

from attendee_pipeline.catalog.connections import connection_id_of
from attendee_pipeline.catalog.loader import clear_caches, load_catalog
from attendee_pipeline_tests.catalog_factory import event_entry, write_catalog
from attendee_pipeline_tests.sandbox_fixtures import procurios_entry

PROCURIOS = {"id": "acme-procurios", "kind": "procurios", "base_url": "https://vereniging.example.nl/",
             "client_id_env": "ACME_ID", "client_secret_env": "ACME_SECRET",
             "rate_limit": {"requests": 5, "per_seconds": 1}, "max_concurrent_runs": 2}
API = {"id": "acme-api", "kind": "rest_api", "base_url": "https://api.acme.example/v2",
       "auth": {"type": "header", "headers": {"X-Api-Key": "ACME_API_KEY"}}}


def _write(tmp_path: Path, connections: list, *events: dict) -> Path:
    path = write_catalog(tmp_path / "catalog.yaml", *events)
    import yaml

    data = yaml.safe_load(path.read_text())
    data["connections"] = connections
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    clear_caches()
    return path


def _procurios_event(event_id: str, meeting: str) -> dict:
    entry = procurios_entry(event_id, "https://unused.example", meeting)
    return {**entry, "source": {"connection": "acme-procurios", "meeting_id": meeting}}


def test_events_share_a_connection_and_inline_sources_still_work(tmp_path: Path):
    path = _write(
        tmp_path, [PROCURIOS, API],
        _procurios_event("congress", "1001"), _procurios_event("summer-school", "1002"),
        {**event_entry("summit"), "source": {"connection": "acme-api", "url": "/events/42/attendees"}},
        event_entry("inline"),
    )
    catalog = load_catalog(path)
    assert catalog.problems == []
    events = catalog.by_id()
    congress = events["congress"].source
    assert (congress.base_url, congress.client_id_env, congress.meeting_id) == ("https://vereniging.example.nl", "ACME_ID", "1001")
    assert congress.rate_limit.interval == 0.2
    summit = events["summit"].source
    assert summit.url == "https://api.acme.example/v2/events/42/attendees"
    assert summit.auth.headers == {"X-Api-Key": "ACME_API_KEY"}
    assert [connection_id_of(events[e]) for e in ("congress", "summer-school", "summit", "inline")] == [
        "acme-procurios", "acme-procurios", "acme-api", "event:inline"]
    assert catalog.connection("acme-procurios").max_concurrent_runs == 2
    assert catalog.connection("acme-api").max_concurrent_runs is None  # the instance's default


def test_a_broken_connection_skips_only_its_events_and_names_connection_and_key(tmp_path: Path):
    broken = {**PROCURIOS, "client_secret_env": "not a name", "timeout": 3}
    path = _write(
        tmp_path, [broken, API, {"id": "acme-api", "kind": "feed"}],
        _procurios_event("congress", "1001"),
        {**event_entry("summit"), "source": {"connection": "acme-api", "url": "https://elsewhere.example/x"}},
        {**event_entry("typo"), "source": {"connection": "acme-apj", "url": "/x"}},
        {**event_entry("twice"), "source": {"connection": "acme-api", "url": "/x", "auth": {"type": "none"}}},
        event_entry("fine"),
    )
    catalog = load_catalog(path)
    assert [e.id for e in catalog.events] == ["fine"]
    problems = "\n".join(catalog.problems)
    assert "connection 'acme-procurios': client_secret_env: not an environment variable name" in problems
    assert "connection 'acme-procurios': timeout: Extra inputs are not permitted" in problems
    assert "connection 'acme-api': id: duplicate connection id" in problems
    assert "event 'congress': source.connection: connection 'acme-procurios' is broken" in problems
    assert "event 'summit': source.url: https://elsewhere.example/x is not on the connection's host" in problems
    assert "event 'typo': source.connection: no connection 'acme-apj' in the catalog's connections (known: acme-api)" in problems
    assert "event 'twice': source.auth: given by connection 'acme-api'; remove it here" in problems


def test_a_changed_connection_reaches_its_events(tmp_path: Path):
    path = _write(tmp_path, [PROCURIOS], _procurios_event("congress", "1001"))
    assert load_catalog(path).get("congress").source.base_url == "https://vereniging.example.nl"
    _write(tmp_path, [{**PROCURIOS, "base_url": "https://other.example.nl"}], _procurios_event("congress", "1001"))
    assert load_catalog(path).get("congress").source.base_url == "https://other.example.nl"


def test_two_events_of_one_connection_may_not_share_a_meeting(tmp_path: Path):
    path = _write(tmp_path, [PROCURIOS], _procurios_event("congress", "1001"), _procurios_event("again", "1001"))
    catalog = load_catalog(path)
    assert [e.id for e in catalog.events] == ["congress"]
    assert any("event 'again': source.meeting_id: Procurios meeting 1001" in p for p in catalog.problems)
