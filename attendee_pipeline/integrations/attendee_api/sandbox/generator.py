"""Record generation of the attendee API sandbox: attendee ``i`` of a dataset from its seed and
``i`` alone.

What belongs here: the generator that turns (config, seed, index) into a provider-shaped record
-- names, company, groups from the pool, badge URL, delete flag, the deliberately bad records --
and the same record as JSON text from a precompiled template for large pages; the value pools
only this provider's records use. No state: what a test changes lives in the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attendee_pipeline.integrations.attendee_api.sandbox.config import (
    BAD_KINDS,
    DEFAULT_FIELDS,
    SandboxConfig,
    _DUMPS,
    _set_path,
)
from attendee_pipeline.sandbox.people import COMPANIES, FIRST_NAMES, JOB_TITLES, LAST_NAMES, mix

_COUNTRIES = (
    "Netherlands", "Belgium", "Germany", "France", "United Kingdom", "Ireland", "Spain", "Italy",
    "Portugal", "Denmark", "Sweden", "Norway", "Poland", "Austria", "Switzerland",
    "United States", "Canada", "Brazil", "Japan", "India", "Nigeria", "Kenya", "Australia",
)
_TITLES: tuple[str | None, ...] = (None, None, None, None, None, "Dr.", "Prof.", "Ir.")
_TOPICS = (
    "open data", "logistics", "machine learning", "public health", "sustainability",
    "community building", "payments", "accessibility", "security", "education",
)
_BADGE_EXTS = ("jpg", "png", "pdf")


def _threshold(fraction: float) -> int:
    return int(round(max(0.0, min(1.0, fraction)) * 65536))


class _Generator:
    """Builds record ``i`` of a dataset from (seed, i) alone -- O(1) per record, no storage.

    :meth:`record` gives the dict; :meth:`json` gives the same record as JSON text straight from
    a precompiled template (about 3x faster than building a dict and encoding it), or None for
    the rare records that do not fit the template (deliberately bad ones).
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.key = mix(config.seed * 0x100000001B3 + 12345)
        self.names = config.field_names()
        self.paths = {k: tuple(v.split(".")) for k, v in self.names.items()}
        self.flat = all(len(p) == 1 for p in self.paths.values())
        self.deleted_t = _threshold(config.deleted_fraction)
        self.badge_t = _threshold(config.badge_fraction)
        self.bad_t = _threshold(config.bad_fraction)
        self.pool = config.groups
        self.max_groups = max(0, config.max_groups) if self.pool else 0
        self.domain = config.email_domain
        self.lower_first = tuple(n.lower() for n in FIRST_NAMES)
        self.lower_last = tuple(n.lower().replace(" ", "") for n in LAST_NAMES)
        # --- JSON template: the layout's JSON text split around one slot per field
        slots = {k: f"\x00{k}\x00" for k in DEFAULT_FIELDS}
        text = _DUMPS(self._layout(slots))
        found = sorted((text.find(_DUMPS(m)), k) for k, m in slots.items() if _DUMPS(m) in text)
        self.order = tuple(k for _, k in found)
        literals: list[str] = []
        cursor = 0
        for at, key in found:
            literals.append(text[cursor:at])
            cursor = at + len(_DUMPS(slots[key]))
        literals.append(text[cursor:])
        self.enc = lambda v: _DUMPS(v)[1:-1]  # string body without quotes
        self.enc_first = tuple(self.enc(n) for n in FIRST_NAMES)
        self.enc_last = tuple(self.enc(n) for n in LAST_NAMES)
        self.enc_lfirst = tuple(self.enc(n) for n in self.lower_first)
        self.enc_llast = tuple(self.enc(n) for n in self.lower_last)
        self.enc_company = tuple(self.enc(n) for n in COMPANIES)
        self.enc_job = tuple(self.enc(n) for n in JOB_TITLES)
        self.enc_job_lower = tuple(self.enc(n.lower()) for n in JOB_TITLES)
        self.enc_country = tuple(_DUMPS(n) for n in _COUNTRIES)
        self.enc_titles = tuple(_DUMPS(n) for n in _TITLES)
        self.enc_topic = tuple(self.enc(n) for n in _TOPICS)
        self.enc_pool = {g: _DUMPS(g) for g in self.pool}
        self.enc_domain = self.enc(self.domain)
        self.enc_prefix = self.enc(config.id_prefix)
        self.enc_deleted = _DUMPS(config.deleted_value)
        self.enc_not_deleted = _DUMPS(config.not_deleted_value)
        self._enc_badge_base: dict[str, str] = {}
        # 0..max_groups groups per attendee, from a seeded table of 4096 combinations
        table: list[tuple[list[str], str]] = []
        for t in range(4096):
            if self.max_groups:
                k = mix(self.key ^ (t * 0x2545F4914F6CDD1D))
                n = (k >> 60) % (self.max_groups + 1)
                names = sorted({self.pool[(k >> (12 * j)) % len(self.pool)] for j in range(n)})
            else:
                names = []
            table.append((names, "[" + ",".join(self.enc_pool[x] for x in names) + "]"))
        self.group_table = tuple(table)
        #: Record ``i`` as JSON text (same as ``_DUMPS(record(i))``); None for a bad record.
        self.json: Callable[[int, str], str | None] = self._compile_json(literals)

    def _layout(self, values: Mapping[str, Any]) -> dict[str, Any]:
        names = self.names
        if self.flat:
            return {names[k]: v for k, v in values.items() if k in names}
        record: dict[str, Any] = {}
        for k, v in values.items():
            path = self.paths.get(k)
            if path is not None:
                _set_path(record, path, v)
        return record

    def _bad_kind(self, i: int, g: int) -> str | None:
        kind = self.config.bad_records.get(i)
        if kind is None and ((g >> 32) & 0xFFFF) < self.bad_t:
            kind = BAD_KINDS[(g >> 48) & 1]
        return kind

    def _groups(self, g: int) -> list[str]:
        return self.group_table[g >> 52][0]

    def values(self, i: int, base_url: str) -> dict[str, Any]:
        """Platform-ish name -> value for record ``i``."""
        c = self.config
        h = mix(self.key ^ i)
        g = mix(h ^ 0x5851F42D4C957F2D)
        fi, li = h % 40, (h >> 8) % 40
        first, last = FIRST_NAMES[fi], LAST_NAMES[li]
        company = COMPANIES[(h >> 16) % len(COMPANIES)]
        job = JOB_TITLES[(h >> 24) % len(JOB_TITLES)]
        email = f"{self.lower_first[fi]}.{self.lower_last[li]}.{i}@{self.domain}"
        rid = f"{c.id_prefix}{i + 1:07d}"
        values: dict[str, Any] = {
            "id": rid,
            "email": email,
            "first_name": first,
            "last_name": last,
            "titles": _TITLES[(h >> 32) % len(_TITLES)],
            "job_title": job,
            "company": company,
            "country": _COUNTRIES[(h >> 40) % len(_COUNTRIES)],
            "biography": f"{first} is {job.lower()} at {company} and works on "
            f"{_TOPICS[(h >> 48) % len(_TOPICS)]}.",
        }
        if ((g >> 16) & 0xFFFF) < self.badge_t:
            ext = _BADGE_EXTS[(g >> 50) % 3]
            values["badge"] = f"{c.badge_base_url or base_url + '/badges'}/{rid}.{ext}"
        else:
            values["badge"] = None
        values["groups"] = self._groups(g)
        deleted = (g & 0xFFFF) < self.deleted_t
        values["deleted"] = c.deleted_value if deleted else c.not_deleted_value
        kind = self._bad_kind(i, g)
        if kind == "invalid_email":
            values["email"] = email.replace("@", ".at.")
        elif kind == "missing_last_name":
            del values["last_name"]
        return values

    def record(self, i: int, base_url: str) -> dict[str, Any]:
        return self._layout(self.values(i, base_url))

    def _badge_base(self, base_url: str) -> str:
        base = self._enc_badge_base.get(base_url)
        if base is None:
            base = self.enc(self.config.badge_base_url or base_url + "/badges")
            self._enc_badge_base[base_url] = base
        return base

    #: JSON text of each field, as Python expressions over the locals of the compiled function.
    _JSON_EXPR: dict[str, str] = {
        "id": "'\"' + rid + '\"'",
        "email": "f'\"{LFIRST[fi]}.{LLAST[li]}.{i}@{DOMAIN}\"'",
        "first_name": "'\"' + first + '\"'",
        "last_name": "'\"' + LAST[li] + '\"'",
        "titles": "TITLES[(h >> 32) % NT]",
        "job_title": "'\"' + JOB[ji] + '\"'",
        "company": "'\"' + COMPANY[ci] + '\"'",
        "country": "COUNTRY[(h >> 40) % NCO]",
        "biography": "f'\"{first} is {JOBL[ji]} at {COMPANY[ci]} and works on {TOPIC[(h >> 48) % NTO]}.\"'",
        "groups": "GROUPS[g >> 52][1]",
        "badge": "(f'\"{self._badge_base(base_url)}/{rid}.{EXTS[(g >> 50) % 3]}\"' "
        "if ((g >> 16) & 0xFFFF) < BADGE_T else 'null')",
        "deleted": "(DELETED if (g & 0xFFFF) < DELETED_T else NOT_DELETED)",
    }

    def _compile_json(self, literals: list[str]) -> Callable[[int, str], str | None]:
        """A function making the JSON text of record ``i`` with no dict in between."""
        parts: list[str] = []
        for n, key in enumerate(self.order):
            parts += [f"L{n}", self._JSON_EXPR[key]]
        parts.append(f"L{len(self.order)}")
        bad_check = (
            "    if self._bad_kind(i, g) is not None:\n        return None\n"
            if self.bad_t or self.config.bad_records
            else ""
        )
        source = (
            "def json_record(i, base_url):\n"
            "    h = mix(KEY ^ i)\n"
            "    g = mix(h ^ 0x5851F42D4C957F2D)\n"
            f"{bad_check}"
            "    fi = h % 40\n"
            "    li = (h >> 8) % 40\n"
            "    ci = (h >> 16) % NC\n"
            "    ji = (h >> 24) % NJ\n"
            "    first = FIRST[fi]\n"
            "    rid = f'{PREFIX}{i + 1:07d}'\n"
            f"    return ''.join(({', '.join(parts)},))\n"
        )
        namespace: dict[str, Any] = {
            "self": self, "mix": mix, "KEY": self.key, "NC": len(COMPANIES), "NJ": len(JOB_TITLES),
            "NT": len(_TITLES), "NCO": len(_COUNTRIES), "NTO": len(_TOPICS),
            "FIRST": self.enc_first, "LAST": self.enc_last, "LFIRST": self.enc_lfirst,
            "LLAST": self.enc_llast, "DOMAIN": self.enc_domain, "TITLES": self.enc_titles,
            "JOB": self.enc_job, "JOBL": self.enc_job_lower, "COMPANY": self.enc_company,
            "COUNTRY": self.enc_country, "TOPIC": self.enc_topic, "GROUPS": self.group_table,
            "EXTS": _BADGE_EXTS, "BADGE_T": self.badge_t, "DELETED_T": self.deleted_t,
            "DELETED": self.enc_deleted, "NOT_DELETED": self.enc_not_deleted, "PREFIX": self.enc_prefix,
        }
        namespace.update({f"L{n}": text for n, text in enumerate(literals)})
        exec(compile(source, "<sandbox record template>", "exec"), namespace)  # noqa: S102 - our own code
        return namespace["json_record"]
