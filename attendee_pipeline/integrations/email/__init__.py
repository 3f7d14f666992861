"""The outbound e-mail integration (invites and cancellations): not a source but a destination.
The platform's outbox (``platform_db/outbox.py``, filled by the publish) is delivered through the
one delivery mechanism (``platform_db/delivery.py``) by ``delivery`` over ``smtp``; its Dagster
definitions -- the ``email`` resource, the ``email_outbox`` asset and checks, the delivery job
and sensor -- are in ``defs``, its SMTP sink sandbox in ``sandbox``."""
