"""Dagster definitions of the e-mail outbox: the ``email`` resource (SMTP server and delivery
policy from the environment), the ``email_outbox`` asset that delivers due e-mails with its
checks, the delivery job and the sensor that launches it."""
