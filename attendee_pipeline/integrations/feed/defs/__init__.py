"""The feed integration's Dagster definitions: the inbox sensor (``sensors``)."""
