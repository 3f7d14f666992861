"""Local HTTP servers that behave like the registration providers, for the demo, tests and
benchmarks.

Each module here is one provider sandbox, serving deterministic generated data on 127.0.0.1 only,
with state that tests can change (records, delete flags, field edits) and faults on demand
(429 with Retry-After, 5xx, slow or malformed responses, disappearing pages). Nothing in this
package logs attendee e-mail addresses or names. :mod:`.attendee_api` is seed 000's "pull from
a customer's attendee API".
"""
