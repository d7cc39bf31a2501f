"""The approval workflow and the experiment lifecycle in the web UI.

- `/ui/changes`: drafts awaiting approval and pending change requests (anyone may look);
- `/ui/changes/{id}` and `/ui/experiments/{key}/review`: the configuration diff section by
  section (and as a unified JSON diff), with approve / reject forms that need a comment
  (approvers and admins; a person never approves what they proposed);
- `/ui/experiments/{key}/manage`: start (only an approved version), pause, resume, stop
  (confirmed), model rollback (editors and admins: `operate_experiments`);
- `/ui/experiments/{key}/audit`: the experiment's audit log, newest first, paged, filtered
  by action (`view_audit_log`).

Every handler calls `ExperimentService`; every POST passes `ui_guard` (session, role, CSRF).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from litestar import Controller, Request, Response, Router, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from bandit_platform.api.errors import problem
from bandit_platform.api.ui.auth import (
    session_cookie,
    ui_guard,
    ui_session,
    wants_html,
)
from bandit_platform.api.ui.pages import PAGE_HEADERS, _page
from bandit_platform.domain.config_diff import config_diff, unified_diff
from bandit_platform.domain.decisions import ChangeStatus, ExperimentStatus
from bandit_platform.domain.errors import DomainError, InvalidInput
from bandit_platform.domain.users import Permission
from bandit_platform.service.experiments import ExperimentService, ExperimentView
from bandit_platform.settings import Settings

#: Audit rows per page.
AUDIT_PAGE_SIZE: Final = 50
#: What the lifecycle form may ask for, and how the audit log names it.
_LIFECYCLE: Final = {
    "start": ExperimentStatus.RUNNING,
    "resume": ExperimentStatus.RUNNING,
    "pause": ExperimentStatus.PAUSED,
    "stop": ExperimentStatus.STOPPED,
}


@dataclass
class DecisionForm:
    """An approver's decision: a required comment, and the version they reviewed."""

    csrf_token: str = ""
    comment: str = ""
    version: str = ""


@dataclass
class LifecycleForm:
    """A lifecycle button: the action, and for `stop` the confirmation."""

    csrf_token: str = ""
    action: str = ""
    confirm: str = ""


@dataclass
class RollbackForm:
    """The model version to serve again."""

    csrf_token: str = ""
    version: str = ""


DecisionBody = Annotated[DecisionForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
LifecycleBody = Annotated[LifecycleForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
RollbackBody = Annotated[RollbackForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def _service(request: Request[Any, Any, Any]) -> ExperimentService:
    return ExperimentService(request.app.state.platform)


def _see(path: str) -> Redirect:
    return Redirect(path=path, status_code=HTTP_303_SEE_OTHER)


def _int(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{field} must be a whole number", field=field) from None


def _draft_review(
    request: Request[Any, Any, Any], view: ExperimentView, **extra: Any
) -> dict[str, Any]:
    """The context of a draft's review: its diff against the last approved version."""
    service = _service(request)
    base = (
        None if view.approved_version is None else service.version(view.key, view.approved_version)
    )
    author = service.version(view.key, view.version).created_by
    before_label = "nothing (new experiment)" if base is None else f"v{base.version} (approved)"
    return {
        "view": view,
        "author": author,
        "base": base,
        "sections": config_diff(None if base is None else base.config, view.config),
        "unified": unified_diff(
            None if base is None else base.config,
            view.config,
            before_label=before_label,
            after_label=f"v{view.version} (draft)",
        ),
        "own": author == ui_session(request).user.actor,
        "error": None,
        "comment": "",
        **extra,
    }


def _decide_change(
    request: Request[Any, Any, Any], change_id: int, data: DecisionBody, *, approve: bool
) -> Response[Any]:
    """Approve or reject a change request; a refused comment re-renders the page (422)."""
    actor = ui_session(request).user.actor
    service = _service(request)
    decide = service.approve_change if approve else service.reject_change
    try:
        decide(change_id, actor, data.comment)
    except InvalidInput as exc:
        context = _change_review(request, change_id, error=exc.message, comment=data.comment)
        return _page(request, "change.html", status_code=422, **context)
    return _see(f"/ui/changes/{change_id}")


def _change_review(request: Request[Any, Any, Any], change_id: int, **extra: Any) -> dict[str, Any]:
    """The context of a change request's page: its diff against the version it was based on."""
    service = _service(request)
    change = service.change(change_id)
    view = service.get(change.experiment_key)
    base = service.version(change.experiment_key, change.base_version)
    return {
        "change": change,
        "view": view,
        "sections": config_diff(base.config, change.config),
        "unified": unified_diff(
            base.config,
            change.config,
            before_label=f"v{base.version} (served)",
            after_label=f"change {change.id} (proposed)",
        ),
        "stale": change.status == ChangeStatus.PENDING and view.version != change.base_version,
        "own": change.proposed_by == ui_session(request).user.actor,
        "error": None,
        "comment": "",
        **extra,
    }


class ChangePages(Controller):
    """What waits for approval, and each change's review (anyone signed in may look)."""

    path = "/changes"
    opt = {"permission": Permission.VIEW}

    @get("/", sync_to_thread=True, include_in_schema=False)
    def changes(self, request: Request[Any, Any, Any]) -> Template:
        """Drafts awaiting approval, pending change requests, and recent decisions."""
        service = _service(request)
        experiments = service.all()
        everything = service.changes()
        return _page(
            request,
            "changes.html",
            drafts=[v for v in experiments if v.status == ExperimentStatus.DRAFT],
            pending=[c for c in everything if c.status == ChangeStatus.PENDING],
            decided=[c for c in everything if c.status != ChangeStatus.PENDING][:20],
            experiments=experiments,
        )

    @get("/{change_id:int}", sync_to_thread=True, include_in_schema=False)
    def change(self, request: Request[Any, Any, Any], change_id: FromPath[int]) -> Template:
        """One change request: what it changes, who proposed it, and the decision forms."""
        return _page(request, "change.html", **_change_review(request, change_id))

    @post(
        "/{change_id:int}/approve",
        opt={"permission": Permission.APPROVE_EXPERIMENTS},
        sync_to_thread=True,
        include_in_schema=False,
    )
    def approve(
        self, request: Request[Any, Any, Any], change_id: FromPath[int], data: DecisionBody
    ) -> Response[Any]:
        """Apply the change as the experiment's next, approved, version."""
        return _decide_change(request, change_id, data, approve=True)

    @post(
        "/{change_id:int}/reject",
        opt={"permission": Permission.APPROVE_EXPERIMENTS},
        sync_to_thread=True,
        include_in_schema=False,
    )
    def reject(
        self, request: Request[Any, Any, Any], change_id: FromPath[int], data: DecisionBody
    ) -> Response[Any]:
        """Reject the change: the served version stays."""
        return _decide_change(request, change_id, data, approve=False)


class LifecyclePages(Controller):
    """A draft's review, the lifecycle buttons, model rollback and the audit log."""

    path = "/experiments/{key:str}"
    opt = {"permission": Permission.VIEW}

    @get("/review", sync_to_thread=True, include_in_schema=False)
    def review(self, request: Request[Any, Any, Any], key: FromPath[str]) -> Template:
        """A draft's configuration against its last approved version (or all of it)."""
        view = _service(request).get(key)
        return _page(request, "review.html", **_draft_review(request, view))

    @post(
        "/approve",
        opt={"permission": Permission.APPROVE_EXPERIMENTS},
        sync_to_thread=True,
        include_in_schema=False,
    )
    def approve(
        self, request: Request[Any, Any, Any], key: FromPath[str], data: DecisionBody
    ) -> Response[Any]:
        """Approve the draft version the approver reviewed."""
        return self._decide(request, key, data, approve=True)

    @post(
        "/reject",
        opt={"permission": Permission.APPROVE_EXPERIMENTS},
        sync_to_thread=True,
        include_in_schema=False,
    )
    def reject(
        self, request: Request[Any, Any, Any], key: FromPath[str], data: DecisionBody
    ) -> Response[Any]:
        """Send the draft back with a comment."""
        return self._decide(request, key, data, approve=False)

    def _decide(
        self, request: Request[Any, Any, Any], key: str, data: DecisionForm, *, approve: bool
    ) -> Response[Any]:
        service = _service(request)
        actor = ui_session(request).user.actor
        try:
            version = _int(data.version, "version")
            if approve:
                service.approve(key, actor, data.comment, version=version)
            else:
                service.reject(key, actor, data.comment, version=version)
        except InvalidInput as exc:
            context = _draft_review(
                request, service.get(key), error=exc.message, comment=data.comment
            )
            return _page(request, "review.html", status_code=422, **context)
        return _see(f"/ui/experiments/{key}/manage")

    @get("/manage", sync_to_thread=True, include_in_schema=False)
    def manage(self, request: Request[Any, Any, Any], key: FromPath[str]) -> Template:
        """Status, versions, the lifecycle buttons, the models and pending changes."""
        service = _service(request)
        view = service.get(key)
        return _page(
            request,
            "manage.html",
            view=view,
            models=service.models(key),
            changes=[c for c in service.changes(key) if c.status == ChangeStatus.PENDING],
        )

    @post(
        "/status",
        opt={"permission": Permission.OPERATE_EXPERIMENTS},
        sync_to_thread=True,
        include_in_schema=False,
    )
    def status(
        self, request: Request[Any, Any, Any], key: FromPath[str], data: LifecycleBody
    ) -> Redirect:
        """Start, pause, resume or stop (stop only when confirmed)."""
        target = _LIFECYCLE.get(data.action)
        if target is None:
            raise InvalidInput("choose start, pause, resume or stop", field="action")
        if target == ExperimentStatus.STOPPED and data.confirm != "yes":
            raise InvalidInput("confirm that the experiment stops for good", field="confirm")
        _service(request).change_status(key, target, ui_session(request).user.actor)
        return _see(f"/ui/experiments/{key}/manage")

    @post(
        "/rollback",
        opt={"permission": Permission.OPERATE_EXPERIMENTS},
        sync_to_thread=True,
        include_in_schema=False,
    )
    def rollback(
        self, request: Request[Any, Any, Any], key: FromPath[str], data: RollbackBody
    ) -> Redirect:
        """Serve an earlier model version again (published as the newest)."""
        version = _int(data.version, "version")
        _service(request).rollback_model(key, version, ui_session(request).user.actor)
        return _see(f"/ui/experiments/{key}/manage")

    @get(
        "/audit",
        opt={"permission": Permission.VIEW_AUDIT_LOG},
        sync_to_thread=True,
        include_in_schema=False,
    )
    def audit(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        action: FromQuery[str] = "",
        page: FromQuery[int] = 1,
    ) -> Template:
        """The audit log, newest first, `AUDIT_PAGE_SIZE` rows a page."""
        service = _service(request)
        view = service.get(key)
        page = max(page, 1)
        rows = service.audit_log(
            key,
            action=action or None,
            limit=AUDIT_PAGE_SIZE + 1,
            offset=(page - 1) * AUDIT_PAGE_SIZE,
        )
        return _page(
            request,
            "audit.html",
            view=view,
            rows=rows[:AUDIT_PAGE_SIZE],
            actions=service.audit_actions(key),
            action=action,
            page=page,
            more=len(rows) > AUDIT_PAGE_SIZE,
        )


def _error_page(request: Request[Any, Any, Any], status: int, detail: str) -> Response[Any]:
    if not wants_html(request):
        return problem(status, detail)
    return _page(request, "error.html", status_code=status, status=status, detail=detail)


def _not_signed_in(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    if not wants_html(request):
        return problem(401, str(exc.detail))
    back = f"?next={request.url.path}" if request.method == "GET" else ""
    response = Redirect(path=f"/ui/login{back}", status_code=HTTP_303_SEE_OTHER)
    settings: Settings = request.app.state.platform.settings
    response.cookies.append(session_cookie(settings, "", max_age=0))
    return response


def _forbidden(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    return _error_page(request, 403, str(exc.detail))


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return _error_page(request, exc.status_hint, exc.message)


def approvals_router() -> Router:
    """The approval and lifecycle pages behind `ui_guard`, with the UI's error pages."""
    return Router(
        path="/ui",
        route_handlers=[ChangePages, LifecyclePages],
        guards=[ui_guard],
        exception_handlers={
            NotAuthorizedException: _not_signed_in,
            PermissionDeniedException: _forbidden,
            DomainError: _domain_error,
        },
        response_headers=PAGE_HEADERS,
        include_in_schema=False,
    )


__all__ = ["approvals_router"]
