"""Long-running network services of the pipeline (as opposed to the Dagster jobs): ``feed`` is
the push feed that accepts attendee records over HTTP into the platform database's inbox;
``platform_hooks`` the endpoints (mounted on the same app) through which the event platform
reports invite statuses, authenticated by ``platform_auth``; ``listen`` binds the loopback
sockets of every HTTP server (these and the sandboxes). The sandboxes that imitate providers
live in their integrations' folders (what they share in ``attendee_pipeline.sandbox``), not here.
"""
