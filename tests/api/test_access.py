"""Access controls over every route: API keys and scopes on `/v1`, sessions and roles on `/ui`,
closed CORS, no internals in errors, the UI's security headers.

The route tests enumerate `app.routes`, so a route added without its guard fails them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from bandit_platform.api.app import create_app
from bandit_platform.api.auth import api_key_guard
from bandit_platform.api.ui.auth import ui_guard
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import Scope
from bandit_platform.domain.users import ROLE_PERMISSIONS, Permission, Role
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.users import UserService
from bandit_platform.settings import Settings
from tests.conftest import PSEUDONYM_KEY, Demo

Client = TestClient[Litestar]
PASSWORD = "correct horse battery staple"  # pragma: allowlist secret
PROBLEM = "application/problem+json"
#: Routes anyone may call: liveness and readiness, the OpenAPI schema.
PUBLIC_API = re.compile(r"^/(health/(live|ready)|schema(/.*)?)$")
#: UI routes without a session: the sign-in page, the start (a redirect to the experiment
#: list) and static files (no data in them).
PUBLIC_UI = {
    ("GET", "/ui"),
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("GET", "/ui/static/{file_path:path}"),
    ("GET", "/ui/vendor/plotly.min.js"),
}
#: UI posts that a viewer may make: signing out and trying a rule against a sample context
#: (nothing is stored). Any other post needs more than viewing.
VIEWER_POSTS = {"/ui/logout", "/ui/experiments/{key:str}/rules"}
#: Methods that only describe a route (OPTIONS answers with `Allow`; HEAD only on static files).
DESCRIPTIVE = {"OPTIONS", "HEAD"}


def _endpoints(app: Litestar) -> list[tuple[str, str, HTTPRouteHandler]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods - DESCRIPTIVE):
                found.append((method, route.path, handler))
    assert found
    return found


def _concrete(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name, kind = match.group(1), match.group(2)
        if kind == "int":
            return "1"
        return DEMO_EXPERIMENT_KEY if name == "key" else "x"

    return re.sub(r"\{(\w+):(\w+)\}", value, path)


def _send(client: Client, method: str, path: str, **kwargs: Any) -> Any:
    if method in {"POST", "PUT", "PATCH"}:
        kwargs.setdefault("json", {})
    return client.request(method, _concrete(path), **kwargs)


@pytest.fixture(params=["standard", "simulation"])
def any_app(request: pytest.FixtureRequest, demo: Demo, settings: Settings) -> Iterator[Client]:
    """The app as it serves, and in simulation mode (which adds `/v1/simulation`)."""
    if request.param == "standard":
        app = create_app(settings, demo.platform)
    else:
        app = create_app(
            Settings(
                database_url=settings.database_url, pseudonym_key=PSEUDONYM_KEY, simulation_seed=7
            )
        )
    with TestClient(app=app, raise_server_exceptions=False) as client:
        client.follow_redirects = False
        yield client


def test_every_api_route_needs_a_key_with_its_scope(any_app: Client, demo: Demo) -> None:
    app = any_app.app
    keys = ApiKeyService(demo.platform)
    lacking = {
        scope: keys.create(f"all-but-{scope}", set(Scope) - {scope}).secret for scope in Scope
    }
    failures = []
    checked = 0
    for method, path, handler in _endpoints(app):
        if not path.startswith("/v1") and not PUBLIC_API.match(path) and path.split("/")[1] != "ui":
            failures.append(f"{method} {path}: outside /v1, /ui, /health and /schema")
        if not path.startswith("/v1"):
            continue
        checked += 1
        if api_key_guard not in handler.resolve_guards():
            failures.append(f"{method} {path}: no api_key_guard")
        scope = handler.opt.get("scope")
        if scope is None:
            failures.append(f"{method} {path}: no scope")
            continue
        anonymous = _send(any_app, method, path)
        if anonymous.status_code != 401:
            failures.append(f"{method} {path} without a key: {anonymous.status_code}")
        forged = _send(any_app, method, path, headers={"X-API-Key": "bpk_000000000000_forged"})
        if forged.status_code != 401:
            failures.append(f"{method} {path} with a forged key: {forged.status_code}")
        refused = _send(any_app, method, path, headers={"X-API-Key": lacking[Scope(scope)]})
        if refused.status_code != 403 or not refused.headers["content-type"].startswith(PROBLEM):
            failures.append(f"{method} {path} without scope {scope}: {refused.status_code}")
    assert not failures, "\n".join(failures)
    assert checked >= 20


def _sign_in(client: Client, username: str) -> str:
    page = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/ui/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)},
    )
    assert response.status_code == 303, response.text
    page = client.get("/ui/experiments")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def test_every_ui_route_needs_a_session_and_the_role_its_action_needs(
    client: Client, demo: Demo
) -> None:
    del client.headers["X-API-Key"]
    client.follow_redirects = False
    UserService(demo.platform).create("viewer", PASSWORD, Role.VIEWER, actor="test")
    failures = []
    ui_routes = [
        (method, path, handler)
        for method, path, handler in _endpoints(client.app)
        if path == "/ui" or path.startswith("/ui/")
    ]
    assert len(ui_routes) >= 20
    for method, path, handler in ui_routes:
        if (method, path) in PUBLIC_UI:
            continue
        if ui_guard not in handler.resolve_guards() or handler.opt.get("public"):
            failures.append(f"{method} {path}: not behind ui_guard")
        anonymous = _send(client, method, path, data={} if method == "POST" else None)
        if anonymous.status_code != 401:
            failures.append(f"{method} {path} anonymous: {anonymous.status_code}")
        if method == "GET":
            browser = _send(client, method, path, headers={"Accept": "text/html"})
            if browser.status_code != 303 or not browser.headers["location"].startswith(
                "/ui/login"
            ):
                failures.append(f"GET {path} anonymous browser: {browser.status_code}")

    csrf = _sign_in(client, "viewer")
    viewer = ROLE_PERMISSIONS[Role.VIEWER]
    allowed_posts = set()
    for method, path, handler in ui_routes:
        if (method, path) in PUBLIC_UI or path == "/ui/logout":
            continue
        permission = Permission(handler.opt.get("permission", Permission.VIEW))
        if permission in viewer:
            if method == "POST":
                allowed_posts.add(path)
            continue
        response = _send(client, method, path, headers={"X-CSRF-Token": csrf})
        if response.status_code != 403 or "does not allow" not in response.text:
            failures.append(f"{method} {path} as a viewer: {response.status_code}")
    if allowed_posts != VIEWER_POSTS - {"/ui/logout"}:
        failures.append(f"posts a viewer may make: {sorted(allowed_posts)}")
    assert not failures, "\n".join(failures)


# --- CORS, errors, headers -------------------------------------------------------------------


def test_cross_origin_requests_get_no_cors_headers(client: Client) -> None:
    evil = "https://evil.example"
    for path, method in (
        ("/v1/decisions", "POST"),
        ("/v1/experiments", "GET"),
        ("/ui/login", "POST"),
    ):
        preflight = client.options(
            path,
            headers={
                "Origin": evil,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "X-API-Key, Content-Type",
            },
        )
        assert not any(h.startswith("access-control-") for h in preflight.headers), (
            path,
            dict(preflight.headers),
        )
    response = client.get("/v1/experiments", headers={"Origin": evil})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers


@get("/v1/test-only/boom", sync_to_thread=False)
def _boom() -> None:
    raise RuntimeError("secret internals: /srv/bank/config.py password=hunter2")


def test_an_internal_error_is_a_500_without_internals(settings: Settings, demo: Demo) -> None:
    app = create_app(settings, demo.platform)
    assert app.debug is False
    app.register(_boom)
    with TestClient(app=app, raise_server_exceptions=False) as client:
        response = client.get("/v1/test-only/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 500
    assert "hunter2" not in response.text
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text


def test_ui_pages_carry_the_security_headers(client: Client, demo: Demo) -> None:
    del client.headers["X-API-Key"]
    client.follow_redirects = False
    UserService(demo.platform).create("viewer", PASSWORD, Role.VIEWER, actor="test")
    login = client.get("/ui/login")
    csrf = _sign_in(client, "viewer")
    pages = {
        "sign-in": login,
        "experiments": client.get("/ui/experiments"),
        "dashboard": client.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}"),
        "forbidden": client.get("/ui/admin/users", headers={"Accept": "text/html"}),
        "forbidden post": client.post(
            f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/status",
            data={"status": "paused", "csrf_token": csrf},
            headers={"Accept": "text/html"},
        ),
    }
    assert pages["forbidden"].status_code == pages["forbidden post"].status_code == 403
    for name, page in pages.items():
        headers = page.headers
        assert headers.get("content-security-policy", "").startswith("default-src 'self'"), name
        assert "frame-ancestors 'none'" in headers["content-security-policy"], name
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("referrer-policy") == "same-origin", name
        assert headers.get("cache-control") == "no-store", name
