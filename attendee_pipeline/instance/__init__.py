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


def dagster_home() -> Path:
    """DAGSTER_HOME when set, else the embedded default (and set DAGSTER_HOME to it)."""
    value = os.environ.get("DAGSTER_HOME")
    if value:
        return Path(value)
    home = embedded_home()
    os.environ["DAGSTER_HOME"] = str(home)
    return home
