"""Pagination strategies of the declarative REST connector: in which order an extract asks for
the pages of a list and where the list ends.

What belongs here: one small class per pagination style of the catalog (``none``, ``page``,
``offset``, ``cursor``, ``link``) and :func:`paginator_for`, which picks the class of a catalog
pagination model. A paginator drives the walk of one extract through the :class:`PageWalk` it
is given (the connector's run: ``fetch`` a page and store it, ``get`` an answer, send the next
request ahead while the current page is stored, build an error naming the page); the
connector's retries, read-ahead and storage stay in :mod:`.rest`, so a new style is a class here
and a model in the catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from attendee_pipeline.catalog.fields import (
    CursorPagination,
    LinkHeaderPagination,
    OffsetPagination,
    PageNumberPagination,
    SinglePage,
)
from attendee_pipeline.connectors.http import same_site
from attendee_pipeline.connectors.raw_store import ExtractError, at_path, json_kind

Request = tuple[str, dict[str, str]]


class PageWalk(Protocol):
    """What a paginator may do with the extract it walks (see ``rest._Run``)."""

    pages: int
    secret_params: frozenset[str]

    def fetch(self, url: str, params: dict[str, str], first: requests.Response | None = None) -> tuple[int, Any, requests.Response]: ...

    def get(self, page: int, url: str, params: dict[str, str]) -> requests.Response: ...

    def ahead(self, url: str, params: dict[str, str]) -> Future[requests.Response] | None: ...

    def take(self, future: Future[requests.Response] | None) -> requests.Response | None: ...

    def read_ahead(
        self, request_of: Callable[[int], Request], size: int | None, check: Callable[[int, int], Request] | None = None
    ) -> None: ...

    def error(self, page: int | None, problem: str, status: int | None = None, permanent: bool = False) -> ExtractError: ...


def strip_url(url: str, drop_params: set[str] | frozenset[str]) -> str:
    """``url`` without user info and without the query parameters named in ``drop_params``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in drop_params]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


class Paginator:
    """One pagination style. ``parses_body``: where the next request comes from a page's body
    (a cursor), every page is parsed, even one whose bytes the page sink knows already."""

    parses_body = False

    def __init__(self, pagination: Any) -> None:
        self.pagination = pagination

    def walk(self, run: PageWalk, url: str, base: dict[str, str]) -> None:
        """Fetch every page of the list at ``url`` (``base``: the source's own parameters)."""
        raise NotImplementedError

    def first_params(self, base: dict[str, str]) -> dict[str, str]:
        """The parameters of the request for the first page (e.g. for a connection check)."""
        pag = self.pagination
        params = dict(base)
        if getattr(pag, "size_param", None):
            params[pag.size_param] = str(pag.size)
        return params


class SinglePaginator(Paginator):
    """All records in one answer."""

    def walk(self, run: PageWalk, url: str, base: dict[str, str]) -> None:
        run.fetch(url, base)


class PageNumberPaginator(Paginator):
    """``page=1, 2, ...`` (and the page size, when the provider takes one) until an empty or
    short page; the next page is asked for while the current one is stored."""

    def walk(self, run: PageWalk, url: str, base: dict[str, str]) -> None:
        pag: PageNumberPagination = self.pagination

        def page_request(k: int) -> Request:
            params = {**base, pag.page_param: str(pag.first_page + k)}
            if pag.size_param:
                params[pag.size_param] = str(pag.size)
            return url, params

        run.read_ahead(page_request, pag.size if pag.size_param is not None else None)

    def first_params(self, base: dict[str, str]) -> dict[str, str]:
        return {**super().first_params(base), self.pagination.page_param: str(self.pagination.first_page)}


class OffsetPaginator(Paginator):
    """``offset=0, size, 2*size, ...`` with ``limit=size`` until an empty page, or a short one
    that the request for the records right after it confirms as the last."""

    def walk(self, run: PageWalk, url: str, base: dict[str, str]) -> None:
        pag: OffsetPagination = self.pagination

        def offset_request(start: int) -> Request:
            return url, {**base, pag.offset_param: str(start), pag.limit_param: str(pag.size)}

        # pages continue only when full, so page k starts at k * size
        run.read_ahead(
            lambda k: offset_request(k * pag.size),
            pag.size,
            check=lambda k, count: offset_request(k * pag.size + count),
        )

    def first_params(self, base: dict[str, str]) -> dict[str, str]:
        pag = self.pagination
        return {**base, pag.offset_param: "0", pag.limit_param: str(pag.size)}


class CursorPaginator(Paginator):
    """The next request carries the cursor found at ``cursor_path`` in the page's body; an
    absent or empty cursor, or a page without records, ends the list."""

    parses_body = True

    def walk(self, run: PageWalk, url: str, base: dict[str, str]) -> None:
        pag: CursorPagination = self.pagination
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params = dict(base)
            if pag.size_param:
                params[pag.size_param] = str(pag.size)
            if cursor is not None:
                params[pag.cursor_param] = cursor
            count, body, _ = run.fetch(url, params)
            if count == 0:  # some providers hand out a next cursor with an empty page
                break
            try:
                value = at_path(body, pag.cursor_path)
            except KeyError:
                value = None
            if value is None or value == "" or value is False:
                break
            if isinstance(value, (dict, list)):
                raise run.error(run.pages, f"cursor at {pag.cursor_path!r} is a JSON {json_kind(value)}")
            cursor = str(value)
            if cursor in seen:
                raise run.error(run.pages, "the provider returned a cursor it returned before (loop)")
            seen.add(cursor)


class LinkHeaderPaginator(Paginator):
    """RFC 8288 ``Link: <...>; rel="next"``, followed on the provider's own site only (the
    credentials go with it); the next page is asked for before the current one is parsed."""

    def walk(self, run: PageWalk, url: str, base: dict[str, str]) -> None:
        pag: LinkHeaderPagination = self.pagination
        params = dict(base)
        if pag.size_param:
            params[pag.size_param] = str(pag.size)
        next_url: str = url
        visited: set[str] = set()
        response: requests.Response | None = None
        while True:
            if response is None:
                response = run.get(run.pages + 1, next_url, params)
            link = response.links.get("next", {}).get("url")
            following: str | None = None
            if link:
                # Follow the link as given, minus any secret parameters (we add our own),
                # and only on the provider's own site: our credentials go with it.
                following = strip_url(urljoin(response.url, link), run.secret_params)
                if not same_site(url, following):
                    raise run.error(
                        run.pages + 1,
                        "the Link header points to another host; not followed (the source's "
                        "credentials would be sent there)",
                        permanent=True,
                    )
                if following in visited:
                    raise run.error(run.pages + 1, "the Link header points back to a page already fetched")
                visited.add(following)
            # the next page's address is in this page's headers: ask for it before parsing
            pending = run.ahead(following, {}) if following else None
            run.fetch(next_url, params, first=response)
            if following is None:
                break
            next_url, params = following, {}
            response = run.take(pending)


#: The strategy of each catalog pagination model.
PAGINATORS: dict[type, type[Paginator]] = {
    SinglePage: SinglePaginator,
    PageNumberPagination: PageNumberPaginator,
    OffsetPagination: OffsetPaginator,
    CursorPagination: CursorPaginator,
    LinkHeaderPagination: LinkHeaderPaginator,
}


def paginator_for(pagination: Any) -> Paginator:
    """The paginator of a catalog pagination model."""
    try:
        return PAGINATORS[type(pagination)](pagination)
    except KeyError:
        raise TypeError(f"unsupported pagination {type(pagination).__name__}") from None
