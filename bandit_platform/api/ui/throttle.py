"""The page a locked sign-in gets: 429 with `Retry-After`, the same for every username (the
security headers come from `headers.ui_security_headers`)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from bandit_platform.api.errors import problem
from bandit_platform.api.ui.auth import wants_html
from bandit_platform.api.ui.pages import _page
from bandit_platform.service.users import SignInLocked


def sign_in_locked(request: Request[Any, Any, Any], exc: SignInLocked) -> Response[Any]:
    """429: the username is locked for a while; says nothing about whether it exists."""
    response: Response[Any]
    if wants_html(request):
        response = _page(request, "error.html", status_code=429, status=429, detail=exc.message)
    else:
        response = problem(429, exc.message, exc.field)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


__all__ = ["sign_in_locked"]
