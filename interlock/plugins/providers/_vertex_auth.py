"""OAuth2 access tokens for Google Cloud (Vertex AI), cached and refreshed off the event loop.

Vertex AI takes ``Authorization: Bearer <access token>``; the token comes from a
service-account key file or from application default credentials, through the
``google-auth`` library (the optional ``vertex`` extra). Loading credentials
and refreshing them are blocking calls (``requests`` underneath), so they run
in a worker thread; one :class:`asyncio.Lock` makes concurrent requests share a
single refresh. A token is reused until less than :data:`REFRESH_MARGIN`
seconds remain, and dropped early when the API answers 401 with it.

The token is a credential: it is never logged, and error messages carry only
what the token endpoint said (which never echoes it).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import time
from typing import Any

from interlock.provider_api import UpstreamError

#: the OAuth scope every Vertex AI call needs
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: refresh a token when fewer seconds than this remain (Google's tokens live an hour)
REFRESH_MARGIN = 300.0
INSTALL_HINT = "pip install 'interlock[vertex]'"


def google_auth_missing() -> str | None:
    """Why google-auth cannot be used (a message naming the extra to install), or None when it can."""
    try:
        import google.auth
        import google.auth.transport.requests  # noqa: F401
        import requests  # noqa: F401
    except ImportError as exc:
        return f"Vertex AI authentication needs google-auth and requests ({exc.name} is missing): {INSTALL_HINT}"
    return None


class AccessTokens:
    """A cached OAuth2 access token for one provider instance.

    ``credentials_file`` is a service-account key JSON; without it, application
    default credentials are used (``google.auth.default``: the
    ``GOOGLE_APPLICATION_CREDENTIALS`` file, gcloud's user credentials, or the
    metadata server). ``timeout`` bounds each HTTP call to the token endpoint.
    """

    def __init__(
        self, name: str, credentials_file: str | None, *, timeout: float, refresh_margin: float = REFRESH_MARGIN
    ) -> None:
        self.name = name
        self.credentials_file = credentials_file
        self.timeout = timeout
        self.refresh_margin = refresh_margin
        self.fetches = 0  # tokens obtained so far (for health output and tests)
        self._credentials: Any = None  # google.auth.credentials.Credentials, loaded on first use
        self._token: str | None = None
        self._expires_at: float | None = None  # epoch seconds; None: the credentials gave no expiry
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        if self._token is None:
            return False
        return self._expires_at is None or self._expires_at - time.time() > self.refresh_margin

    async def token(self) -> str:
        """A valid access token, fetching a new one when the cached one is missing or about to expire."""
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._fresh():  # another request may have refreshed while this one waited
                token, expires_at = await asyncio.to_thread(self._refresh)
                self._token, self._expires_at = token, expires_at
                self.fetches += 1
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the API rejected it); the next request fetches a new one."""
        if self._token == token:
            self._token = None

    # -- blocking part: runs in a worker thread ------------------------------------------- #

    def _refresh(self) -> tuple[str, float | None]:
        try:
            import google.auth
            import google.auth.exceptions
            import google.auth.transport.requests
            import requests
        except ImportError:
            raise UpstreamError(f"{self.name}: {google_auth_missing()}", kind="internal") from None
        errors = google.auth.exceptions
        try:
            if self._credentials is None:
                self._credentials = self._load()
            with requests.Session() as session:
                self._credentials.refresh(_timed_request_class()(session, self.timeout))
        except errors.RefreshError as exc:
            # the token endpoint answered with an error: a revoked or wrong key is an auth failure,
            # a retryable one (5xx after google-auth's own retries) a server error
            status = 502 if exc.retryable else 401
            raise UpstreamError(
                f"{self.name}: could not get an access token: {exc.args[0] if exc.args else exc}",
                kind="http", status=status, error_type="UNAUTHENTICATED" if status == 401 else None,
            ) from None
        except errors.TransportError as exc:
            raise UpstreamError(
                f"{self.name}: could not reach the token endpoint ({type(exc.__cause__ or exc).__name__})",
                kind="connection",
            ) from None
        except (errors.GoogleAuthError, OSError, ValueError) as exc:
            # no application default credentials, an unreadable or malformed key file
            raise UpstreamError(
                f"{self.name}: no usable Google credentials ({type(exc).__name__}: {exc})",
                kind="http", status=401, error_type="UNAUTHENTICATED",
            ) from None
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"{self.name}: the credentials produced no access token", kind="http", status=401)
        return token, _epoch(self._credentials.expiry)

    def _load(self) -> Any:
        import google.auth
        from google.oauth2 import service_account

        if self.credentials_file:
            # google-auth ships py.typed but leaves this classmethod unannotated
            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                self.credentials_file, scopes=list(SCOPES)
            )
        # GOOGLE_APPLICATION_CREDENTIALS (any credential type), gcloud's user credentials, the metadata server
        credentials, _project = google.auth.default(scopes=list(SCOPES))
        return credentials


def _epoch(expiry: datetime.datetime | None) -> float | None:
    """google-auth keeps expiry as a naive UTC datetime."""
    if expiry is None:
        return None
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return expiry.timestamp()


@functools.cache
def _timed_request_class() -> type:
    """google-auth's requests transport with our timeout instead of its 120 s default (built on first use,
    so importing this module never needs google-auth)."""
    from google.auth.transport.requests import Request

    class TimedRequest(Request):
        def __init__(self, session: Any, timeout: float) -> None:
            super().__init__(session)
            self._timeout = timeout

        def __call__(
            self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
            timeout: float | None = None, **kwargs: Any,
        ) -> Any:
            # google-auth's Request.__call__ is unannotated although the package ships py.typed
            return super().__call__(  # type: ignore[no-untyped-call]
                url, method=method, body=body, headers=headers, timeout=timeout or self._timeout, **kwargs
            )

    return TimedRequest
