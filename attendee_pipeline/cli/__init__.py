"""The ``attendee-pipeline`` command line (click). ``main`` holds the commands; ``runs`` the
in-process launching of the Dagster sync job that ``sync`` and ``demo`` share."""
