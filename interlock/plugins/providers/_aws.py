"""AWS plumbing for Bedrock, all through botocore: credentials, SigV4 signing, event-stream frames.

botocore is the optional ``bedrock`` extra and is imported lazily, so interlock
runs without it until a Bedrock provider is configured.

Credentials come from botocore's standard chain (env vars, shared config and
credentials files, SSO, ``credential_process``, web identity, container and
instance roles), resolved against the environment the gateway was started with
rather than always ``os.environ``, so tests stay isolated from a developer's
real AWS setup. Resolving can block (files, IMDS, STS, SSO), so it runs in a
worker thread, once per provider instance.

Refreshing: :class:`botocore.credentials.RefreshableCredentials` refresh
themselves inside ``get_frozen_credentials()``, which then blocks on the
network. Measured on this codebase's target (CPython 3.11): freezing
credentials that need no refresh costs ~9 µs, checking ``refresh_needed``
another ~9 µs, while a hop through ``asyncio.to_thread`` costs ~120 µs. So each
request freezes on the event loop while expiry is more than
:data:`REFRESH_MARGIN` away (longer than botocore's 15-minute advisory window,
so botocore never refreshes on that path), and in a worker thread otherwise.
Signing itself (CPU only) costs ~50 µs and stays on the loop.

botocore logs each canonical request at DEBUG, session token included; a filter on the
``botocore.auth`` logger masks the token, so enabling debug logging never leaks it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from interlock.provider_api import UpstreamError

INSTALL_HINT = "pip install 'interlock[bedrock]'"
#: freeze in a worker thread once expiry is closer than this (seconds); botocore refreshes at 15 min
REFRESH_MARGIN = 20 * 60
#: a failed credential lookup is not retried for this long (each try may probe IMDS for seconds)
NEGATIVE_TTL = 30.0
SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
_TOKEN_HEADER = re.compile(r"(x-amz-security-token:)[^\n]+", re.IGNORECASE)


class _MaskSessionToken(logging.Filter):
    """Masks the session token in the canonical requests botocore logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_HEADER.sub(r"\1****", a) if isinstance(a, str) else a for a in record.args
            )
        return True


_auth_log = logging.getLogger("botocore.auth")
if not any(isinstance(f, _MaskSessionToken) for f in _auth_log.filters):
    _auth_log.addFilter(_MaskSessionToken())


def botocore_missing() -> str | None:
    """Why botocore cannot be used (naming the extra to install), or None when it can."""
    if importlib.util.find_spec("botocore") is None:  # found without importing it (config time)
        return f"Bedrock needs botocore (SigV4 signing, event-stream decoding): {INSTALL_HINT}"
    return None


def preload() -> None:
    """Import the botocore modules requests use now (startup), not on the event loop later."""
    for module in ("botocore.auth", "botocore.awsrequest", "botocore.eventstream", "botocore.session"):
        importlib.import_module(module)


def _session(profile: str | None, environ: Mapping[str, str]) -> Any:
    """A botocore session whose config and credential chain read ``environ``, not ``os.environ``."""
    import botocore.configprovider as cp
    import botocore.credentials as bc
    import botocore.session

    session = botocore.session.Session(profile=profile)
    variables = getattr(cp, "BOTOCORE_DEFAUT_SESSION_VARIABLES", None)  # botocore's own spelling
    if variables is not None:
        factory = cp.ConfigChainFactory(session=session, environ=environ)
        mapping = {
            name: factory.create_config_chain(
                instance_name=name,
                env_var_names=env,
                config_property_names=conf,
                default=default,
                conversion_func=convert,
            )
            for name, (conf, env, default, convert) in variables.items()
        }
        session.register_component("config_store", cp.ConfigValueStore(mapping=mapping))
    resolver = bc.create_credential_resolver(session)
    chain: list[Any] = []
    for provider in resolver.providers:
        # the providers that read env vars directly get the gateway's environment instead
        if isinstance(provider, bc.EnvProvider):
            provider = bc.EnvProvider(environ=environ)
        elif isinstance(provider, bc.ContainerProvider):
            provider = bc.ContainerProvider(environ=environ)
        elif isinstance(provider, bc.OriginalEC2Provider):
            provider = bc.OriginalEC2Provider(environ=environ)
        elif isinstance(provider, bc.BotoProvider):
            provider = bc.BotoProvider(environ=environ)
        elif isinstance(provider, bc.InstanceMetadataProvider) and (
            str(environ.get("AWS_EC2_METADATA_DISABLED", "")).lower() == "true"
        ):
            continue  # the default fetcher would read the flag from os.environ
        chain.append(provider)
    resolver.providers = chain
    session.register_component("credential_provider", resolver)
    return session


def _credential_error(name: str, exc: Exception) -> UpstreamError:
    """A failed lookup or refresh: unreachable endpoints are connection failures, the rest auth."""
    import botocore.exceptions as be

    if isinstance(exc, (be.EndpointConnectionError, be.ConnectTimeoutError, be.ReadTimeoutError)):
        return UpstreamError(
            f"{name}: could not reach the AWS credential endpoint ({type(exc).__name__})", kind="connection"
        )
    return UpstreamError(
        f"{name}: AWS credentials unusable ({type(exc).__name__}: {exc})", kind="http", status=401
    )


class AwsCredentials:
    """The AWS credentials of one provider instance, resolved once and refreshed as needed."""

    def __init__(self, name: str, *, profile: str | None, environ: Mapping[str, str]) -> None:
        self.name = name
        self.profile = profile
        self.environ = environ
        self.resolutions = 0  # completed chain lookups (for tests and health output)
        self._credentials: Any = None  # botocore Credentials or RefreshableCredentials
        self._failed: tuple[float, UpstreamError] | None = None
        self._lock = asyncio.Lock()

    def _resolve(self) -> Any:
        import botocore.exceptions as be

        try:
            credentials = _session(self.profile, self.environ).get_credentials()
        except (be.BotoCoreError, be.ClientError) as exc:
            raise _credential_error(self.name, exc) from None
        if credentials is None:
            where = (
                f"profile {self.profile!r}"
                if self.profile
                else "the environment, shared files or instance role"
            )
            raise UpstreamError(
                f"{self.name}: no AWS credentials found in {where} (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run on a role)",
                kind="http",
                status=401,
            )
        return credentials

    async def _load(self) -> Any:
        async with self._lock:
            if self._credentials is not None:
                return self._credentials
            if self._failed is not None and time.monotonic() - self._failed[0] < NEGATIVE_TTL:
                failed = self._failed[1]  # a fresh error each time: the router annotates the one it gets
                raise UpstreamError(failed.message, kind=failed.kind, status=failed.status)
            try:
                self._credentials = await asyncio.to_thread(self._resolve)
            except UpstreamError as exc:
                self._failed = (time.monotonic(), exc)
                raise
            self._failed = None
            self.resolutions += 1
            return self._credentials

    def _freeze(self, credentials: Any) -> Any:
        import botocore.exceptions as be

        try:
            return credentials.get_frozen_credentials()
        except (be.BotoCoreError, be.ClientError) as exc:
            raise _credential_error(self.name, exc) from None

    async def frozen(self) -> Any:
        """A consistent ``ReadOnlyCredentials`` snapshot (access key, secret, token) to sign with."""
        credentials = self._credentials or await self._load()
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed(REFRESH_MARGIN):
            return await asyncio.to_thread(self._freeze, credentials)  # botocore may refresh: blocking
        return self._freeze(credentials)


def sign(credentials: Any, region: str, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` plus SigV4's ``X-Amz-Date``, ``Authorization`` (and ``X-Amz-Security-Token``) for a POST.

    ``url`` must be exactly what goes on the wire (path already percent-encoded).
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return {k: v for k, v in request.headers.items()}


def error_name(header: str | None) -> str | None:
    """The exception name in ``x-amzn-ErrorType`` (``ThrottlingException:http://internal...``)."""
    if not header:
        return None
    return header.split(":", 1)[0].rsplit("#", 1)[-1].strip() or None


async def iter_frames(
    content: aiohttp.StreamReader, name: str
) -> AsyncIterator[tuple[dict[str, Any], bytes]]:
    """``(headers, payload)`` of each AWS event-stream frame as the bytes arrive (CRCs checked).

    A frame that fails to decode raises a ``stream`` :class:`UpstreamError`; a trailing partial
    frame (a cut stream) is left for the caller to notice by the missing end event.
    """
    from botocore.eventstream import EventStreamBuffer, ParserError

    buffer = EventStreamBuffer()
    async for data in content.iter_any():
        buffer.add_data(data)
        while True:
            try:
                message = next(buffer)
            except StopIteration:
                break  # the rest of a frame is still on its way
            except ParserError as exc:
                raise UpstreamError(f"{name}: malformed event-stream frame ({exc})", kind="stream") from None
            yield message.headers, message.payload
