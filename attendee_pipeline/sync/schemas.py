"""Validation schemas for attendee frames (pandera) and the quarantine that applies them.

:data:`AttendeeFrameSchema` states what a publishable attendee frame is: a key and an e-mail
of valid syntax on every row, first and last name on every row that is not delete-flagged, one
record per e-mail per event, a badge URL (if any) that points at a JPG, PNG or PDF, and only
text the platform database can store (no NUL character, an e-mail of at most 254 characters,
group names of at most 200).
:func:`quarantine` runs it lazily and splits a frame into the rows that pass and one reject row
per failed (record, field) with a readable reason -- bad rows are kept aside, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow.compute as pc

from attendee_pipeline.sync.mapping import REJECT_COLUMNS, WHITESPACE, rejects_frame
from attendee_pipeline.sync.model import PROFILE_FIELDS, TEXT_DTYPE, parse_groups, python_values

#: Pragmatic e-mail syntax: one @, a dotted domain, no spaces, control characters or angle brackets.
#: The spaces are spelt out (every ``str.isspace`` character), not ``\s``: on Arrow-backed text
#: the pattern runs in RE2, whose ``\s`` is ASCII only, so a no-break space passed on a pull
#: while the feed (Python ``re``) refused it.
_NOT_IN_ADDRESS = r"@<>,;\"'\x00-\x1f\x7f" + "".join(c for c in WHITESPACE if c >= " ")
EMAIL_PATTERN = rf"^[^{_NOT_IN_ADDRESS}]+@[^{_NOT_IN_ADDRESS}.]+(\.[^{_NOT_IN_ADDRESS}.]+)+$"
#: A badge URL must be http(s) and its path must end in .jpg/.jpeg/.png/.pdf (query allowed).
BADGE_PATTERN = r"(?i)^https?://[^\s/?#]+/[^\s?#]*\.(jpe?g|png|pdf)(\?[^\s#]*)?(#\S*)?$"
#: Longest e-mail address (RFC 5321's path limit) and group name the platform stores: both are
#: keys of unique indexes, which PostgreSQL caps at about 2,700 bytes per entry.
MAX_EMAIL_CHARS = 254
MAX_GROUP_NAME_CHARS = 200
#: PostgreSQL text cannot hold a NUL character: a value with one is refused, on every source.
NUL = "\x00"
NUL_REASON = "contains a NUL character, which the platform database cannot store"
#: Text columns of the frame whose values are stored as they are (the JSON ones escape NULs).
STORED_TEXT_COLUMNS = (*PROFILE_FIELDS, "source_record_id")

#: check name -> (field, reason) used to word reject reasons.
REASONS: dict[str, tuple[str, str]] = {
    "email_present": ("email", "e-mail address is missing"),
    "email_syntax": ("email", "not a valid e-mail address"),
    "first_name_present": ("first_name", "first name is missing"),
    "last_name_present": ("last_name", "last name is missing"),
    "badge_url_kind": ("badge_url", "badge must be an http(s) URL of a JPG, PNG or PDF"),
    "email_unique": ("email", "duplicate e-mail in this extract (another record of it is kept)"),
    "email_length": ("email", f"longer than {MAX_EMAIL_CHARS} characters"),
    "group_names_storable": (
        "groups", f"a group name is longer than {MAX_GROUP_NAME_CHARS} characters or contains a NUL character"
    ),
    # the field is the column holding the NUL (see quarantine)
    "text_storable": ("", NUL_REASON),
}


def _email_present(df: pd.DataFrame) -> pd.Series:
    return df["email"].notna().astype(bool)


def _email_syntax(df: pd.DataFrame) -> pd.Series:
    return df["email"].str.match(EMAIL_PATTERN).fillna(True).astype(bool)


def _kept_of_key(df: pd.DataFrame, passes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the rows whose attendee key has more than one record, the position of the
    record kept for each): the first record that is not delete-flagged, else the first -- an
    old, cancelled registration listed before the current one must not remove the attendee.
    With ``passes`` (per row: passes the other checks), passing records rank first among the
    not flagged and among the flagged ones; when the record returned fails, none is kept (a
    delete flag is not applied while the attendee's current record is rejected)."""
    key = df["attendee_key"]
    shared = (key.duplicated(keep=False) & key.notna()).to_numpy(dtype=bool)
    rows = np.flatnonzero(shared)
    if not len(rows):
        return rows, rows
    rank = df["flagged"].to_numpy(dtype=bool)[rows] * 2  # passing, not flagged first, in order
    if passes is not None:
        rank = rank + ~passes[rows]
    sub = pd.DataFrame({"key": key.to_numpy()[rows], "rank": rank}, index=rows)
    best = sub.sort_values("rank", kind="stable").drop_duplicates("key")
    return rows, sub["key"].map(pd.Series(best.index, index=best["key"])).to_numpy(dtype=np.int64)


def _email_unique(df: pd.DataFrame) -> pd.Series:
    ok = np.ones(len(df), dtype=bool)
    rows, kept = _kept_of_key(df)
    ok[rows] = rows == kept
    return pd.Series(ok, index=df.index)


def _duplicate_reasons(frame: pd.DataFrame, kept: np.ndarray, passes: np.ndarray) -> list[str]:
    """The reject reasons of duplicates, naming the record kept of each (source row and id),
    or the rejected record not delete-flagged that keeps a flagged one out (see _kept_of_key)."""
    source_rows = frame["source_row"].to_numpy()[kept]
    ids = python_values(frame["source_record_id"].iloc[kept])
    named = [f"source row {r}" + ("" if i is None else f", id {i}") for r, i in zip(source_rows, ids)]
    return [
        f"duplicate e-mail in this extract (the record kept is {n})" if ok else
        f"duplicate e-mail in this extract (none is kept: the record not delete-flagged, {n}, is rejected)"
        for n, ok in zip(named, passes[kept])
    ]


def _email_length(df: pd.DataFrame) -> pd.Series:
    return ~(df["email"].str.len() > MAX_EMAIL_CHARS).fillna(False).astype(bool)


def _nul_in(series: pd.Series) -> pd.Series:
    return series.str.contains(NUL, regex=False).fillna(False).astype(bool)


def _text_storable(df: pd.DataFrame) -> pd.Series:
    bad = np.zeros(len(df), dtype=bool)
    for column in STORED_TEXT_COLUMNS:
        if column not in df.columns:
            continue
        values = df[column].array
        if isinstance(values, pd.arrays.ArrowStringArray):  # the mapped frames: one C pass
            chunks = values.__arrow_array__()  # the Arrow data itself (the interchange protocol)
            if chunks.null_count < len(chunks):
                bad |= pc.match_substring(chunks, NUL).fill_null(False).to_numpy(zero_copy_only=False)
        elif df[column].notna().any():
            bad |= _nul_in(df[column]).to_numpy()
    return pd.Series(~bad, index=df.index)


def _group_names_storable(df: pd.DataFrame) -> pd.Series:
    """Each group name fits the groups table (length, no NUL). The column holds JSON text, so
    only rows long enough to hold a long name, or holding an escaped NUL, are parsed."""
    if "groups" not in df.columns:
        return pd.Series(True, index=df.index)
    text = df["groups"]
    suspect = ((text.str.len() > MAX_GROUP_NAME_CHARS) | text.str.contains("\\u0000", regex=False)).fillna(False)
    ok = pd.Series(True, index=df.index)
    for index, value in text[suspect.astype(bool)].items():
        ok[index] = all(len(name) <= MAX_GROUP_NAME_CHARS and NUL not in name for name in parse_groups(value))
    return ok


def _badge_url_kind(df: pd.DataFrame) -> pd.Series:
    return df["badge_url"].str.match(BADGE_PATTERN).fillna(True).astype(bool)


def _name_present(column: str):  # type: ignore[no-untyped-def]
    return lambda df: df["flagged"] | df[column].notna()


def _unless_flagged(check):  # type: ignore[no-untyped-def]
    """``check`` on the rows that are not delete-flagged. A flagged record's content is never
    written (its attendee is removed, keeping the published row, or it is not published at
    all), so a bad badge URL or an unstorable value must not stop its removal."""
    return lambda df: df["flagged"] | check(df)


#: The frame's columns the schemas type-check (the others are not checked: strict=False).
_COLUMNS = {
    "attendee_key": pa.Column(TEXT_DTYPE, nullable=True),
    "source_row": pa.Column(int),
    "email": pa.Column(TEXT_DTYPE, nullable=True),
    "first_name": pa.Column(TEXT_DTYPE, nullable=True),
    "last_name": pa.Column(TEXT_DTYPE, nullable=True),
    "badge_url": pa.Column(TEXT_DTYPE, nullable=True),
    "flagged": pa.Column(bool),
}

#: Frame-wide checks of every attendee frame, by the name reject reasons are keyed on (REASONS):
#: each returns, per row, whether the row passes.
_CHECKS = {
    "email_present": _email_present,
    "email_syntax": _email_syntax,
    "email_unique": _email_unique,
    "badge_url_kind": _unless_flagged(_badge_url_kind),
    "email_length": _email_length,
    "text_storable": _unless_flagged(_text_storable),
    "group_names_storable": _unless_flagged(_group_names_storable),
}


def _schema(name: str, checks: dict) -> pa.DataFrameSchema:  # type: ignore[type-arg]
    return pa.DataFrameSchema(
        _COLUMNS,
        checks=[pa.Check(check, name=check_name) for check_name, check in checks.items()],
        strict=False,
        coerce=False,
        name=name,
    )


#: An attendee frame of partial records (a feed's pushes, applied with ``update_provided``):
#: every check but the names, which a push may leave out (the published ones are kept).
PartialAttendeeFrameSchema = _schema("PartialAttendeeFrameSchema", _CHECKS)

#: A publishable attendee frame (see attendee_pipeline.sync.model for the columns): the partial
#: checks plus first and last name on every row that is not delete-flagged.
_FULL_CHECKS = {
    **_CHECKS,
    "first_name_present": _name_present("first_name"),
    "last_name_present": _name_present("last_name"),
}
AttendeeFrameSchema = _schema("AttendeeFrameSchema", _FULL_CHECKS)

#: quarantine's first pass (partial or not): every check but uniqueness, which is then decided
#: among the rows that pass them (a rejected record does not push out its valid duplicate).
_ROW_SCHEMAS = {
    partial: _schema(f"{name}Rows", {k: v for k, v in checks.items() if k != "email_unique"})
    for partial, name, checks in (
        (False, "AttendeeFrameSchema", _FULL_CHECKS), (True, "PartialAttendeeFrameSchema", _CHECKS)
    )
}


def register_backends() -> None:
    """Register pandera's pandas backends now. pandera does it on a schema's first validate,
    importing its data-synthesis strategies (and hypothesis, where installed): ~0.2 s, once
    per process. The code location calls this when it loads, so that cost is not paid inside
    a sync's first step (and a process that never validates, e.g. the feed service, skips it)."""
    pa.DataFrameSchema.register_default_backends(pd.DataFrame)


class FrameShapeError(ValueError):
    """The frame itself is wrong (a missing column, a wrong dtype): a bug or a bad mapping."""


@dataclass
class QuarantineResult:
    valid: pd.DataFrame
    rejects: pd.DataFrame  # REJECT_COLUMNS: one row per problem of a rejected record
    failure_counts: dict[str, int]


def schema_for(partial: bool) -> pa.DataFrameSchema:
    """The schema of full records (names required) or of partial ones."""
    return PartialAttendeeFrameSchema if partial else AttendeeFrameSchema


def failure_cases(
    frame: pd.DataFrame, partial: bool = False, schema: pa.DataFrameSchema | None = None
) -> pd.DataFrame | None:
    """Run the schema (default: ``schema_for(partial)``) lazily; return pandera's failure
    cases, or None when the frame passes."""
    try:
        (schema or schema_for(partial)).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return exc.failure_cases
    return None


def failing_source_rows(frame: pd.DataFrame, cases: pd.DataFrame) -> list[int]:
    """The ``source_row`` of each row of ``frame`` that pandera's failure ``cases`` name."""
    index = cases["index"].dropna().astype(int).unique()
    return [int(r) for r in frame.loc[frame.index.intersection(index), "source_row"]]


def quarantine(frame: pd.DataFrame, partial: bool = False) -> QuarantineResult:
    """Split ``frame`` into valid rows and reject rows (one per failed record and field): the
    row checks first, then one record per attendee key among the rows that pass them."""
    cases = failure_cases(frame, schema=_ROW_SCHEMAS[partial])
    if cases is None:
        cases = pd.DataFrame(columns=["index", "check", "column", "failure_case"])
    row_cases = cases[cases["index"].notna()]
    frame_cases = cases[cases["index"].isna()]
    if not frame_cases.empty:
        problems = "; ".join(
            f"{r.column or '(frame)'}: {r.check} ({r.failure_case})"
            for r in frame_cases.itertuples()
        )
        raise FrameShapeError(f"attendee frame does not have the platform shape: {problems}")

    reasons = []
    for case in row_cases.itertuples():
        check = str(case.check)
        field, reason = REASONS.get(check, (str(case.column or "(record)"), check))
        if check == "text_storable":  # one reject per column that holds a NUL
            row = frame.loc[case.index]
            fields = [c for c in STORED_TEXT_COLUMNS if c in frame.columns and isinstance(row[c], str) and NUL in row[c]]
            reasons.extend((case.index, name, reason) for name in fields or ["(record)"])
            continue
        reasons.append((case.index, field, reason))
    passes = ~frame.index.isin([index for index, _, _ in reasons])
    rows, kept = _kept_of_key(frame, passes)
    duplicate = passes[rows] & (rows != kept)
    if duplicate.any():
        found = _duplicate_reasons(frame, kept[duplicate], passes)
        field = REASONS["email_unique"][0]
        reasons.extend((index, field, reason) for index, reason in zip(frame.index[rows[duplicate]], found))
    if not reasons:
        return QuarantineResult(frame, rejects_frame(()), {})
    detail = pd.DataFrame(reasons, columns=["index", "field", "reason"]).drop_duplicates()
    bad_index = pd.Index(detail["index"].unique())
    valid = frame.drop(index=bad_index)
    bad = frame.loc[bad_index, ["source_row", "source_record_id", "attendee_key"]]
    bad = bad.assign(
        source_record_id=python_values(bad["source_record_id"]), attendee_key=python_values(bad["attendee_key"])
    )
    rejects = detail.merge(bad, left_on="index", right_index=True)[REJECT_COLUMNS]
    rejects = rejects.sort_values(["source_row", "field"]).reset_index(drop=True)
    counts = {str(k): int(v) for k, v in detail["field"].value_counts().items()}
    return QuarantineResult(valid, rejects, counts)
