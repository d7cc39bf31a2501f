"""The simulation page: run an exploration-planning study for an experiment in the background
and read its report (editors and admins).

The study runs in a subprocess (`service.studies`); the job page refreshes itself until the
report is written, and `/status` answers scripts with the job's state as JSON.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from litestar import Controller, Request, Router, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import Body, FromPath
from litestar.response import File, Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from markdown_it import MarkdownIt
from markupsafe import Markup

from bandit_platform.api.ui.auth import ui_guard, ui_session
from bandit_platform.api.ui.pages import (
    PAGE_HEADERS,
    _domain_error,
    _forbidden,
    _not_signed_in,
    _page,
    _settings,
)
from bandit_platform.domain.decisions import ExperimentStatus
from bandit_platform.domain.errors import DomainError
from bandit_platform.domain.users import Permission
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.studies import TEMPLATES, StudyRunner, jobs_directory

#: While a job runs, its page reloads itself this often (seconds).
REFRESH_SECONDS: Final = 3
_RUNNERS: dict[Path, StudyRunner] = {}
_RUNNERS_LOCK = threading.Lock()


@dataclass
class StudyForm:
    """The form that starts a study."""

    experiment: str = ""
    template: str = ""
    csrf_token: str = ""


Form = Annotated[StudyForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def runner(request: Request[Any, Any, Any]) -> StudyRunner:
    """The app's study runner (one per jobs directory, so one job at a time per process)."""
    directory = jobs_directory(_settings(request).database_url)
    with _RUNNERS_LOCK:
        return _RUNNERS.setdefault(directory, StudyRunner(directory))


def report_html(markdown: str, job_id: str) -> Markup:
    """The report's Markdown as HTML (raw HTML in it is escaped); its charts point here."""
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    html = re.sub(
        r'src="([a-z0-9][a-z0-9_\-]*\.svg)"',
        lambda m: f'src="/ui/simulation/jobs/{job_id}/files/{m.group(1)}"',
        html,
    )
    return Markup(html)  # noqa: S704 - rendered by markdown-it with raw HTML disabled


class SimulationPages(Controller):
    """Start a study, follow it, read its report."""

    path = "/"
    opt = {"permission": Permission.EDIT_EXPERIMENTS}

    @get("/", sync_to_thread=True, include_in_schema=False)
    def simulation(self, request: Request[Any, Any, Any]) -> Template:
        """The form (drafts first) and the jobs so far."""
        views = ExperimentService(request.app.state.platform).all()
        views = sorted(views, key=lambda v: (v.status != ExperimentStatus.DRAFT, v.key))
        return _page(
            request,
            "simulation.html",
            experiments=views,
            templates=list(TEMPLATES.values()),
            jobs=runner(request).jobs(),
        )

    @post("/", sync_to_thread=True, include_in_schema=False)
    def start(self, request: Request[Any, Any, Any], data: Form) -> Redirect:
        """Start the study; on to its page."""
        view = ExperimentService(request.app.state.platform).get(data.experiment)
        job = runner(request).start(
            view.key, view.config, data.template, actor=ui_session(request).user.actor
        )
        return Redirect(path=f"/ui/simulation/jobs/{job.id}", status_code=HTTP_303_SEE_OTHER)

    @get("/jobs/{job_id:str}", sync_to_thread=True, include_in_schema=False)
    def job(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Template:
        """The job's state; its report once it is done."""
        studies = runner(request)
        job = studies.job(job_id)
        report = report_html(studies.report(job_id), job_id) if job.state == "done" else None
        return _page(
            request,
            "simulation_job.html",
            job=job,
            template=TEMPLATES.get(job.template),
            report=report,
            refresh=REFRESH_SECONDS if job.state == "running" else None,
        )

    @get("/jobs/{job_id:str}/status", sync_to_thread=True, include_in_schema=False)
    def status(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> dict[str, Any]:
        """The job's state as JSON, for scripts that poll."""
        job = runner(request).job(job_id)
        return {
            "id": job.id,
            "experiment": job.experiment,
            "template": job.template,
            "state": job.state,
            "seconds": round(job.seconds, 1),
            "report": f"/ui/simulation/jobs/{job.id}" if job.state == "done" else None,
        }

    @get("/jobs/{job_id:str}/files/{name:str}", sync_to_thread=True, include_in_schema=False)
    def chart(
        self, request: Request[Any, Any, Any], job_id: FromPath[str], name: FromPath[str]
    ) -> File:
        """One SVG chart of the report."""
        return File(
            path=runner(request).chart(job_id, name),
            media_type="image/svg+xml",
            content_disposition_type="inline",
        )


def simulation_router() -> Router:
    """`/ui/simulation` behind `ui_guard`, with the UI's error pages and security headers."""
    return Router(
        path="/ui/simulation",
        route_handlers=[SimulationPages],
        guards=[ui_guard],
        exception_handlers={
            NotAuthorizedException: _not_signed_in,
            PermissionDeniedException: _forbidden,
            DomainError: _domain_error,
        },
        response_headers=PAGE_HEADERS,
        include_in_schema=False,
    )


__all__ = ["report_html", "simulation_router"]
