"""The web UI's pages under `/ui`: sign-in, experiments, an experiment's dashboard, users.

Each handler calls the service layer directly (never the `/v1` app API) and renders a Jinja
template from `web/templates`. `ui_guard` runs before every page (session, role, CSRF).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import ResponseHeader
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import Body, FromPath, FromQuery
from litestar.response import File, Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from bandit_platform.api.errors import problem
from bandit_platform.api.ui import charts
from bandit_platform.api.ui.assets import plotly_js
from bandit_platform.api.ui.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    current_session,
    login_csrf_cookie,
    safe_next,
    session_cookie,
    ui_guard,
    ui_session,
    wants_html,
)
from bandit_platform.domain.errors import DomainError
from bandit_platform.domain.users import Permission, UiSession
from bandit_platform.service import reports
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.users import UserService
from bandit_platform.settings import Settings

#: No script, style, image or connection from anywhere but this server: the UI works offline
#: and leaks nothing to third parties. plotly sets inline styles, hence `'unsafe-inline'` for
#: styles only; scripts are files served from here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]


@dataclass
class LoginForm:
    """The sign-in form."""

    username: str = ""
    password: str = ""
    csrf_token: str = ""
    next: str = ""


Form = Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def _settings(request: Request[Any, Any, Any]) -> Settings:
    settings: Settings = request.app.state.platform.settings
    return settings


def _page(
    request: Request[Any, Any, Any], name: str, status_code: int = 200, **context: Any
) -> Template:
    session: UiSession | None = getattr(request.state, "ui_session", None)
    return Template(
        template_name=name,
        context={
            "user": session.user if session else None,
            "csrf_field": CSRF_FIELD,
            "csrf_token": session.csrf_token if session else "",
            "Permission": Permission,
            **context,
        },
        status_code=status_code,
    )


def _login_page(
    request: Request[Any, Any, Any],
    *,
    username: str = "",
    error: str | None = None,
    next_path: str = "",
    status_code: int = 200,
) -> Template:
    token = secrets.token_urlsafe(32)
    page = _page(
        request,
        "login.html",
        status_code=status_code,
        login_csrf=token,
        username=username,
        error=error,
        next_path=next_path,
    )
    page.cookies.append(login_csrf_cookie(_settings(request), token))
    return page


class SignInController(Controller):
    """Sign in and out."""

    path = "/"

    @get("/", opt={"public": True}, include_in_schema=False)
    async def home(self) -> Redirect:
        """The UI starts at the experiment list."""
        return Redirect(path="/ui/experiments", status_code=HTTP_303_SEE_OTHER)

    @get("/login", opt={"public": True}, include_in_schema=False)
    async def login_form(
        self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None
    ) -> Response[Any]:
        """The sign-in form (or straight on, when already signed in)."""
        if await current_session(request) is not None:
            return Redirect(path=safe_next(next), status_code=HTTP_303_SEE_OTHER)
        return _login_page(request, next_path=next or "")

    @post("/login", opt={"public": True}, sync_to_thread=True, include_in_schema=False)
    def login(self, request: Request[Any, Any, Any], data: Form) -> Response[Any]:
        """Check the password; on success start a session and go on."""
        users: UserService = request.app.state.users
        user = users.authenticate(data.username, data.password)
        if user is None:
            return _login_page(
                request,
                username=data.username[:64],
                error="Wrong username or password.",
                next_path=data.next,
            )
        new = users.start_session(user)
        settings = _settings(request)
        response = Redirect(path=safe_next(data.next), status_code=HTTP_303_SEE_OTHER)
        response.cookies.append(
            session_cookie(settings, new.token, int(settings.ui_session_hours * 3600))
        )
        response.cookies.append(login_csrf_cookie(settings, "", max_age=0))
        return response

    @post("/logout", sync_to_thread=True, include_in_schema=False)
    def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        """End the session everywhere (it is revoked in the database)."""
        users: UserService = request.app.state.users
        users.end_session(request.cookies.get(SESSION_COOKIE, ""))
        response = Redirect(path="/ui/login", status_code=HTTP_303_SEE_OTHER)
        response.cookies.append(session_cookie(_settings(request), "", max_age=0))
        return response


def _headline(report: reports.ExperimentReport) -> Any:
    """Bandit vs holdout at the learning horizon, or None."""
    if not report.horizons:
        return None
    for comparison in report.horizons[0].comparisons:
        if comparison.control == "holdout":
            return comparison
    return None


class ExperimentPages(Controller):
    """The experiment list and each experiment's dashboard (any role may view)."""

    path = "/experiments"
    opt = {"permission": Permission.VIEW}

    @get("/", sync_to_thread=True, include_in_schema=False)
    def experiments(self, request: Request[Any, Any, Any]) -> Template:
        """Every experiment with status, version, decisions and the headline lift."""
        platform = request.app.state.platform
        rows = []
        for view in ExperimentService(platform).all():
            report = reports.experiment_report(platform, view.key)
            rows.append({"view": view, "report": report, "headline": _headline(report)})
        return _page(request, "experiments.html", rows=rows)

    @get("/{key:str}", sync_to_thread=True, include_in_schema=False)
    def dashboard(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        bucket: FromQuery[str] = "day",
        horizon: FromQuery[str | None] = None,
    ) -> Template:
        """Traffic, allocation, rewards, lifts, off-policy values, health and models."""
        platform = request.app.state.platform
        view = ExperimentService(platform).get(key)
        report = reports.experiment_report(platform, key, horizon=horizon)
        series = reports.time_series(platform, key, bucket=bucket, horizon=horizon)
        timeline = reports.model_timeline(platform, key)
        figures = {
            "traffic": charts.traffic_figure(series),
            "allocation": charts.allocation_figure(series),
            "reward": charts.reward_figure(series),
            "conversion": charts.reward_figure(series, conversion=True),
            "lift": charts.lift_figure(report),
            "models": charts.model_figure(timeline),
        }
        return _page(
            request,
            "dashboard.html",
            view=view,
            report=report,
            series=series,
            timeline=timeline,
            figures=figures,
            points={name: charts.figure_rows(f) for name, f in figures.items()},
            bucket=bucket,
            horizons=[h.horizon for h in report.horizons],
            horizon=series.horizon,
        )


class UserPages(Controller):
    """Who may sign in (admins only)."""

    path = "/admin/users"
    opt = {"permission": Permission.MANAGE_USERS}

    @get("/", sync_to_thread=True, include_in_schema=False)
    def users(self, request: Request[Any, Any, Any]) -> Template:
        """Users, roles and whether each is active."""
        return _page(request, "users.html", users=request.app.state.users.all())

    @post("/{username:str}/disable", sync_to_thread=True, include_in_schema=False)
    def disable(self, request: Request[Any, Any, Any], username: FromPath[str]) -> Redirect:
        """Disable a user; their sessions end at once."""
        session = ui_session(request)
        if username == session.user.username:
            raise PermissionDeniedException("you cannot disable yourself")
        request.app.state.users.disable(username, actor=session.user.actor)
        return Redirect(path="/ui/admin/users", status_code=HTTP_303_SEE_OTHER)


def _error_page(request: Request[Any, Any, Any], status: int, detail: str) -> Response[Any]:
    if not wants_html(request):
        return problem(status, detail)
    return _page(request, "error.html", status_code=status, status=status, detail=detail)


def _not_signed_in(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    if not wants_html(request):
        return problem(401, str(exc.detail))
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    # Only pages are worth coming back to; a form post is not replayed.
    back = f"?next={target}" if request.method == "GET" else ""
    response = Redirect(path=f"/ui/login{back}", status_code=HTTP_303_SEE_OTHER)
    response.cookies.append(session_cookie(_settings(request), "", max_age=0))
    return response


def _forbidden(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    return _error_page(request, 403, str(exc.detail))


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return _error_page(request, exc.status_hint, exc.message)


@get("/ui/vendor/plotly.min.js", include_in_schema=False, sync_to_thread=False)
def plotly_bundle() -> File:
    """The plotly.js bundle of the installed plotly package, served from here (no CDN)."""
    return File(
        path=plotly_js(),
        filename="plotly.min.js",
        media_type="text/javascript",
        content_disposition_type="inline",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def ui_router() -> Router:
    """Every `/ui` page behind `ui_guard`, with the UI's error pages and security headers."""
    return Router(
        path="/ui",
        route_handlers=[SignInController, ExperimentPages, UserPages],
        guards=[ui_guard],
        exception_handlers={
            NotAuthorizedException: _not_signed_in,
            PermissionDeniedException: _forbidden,
            DomainError: _domain_error,
        },
        response_headers=PAGE_HEADERS,
        include_in_schema=False,
    )
