"""What the sandboxes share: local servers that behave like the providers, for the demo, tests
and benchmarks.

Each integration's sandbox lives in its folder (``integrations/attendee_api/sandbox``,
``integrations/procurios/sandbox``) and serves deterministic generated data on 127.0.0.1 only,
with state tests can change and faults on demand; nothing in a sandbox logs attendee e-mail
addresses or names. This package holds only what they share: serving an app in a thread
(:mod:`.serving`), the made-up people their records draw from (:mod:`.people`), and the SMTP
sink the e-mail tests and benchmarks deliver to (:mod:`.smtp_sink`).
"""
