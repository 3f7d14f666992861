"""Auth strategies of the connectors: how a request carries a source's credentials.

What belongs here: one small class per auth type of the catalog (``none``, ``basic``,
``header``, ``query``, ``oauth2_client_credentials``) with one interface -- :meth:`AuthStrategy.
apply` adds the credentials to a request's parameters and headers, :meth:`AuthStrategy.
renew_after_401` says whether a request refused with a 401 is worth sending once more -- and
:func:`auth_strategy`, which builds the strategy of a catalog auth model. OAuth2 client
credentials (:class:`OAuth2ClientCredentials`) fetch an access token from the token URL (the
client id and secret from environment variables, sent with HTTP Basic or as form fields),
cache it until shortly before it expires, and drop it after a 401 so that the next request gets
a new one; it is shared safely by the threads of one extract. Secret values are read from the
environment when first needed, registered for redaction, and never logged or stored.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import requests

from attendee_pipeline.connectors.http import RetryStats, make_session, redact, resolve_secret

#: Renew a token this long before it expires (at most a tenth of its lifetime).
RENEW_MARGIN_SECONDS = 60.0
#: The lifetime assumed for a token whose answer gives none (``expires_in``).
DEFAULT_LIFETIME_SECONDS = 3600.0


class AuthError(RuntimeError):
    """Credentials could not be had: ``step`` is ``credentials`` (a variable is not set: no
    retry will fix it) or ``token`` (the token request failed); ``status`` is its HTTP status."""

    def __init__(self, step: str, problem: str, status: int | None = None) -> None:
        self.step = step
        self.problem = redact(problem)
        self.status = status
        super().__init__(f"{step}: {self.problem}")

    @property
    def permanent(self) -> bool:
        return self.step == "credentials"


class AuthStrategy:
    """No credentials: requests go out as they are."""

    #: The environment variables the credentials come from (named in an error's hint).
    env_names: tuple[str, ...] = ()
    #: Query parameter names that carry a secret (dropped from URLs that are shown or followed).
    secret_params: frozenset[str] = frozenset()

    def apply(self, params: dict[str, str], headers: dict[str, str] | None) -> dict[str, Any]:
        """``requests`` keyword arguments (``params``, ``headers``, ``auth``) for a request with
        these parameters and headers. Raises :class:`AuthError` when credentials cannot be had."""
        return {"params": params or None, "headers": headers or None, "auth": None}

    def renew_after_401(self, sent: dict[str, Any]) -> bool:
        """After a request sent with ``sent`` (what :meth:`apply` gave) was refused with a 401:
        whether sending it once more, with :meth:`apply` again, may succeed."""
        return False

    def close(self) -> None:
        """Release what the strategy holds (the token request's connections)."""


class BasicStrategy(AuthStrategy):
    """HTTP Basic: a username (given, or from a variable) and a password from a variable."""

    def __init__(self, username: str | None, username_env: str | None, password_env: str) -> None:
        self.env_names = tuple(n for n in (username_env, password_env) if n)
        name = username if username is not None else resolve_secret(username_env or "")
        self._basic = (name, resolve_secret(password_env))

    def apply(self, params: dict[str, str], headers: dict[str, str] | None) -> dict[str, Any]:
        return {"params": params or None, "headers": headers or None, "auth": self._basic}

    def __repr__(self) -> str:  # never show values
        return f"BasicStrategy(env_names={self.env_names!r})"


class HeaderStrategy(AuthStrategy):
    """Secrets sent as request headers (header name -> variable)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.env_names = tuple(headers.values())
        self._headers = {name: resolve_secret(env) for name, env in headers.items()}

    def apply(self, params: dict[str, str], headers: dict[str, str] | None) -> dict[str, Any]:
        return {"params": params or None, "headers": {**headers, **self._headers} if headers else self._headers,
                "auth": None}

    def __repr__(self) -> str:
        return f"HeaderStrategy(env_names={self.env_names!r})"


class QueryStrategy(AuthStrategy):
    """Secrets sent as query parameters (parameter -> variable)."""

    def __init__(self, params: dict[str, str]) -> None:
        self.env_names = tuple(params.values())
        self.secret_params = frozenset(params)
        self._params = {name: resolve_secret(env) for name, env in params.items()}

    def apply(self, params: dict[str, str], headers: dict[str, str] | None) -> dict[str, Any]:
        return {"params": {**params, **self._params}, "headers": headers or None, "auth": None}

    def __repr__(self) -> str:
        return f"QueryStrategy(env_names={self.env_names!r})"


@dataclass
class TokenStats:
    """What an OAuth2 strategy did (for the manifest and the run's metadata)."""

    token_requests: int = 0
    renewed_before_expiry: int = 0
    renewed_after_401: int = 0

    @property
    def renewed(self) -> int:
        return self.renewed_before_expiry + self.renewed_after_401


def error_code(response: requests.Response) -> str:
    """The OAuth2-style ``error`` of a JSON answer (e.g. ``invalid_client``), or ""."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


class OAuth2ClientCredentials(AuthStrategy):
    """OAuth2 client credentials (RFC 6749 4.4): ``grant_type=client_credentials`` POSTed to
    ``token_url`` with the client id and secret from the named variables -- as HTTP Basic
    (``client_auth="basic"``, the RFC's default) or as form fields (``"form"``) -- and the
    access token sent as ``Authorization: Bearer``. The token is kept until ``renew_margin``
    seconds (at most a tenth of its lifetime) before it expires; after a 401 it is dropped once
    per token, so that the request is sent again with a new one. ``url_setting`` names the
    catalog setting the token URL comes from, for the hint of an error. The token request is
    retried like a GET (429, 5xx, connection errors: it is safe to repeat); ``stats`` counts
    those retries."""

    def __init__(
        self,
        token_url: str,
        client_id_env: str,
        client_secret_env: str,
        *,
        client_auth: Literal["basic", "form"] = "basic",
        scope: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_factor: float = 0.5,
        backoff_max: float = 60.0,
        renew_margin: float = RENEW_MARGIN_SECONDS,
        stats: RetryStats | None = None,
        url_setting: str = "token_url",
    ) -> None:
        self.token_url = token_url
        self.client_id_env = client_id_env
        self.client_secret_env = client_secret_env
        self.env_names = (client_id_env, client_secret_env)
        self.client_auth = client_auth
        self.scope = scope
        self.timeout = timeout
        self.renew_margin = renew_margin
        self.url_setting = url_setting
        self.stats = TokenStats()
        self._session = make_session(
            max_retries=max_retries, backoff_factor=backoff_factor, backoff_max=backoff_max,
            stats=stats, pool_maxsize=1, methods=frozenset({"POST"}),
        )
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(token_url={self.token_url!r}, env_names={self.env_names!r})"

    def close(self) -> None:
        self._session.close()

    def credentials(self) -> tuple[str, str]:
        """The client id and secret; AuthError (step ``credentials``) naming an unset variable."""
        from attendee_pipeline.connectors.http import MissingSecretError

        try:
            return resolve_secret(self.client_id_env), resolve_secret(self.client_secret_env)
        except MissingSecretError as exc:
            raise AuthError("credentials", str(exc)) from None

    def token(self) -> str:
        """The cached access token, fetched when there is none or it is about to expire."""
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            if self._token is not None:
                self.stats.renewed_before_expiry += 1
            return self._new_token()

    def share(self, other: "OAuth2ClientCredentials") -> None:
        """Start with ``other``'s current token (fetched first if need be)."""
        token = other.token()
        with self._lock:
            self._token, self._expires_at = token, other._expires_at

    def apply(self, params: dict[str, str], headers: dict[str, str] | None) -> dict[str, Any]:
        bearer = {"Authorization": f"Bearer {self.token()}"}
        return {"params": params or None, "headers": {**headers, **bearer} if headers else bearer, "auth": None}

    def renew_after_401(self, sent: dict[str, Any]) -> bool:
        # the token expired or was revoked on the server's side: a new one, once per token (a
        # second thread refused with the same token finds it renewed already)
        used = (sent.get("headers") or {}).get("Authorization", "")
        with self._lock:
            if self._token is not None and used == f"Bearer {self._token}":
                self._token = None
                self.stats.renewed_after_401 += 1
        return True

    def _new_token(self) -> str:
        client_id, secret = self.credentials()
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        auth = None
        if self.client_auth == "form":
            data.update(client_id=client_id, client_secret=secret)
        else:
            auth = (client_id, secret)
        url = self.token_url
        self.stats.token_requests += 1
        try:
            response = self._session.post(
                url, data=data, auth=auth, headers={"Accept": "application/json"}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise AuthError("token", f"cannot reach {url} ({type(exc).__name__}) -- check the {self.url_setting}") from None
        status = response.status_code
        code = error_code(response)
        if status in (400, 401) and code in ("invalid_client", "unauthorized_client", "invalid_grant", ""):
            raise AuthError(
                "token",
                f"the client credentials were refused (HTTP {status} {code or 'error'}) -- check the "
                f"environment variables {self.client_id_env} and {self.client_secret_env}",
                status,
            )
        if status == 404:
            raise AuthError("token", f"no OAuth2 token endpoint at {url} (HTTP 404) -- check the {self.url_setting}", status)
        if not 200 <= status < 300:
            raise AuthError("token", f"the token request failed with HTTP {status}{' ' + code if code else ''}", status)
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise AuthError(
                "token", f"{url} did not answer with an OAuth2 access token -- check the {self.url_setting}"
            ) from None
        try:
            lifetime = float(body.get("expires_in", DEFAULT_LIFETIME_SECONDS))
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME_SECONDS
        margin = min(self.renew_margin, lifetime / 10)
        self._token, self._expires_at = token, time.monotonic() + lifetime - margin
        return token


def auth_strategy(auth: Any, **token_kwargs: Any) -> AuthStrategy:
    """The strategy of a catalog auth model (``source.auth``). Static credentials are read
    from the environment here (MissingSecretError naming the variable); an OAuth2 client's
    when its first token is fetched. ``token_kwargs`` go to :class:`OAuth2ClientCredentials`
    (timeout, retry policy, retry stats)."""
    kind = getattr(auth, "type", "none")
    if kind == "none":
        return AuthStrategy()
    if kind == "basic":
        return BasicStrategy(auth.username, auth.username_env, auth.password_env)
    if kind == "header":
        return HeaderStrategy(dict(auth.headers))
    if kind == "query":
        return QueryStrategy(dict(auth.params))
    if kind == "oauth2_client_credentials":
        return OAuth2ClientCredentials(
            auth.token_url, auth.client_id_env, auth.client_secret_env,
            client_auth=auth.client_auth, scope=auth.scope, **token_kwargs,
        )
    raise TypeError(f"unsupported auth {type(auth).__name__}")
