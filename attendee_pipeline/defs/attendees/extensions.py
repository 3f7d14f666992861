"""What an integration adds to the one sync step: assets materialised after the publish.

What belongs here: :class:`StepExtension` -- the asset and check specs an integration's folder
adds to ``event_sync`` (``STEP_EXTENSION`` in its ``defs/step.py``) and the function that
materialises them after the publish -- and :func:`step_extensions`, which collects them from the
registry's integration folders. Every sync materialises every extension's assets, for an event
of another source with metadata saying they do not apply, so no partition is ever "missing" and
an asset backfill counts them as done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import dagster as dg

from attendee_pipeline.integrations import is_kind, step_modules


@dataclass(frozen=True)
class StepExtension:
    """Assets of the integration of ``kind`` that the sync step materialises after the publish.

    ``after_publish(context, event, applies=, extract_dir=, engine=, unchanged_since=,
    skip_reason=)`` yields their results: ``applies`` is False for an event of another source,
    ``extract_dir`` is None when nothing was published (``unchanged_since`` or ``skip_reason``
    says why)."""

    kind: str
    specs: list[dg.AssetSpec]
    check_specs: list[dg.AssetCheckSpec] = field(default_factory=list)
    after_publish: Callable[..., Iterator[Any]] | None = None

    def applies_to(self, event: Any) -> bool:
        return is_kind(event, self.kind)


@cache
def step_extensions() -> tuple[StepExtension, ...]:
    """Every integration's step extension, in the registry's order."""
    return tuple(m.STEP_EXTENSION for m in step_modules())


def after_publish(context: Any, event: Any, extract_dir: Any, engine: Any, *, unchanged_since: str | None = None,
                  skip_reason: str | None = None) -> Iterator[Any]:
    """Every extension's results for a sync of ``event``."""
    for extension in step_extensions():
        if extension.after_publish is not None:
            yield from extension.after_publish(
                context, event, applies=extension.applies_to(event), extract_dir=extract_dir, engine=engine,
                unchanged_since=unchanged_since, skip_reason=skip_reason,
            )
