"""The Procurios API as a Dagster resource: the retry settings of the clients the check-in
write-back uses (the extract uses the ``attendee_source`` resource's settings). Credentials are
never resource config: each event's catalog entry names the environment variables."""

from __future__ import annotations

from typing import Any

import dagster as dg

from attendee_pipeline.integrations.procurios.client import ProcuriosClient


class ProcuriosApiResource(dg.ConfigurableResource):
    """Builds a :class:`~attendee_pipeline.integrations.procurios.client.ProcuriosClient` for an event's
    ``source`` (base URL and the env var names of its client id and secret)."""

    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 60.0

    def client(self, source: Any) -> ProcuriosClient:
        return ProcuriosClient.for_source(
            source, max_retries=self.max_retries, backoff_factor=self.backoff_factor, backoff_max=self.backoff_max
        )


procurios_resources = {"procurios": ProcuriosApiResource()}
