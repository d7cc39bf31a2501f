"""The web UI's pages under `/ui`: sign-in, experiments, an experiment's dashboard, users.

Each handler calls the service layer directly (never the `/v1` app API) and renders a Jinja
template from `web/templates`. `ui_guard` runs before every page (session, role, CSRF).
"""

from __future__ import annotations

import csv
import io
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, Final

from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import ResponseHeader, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import Body, FromPath, FromQuery
from litestar.response import File, Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from litestar.utils.scope.state import ScopeState

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
from bandit_platform.domain.errors import DomainError, InvalidInput
from bandit_platform.domain.users import Permission, UiSession
from bandit_platform.evaluation import ope
from bandit_platform.service import policy_evaluation, reports
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.guardrails import GuardrailService
from bandit_platform.service.platform import Platform
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


@dataclass
class AuditUpload:
    """The fairness audit's form: the bank's CSV of protected groups."""

    groups: UploadFile | None = None
    csrf_token: str = ""


Upload = Annotated[AuditUpload, Body(media_type=RequestEncodingType.MULTI_PART)]

#: The largest protected-groups file the fairness form accepts (bytes).
MAX_AUDIT_UPLOAD: Final = 8 * 1024 * 1024
#: Recent decisions the integrity check recomputes.
INTEGRITY_SAMPLE: Final = 1000
#: How long the dashboard shows an integrity result before offering a new check (seconds).
INTEGRITY_CACHE_SECONDS: Final = 300.0

#: What each off-policy warning code means, for the legend under the table.
OPE_WARNINGS: Final = {
    ope.LOW_EFFECTIVE_SAMPLE_SIZE: (
        "the weights rest on few decisions (effective sample size below 1% of n or below "
        "the minimum): the interval understates the uncertainty"
    ),
    ope.LARGE_WEIGHT: (
        "some decision has a very large importance weight: the policy often chooses what "
        "the logging policy rarely did, so a few decisions dominate the estimate"
    ),
    ope.MEAN_WEIGHT_FAR_FROM_ONE: (
        "the mean importance weight is far from 1: the policy chooses offers the log "
        "barely covers, or the logged propensities are wrong"
    ),
    ope.NO_OVERLAP: "the policy never chooses a logged offer: the log says nothing about it",
    ope.ZERO_VARIANCE: "every decision contributes the same term: the interval is a point",
    ope.WEIGHT_BOUND_FROM_DATA: "the interval used the largest observed weight as its bound",
    ope.BOOTSTRAP_DEGENERATE: "some bootstrap resamples had no overlap and were left out",
    ope.EMPIRICAL_LIKELIHOOD_INFEASIBLE: "the likelihood interval could not be computed",
}


class IntegrityCache:
    """The newest integrity check per experiment, kept in memory for a few minutes so that
    the dashboard can show it without recomputing probability vectors on every load."""

    def __init__(self, seconds: float = INTEGRITY_CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._found: dict[tuple[int, str], tuple[float, policy_evaluation.IntegrityReport]] = {}

    def get(self, platform: Platform, key: str) -> policy_evaluation.IntegrityReport | None:
        """The cached report, or None when there is none or it is too old."""
        with self._lock:
            found = self._found.get((id(platform), key))
        if found is None or time.monotonic() - found[0] > self.seconds:
            return None
        return found[1]

    def check(self, platform: Platform, key: str) -> policy_evaluation.IntegrityReport:
        """Check now and remember the result."""
        report = policy_evaluation.check_integrity(platform, key, limit=INTEGRITY_SAMPLE)
        with self._lock:
            self._found[(id(platform), key)] = (time.monotonic(), report)
        return report


INTEGRITY: Final = IntegrityCache()


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
        segments = reports.segment_report(platform, key)
        segment_horizon = series.horizon
        figures = {
            "traffic": charts.traffic_figure(series),
            "allocation": charts.allocation_figure(series),
            "reward": charts.reward_figure(series),
            "conversion": charts.reward_figure(series, conversion=True),
            "lift": charts.lift_figure(report),
            "models": charts.model_figure(timeline),
            "segments": charts.segment_figure(segments, segment_horizon),
        }
        return _page(
            request,
            "dashboard.html",
            segments=segments,
            segment_horizon=segment_horizon,
            guardrails=GuardrailService(platform).report(key),
            integrity=INTEGRITY.get(platform, key),
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


def _versions(text: str | None) -> list[int]:
    """Snapshot versions from the form's comma- or space-separated list."""
    versions = []
    for part in (text or "").replace(",", " ").split():
        if not part.isdigit():
            raise InvalidInput("versions are whole numbers, e.g. 3, 5", field="versions")
        versions.append(int(part))
    return sorted(set(versions))[:10]


def _audit_rows(upload: UploadFile) -> list[dict[str, str]]:
    """The uploaded CSV's rows, read in memory only (values are never quoted in errors)."""
    raw = upload.file.read(MAX_AUDIT_UPLOAD + 1)
    if len(raw) > MAX_AUDIT_UPLOAD:
        raise InvalidInput(f"the file is larger than {MAX_AUDIT_UPLOAD:,} bytes", field="groups")
    try:
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
        if reader.fieldnames is None or "customer_id" not in reader.fieldnames:
            raise InvalidInput("the file needs a customer_id column", field="groups")
        return [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"cannot read the file: {type(exc).__name__}", field="groups") from None


class AnalysisPages(Controller):
    """An experiment's on-demand analyses: candidate policies, integrity, fairness."""

    path = "/experiments/{key:str}"
    opt = {"permission": Permission.VIEW}

    @get("/policies", sync_to_thread=True, include_in_schema=False)
    def policies(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        versions: FromQuery[str | None] = None,
        run: FromQuery[bool] = False,
    ) -> Template:
        """Off-policy values of the standard candidates (computed when asked: `run`)."""
        platform = request.app.state.platform
        view = ExperimentService(platform).get(key)
        timeline = reports.model_timeline(platform, key)
        chosen = _versions(versions)
        evaluations: list[policy_evaluation.PolicyEvaluation] = []
        seconds = None
        if run:
            started = time.perf_counter()
            targets = policy_evaluation.standard_targets(platform, key, chosen)
            evaluations = policy_evaluation.evaluate_policies(platform, key, targets)
            seconds = time.perf_counter() - started
        figures = {"policies": charts.policy_figure(evaluations)}
        return _page(
            request,
            "policies.html",
            view=view,
            timeline=timeline,
            versions=versions or "",
            evaluations=evaluations,
            seconds=seconds,
            ran=run,
            legend=OPE_WARNINGS,
            figures=figures,
            points={name: charts.figure_rows(f) for name, f in figures.items()},
        )

    @get("/integrity", sync_to_thread=True, include_in_schema=False)
    def integrity(self, request: Request[Any, Any, Any], key: FromPath[str]) -> Template:
        """Recompute the newest decisions' probability vectors; list what does not match."""
        platform = request.app.state.platform
        view = ExperimentService(platform).get(key)
        started = time.perf_counter()
        report = INTEGRITY.check(platform, key)
        return _page(
            request,
            "integrity.html",
            view=view,
            integrity=report,
            seconds=time.perf_counter() - started,
        )

    @get(
        "/fairness",
        sync_to_thread=True,
        include_in_schema=False,
        opt={"permission": Permission.VIEW_AUDIT_LOG},
    )
    def fairness_form(self, request: Request[Any, Any, Any], key: FromPath[str]) -> Template:
        """The form for the bank's file of protected groups."""
        view = ExperimentService(request.app.state.platform).get(key)
        return _page(request, "fairness.html", view=view, fairness=None, limit=MAX_AUDIT_UPLOAD)

    @post(
        "/fairness",
        sync_to_thread=True,
        include_in_schema=False,
        status_code=200,
        request_max_body_size=MAX_AUDIT_UPLOAD + 64 * 1024,
        opt={"permission": Permission.VIEW_AUDIT_LOG},
    )
    def fairness(
        self, request: Request[Any, Any, Any], key: FromPath[str], data: Upload
    ) -> Template:
        """Offer rates per protected group; the file is read in memory and not kept."""
        platform = request.app.state.platform
        view = ExperimentService(platform).get(key)
        if data.groups is None:
            raise InvalidInput("choose a CSV file", field="groups")
        try:
            rows = _audit_rows(data.groups)
        finally:
            data.groups.file.close()
        report = reports.fairness_report(platform, key, rows)
        figures = {"fairness": charts.fairness_figure(report)}
        return _page(
            request,
            "fairness.html",
            view=view,
            fairness=report,
            limit=MAX_AUDIT_UPLOAD,
            figures=figures,
            points={name: charts.figure_rows(f) for name, f in figures.items()},
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


def _close_uploads(request: Request[Any, Any, Any]) -> None:
    """Close the temporary files of a multipart form parsed before a refusal (the guard reads
    the form for its CSRF token; the handler that would close them never runs)."""
    form = ScopeState.from_scope(request.scope).form
    if not isinstance(form, dict):
        return
    for value in form.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, UploadFile):
                item.file.close()


def _forbidden(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    _close_uploads(request)
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
        route_handlers=[SignInController, ExperimentPages, AnalysisPages, UserPages],
        guards=[ui_guard],
        exception_handlers={
            NotAuthorizedException: _not_signed_in,
            PermissionDeniedException: _forbidden,
            DomainError: _domain_error,
        },
        response_headers=PAGE_HEADERS,
        include_in_schema=False,
    )
