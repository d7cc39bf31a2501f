"""App authentication: `X-API-Key` header, verified once per request, scope checked per route,
and the key's rate limit.

A key verified within the last `API_KEY_CACHE_SECONDS` is found in memory; otherwise it is
looked up in a worker thread, so that the event loop never waits on the database. Only
authenticated requests count against a key's rate limit; a refused one (wrong scope) counts
too, since the key made it.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from bandit_platform.api.ratelimit import AsyncRateLimiter
from bandit_platform.domain.access import AppIdentity, Scope
from bandit_platform.service.apikeys import ApiKeyService, VerifiedKey

API_KEY_HEADER = "X-API-Key"
#: The longest header value that can be a key (longer ones are refused without a look-up).
MAX_API_KEY_LENGTH = 128


async def api_key_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Require a valid API key carrying the route's `scope` (set in the handler's `opt`),
    within its rate limit.

    Raises:
        NotAuthorizedException: no key, or an unknown or revoked one (401).
        RateLimitExceeded: the key used up this second's budget (429, `Retry-After`).
        PermissionDeniedException: the key lacks the route's scope (403).
    """
    if getattr(connection.state, "app_identity", None) is not None:
        return _check_scope(connection.state.app_identity, handler)  # guarded twice: once
    secret = connection.headers.get(API_KEY_HEADER)
    if not secret:
        raise NotAuthorizedException(f"missing {API_KEY_HEADER} header")
    service: ApiKeyService = connection.app.state.api_keys
    found: VerifiedKey | None = None
    if len(secret) <= MAX_API_KEY_LENGTH:
        found = service.cached(secret)
        if found is None:
            found = await anyio.to_thread.run_sync(service.authenticate, secret)
    if found is None:
        raise NotAuthorizedException("invalid or revoked API key")
    identity = found.identity
    limiter: AsyncRateLimiter | None = connection.app.state.get("rate_limiter")
    if limiter is not None:
        await limiter.enforce(identity.api_key_id, found.rate_limit_per_second)
    connection.state.app_identity = identity
    _check_scope(identity, handler)


def _check_scope(identity: AppIdentity, handler: BaseRouteHandler) -> None:
    scope = handler.opt.get("scope")
    if scope is not None and Scope(scope) not in identity.scopes:
        raise PermissionDeniedException(f"this API key lacks the {scope!r} scope")


def provide_identity(request: ASGIConnection[Any, Any, Any, Any]) -> AppIdentity:
    """The authenticated app (set by `api_key_guard`)."""
    identity: AppIdentity = request.state.app_identity
    return identity
