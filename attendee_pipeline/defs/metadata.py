"""Helpers that turn a step's data into Dagster metadata values, shared by the asset domains.
Nothing here may put an attendee's name or e-mail address into metadata."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def preview(frame: pd.DataFrame, columns: list[str], limit: int = 20) -> dg.MetadataValue:
    """A markdown preview of a few columns (never names or e-mail addresses)."""
    if frame.empty:
        return dg.MetadataValue.md("_none_")
    return dg.MetadataValue.md(frame[columns].head(limit).to_markdown(index=False))
