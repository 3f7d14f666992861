"""Clients for registration providers: the declarative REST connector and its HTTP plumbing.

This package holds plain-Python connectors (no Dagster imports) that fetch a provider's attendee
records and store them as a raw, replayable extract. :mod:`.http` builds the shared
``requests`` session (retries, Retry-After, backoff, secrets from the environment, log
redaction); :mod:`.rest` walks a catalog ``RestApiSource`` (auth, pagination, record path) and
writes/reads the raw extract folder. Dagster resources wrap these in ``defs.resources``.
"""
