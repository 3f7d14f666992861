"""Response bodies of the attendee API sandbox: the bytes a page is sent as.

What belongs here: the body around the record list (bare list, or nested under the record path
with the cursor and ``meta``), rendering it in one piece or streaming a large page in chunks
(cut short for a malformed-JSON fault), the opaque cursor tokens, and the tiny badge files
(JPG, PNG, PDF) the ``/badges/`` route serves.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

from attendee_pipeline.integrations.attendee_api.sandbox.config import SandboxConfig, _DUMPS, _set_path
from attendee_pipeline.integrations.attendee_api.sandbox.dataset import Dataset

_PLACEHOLDER = "\x00records\x00"
_STREAM_ABOVE = 20_000  # records; larger pages are streamed in chunks
_CHUNK = 5_000


def _body_shell(config: SandboxConfig, cursor: str | None, meta: dict[str, Any]) -> Any:
    """The response body with a placeholder where the record list goes."""
    if not config.record_path:
        return _PLACEHOLDER
    body: dict[str, Any] = {}
    _set_path(body, tuple(config.record_path.split(".")), _PLACEHOLDER)
    if config.pagination == "cursor":
        _set_path(body, tuple(config.cursor_path.split(".")), cursor)
    if "meta" not in body:
        body["meta"] = meta
    return body


def _render(shell: Any, records: list[str]) -> bytes:
    """The body: ``shell`` with the JSON texts of ``records`` as the record list."""
    listing = "[" + ",".join(records) + "]"
    if shell == _PLACEHOLDER:
        return listing.encode()
    return _DUMPS(shell).replace(_DUMPS(_PLACEHOLDER), listing, 1).encode()


def _stream(
    dataset: Dataset, shell: Any, positions: list[int], base_url: str, truncate: bool
) -> Iterator[bytes]:
    text = _DUMPS(shell)
    prefix, _, suffix = text.partition(_DUMPS(_PLACEHOLDER))
    yield (prefix + "[").encode()
    separator = ""
    for start in range(0, len(positions), _CHUNK):
        chunk = dataset._records_json(positions[start : start + _CHUNK], base_url)
        if chunk:
            yield (separator + ",".join(chunk)).encode()
            separator = ","
        if truncate:
            return
    yield ("]" + suffix).encode()


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> int:
    padded = token + "=" * (-len(token) % 4)
    text = base64.urlsafe_b64decode(padded.encode()).decode()
    if not text.startswith("o:"):
        raise ValueError("bad cursor")
    value = int(text[2:])
    if value < 0:
        raise ValueError("bad cursor")
    return value


_BADGE_CACHE: dict[str, bytes] = {}
_MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "pdf": "application/pdf"}


def _badge_bytes(ext: str) -> bytes:
    """A tiny valid badge file of the given kind (made once)."""
    if ext not in _BADGE_CACHE:
        if ext == "pdf":
            _BADGE_CACHE[ext] = (
                b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
                b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 300]>>endobj\n"
                b"trailer<</Root 1 0 R>>\n%%EOF\n"
            )
        else:
            from PIL import Image

            buffer = io.BytesIO()
            Image.new("RGB", (40, 60), (30, 90, 160)).save(buffer, format="JPEG" if ext == "jpg" else "PNG")
            _BADGE_CACHE[ext] = buffer.getvalue()
    return _BADGE_CACHE[ext]
