"""Process-wide settings read from environment variables, each documented once here.

Every setting the project reads from the environment is defined in this module with its
default; docs/settings.md's table documents each of them once (a test checks that every
name here appears there exactly once). Secrets (provider keys,
database passwords) are never defaults here: the catalog names the environment variables that
hold them and they are read only when a connection is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

#: name -> (default, description). The single place settings are documented.
SETTINGS: dict[str, tuple[str, str]] = {
    "ATTENDEE_PIPELINE_DATA_DIR": (
        "./.data",
        "Folder for the embedded defaults: platform SQLite database, raw extracts, Dagster home.",
    ),
    "ATTENDEE_PIPELINE_CATALOG": (
        "<package>/catalog/demo_catalog.yaml",
        "Path of the event catalog YAML file.",
    ),
    "ATTENDEE_PIPELINE_DB_URL": (
        "sqlite:///<data dir>/platform.sqlite3",
        "SQLAlchemy URL of the platform database (PostgreSQL in production: "
        "postgresql+psycopg2://user:pass@host/db).",
    ),
    "ATTENDEE_PIPELINE_SANDBOX_URL": (
        "http://127.0.0.1:8765",
        "Base URL of the sandbox attendee API; the demo catalog's URLs use it.",
    ),
    "ATTENDEE_PIPELINE_PROCURIOS_URL": (
        "http://127.0.0.1:8790",
        "Base URL of the sandbox Procurios environment; the demo catalog's Procurios event uses it.",
    ),
    "ATTENDEE_PIPELINE_PLATFORM_API_KEY": (
        "(unset: hooks answer 503)",
        "Secret key the event platform sends (Authorization: Bearer) to the service's platform hook "
        "endpoints; compared in constant time, never logged.",
    ),
    # ---- e-mail (invites, cancellations): read by the Dagster resource `email` through EnvVar
    "ATTENDEE_PIPELINE_PLATFORM_URL": (
        "(unset: delivery refuses to start)",
        "Base URL of the event platform; each e-mail's personal link is "
        "<url>/events/<event>/invite/<token>.",
    ),
    "ATTENDEE_PIPELINE_SMTP_HOST": ("127.0.0.1", "SMTP server that delivers the e-mails."),
    "ATTENDEE_PIPELINE_SMTP_PORT": ("25", "SMTP server port."),
    "ATTENDEE_PIPELINE_SMTP_SECURITY": (
        "none",
        "none | starttls (upgrade a plain connection) | tls (TLS from the start, usually port 465).",
    ),
    "ATTENDEE_PIPELINE_SMTP_USER": ("(unset: no login)", "SMTP login user name."),
    "ATTENDEE_PIPELINE_SMTP_PASSWORD": ("(unset)", "SMTP login password (secret; never logged)."),
    "ATTENDEE_PIPELINE_EMAIL_FROM": (
        "no-reply@localhost",
        "From header of every e-mail (`Name <address>` or an address); its address is the envelope sender.",
    ),
    "ATTENDEE_PIPELINE_EMAIL_MAX_ATTEMPTS": (
        "10",
        "Attempts before an e-mail is given up (status failed); an SMTP outage does not count.",
    ),
    "ATTENDEE_PIPELINE_EMAIL_RETRY_SECONDS": (
        "60",
        "Wait before the first retry of a temporarily refused e-mail; doubles per attempt, at most 6 h. "
        "Also how long e-mails wait after the SMTP server was unreachable.",
    ),
    "ATTENDEE_PIPELINE_EMAIL_BATCH_SIZE": ("500", "E-mails claimed and sent over one SMTP connection at a time."),
    "ATTENDEE_PIPELINE_EMAIL_OVERDUE_MINUTES": (
        "60",
        "The `emails_flowing` check fails when an e-mail has waited longer than this.",
    ),
    "ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS": (
        "120",
        "How long a delivery's claim (e-mails, check-in write-backs) lasts unless the delivery renews it; "
        "once it has run out the delivery is taken to have died and the next sensor tick takes its items again.",
    ),
}

#: Settings that hold secrets: read only where used, never hashed, logged or shown.
SECRET_SETTINGS = frozenset({"ATTENDEE_PIPELINE_PLATFORM_API_KEY", "ATTENDEE_PIPELINE_SMTP_PASSWORD"})


def delivery_lease_seconds() -> float:
    """ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS (see SETTINGS); a clear error for a bad value."""
    raw = os.environ.get("ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS", "").strip()
    if not raw:
        return 120.0
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ValueError(f"ATTENDEE_PIPELINE_DELIVERY_LEASE_SECONDS: must be a number of seconds > 0, not {raw!r}")
    return value


def data_dir(create: bool = True) -> Path:
    """The data folder (ATTENDEE_PIPELINE_DATA_DIR), created unless ``create`` is false."""
    path = Path(os.environ.get("ATTENDEE_PIPELINE_DATA_DIR", "./.data")).resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def catalog_path() -> Path:
    value = os.environ.get("ATTENDEE_PIPELINE_CATALOG")
    if value:
        return Path(value).resolve()
    return PACKAGE_DIR / "catalog" / "demo_catalog.yaml"


def default_db_url() -> str:
    return f"sqlite:///{data_dir() / 'platform.sqlite3'}"


def db_url_is_from_env() -> bool:
    return bool(os.environ.get("ATTENDEE_PIPELINE_DB_URL"))


def db_url() -> str:
    return os.environ.get("ATTENDEE_PIPELINE_DB_URL") or default_db_url()


def raw_extract_dir() -> Path:
    path = data_dir() / "raw"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class MassRemovalDefaults:
    max_share: float = 0.10
    min_count: int = 25


#: Run tag that releases a publish held by the mass-removal guard.
ALLOW_MASS_REMOVAL_TAG = "attendee_pipeline/allow_mass_removal"


def environment_digest() -> str:
    """A short hash of every setting's current value (never the values themselves): tells a
    job built under one environment from one built under another."""
    import hashlib

    names = sorted(set(SETTINGS) - SECRET_SETTINGS)
    text = "\0".join(f"{name}={os.environ.get(name, '')}" for name in names)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
