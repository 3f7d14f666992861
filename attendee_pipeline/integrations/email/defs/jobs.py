"""The e-mail delivery job: materialises ``email_outbox`` (and its checks)."""

from __future__ import annotations

import dagster as dg

from attendee_pipeline.instance.tags import TRIGGER_TAG

EMAIL_DELIVERY_JOB = "email_delivery_job"

email_delivery_job = dg.define_asset_job(
    name=EMAIL_DELIVERY_JOB,
    selection=dg.AssetSelection.assets("email_outbox"),
    description="Deliver the due invite and cancellation e-mails of the outbox.",
    tags={TRIGGER_TAG: "email"},
)
