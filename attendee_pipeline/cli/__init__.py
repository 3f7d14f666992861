"""The ``attendee-pipeline`` command line (click). ``main`` holds the commands (``email`` and
``procurios`` add theirs; ``platform`` opens the platform database for them all); ``runs`` the
in-process launching of the Dagster sync job that ``sync`` and ``demo`` share."""
