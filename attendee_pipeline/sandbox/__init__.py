"""What the sandboxes share: local servers that behave like the providers, for the demo, tests
and benchmarks.

Each integration's sandbox lives in its folder (``integrations/attendee_api/sandbox``,
``integrations/procurios/sandbox``, the SMTP sink in ``integrations/email/sandbox``) and serves
deterministic generated data on 127.0.0.1 only, with state tests can change and faults on
demand; nothing in a sandbox logs attendee e-mail addresses or names. They serve their apps with
:func:`attendee_pipeline.services.listen.serve_app_in_thread`. This package holds only what
they share beyond that: the made-up people their records draw from (:mod:`.people`).
"""
