"""The ``email`` resource: where and how the outbox is delivered, from environment variables.

Every field is read through ``dagster.EnvVar`` when its variable is set (so values -- the SMTP
password above all -- are resolved in the run, never stored with the definitions) and has the
default documented in ``attendee_pipeline.settings.SETTINGS`` otherwise. :func:`email_resources`
builds the resource for the code location; tests build one pointing at their SMTP sink.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from attendee_pipeline.integrations.email.smtp import SmtpSettings
from attendee_pipeline.integrations.email.delivery import DeliverySettings

#: resource field -> (environment variable, integer?)
ENV_FIELDS: dict[str, tuple[str, bool]] = {
    "platform_url": ("ATTENDEE_PIPELINE_PLATFORM_URL", False),
    "smtp_host": ("ATTENDEE_PIPELINE_SMTP_HOST", False),
    "smtp_port": ("ATTENDEE_PIPELINE_SMTP_PORT", True),
    "smtp_security": ("ATTENDEE_PIPELINE_SMTP_SECURITY", False),
    "smtp_user": ("ATTENDEE_PIPELINE_SMTP_USER", False),
    "smtp_password": ("ATTENDEE_PIPELINE_SMTP_PASSWORD", False),
    "sender": ("ATTENDEE_PIPELINE_EMAIL_FROM", False),
    "max_attempts": ("ATTENDEE_PIPELINE_EMAIL_MAX_ATTEMPTS", True),
    "retry_seconds": ("ATTENDEE_PIPELINE_EMAIL_RETRY_SECONDS", True),
    "batch_size": ("ATTENDEE_PIPELINE_EMAIL_BATCH_SIZE", True),
    "overdue_minutes": ("ATTENDEE_PIPELINE_EMAIL_OVERDUE_MINUTES", True),
    "lease_seconds": ("ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS", True),
}


class EmailDeliveryResource(dg.ConfigurableResource):
    """The SMTP server and the delivery policy of the e-mail outbox (see docs/settings.md)."""

    platform_url: str = ""
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_security: str = "none"
    smtp_user: str = ""
    smtp_password: str = ""
    sender: str = "no-reply@localhost"
    smtp_timeout_seconds: int = 30
    max_attempts: int = 10
    retry_seconds: int = 60
    batch_size: int = 500
    overdue_minutes: int = 60
    lease_seconds: int = 120

    def smtp_settings(self) -> SmtpSettings:
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,  # type: ignore[arg-type]  # checked by SmtpSettings
            username=self.smtp_user,
            password=self.smtp_password,
            timeout=float(self.smtp_timeout_seconds),
            sender=self.sender,
        )

    def settings_digest(self) -> str:
        """A short hash of every setting but the password (whose value is never hashed or shown)."""
        import hashlib

        values = self.model_dump(exclude={"smtp_password"})
        return hashlib.sha256(repr(sorted(values.items())).encode("utf-8")).hexdigest()[:12]

    def delivery_settings(self) -> DeliverySettings:
        return DeliverySettings(
            smtp=self.smtp_settings(),
            platform_url=self.platform_url,
            max_attempts=max(1, self.max_attempts),
            retry_seconds=float(self.retry_seconds),
            batch_size=max(1, self.batch_size),
            lease_seconds=float(max(1, self.lease_seconds)),
        )


def email_resource_config() -> dict[str, Any]:
    """``EnvVar`` for each field whose environment variable is set (defaults for the rest)."""
    config: dict[str, Any] = {}
    for name, (variable, integer) in ENV_FIELDS.items():
        if os.environ.get(variable):
            config[name] = dg.EnvVar.int(variable) if integer else dg.EnvVar(variable)
    return config


def email_resources() -> dict[str, Any]:
    return {"email": EmailDeliveryResource(**email_resource_config())}
