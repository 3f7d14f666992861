"""The embedded default Dagster instance (SQLite in a local folder) used by the demo and the CLI
when DAGSTER_HOME is not set. Production uses the repository's ``dagster.yaml`` (PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

from attendee_pipeline import settings

#: SQLite storage locks under concurrent runs: the embedded default runs one at a time.
EMBEDDED_DAGSTER_YAML = """\
# Embedded default instance (SQLite). Written by attendee-pipeline; safe to edit (then it is
# kept as it is; delete it to get the current default).
run_coordinator:
  # Dagster's QueuedRunCoordinator that also tags every run of an event with its source kind
  # and its connection, and limits the runs of each catalog connection (max_concurrent_runs)
  module: attendee_pipeline.instance.coordinator
  class: SyncRunCoordinator
  config:
    max_concurrent_runs: 1
    tag_concurrency_limits:
      - key: attendee_pipeline/connection
        value: {applyLimitPerUniqueValue: true}
        limit: 1
# Dagster's default launcher that also tells run monitoring when a run's process is gone
run_launcher:
  module: attendee_pipeline.instance.launcher
  class: SyncRunLauncher
run_retries:
  enabled: true
  max_retries: 2
# the daemon fails a run that would hold the one slot: one whose process is gone (checked every
# poll_interval_seconds), or one still going after max_runtime_seconds (a run's own
# dagster/max_runtime tag overrides it)
run_monitoring:
  enabled: true
  max_runtime_seconds: 3600
  poll_interval_seconds: 15
telemetry:
  enabled: false
nux:
  enabled: false
"""

#: SHA-256 of the embedded configurations earlier releases wrote: such a file was never edited
#: by hand, so it is replaced by the current one.
_EARLIER_EMBEDDED = frozenset({
    "28e7d2fb78db8f7a2f0cb7d598b254af7ceb62e1f408c53632ccd89418719c85",
    "ba79c89c4f3f093a809f225cb30aec1b752faa9d6181a9fca1c2751f854af433",
    "5c00da402591c21270803f9c43b4b5fbc8eec430d2e2754af42093b9c4816a09",
    "7bd5f33e26cc12f36b10314191bb0c7165c0dd2ba703671f91e3b1c76b05e320",
    "77f439fa2ecd004f75a040e9d2848b94c6e6c75620dc6e0aee55cfcec303db47",
})


def embedded_home() -> Path:
    """Create (if needed) and return the embedded DAGSTER_HOME under the data folder."""
    home = settings.data_dir() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or _written_by_an_earlier_release(config):
        config.write_text(EMBEDDED_DAGSTER_YAML, encoding="utf-8")
    return home


def _written_by_an_earlier_release(config: Path) -> bool:
    import hashlib

    return hashlib.sha256(config.read_bytes()).hexdigest() in _EARLIER_EMBEDDED


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
