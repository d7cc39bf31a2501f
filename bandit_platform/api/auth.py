"""App authentication: `X-API-Key` header, verified once per request, scope checked per route."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from bandit_platform.domain.access import AppIdentity, Scope
from bandit_platform.service.apikeys import ApiKeyService

API_KEY_HEADER = "X-API-Key"


def api_key_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Require a valid API key carrying the route's `scope` (set in the handler's `opt`)."""
    secret = connection.headers.get(API_KEY_HEADER)
    if not secret:
        raise NotAuthorizedException(f"missing {API_KEY_HEADER} header")
    service: ApiKeyService = connection.app.state.api_keys
    identity = service.verify(secret)
    if identity is None:
        raise NotAuthorizedException("invalid or revoked API key")
    scope = handler.opt.get("scope")
    if scope is not None and Scope(scope) not in identity.scopes:
        raise PermissionDeniedException(f"this API key lacks the {scope!r} scope")
    connection.state.app_identity = identity


def provide_identity(request: ASGIConnection[Any, Any, Any, Any]) -> AppIdentity:
    """The authenticated app (set by `api_key_guard`)."""
    identity: AppIdentity = request.state.app_identity
    return identity
