"""The UI's sign-in guard: a session cookie (never an API key), a role check, and a CSRF token
on every request that changes state.

- The session cookie is HttpOnly (scripts cannot read it), SameSite=Strict (other sites'
  pages cannot make the browser send it), scoped to `/ui` (so it never reaches the app API
  under `/v1`), and Secure when `ui_secure_cookies` is set.
- Every POST must carry the session's CSRF token (form field `csrf_token` or header
  `X-CSRF-Token`); without it: 403. The sign-in form, which has no session yet, carries a
  token that must equal a cookie set with the form (double submit), against login CSRF.
- An `X-API-Key` header means nothing here: apps never sign in to the UI.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from bandit_platform.domain.users import Permission, UiSession
from bandit_platform.service.users import UserService
from bandit_platform.settings import Settings

SESSION_COOKIE: Final = "bp_session"
LOGIN_CSRF_COOKIE: Final = "bp_login_csrf"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
UI_PATH: Final = "/ui"
LOGIN_PATH: Final = "/ui/login"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def session_cookie(settings: Settings, token: str, max_age: int) -> Cookie:
    """The session cookie carrying `token` (empty with max_age 0 deletes it)."""
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        path=UI_PATH,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=settings.ui_secure_cookies,
    )


def login_csrf_cookie(settings: Settings, token: str, max_age: int = 3600) -> Cookie:
    """The cookie the sign-in form's CSRF token must match."""
    return Cookie(
        key=LOGIN_CSRF_COOKIE,
        value=token,
        path=LOGIN_PATH,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=settings.ui_secure_cookies,
    )


async def current_session(connection: ASGIConnection[Any, Any, Any, Any]) -> UiSession | None:
    """The live session of the request's cookie, or None."""
    token = connection.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    service: UserService = connection.app.state.users
    found: UiSession | None = await anyio.to_thread.run_sync(service.session, token)
    return found


async def _submitted_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get(CSRF_HEADER)
    if header:
        return header
    if isinstance(connection, Request):
        content_type = connection.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await connection.form()).get(CSRF_FIELD)
            return value if isinstance(value, str) else ""
    return ""


def _same(submitted: str, expected: str | None) -> bool:
    return bool(submitted and expected) and hmac.compare_digest(
        submitted.encode(), (expected or "").encode()
    )


async def ui_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Require a live session whose role grants the route's `permission` (handler `opt`,
    default `view`), and a CSRF token on every unsafe method.

    Routes with `opt={"public": True}` (the sign-in page) need no session; their unsafe
    methods need the sign-in form's double-submit token.

    Raises:
        NotAuthorizedException: no live session (the UI's handler redirects browsers to
            the sign-in page).
        PermissionDeniedException: the role lacks the permission, or the CSRF token is
            missing or wrong.
    """
    unsafe = connection.scope.get("method", "GET") not in _SAFE_METHODS
    if handler.opt.get("public"):
        if unsafe and not _same(
            await _submitted_token(connection), connection.cookies.get(LOGIN_CSRF_COOKIE)
        ):
            raise PermissionDeniedException("missing or wrong CSRF token; reload the page")
        return
    session = await current_session(connection)
    if session is None:
        raise NotAuthorizedException("sign in first")
    # Set before the checks below, so that their error pages still show who is signed in.
    connection.state.ui_session = session
    permission = Permission(handler.opt.get("permission", Permission.VIEW))
    if not session.user.may(permission):
        raise PermissionDeniedException(
            f"the role {session.user.role.value!r} does not allow this ({permission.value})"
        )
    if unsafe and not _same(await _submitted_token(connection), session.csrf_token):
        raise PermissionDeniedException("missing or wrong CSRF token; reload the page")


def ui_session(request: Request[Any, Any, Any]) -> UiSession:
    """The session `ui_guard` found for this request."""
    session: UiSession = request.state.ui_session
    return session


def wants_html(request: Request[Any, Any, Any]) -> bool:
    """Whether the client is a browser asking for a page (else it gets problem+json)."""
    return "text/html" in request.headers.get("accept", "")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path inside the UI, never another site."""
    if (
        target
        and target.startswith(f"{UI_PATH}/")
        and not target.startswith("//")
        and "\\" not in target
        and not target.startswith(LOGIN_PATH)
    ):
        return target
    return f"{UI_PATH}/experiments"


__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "current_session",
    "login_csrf_cookie",
    "safe_next",
    "session_cookie",
    "ui_guard",
    "ui_session",
    "wants_html",
]
