"""The event catalog: the demo catalog loads; errors name the event and the key; a broken entry
is skipped and reported while the others load; the parse and the validation are kept until the
file or a variable it uses changes. Every test runs with libyaml's C loader and with PyYAML's
pure-Python one."""

from __future__ import annotations

import copy
import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

from attendee_pipeline.catalog import CatalogError, UnknownEventError, load_catalog, loader, parse_catalog, yaml_file


@pytest.fixture(autouse=True, params=["c", "python"])
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The YAML loader of the test (the C one is skipped where PyYAML has no libyaml), with
    this process's catalog caches empty, as in a new process."""
    if request.param not in yaml_file.LOADERS:
        pytest.skip("PyYAML was built without libyaml")
    monkeypatch.setattr(yaml_file, "LOADER", yaml_file.LOADERS[request.param])
    monkeypatch.setattr(yaml_file, "_MEMORY", {})
    monkeypatch.setattr(loader, "_LOADED", {})
    monkeypatch.setattr(loader, "_CHECKED", {})
    return request.param

GOOD = {
    "id": "conf-2027",
    "name": "Conf 2027",
    "timezone": "Europe/Amsterdam",
    "start": "2027-05-01T09:00",
    "end": "2027-05-02T18:00",
    "source": {"kind": "rest_api", "url": "http://127.0.0.1:9/attendees"},
    "mapping": {"email": "mail", "first_name": "fn", "last_name": "ln"},
}


def _with(**changes):
    entry = {**GOOD, **changes}
    return {"events": [entry]}


def _problems(data) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(data, "test.yaml")
    return info.value.problems


def test_demo_catalog_loads():
    catalog = load_catalog()
    assert {e.id for e in catalog.events} == {
        "demo-summit", "demo-meetup", "demo-expo", "demo-congress", "demo-gala", "demo-partner-summit"}
    assert {catalog.get(e).source.connection for e in ("demo-gala", "demo-partner-summit")} == {"demo-zkipster"}
    assert catalog.get("demo-expo").source.kind == "feed"
    assert catalog.get("demo-congress").source.kind == "procurios"
    summit = catalog.get("demo-summit")
    assert summit.delete_flag is not None and summit.mapping.fields["groups"] == "groups"


def test_naive_times_are_in_the_event_timezone():
    event = parse_catalog(_with()).events[0]
    assert event.start_at.utcoffset().total_seconds() == 2 * 3600  # CEST in May
    assert event.auto_until == event.end_at



def test_a_date_only_final_sync_is_the_end_of_that_local_day_and_a_first_sync_its_start(tmp_path: Path):
    # the YAML date (2027-05-13 unquoted) and the quoted string mean the same
    dated = ENTRY_YAML.replace("    mapping:", "    timezone: Europe/Amsterdam\n    mapping:") + (
        "    sync: {auto: {interval: daily, start: 2027-05-11, until: 2027-05-13}}\n"
    )
    for text in (dated, dated.replace("2027-05-11", "'2027-05-11'").replace("2027-05-13}", "'2027-05-13'}")):
        event = _load_text(tmp_path, text).events[0]
        assert event.auto_until == dt.datetime(2027, 5, 13, 23, 59, 59, 999999, tzinfo=event.tz)
        assert event.auto_until + dt.timedelta(microseconds=1) == dt.datetime(2027, 5, 14, tzinfo=event.tz)
        assert event.auto_start == dt.datetime(2027, 5, 11, tzinfo=event.tz)
    # a date-time keeps its meaning, midnight included
    timed = dated.replace("start: 2027-05-11", "start: 2027-05-11T00:00").replace("until: 2027-05-13", "until: 2027-05-13T00:00")
    event = _load_text(tmp_path, timed).events[0]
    assert (event.auto_start, event.auto_until) == (dt.datetime(2027, 5, 11, tzinfo=event.tz), dt.datetime(2027, 5, 13, tzinfo=event.tz))
    # the same day as first and final sync is one whole day, not an error
    same = _load_text(tmp_path, dated.replace("2027-05-11", "2027-05-13")).events[0]
    assert same.auto_until - same.auto_start == dt.timedelta(days=1, microseconds=-1)


def test_the_daily_sync_time_defaults_to_09_00_local():
    auto = parse_catalog(_with(sync={"auto": {"interval": "daily"}})).events[0].sync.auto
    assert auto.daily_at == dt.time(9, 0)
    auto = parse_catalog(_with(sync={"auto": {"interval": "daily", "daily_at": "07:30"}})).events[0].sync.auto
    assert auto.daily_at == dt.time(7, 30)


@pytest.mark.parametrize("value", ["03:00+02:00", "03:00Z", "03:00-05:30"])
def test_a_daily_or_nightly_time_with_a_utc_offset_is_an_error_naming_event_and_key(value):
    (problem,) = _problems(_with(sync={"auto": {"interval": "daily", "daily_at": value}}))
    assert problem.startswith("event 'conf-2027': sync.auto.daily_at: ")
    assert "local time" in problem and "Europe/Amsterdam" in problem
    procurios = {"kind": "procurios", "base_url": "https://p.example", "client_id_env": "CID",
                 "client_secret_env": "CSEC", "meeting_id": "1", "window": {"nightly_at": value}}
    (problem,) = _problems(_with(source=procurios, mapping=None))
    assert problem.startswith("event 'conf-2027': source.window.nightly_at: ")
    assert "local time" in problem and "Europe/Amsterdam" in problem


def test_a_daily_time_given_as_a_number_is_an_error():
    # pydantic alone would read 900 as 00:15:00 UTC
    (problem,) = _problems(_with(sync={"auto": {"interval": "daily", "daily_at": 900}}))
    assert problem == 'event \'conf-2027\': sync.auto.daily_at: must be a local time of the event\'s timezone written as "HH:MM"'

def test_missing_required_mapping_names_event_and_key():
    problems = _problems(_with(mapping={"email": "mail", "first_name": "fn"}))
    assert problems == ["event 'conf-2027': mapping: required field(s) not mapped: last_name"]


def test_secret_value_instead_of_env_name_is_refused():
    source = {**GOOD["source"], "auth": {"type": "header", "headers": {"X-Key": "s3cr3t-value"}}}
    (problem,) = _problems(_with(source=source))
    assert problem.startswith("event 'conf-2027': source.auth.headers")
    assert "environment variable" in problem


def test_a_secret_never_appears_in_an_error(monkeypatch, tmp_path: Path):
    # a secret pasted where the NAME of its variable belongs, as such or through ${VAR}: the error
    # (printed by the CLI, logged by the catalog sensor) names the key, never the value
    monkeypatch.setenv("MY_SECRET", "hunter2-from-env")
    pasted = {**GOOD["source"], "auth": {"type": "query", "params": {"secret_key": "hunter2-pasted"}}}
    via_var = {**GOOD["source"], "auth": {"type": "basic", "username": "me", "password_env": "${MY_SECRET}"}}
    procurios = {"kind": "procurios", "base_url": "https://p.example", "client_id_env": "${MY_SECRET}",
                 "client_secret_env": "${MY_SECRET:-hunter2-default}", "meeting_id": 1}
    entries = [{**GOOD, "id": "pasted", "source": pasted}, {**GOOD, "id": "via-var", "source": via_var},
               {**GOOD, "id": "procurios", "source": procurios, "mapping": None}]
    file = tmp_path / "catalog.yaml"
    file.write_text(yaml.safe_dump({"events": entries}))
    catalog = load_catalog(file)
    assert catalog.events == [] and "hunter2" not in "\n".join(catalog.problems)
    assert [p.split(" (")[0] for p in catalog.problems] == [
        "event 'pasted': source.auth.params: secret_key: not an environment variable name",
        "event 'via-var': source.auth.password_env: not an environment variable name",
        "event 'procurios': source.client_id_env: not an environment variable name",
        "event 'procurios': source.client_secret_env: not an environment variable name",
    ]
    for event_id in ("pasted", "via-var", "procurios"):
        with pytest.raises(CatalogError) as info:
            catalog.get(event_id)
        assert "hunter2" not in str(info.value) and f"event '{event_id}'" in str(info.value)


def test_a_url_with_a_password_is_refused_without_quoting_it():
    rest = {**GOOD["source"], "url": "https://bob:hunter2@registration.example.com/api/attendees"}
    procurios = {"kind": "procurios", "base_url": "https://bob:hunter2@p.example", "client_id_env": "ID",
                 "client_secret_env": "SECRET", "meeting_id": 1}
    problems = _problems({"events": [{**GOOD, "id": "rest", "source": rest},
                                     {**GOOD, "id": "procurios", "source": procurios, "mapping": None}]})
    assert [p.split(" (")[0] for p in problems] == [
        "event 'rest': source.url: holds a password",
        "event 'procurios': source.base_url: holds a password",
    ]
    assert not any("hunter2" in p for p in problems)
    parse_catalog(_with(source={**GOOD["source"], "url": "https://bob@registration.example.com/a"}))  # a user alone


def test_env_names_are_never_expanded(monkeypatch):
    # *_env keys and everything under auth hold variable NAMES: ${VAR} there is not expanded
    monkeypatch.setenv("KEY_NAME", "REAL_KEY_NAME")
    source = {**GOOD["source"], "auth": {"type": "header", "headers": {"X-Key": "${KEY_NAME}"}}}
    (problem,) = _problems(_with(source=source))
    assert problem.startswith("event 'conf-2027': source.auth.headers: X-Key: not an environment variable name")


def test_a_trailing_newline_is_not_part_of_a_valid_name():
    # "acme\n" would be a second partition next to "acme"
    (problem,) = _problems({"events": [{**GOOD, "id": "conf-2027\n"}]})
    assert problem.startswith("event 'conf-2027\\n': id: must be 1-63 characters")
    source = {**GOOD["source"], "auth": {"type": "header", "headers": {"X-Key": "MY_KEY\n"}}}
    (problem,) = _problems(_with(source=source))
    assert problem.startswith("event 'conf-2027': source.auth.headers: X-Key: not an environment variable name")


def test_unknown_key_is_an_error():
    (problem,) = _problems(_with(sorce={"kind": "rest_api"}))
    assert problem.startswith("event 'conf-2027': sorce:")


def test_bad_timezone_and_dates():
    problems = _problems(_with(timezone="Mars/Olympus", end="2027-04-01T00:00"))
    assert any(p.startswith("event 'conf-2027': timezone: unknown timezone") for p in problems)


def test_end_before_start():
    (problem,) = _problems(_with(end="2027-04-01T00:00"))
    assert problem.startswith("event 'conf-2027'") and "ends before it starts" in problem


def test_dates_outside_the_years_2000_to_2999_are_refused():
    # a far-future end passed and then made every schedule fail (OverflowError adding weeks)
    (problem,) = _problems(_with(end="9999-12-31T23:59"))
    assert problem == "event 'conf-2027': end: must be a date-time in the years 2000 to 2999"
    (problem,) = _problems(_with(start="1999-12-31T23:59"))
    assert problem.startswith("event 'conf-2027': start: must be a date-time in the years 2000 to 2999")
    problems = _problems(_with(sync={"auto": {"interval": "daily", "start": "0001-01-01T00:00", "until": "3000-01-01T00:00"}}))
    assert [p.split(": must")[0] for p in problems] == ["event 'conf-2027': sync.auto.start", "event 'conf-2027': sync.auto.until"]
    assert parse_catalog(_with(end="2999-12-31T23:59")).events[0].end_at.year == 2999


def test_auto_sync_until_before_its_start():
    # it could never run; a naive time is in the event's timezone (CEST: 10:30 here is 08:30Z)
    auto = {"interval": "hourly", "start": "2027-05-01T10:30", "until": "2027-05-01T08:29Z"}
    (problem,) = _problems(_with(sync={"auto": auto}))
    assert problem.startswith("event 'conf-2027': sync.auto.until: the final automatic sync is before the first")
    for until in ("2027-05-01T08:30Z", "2027-05-01T09:00Z"):
        event = parse_catalog(_with(sync={"auto": {**auto, "until": until}})).events[0]
        assert event.auto_until >= event.auto_start


def test_unknown_platform_field():
    (problem,) = _problems(_with(mapping={**GOOD["mapping"], "shoe_size": "shoes"}))
    assert "mapping" in problem and "shoe_size" in problem


def test_duplicate_ids_and_unnamed_entries(tmp_path: Path):
    bad = {k: v for k, v in GOOD.items() if k != "id"}
    problems = _problems({"events": [GOOD, GOOD, bad]})
    assert problems[0] == "event 'conf-2027': id: duplicate event id"
    assert problems[1].startswith("event #3: id:")
    problems = _problems({"events": [GOOD, GOOD]})
    assert problems == ["event 'conf-2027': id: duplicate event id"]
    # the id belongs to its first entry, which keeps syncing; the second is skipped
    file = tmp_path / "catalog.yaml"
    file.write_text(yaml.safe_dump({"events": [GOOD, {**GOOD, "name": "A copy"}]}))
    catalog = load_catalog(file)
    assert [e.name for e in catalog.events] == ["Conf 2027"] and catalog.get("conf-2027").name == "Conf 2027"
    assert catalog.problems == ["event 'conf-2027': id: duplicate event id"]


def test_env_expansion_in_urls(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MY_BASE", "http://127.0.0.1:4444")
    data = _with(source={"kind": "rest_api", "url": "${MY_BASE}/a"})
    file = tmp_path / "catalog.yaml"
    file.write_text(yaml.safe_dump(data))
    assert load_catalog(file).events[0].source.url == "http://127.0.0.1:4444/a"
    monkeypatch.delenv("MY_BASE")
    with pytest.raises(CatalogError) as info:
        load_catalog(file).get("conf-2027")
    assert "event 'conf-2027'" in str(info.value) and "MY_BASE" in str(info.value)
    # named like every other problem: the event, then the key
    assert info.value.problems[0] == (
        "event 'conf-2027': source.url: environment variable MY_BASE is not set and has no default"
    )
    monkeypatch.setenv("MY_BASE", "http://127.0.0.1:5555")  # set again: noticed, like the change of the file
    assert load_catalog(file).get("conf-2027").source.url == "http://127.0.0.1:5555/a"
    data = _with(mapping={**GOOD["mapping"], "custom_fields": {"diet": "${NOPE_FIELD}"}}, name=["${NOPE_NAME}"])
    assert _problems(data)[:2] == [
        "event 'conf-2027': name[0]: environment variable NOPE_NAME is not set and has no default",
        "event 'conf-2027': mapping.custom_fields.diet: environment variable NOPE_FIELD is not set and has no default",
    ]


ENTRY_YAML = """\
events:
  - id: acme
    name: ACME
    start: 2027-05-10T09:00
    end: 2027-05-12T18:00
    source: {kind: rest_api, url: 'https://x.example/a'}
    mapping: {email: e, first_name: f, last_name: l}
"""


def _load_text(tmp_path: Path, text: str):
    file = tmp_path / "catalog.yaml"
    file.write_text(text)
    return load_catalog(file)


def _load_problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(CatalogError) as info:
        _load_text(tmp_path, text)
    return info.value.problems


def test_a_key_given_twice_is_an_error(tmp_path: Path):
    # YAML would keep the last one silently: a second events list hides the first
    second = "events:\n  - {id: other, name: O, start: 2027-01-01T00:00, end: 2027-01-02T00:00, source: {kind: feed}}\n"
    (problem,) = _load_problems(tmp_path, ENTRY_YAML + second)
    assert "duplicate key 'events'" in problem and "line 8" in problem and "line 1" in problem
    twice = "    sync: {apply: {missing: remove}}\n    sync: {auto: {interval: hourly}}\n"
    (problem,) = _load_problems(tmp_path, ENTRY_YAML + twice)
    assert "duplicate key 'sync'" in problem and "line 9" in problem
    # a key a merge (<<) brings in may be overridden: not a duplicate
    anchored = ENTRY_YAML.replace("source: {", "source: &src {")
    merged = anchored + "\n".join(anchored.splitlines()[1:]).replace("acme", "acme-2").replace(
        "&src {kind: rest_api, url: 'https://x.example/a'}", "{<<: *src, url: 'https://x.example/b'}")
    assert [e.source.url for e in _load_text(tmp_path, merged).events] == ["https://x.example/a", "https://x.example/b"]


def test_scalars_are_read_as_in_yaml_1_2(tmp_path: Path):
    # YAML 1.1 would read off as False, 22:00 as 1320 (seconds: 00:22), yes as True, 0012 as 10
    off = ENTRY_YAML + "    sync: {auto: {interval: off}}\n    delete_flag: {field: deleted, values: [yes, On, TRUE]}\n"
    event = _load_text(tmp_path, off).events[0]
    assert event.sync.auto.interval == "off"
    assert event.delete_flag.values == ["yes", "On", True]
    procurios = ENTRY_YAML.replace("rest_api, url: 'https://x.example/a'", (
        "procurios, base_url: 'https://p.example', client_id_env: CID, client_secret_env: CSEC, meeting_id: 0012, "
        "window: {nightly_at: 22:00, weeks_before_start: 2}")).replace("    mapping: {email: e, first_name: f, last_name: l}\n", "")
    source = _load_text(tmp_path, procurios).events[0].source
    assert (source.meeting_id, source.window.nightly_at, source.window.weeks_before_start) == ("0012", dt.time(22, 0), 2)
    # what stays: true/false, decimal integers and floats, null, timestamps
    limits = ENTRY_YAML + "    sync: {mass_removal: {max_share: 0.25, min_count: 10}, auto: {interval: daily, until: ~}}\n"
    event = _load_text(tmp_path, limits.replace("start: 2027-05-10T09:00", "start: 2027-05-10 09:00:00")).events[0]
    assert (event.sync.mass_removal.max_share, event.sync.mass_removal.min_count, event.sync.auto.until) == (0.25, 10, None)
    assert event.start == dt.datetime(2027, 5, 10, 9, 0)


def test_a_date_that_does_not_exist_is_a_problem_of_its_entry(tmp_path: Path):
    # YAML would make 2027-02-30 a date and fail the whole file (ValueError); it stays text
    catalog = _load_text(tmp_path, ENTRY_YAML.replace("end: 2027-05-12T18:00", "end: 2027-02-30"))
    assert catalog.events == []
    assert catalog.problems == ["event 'acme': end: Input should be a valid datetime or date, day value is outside expected range"]


def test_an_empty_file_is_an_error(tmp_path: Path):
    # a file truncated during a deploy must not read as "no events" (the sensor would delete them all)
    for text in ("", "\n", "# events: none yet\n", "---\n"):
        assert _load_problems(tmp_path, text) == ["the file is empty: write `events: []` for a catalog without events"]
    assert _load_text(tmp_path, "events: []\n").events == []


def test_missing_file_names_the_setting(tmp_path: Path):
    with pytest.raises(CatalogError, match="ATTENDEE_PIPELINE_CATALOG"):
        load_catalog(tmp_path / "nope.yaml")


def test_a_secret_in_plain_query_parameters_is_refused_unquoted(monkeypatch):
    # source.params are sent as they are and are not known as secrets (a ${VAR} in them is
    # expanded), so a key, token or password there could reach logs in a request URL
    monkeypatch.setenv("ACME_TOKEN", "tok-hunter2")
    for name, value in (("api_key", "hunter2-pasted"), ("access-token", "${ACME_TOKEN}"), ("Signature", "x")):
        source = {**GOOD["source"], "params": {"status": "confirmed", name: value}}
        (problem,) = _problems(_with(source=source))
        assert problem.startswith(f"event 'conf-2027': source.params: {name}: looks like a secret"), problem
        assert "auth: {type: query" in problem and "hunter2" not in problem
    # names that merely contain such a word are plain parameters
    source = {**GOOD["source"], "params": {"sort_key": "email", "page_token_style": "opaque", "status": "confirmed"}}
    assert parse_catalog(_with(source=source), "test.yaml").get("conf-2027").source.params["sort_key"] == "email"


def test_a_key_named_like_a_source_kind_or_style_is_still_named():
    # pydantic puts the chosen union member's tag ("page", "link", "query"...) into an error's
    # location after source / auth / pagination; a real key of the same name must stay in it
    source = {**GOOD["source"], "params": {"status": "confirmed", "page": 2}}
    (problem,) = _problems(_with(source=source))
    assert problem == "event 'conf-2027': source.params.page: Input should be a valid string"
    mapping = {**GOOD["mapping"], "custom_fields": {"link": ["a", "b"]}}
    (problem,) = _problems(_with(mapping=mapping))
    assert problem == "event 'conf-2027': mapping.custom_fields.link: Input should be a valid string"
    auth = {"type": "query", "params": {"query": 7}}
    (problem,) = _problems(_with(source={**GOOD["source"], "auth": auth}))
    assert problem == "event 'conf-2027': source.auth.params.query: Input should be a valid string"
    # the tags themselves are still left out
    pagination = {"style": "page", "size": "big"}
    (problem,) = _problems(_with(source={**GOOD["source"], "pagination": pagination}))
    assert problem.startswith("event 'conf-2027': source.pagination.size: ")


def test_a_secret_in_the_url_query_is_refused_unquoted(monkeypatch):
    # seed 000's auth parameters in the query string: a URL copied with them in it (or with the
    # secret brought in through ${VAR}) would sit in the catalog and reach logs and the manifest
    monkeypatch.setenv("ACME_SECRET", "hunter2-from-env")
    for url in ("https://reg.example/api/attendees?username=acme&secret_key=hunter2-pasted",
                "https://reg.example/api/attendees?secret_key=${ACME_SECRET}",
                "reg.example/api?api-key=hunter2-no-scheme"):
        (problem,) = _problems(_with(source={**GOOD["source"], "url": url}))
        assert problem.startswith("event 'conf-2027': source.url: ") and "looks like a secret" in problem, problem
        assert "hunter2" not in problem
    # other parameters in the URL are fine
    url = "https://reg.example/api/attendees?status=confirmed&sort_key=email"
    assert parse_catalog(_with(source={**GOOD["source"], "url": url})).events[0].source.url == url


# --------------------------------------------------------------------------- broken entries


def _entry(event_id: str, **changes) -> dict:
    return copy.deepcopy({**GOOD, "id": event_id, "name": f"Event {event_id}", **changes})  # no YAML aliases


def _write(path: Path, *entries: dict) -> Path:
    path.write_text(yaml.safe_dump({"events": list(entries)}, sort_keys=False), encoding="utf-8")
    return path


def test_a_broken_entry_is_skipped_and_reported_while_the_others_load(tmp_path: Path):
    file = _write(tmp_path / "catalog.yaml", _entry("alpha"), _entry("beta", timezone="Mars/Olympus"), _entry("gamma"))
    catalog = load_catalog(file)
    assert [e.id for e in catalog.events] == ["alpha", "gamma"]
    assert catalog.get("gamma").name == "Event gamma"
    problem = "event 'beta': timezone: unknown timezone 'Mars/Olympus' (use an IANA name like Europe/Amsterdam)"
    assert catalog.problems == [problem]
    assert [(b.label, b.event_id, b.problems) for b in catalog.broken] == [("event 'beta'", "beta", (problem,))]
    assert catalog.entry_ids == {"alpha", "beta", "gamma"}  # the broken entry still names its event
    with pytest.raises(CatalogError) as info:  # syncing it is an error naming its problems
        catalog.get("beta")
    assert info.value.problems == [problem] and str(file) in str(info.value)
    with pytest.raises(UnknownEventError):
        catalog.get("delta")
    with pytest.raises(CatalogError) as info:  # catalog validate: every problem
        catalog.require_valid()
    assert info.value.problems == [problem]


def test_a_meeting_linked_twice_belongs_to_its_first_entry(tmp_path: Path):
    procurios = {"kind": "procurios", "base_url": "https://p.example/", "client_id_env": "ID",
                 "client_secret_env": "SECRET", "meeting_id": 7}
    first = _entry("first", source=procurios, mapping=None)
    second = _entry("second", source={**procurios, "base_url": "https://P.Example", "meeting_id": " 7"}, mapping=None)
    catalog = load_catalog(_write(tmp_path / "catalog.yaml", _entry("rest"), first, second))
    assert [e.id for e in catalog.events] == ["rest", "first"]
    assert catalog.problems == [
        "event 'second': source.meeting_id: Procurios meeting 7 of https://P.Example is already linked to "
        "event 'first' (one meeting per event)"
    ]
    with pytest.raises(CatalogError, match="already linked to event 'first'"):
        catalog.get("second")


def test_a_file_that_is_no_catalog_is_still_an_error(tmp_path: Path):
    # nothing is known about its events: the sensor must fail visibly and delete nothing
    (tmp_path / "latin1.yaml").write_bytes("events: []\n# Zürich\n".encode("latin-1"))
    with pytest.raises(CatalogError, match="not UTF-8 text"):
        load_catalog(tmp_path / "latin1.yaml")
    for text, problem in (
        ("events:\n  - id: a\n   name: x\n", "not valid YAML"),
        ("events: {id: a}\n", "events: Input should be a valid list"),
        ("events: []\nevnts: []\n", "evnts: Extra inputs are not permitted"),
    ):
        with pytest.raises(CatalogError) as info:
            _load_text(tmp_path, text)
        assert info.value.problems[0].startswith(problem), info.value.problems


# --------------------------------------------------------------------------- the parse cache


def test_each_entry_parses_alone_as_within_the_whole_file(tmp_path: Path):
    demo = (Path(loader.__file__).parent / "demo_catalog.yaml").read_text(encoding="utf-8")
    split = {
        "the demo catalog": demo,
        "a list at column 0": "events:\n- id: a\n  name: A\n-\n  id: b\n  name: B\n",
        "comments, block scalars, flow entries, a key after the list": (
            "# head\nevents:  # the list\n\n  # first\n  - id: a\n    text: |\n      - not an item\n"
            "      # not a comment\n\n  - {id: b, name: B}\n# tail\nlast: 1\n"
        ),
    }
    whole = {
        "an alias to another entry's anchor": "events:\n  - id: a\n    source: &s {kind: feed}\n  - id: b\n    source: *s\n",
        "a quoted value across an item's line": 'events:\n  - id: a\n    name: "x\n  - y"\n  - id: b\n',
        "a tab at a line's start": 'events:\n  - id: a\n    name: "x\n\ty"\n  - id: b\n',
    }
    for label, text in {**split, **whole}.items():
        expected = yaml_file.parse_yaml(text)
        data, keys, entries = yaml_file.parse_text(text, "d")
        assert data == expected, label
        assert len(keys) == len(expected["events"]), label
        # entry by entry (keys are content hashes), or the file whole (keys are positions)
        assert bool(entries) == (label in split) and all(k.startswith("d:") for k in keys) == (label in whole), label


def test_the_catalog_is_reused_until_the_file_changes(tmp_path: Path):
    file = _write(tmp_path / "catalog.yaml", _entry("alpha"), _entry("beta"))
    first = load_catalog(file)
    assert load_catalog(file) is first
    # rewritten at once with the same size and modification time: the content tells
    stat = file.stat()
    _write(file, _entry("gamma"), _entry("beta"))
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file.stat().st_size == stat.st_size
    assert [e.id for e in load_catalog(file).events] == ["gamma", "beta"]


def test_only_a_file_changed_well_before_it_was_read_is_trusted_by_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    file = _write(tmp_path / "catalog.yaml", _entry("alpha"))
    reads: list[str] = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or read_bytes(self))
    load_catalog(file)
    load_catalog(file)
    assert reads == ["catalog.yaml", "catalog.yaml"]  # just written: read (and hashed) every time
    clock = yaml_file.time.time
    monkeypatch.setattr(yaml_file, "time", type("Later", (), {"time": staticmethod(lambda: clock() + 10)}))
    load_catalog(file)  # read once more, now long after its change: its status will stand for it
    assert [e.id for e in load_catalog(file).events] == ["alpha"] and len(reads) == 3
    _write(file, _entry("alpha"), _entry("beta"))  # any write changes the status
    assert [e.id for e in load_catalog(file).events] == ["alpha", "beta"] and len(reads) == 4


def test_a_change_of_a_variable_the_catalog_uses_is_noticed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SCALE_NAME", "First")
    file = _write(tmp_path / "catalog.yaml", _entry("alpha", name="${SCALE_NAME} event"), _entry("beta"))
    assert load_catalog(file).get("alpha").name == "First event"
    monkeypatch.setenv("SCALE_NAME", "Second")
    assert load_catalog(file).get("alpha").name == "Second event"
    monkeypatch.delenv("SCALE_NAME")
    catalog = load_catalog(file)
    assert [e.id for e in catalog.events] == ["beta"]
    assert catalog.problems == ["event 'alpha': name: environment variable SCALE_NAME is not set and has no default"]


def test_one_event_validates_its_entry_only_and_an_edit_only_the_changed_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    file = _write(tmp_path / "catalog.yaml", *[_entry(f"e{i}") for i in range(40)])
    checked: list[str] = []
    check_entry = loader._check_entry
    monkeypatch.setattr(loader, "_check_entry", lambda raw: checked.append(raw["id"]) or check_entry(raw))
    assert load_catalog(file).get("e7").id == "e7"
    assert checked == ["e7"]
    assert len(load_catalog(file).events) == 40 and len(load_catalog(file).events) == 40
    assert sorted(checked) == sorted(f"e{i}" for i in range(40))  # each entry once
    checked.clear()
    _write(file, *[_entry(f"e{i}", name="Renamed" if i == 3 else f"Event e{i}") for i in range(40)])
    assert load_catalog(file).get("e3").name == "Renamed" and len(load_catalog(file).events) == 40
    assert checked == ["e3"]


def test_a_new_process_reads_the_parse_from_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    file = _write(tmp_path / "catalog.yaml", *[_entry(f"e{i}") for i in range(10)])
    assert len(load_catalog(file).events) == 10
    monkeypatch.setattr(yaml_file, "_MEMORY", {})  # a new process: nothing in memory
    monkeypatch.setattr(loader, "_LOADED", {})
    parse_yaml = yaml_file.parse_yaml
    parsed: list[str] = []
    monkeypatch.setattr(yaml_file, "parse_yaml", lambda text: parsed.append(text) or parse_yaml(text))
    assert load_catalog(file).get("e4").name == "Event e4"
    assert parsed == []  # read from <data dir>/catalog_cache
    # after an edit, only the file without its entries and the changed entry are parsed
    monkeypatch.setattr(yaml_file, "_MEMORY", {})
    _write(file, *[_entry(f"e{i}", name="Renamed" if i == 4 else f"Event e{i}") for i in range(10)])
    assert load_catalog(file).get("e4").name == "Renamed"
    assert len(parsed) == 2 and "Renamed" in parsed[1] and "e5" not in parsed[1]


def test_the_c_loader_is_used_where_pyyaml_has_libyaml():
    assert ("c" in yaml_file.LOADERS) == bool(getattr(yaml, "__with_libyaml__", False))
    assert yaml_file.LOADERS.get("c", yaml_file.PythonCatalogLoader).__name__ in ("CCatalogLoader", "PythonCatalogLoader")
