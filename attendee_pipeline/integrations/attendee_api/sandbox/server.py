"""The HTTP side of the attendee API sandbox: :class:`SandboxServer`, its Starlette app.

What belongs here: the routes (the attendee list, badge files, the ``/_control/`` JSON endpoints
that change datasets and faults), acting on a request's fault decision, checking its credentials
(basic, header, query; compared in constant time), planning which records a page holds from its
pagination parameters (page, offset, cursor, Link headers), and logging it. How a body is
written is :mod:`.rendering`; running the app is :mod:`.handle`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from attendee_pipeline.integrations.attendee_api.sandbox.config import SandboxConfig
from attendee_pipeline.integrations.attendee_api.sandbox.dataset import Dataset
from attendee_pipeline.integrations.attendee_api.sandbox.rendering import (
    _MEDIA_TYPES,
    _STREAM_ABOVE,
    _badge_bytes,
    _body_shell,
    _decode_cursor,
    _encode_cursor,
    _render,
    _stream,
)
from attendee_pipeline.integrations.attendee_api.sandbox.request_log import RequestLog, RequestRecord


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return int(raw)


class SandboxServer:
    """The sandbox's state (datasets by event slug, request log) and its Starlette app.

    Routes::

        GET  /events/{slug}/attendees                the attendee list (auth + pagination + faults)
        GET  /badges/{name}                          a tiny JPG / PNG / PDF badge file
        GET  /_control/state                         datasets, sizes, faults (no credentials)
        GET  /_control/requests                      request counts; DELETE clears the log
        PUT  /_control/events/{slug}                 add/replace a dataset {"config": {...}}
        DELETE /_control/events/{slug}               remove a dataset
        POST /_control/events/{slug}/records         {"count": N}            set the number of records
        POST /_control/events/{slug}/add             {"count": N} | {"records": [...]}
        POST /_control/events/{slug}/delete          {"indices": [...], "deleted": true}
        POST /_control/events/{slug}/undelete        {"indices": [...]}
        POST /_control/events/{slug}/remove          {"indices": [...]}      drop from the list
        POST /_control/events/{slug}/restore         {"indices": [...]}
        POST /_control/events/{slug}/fields          {"indices": [...], "field": "company", "value": ...,
                                                      "remove": false}
        POST /_control/events/{slug}/modify          {"field": "company", "fraction": 0.01 | "indices": [...],
                                                      "value": optional}
        PUT  /_control/events/{slug}/dataset         {"records": [...]}      replace the whole list
        POST /_control/events/{slug}/config          {"pagination": "cursor", ...}  change API behaviour
        POST /_control/events/{slug}/reset           back to the generated dataset, no faults
        POST /_control/events/{slug}/faults          {"kind": "rate_limit", "count": 2, "retry_after": 1} ...
        DELETE /_control/events/{slug}/faults        reset this dataset's faults
        POST /_control/faults/reset                  reset every dataset's faults
    """

    def __init__(self, datasets: Mapping[str, SandboxConfig] | None = None) -> None:
        self._lock = threading.RLock()
        self.datasets: dict[str, Dataset] = {}
        self.log = RequestLog()
        for slug, config in (datasets or {}).items():
            self.add_dataset(slug, config)
        self.app = self._build_app()

    # ----------------------------------------------------------------- datasets

    def add_dataset(self, slug: str, config: SandboxConfig | None = None, **config_kwargs: Any) -> Dataset:
        """Serve a (new or replaced) dataset at ``/events/{slug}/attendees``."""
        if config is None:
            config = SandboxConfig(**config_kwargs)
        elif config_kwargs:
            config = config.replace(**config_kwargs)
        dataset = Dataset(slug, config)
        with self._lock:
            self.datasets[slug] = dataset
        return dataset

    def remove_dataset(self, slug: str) -> None:
        with self._lock:
            self.datasets.pop(slug, None)

    def dataset(self, slug: str) -> Dataset:
        with self._lock:
            try:
                return self.datasets[slug]
            except KeyError:
                served = ", ".join(self.datasets)
                raise KeyError(f"the sandbox serves no event {slug!r} (serves: {served})") from None

    __getitem__ = dataset

    # ----------------------------------------------------------------- app

    def _build_app(self) -> Starlette:
        c = self._control
        routes = [
            Route("/events/{slug}/attendees", self._attendees, methods=["GET"]),
            Route("/badges/{name}", self._badge, methods=["GET"]),
            Route("/_control/state", c(self._ctl_state), methods=["GET"]),
            Route("/_control/requests", c(self._ctl_requests), methods=["GET", "DELETE"]),
            Route("/_control/faults/reset", c(self._ctl_reset_all_faults), methods=["POST"]),
            Route("/_control/events/{slug}", c(self._ctl_dataset), methods=["GET", "PUT", "DELETE"]),
            Route("/_control/events/{slug}/{action}", c(self._ctl_action), methods=["POST", "PUT", "DELETE"]),
        ]
        return Starlette(routes=routes)

    def query_credential_names(self) -> set[str]:
        """Names of the query parameters any served event takes credentials in."""
        with self._lock:
            configs = [d.config for d in self.datasets.values()]
        return {name for c in configs if c.auth == "query" for name in c.credentials}

    def _log(self, request: Request, slug: str | None, status: int) -> None:
        hidden = self.query_credential_names()
        params = {k: v for k, v in request.query_params.items() if k not in hidden}
        self.log.add(RequestRecord(request.method, request.url.path, slug, params, status, time.time()))

    async def _badge(self, request: Request) -> Response:
        name = request.path_params["name"]
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if ext not in _MEDIA_TYPES:
            self._log(request, None, 404)
            return _json_error(404, "no such badge")
        self._log(request, None, 200)
        return Response(_badge_bytes(ext), media_type=_MEDIA_TYPES[ext])

    async def _attendees(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        with self._lock:
            dataset = self.datasets.get(slug)
        if dataset is None:
            self._log(request, slug, 404)
            return _json_error(404, f"unknown event {slug!r}")
        response = await self._serve_page(request, dataset)
        self._log(request, slug, response.status_code)
        return response

    async def _serve_page(self, request: Request, dataset: Dataset) -> Response:
        decision = dataset._decide()
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        if decision.rate_limit:
            headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0"}
            if decision.retry_after is not None:
                headers["Retry-After"] = decision.retry_after
            return _json_error(429, "rate limit exceeded", headers)
        if decision.error is not None:
            return _json_error(decision.error, "internal server error (sandbox fault)")
        config = dataset.config
        if not _authorised(request, config):
            headers = {"WWW-Authenticate": 'Basic realm="attendees"'} if config.auth == "basic" else None
            return _json_error(401, "authentication required", headers)
        try:
            plan = _plan_page(request, config, dataset, decision.empty)
        except ValueError as exc:
            return _json_error(400, str(exc))
        if dataset._page_missing(plan.ordinal, plan.offset):
            return _json_error(404, f"page {plan.ordinal} not found")
        base_url = str(request.base_url).rstrip("/")
        shell = _body_shell(config, plan.next_cursor, plan.meta)
        headers = dict(plan.headers)
        headers["X-Total-Count"] = str(plan.total)
        if len(plan.positions) > _STREAM_ABOVE:
            stream = _stream(dataset, shell, plan.positions, base_url, decision.malformed)
            return StreamingResponse(stream, media_type="application/json", headers=headers)

        def build() -> bytes:
            return _render(shell, dataset._records_json(plan.positions, base_url))

        body = build() if len(plan.positions) <= 2_000 else await run_in_threadpool(build)
        if decision.malformed:
            body = body[: max(1, len(body) // 2)]
        return Response(body, media_type="application/json", headers=headers)

    # ----------------------------------------------------------------- control

    def _control(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                payload: dict[str, Any] = {}
                if request.method in ("POST", "PUT"):
                    raw = await request.body()
                    payload = json.loads(raw) if raw.strip() else {}
                    if not isinstance(payload, dict):
                        raise ValueError("the request body must be a JSON object")
                result = handler(request, payload)
            except KeyError as exc:
                return _json_error(404, str(exc.args[0]) if exc.args else "not found")
            except (ValueError, TypeError, OverflowError) as exc:
                return _json_error(400, str(exc))
            return JSONResponse(result if result is not None else {"ok": True})

        return endpoint

    def _ctl_state(self, request: Request, payload: dict[str, Any]) -> Any:
        with self._lock:
            datasets = list(self.datasets.values())
        return {"events": {d.slug: d.describe() for d in datasets}, "requests": self.log.describe()}

    def _ctl_requests(self, request: Request, payload: dict[str, Any]) -> Any:
        if request.method == "DELETE":
            self.log.clear()
        return self.log.describe()

    def _ctl_reset_all_faults(self, request: Request, payload: dict[str, Any]) -> Any:
        with self._lock:
            datasets = list(self.datasets.values())
        for d in datasets:
            d.reset_faults()
        return {"ok": True}

    def _ctl_dataset(self, request: Request, payload: dict[str, Any]) -> Any:
        slug = request.path_params["slug"]
        if request.method == "PUT":
            config = SandboxConfig.from_dict(payload.get("config", {}))
            return self.add_dataset(slug, config).describe()
        if request.method == "DELETE":
            self.dataset(slug)
            self.remove_dataset(slug)
            return {"ok": True}
        return self.dataset(slug).describe()

    def _ctl_action(self, request: Request, payload: dict[str, Any]) -> Any:
        slug, action = request.path_params["slug"], request.path_params["action"]
        d = self.dataset(slug)
        method = request.method
        indices = payload.get("indices", [])

        def required(name: str) -> Any:
            if name not in payload:
                raise ValueError(f"give {name!r} in the request body")
            return payload[name]

        if action == "records" and method == "POST":
            d.set_records(int(required("count")))
        elif action == "add" and method == "POST":
            return {"positions": d.add_records(int(payload.get("count", 0)), payload.get("records"))}
        elif action == "delete" and method == "POST":
            d.mark_deleted(indices, bool(payload.get("deleted", True)))
        elif action == "undelete" and method == "POST":
            d.undelete(indices)
        elif action == "remove" and method == "POST":
            d.remove(indices)
        elif action == "restore" and method == "POST":
            d.restore(indices)
        elif action == "fields" and method == "POST":
            remove = bool(payload.get("remove"))
            d.set_field(indices, str(required("field")), payload.get("value"), remove=remove)
        elif action == "modify" and method == "POST":
            changed = d.modify(
                str(required("field")),
                fraction=payload.get("fraction"),
                indices=payload.get("indices"),
                value=payload.get("value"),
            )
            return {"positions": changed}
        elif action == "dataset" and method == "PUT":
            records = payload.get("records")
            if not isinstance(records, list):
                raise ValueError("'records' must be a list of objects")
            d.replace_records(records)
        elif action == "config" and method == "POST":
            d.update_config(**payload)
        elif action == "reset" and method == "POST":
            d.reset()
        elif action == "faults" and method == "POST":
            params = dict(payload)
            kind = params.pop("kind", None)
            if not kind:
                raise ValueError("give the fault 'kind'")
            d.set_fault(str(kind), **params)
        elif action == "faults" and method == "DELETE":
            d.reset_faults()
        else:
            raise KeyError(f"no control action {method} {action!r}")
        return d.describe()


def _authorised(request: Request, config: SandboxConfig) -> bool:
    def same(given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    if config.auth == "none":
        return True
    creds = config.credentials
    if config.auth == "basic":
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return same(user, creds["username"]) & same(password, creds["password"])
    if config.auth == "header":
        return all([same(request.headers.get(name), value) for name, value in creds.items()])
    return all([same(request.query_params.get(name), value) for name, value in creds.items()])


@dataclass
class _Plan:
    positions: list[int]
    total: int
    ordinal: int
    offset: int | None = None
    next_cursor: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _plan_page(request: Request, config: SandboxConfig, dataset: Dataset, empty: bool) -> _Plan:
    """Which records this request gets, from the pagination parameters (ValueError: HTTP 400)."""
    total = 0 if empty else dataset.total
    style = config.pagination

    def size_of(name: str) -> int:
        size = _int_param(request, name, config.page_size)
        if size < 1:
            raise ValueError(f"{name} must be >= 1")
        return min(size, config.max_page_size)

    def pick(start: int, count: int) -> list[int]:
        return [] if empty else dataset.positions(start, count)

    if style == "none":
        return _Plan(pick(0, total), total, 1, meta={"total": total})
    if style in ("page", "link"):
        try:
            number = _int_param(request, config.page_param, config.first_page)
            size = size_of(config.size_param)
        except ValueError as exc:
            raise ValueError(f"bad pagination parameter: {exc}") from None
        if number < config.first_page:
            raise ValueError(f"{config.page_param} must be >= {config.first_page}")
        ordinal = number - config.first_page + 1
        start = (ordinal - 1) * size
        meta = {"page": number, "per_page": size, "total": total}
        plan = _Plan(pick(start, size), total, ordinal, meta=meta)
        if style == "link":
            last = config.first_page + max(0, math.ceil(total / size) - 1)
            base = str(request.url.replace(query=""))
            dropped = {config.page_param, config.size_param}
            if config.auth == "query":
                dropped.update(config.credentials)
            keep = [(k, v) for k, v in request.query_params.multi_items() if k not in dropped]

            def link(n: int, rel: str) -> str:
                query = urlencode([*keep, (config.page_param, n), (config.size_param, size)])
                return f'<{base}?{query}>; rel="{rel}"'

            links = [link(config.first_page, "first"), link(last, "last")]
            if start + size < total:
                links.append(link(number + 1, "next"))
            if number > config.first_page:
                links.append(link(number - 1, "prev"))
            plan.headers["Link"] = ", ".join(links)
        return plan
    if style == "offset":
        try:
            offset = _int_param(request, config.offset_param, 0)
            size = size_of(config.limit_param)
        except ValueError as exc:
            raise ValueError(f"bad pagination parameter: {exc}") from None
        if offset < 0:
            raise ValueError(f"{config.offset_param} must be >= 0")
        return _Plan(
            pick(offset, size), total, offset // size + 1, offset=offset,
            meta={"offset": offset, "limit": size, "total": total},
        )
    # cursor
    token = request.query_params.get(config.cursor_param)
    try:
        offset = _decode_cursor(token) if token else 0
        size = size_of(config.cursor_limit_param)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"bad {config.cursor_param} or {config.cursor_limit_param}") from None
    positions = pick(offset, size)
    following = offset + len(positions)
    next_cursor = _encode_cursor(following) if positions and following < total else None
    return _Plan(positions, total, offset // size + 1, next_cursor=next_cursor, meta={"total": total})
