"""Clients for registration providers: the declarative REST connector, its strategies and the
raw-extract store.

This package holds plain-Python connectors (no Dagster imports) that fetch a provider's attendee
records and store them as a raw, replayable extract. :mod:`.http` builds the shared
``requests`` session (retries, Retry-After, backoff, secrets from the environment, log
redaction, rate-limit pacing); :mod:`.auth` and :mod:`.paginators` are the auth types
(OAuth2 client credentials among them) and pagination styles of the declarative connector
:mod:`.rest`, which walks a catalog ``RestApiSource``; :mod:`.raw_store` owns the raw extract
folder of every source (pages, manifest, replay). An integration's own client lives in its
folder (``integrations/procurios/client.py``, ``integrations/email/smtp.py``). Dagster resources
wrap these in ``defs.resources``.
"""
