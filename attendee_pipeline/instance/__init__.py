"""The embedded default Dagster instance (SQLite in a local folder) used by the demo and the CLI
when DAGSTER_HOME is not set. Production uses the repository's ``dagster.yaml`` (PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

from attendee_pipeline import settings

#: SQLite storage locks under concurrent runs: the embedded default runs one at a time.
EMBEDDED_DAGSTER_YAML = """\
# Embedded default instance (SQLite). Written by attendee-pipeline; safe to edit.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
run_retries:
  enabled: true
  max_retries: 2
# the daemon fails a hung run (past its dagster/max_runtime tag), which would hold the one slot
run_monitoring:
  enabled: true
telemetry:
  enabled: false
"""


def embedded_home() -> Path:
    """Create (if needed) and return the embedded DAGSTER_HOME under the data folder."""
    home = settings.data_dir() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(EMBEDDED_DAGSTER_YAML, encoding="utf-8")
    return home


class DagsterHomeError(FileNotFoundError):
    """DAGSTER_HOME names a folder that does not exist."""


def dagster_home() -> Path:
    """DAGSTER_HOME when set, else the embedded default (and set DAGSTER_HOME to it).

    A DAGSTER_HOME that names the embedded default's folder is created like it (on a fresh
    checkout ``make`` points there before anything exists); any other must already exist, as
    Dagster requires, and a missing one is reported with the variable's name.
    """
    value = os.environ.get("DAGSTER_HOME")
    if value:
        path = Path(value).expanduser().resolve()
        if path == (settings.data_dir() / "dagster_home").resolve():
            return embedded_home()
        if not path.is_dir():
            raise DagsterHomeError(
                f"DAGSTER_HOME={value} is not a folder: create it (with a dagster.yaml) or unset "
                "DAGSTER_HOME to use the embedded default under ATTENDEE_PIPELINE_DATA_DIR"
            )
        return path
    home = embedded_home()
    os.environ["DAGSTER_HOME"] = str(home)
    return home
