"""The UI's security headers on every `/ui` response, error pages included.

The routers set them on the pages their handlers return; a response made by an exception
handler (403, 404, 429 pages, a redirect to sign-in) does not get a router's headers, so this
middleware adds whichever of them a `/ui` response lacks.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from bandit_platform.api.ui.pages import PAGE_HEADERS

_HEADERS = [(header.name, header.value or "") for header in PAGE_HEADERS]


def ui_security_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: add the UI's security headers that a `/ui` response lacks."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == ScopeType.HTTP else ""
        if not (path == "/ui" or path.startswith("/ui/")):
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in _HEADERS:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


__all__ = ["ui_security_headers"]
