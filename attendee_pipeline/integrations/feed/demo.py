"""What ``make demo`` pushes to a feed event: seed 001's example request (key in the header),
the flat form with the key in the body, and a partial update of the first attendee, posted to a
feed service on a free loopback port with a one-off key. The addresses are the seed's examples."""

from __future__ import annotations

from collections.abc import Callable

from attendee_pipeline import settings

#: What `make demo` pushes to a feed event: seed 001's example request (key in the header),
#: the flat form with the key in the body, and a partial update of the first attendee.
DEMO_PUSHES: list[tuple[dict, bool]] = [
    ({"profile": {"email": "john.doe@example.com", "firstName": "John", "lastName": "Doe"},
      "eventInfo": {"groups": {"groupNames": ["Group1"]}}}, True),
    ({"profile.email": "ann.lee@example.org", "profile.firstName": "Ann", "profile.lastName": "Lee",
      "profile.company": "ACME", "profile.customFields[0].fieldName": "diet",
      "profile.customFields[0].fieldValue": "vegan", "eventInfo.groups.groupNames.0": "Group1",
      "eventInfo.groups.groupNames.1": "Speakers"}, False),
    ({"profile": {"email": "john.doe@example.com", "company": "Initech"}}, True),
]


def push_demo_attendees(event_id: str, echo: Callable[[str], None]) -> None:
    """Post the demo attendees to a feed service on a free port with a one-off key."""
    import requests

    from attendee_pipeline.platform_db.engine import ensure_schema, make_engine
    from attendee_pipeline.platform_db.feed import create_key, revoke_key
    from attendee_pipeline.services.feed import serve_feed_in_thread

    url = settings.db_url()
    ensure_schema(url)
    engine = make_engine(url)
    key_id, key = create_key(engine, event_id)
    try:
        with serve_feed_in_thread(url) as feed:
            for payload, in_header in DEMO_PUSHES:
                body = payload if in_header else {**payload, "key": key}
                headers = {"Api-Key": key} if in_header else {}
                response = requests.post(f"{feed.url}/events/{event_id}/attendees", json=body, headers=headers, timeout=10)
                response.raise_for_status()
        echo(f"pushed {len(DEMO_PUSHES)} attendee record(s) to the feed service for {event_id}")
    finally:
        revoke_key(engine, event_id, key_id)
        engine.dispose()
