"""The simulation page over HTTP: roles, CSRF, and a tiny study's life (start, status, report)."""

from __future__ import annotations

import time

import pytest

from bandit_platform.api.ui.simulation import report_html
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.service import studies
from bandit_platform.service.studies import StudyTemplate, planning_traffic
from tests.ui.test_ui_http import HTML, Client, sign_in, ui, users

__all__ = ["ui", "users"]  # fixtures used by name below

#: Two tiny runs (~150 decisions each, a model a day): a few seconds.
TINY = StudyTemplate(
    key="tiny",
    title="tiny",
    epsilons=(0.1,),
    seeds=(1, 2),
    weeks=(1.0,),
    scale=0.01,
    days=14,
    learn_every_hours=24.0,
)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> StudyTemplate:
    monkeypatch.setitem(studies.TEMPLATES, TINY.key, TINY)
    return TINY


def test_only_editors_and_admins_may_run_studies(ui: Client) -> None:
    assert ui.get("/ui/simulation").status_code == 401
    for role, allowed in (("viewer", False), ("approver", False), ("editor", True)):
        token = sign_in(ui, role)
        page = ui.get("/ui/simulation", headers=HTML)
        assert page.status_code == (200 if allowed else 403), role
        assert ("/ui/simulation" in ui.get("/ui/experiments").text) is allowed
        start = ui.post(
            "/ui/simulation",
            data={"experiment": DEMO_EXPERIMENT_KEY, "template": "nope", "csrf_token": token},
            headers=HTML,
        )
        assert start.status_code == (422 if allowed else 403), role
        ui.post("/ui/logout", data={"csrf_token": token})
    sign_in(ui, "admin")
    assert ui.get("/ui/simulation").status_code == 200
    no_token = ui.post(
        "/ui/simulation", data={"experiment": DEMO_EXPERIMENT_KEY, "template": "planning-quick"}
    )
    assert no_token.status_code == 403
    assert ui.get("/ui/simulation/jobs/0123456789abcdef", headers=HTML).status_code == 404
    assert ui.get("/ui/simulation/jobs/..%2F..", headers=HTML).status_code == 404


@pytest.mark.slow
def test_a_tiny_study_runs_in_the_background_and_shows_its_report(
    ui: Client, tiny: StudyTemplate
) -> None:
    token = sign_in(ui, "editor")
    started = ui.post(
        "/ui/simulation",
        data={"experiment": DEMO_EXPERIMENT_KEY, "template": tiny.key, "csrf_token": token},
    )
    assert started.status_code == 303, started.text
    job_page = started.headers["location"]
    job_id = job_page.rsplit("/", 1)[1]
    assert ui.get(job_page).status_code == 200

    busy = ui.post(
        "/ui/simulation",
        data={"experiment": DEMO_EXPERIMENT_KEY, "template": tiny.key, "csrf_token": token},
        headers=HTML,
    )
    assert busy.status_code in (303, 409)  # 409 while the first one still runs

    deadline = time.monotonic() + 90
    status = ui.get(f"{job_page}/status").json()
    while status["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = ui.get(f"{job_page}/status").json()
    assert status["state"] == "done", ui.get(job_page).text
    assert status["report"] == job_page

    page = ui.get(job_page)
    assert page.status_code == 200
    assert 'id="study-report"' in page.text
    assert "<table>" in page.text
    assert "regret per 1,000" in page.text
    assert 'http-equiv="refresh"' not in page.text  # done: no more reloading
    assert f'src="/ui/simulation/jobs/{job_id}/files/regret.svg"' in page.text
    chart = ui.get(f"/ui/simulation/jobs/{job_id}/files/regret.svg")
    assert chart.status_code == 200
    assert chart.headers["content-type"].startswith("image/svg+xml")
    assert ui.get(f"/ui/simulation/jobs/{job_id}/files/study.toml", headers=HTML).status_code == 404
    listing = ui.get("/ui/simulation").text
    assert f"/ui/simulation/jobs/{job_id}" in listing


def test_the_report_escapes_raw_html_and_points_charts_at_the_ui() -> None:
    html = str(report_html("# T\n\n<script>x()</script>\n\n![c](regret.svg)\n", "ab" * 8))
    assert "<script>" not in html
    assert 'src="/ui/simulation/jobs/abababababababab/files/regret.svg"' in html


def test_a_split_without_holdout_is_simulated_with_ten_percent_held_out() -> None:
    assert planning_traffic({"traffic": {"holdout": 5, "ab": 5, "bandit": 90}}) == {
        "holdout": 5,
        "ab": 5,
        "bandit": 90,
    }
    assert planning_traffic({"traffic": {"holdout": 0, "ab": 10, "bandit": 90}}) == {
        "holdout": 10,
        "ab": 0,
        "bandit": 90,
    }
