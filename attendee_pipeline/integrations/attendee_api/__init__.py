"""The customer attendee API integration (kind ``rest_api``, seed 000): a whole-list pull from
any REST API the catalog describes (URL, auth, pagination, record path, field mapping) through
the declarative REST connector (``source``), and its sandbox (``sandbox``)."""
