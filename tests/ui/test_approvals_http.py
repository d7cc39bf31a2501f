"""The approval and lifecycle pages over HTTP: roles, CSRF, diffs, required comments,
four-eyes, start only when approved, rollback and the audit log (SQLite and PostgreSQL)."""

from __future__ import annotations

import re

import msgspec
import pytest

from bandit_platform.demo import DEMO_EXPERIMENT_KEY, demo_config
from bandit_platform.domain.config import TrafficSplit
from bandit_platform.domain.decisions import ChangeStatus, ExperimentStatus
from bandit_platform.domain.users import Role
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.users import UserService
from tests.conftest import Demo
from tests.ui.test_ui_http import HTML, PASSWORD, Client, sign_in

KEY = "savings-push"


@pytest.fixture
def users(demo: Demo) -> UserService:
    """One user per role, named after it."""
    service = UserService(demo.platform)
    for role in Role:
        service.create(role.value, PASSWORD, role, actor="test")
    return service


@pytest.fixture
def ui(client: Client, users: UserService) -> Client:
    """The app's client without the API key (a browser has none)."""
    del client.headers["X-API-Key"]
    client.follow_redirects = False
    return client


def switch(ui: Client, username: str) -> str:
    """Sign out whoever is signed in and sign in as `username`; the CSRF token."""
    ui.cookies.clear()
    return sign_in(ui, username)


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


@pytest.fixture
def draft(demo: Demo, users: UserService) -> ExperimentService:
    """A draft written by the editor (as a person would in the UI)."""
    experiments = ExperimentService(demo.platform)
    experiments.create(msgspec.structs.replace(demo_config(), key=KEY), "user:editor")
    return experiments


def test_a_draft_is_reviewed_approved_then_started(ui: Client, draft: ExperimentService) -> None:
    token = switch(ui, "editor")
    changes = ui.get("/ui/changes")
    assert changes.status_code == 200
    assert f"/ui/experiments/{KEY}/review" in changes.text
    manage = ui.get(f"/ui/experiments/{KEY}/manage")
    assert "Version 1 is not approved" in manage.text
    assert re.search(r"<button[^>]*disabled[^>]*>Start</button>", manage.text)
    # The start button is disabled, and the server refuses anyway.
    refused = ui.post(
        f"/ui/experiments/{KEY}/status", data={"csrf_token": token, "action": "start"}, headers=HTML
    )
    assert refused.status_code == 409
    assert "version 1 is not approved" in refused.text
    # An editor reads the review but cannot decide.
    review = ui.get(f"/ui/experiments/{KEY}/review")
    assert review.status_code == 200
    assert "Offers" in review.text
    assert "Eligibility rules" in review.text
    assert "Approve" not in review.text
    forbidden = ui.post(
        f"/ui/experiments/{KEY}/approve",
        data={"csrf_token": token, "comment": "self", "version": "1"},
        headers=HTML,
    )
    assert forbidden.status_code == 403

    token = switch(ui, "approver")
    review = ui.get(f"/ui/experiments/{KEY}/review")
    assert 'action="/ui/experiments/savings-push/approve"' in review.text
    no_csrf = ui.post(f"/ui/experiments/{KEY}/approve", data={"comment": "ok", "version": "1"})
    assert no_csrf.status_code == 403
    blank = ui.post(
        f"/ui/experiments/{KEY}/approve",
        data={"csrf_token": token, "comment": "  ", "version": "1"},
        headers=HTML,
    )
    assert blank.status_code == 422
    assert "a comment is required" in blank.text
    assert 'aria-invalid="true"' in blank.text
    assert draft.get(KEY).status == ExperimentStatus.DRAFT
    approved = ui.post(
        f"/ui/experiments/{KEY}/approve",
        data={"csrf_token": token, "comment": "caps and rules checked", "version": "1"},
    )
    assert approved.status_code == 303
    assert (draft.get(KEY).status, draft.get(KEY).approved_version) == (
        ExperimentStatus.APPROVED,
        1,
    )
    # An approver does not operate experiments.
    assert (
        ui.post(
            f"/ui/experiments/{KEY}/status",
            data={"csrf_token": token, "action": "start"},
            headers=HTML,
        ).status_code
        == 403
    )

    token = switch(ui, "editor")
    started = ui.post(
        f"/ui/experiments/{KEY}/status", data={"csrf_token": token, "action": "start"}
    )
    assert started.status_code == 303
    assert draft.get(KEY).status == ExperimentStatus.RUNNING
    ui.post(f"/ui/experiments/{KEY}/status", data={"csrf_token": token, "action": "pause"})
    assert draft.get(KEY).status == ExperimentStatus.PAUSED
    unconfirmed = ui.post(
        f"/ui/experiments/{KEY}/status", data={"csrf_token": token, "action": "stop"}, headers=HTML
    )
    assert unconfirmed.status_code == 422
    assert draft.get(KEY).status == ExperimentStatus.PAUSED
    ui.post(
        f"/ui/experiments/{KEY}/status",
        data={"csrf_token": token, "action": "stop", "confirm": "yes"},
    )
    assert draft.get(KEY).status == ExperimentStatus.STOPPED
    actions = [(r["actor"], r["action"]) for r in draft.audit_log(KEY)]
    assert actions == [
        ("user:editor", "experiment.status"),
        ("user:editor", "experiment.status"),
        ("user:editor", "experiment.status"),
        ("user:approver", "experiment.approved"),
        ("user:editor", "experiment.create"),
    ]


def test_a_change_to_the_running_demo_waits_for_approval(
    ui: Client, demo: Demo, users: UserService
) -> None:
    experiments = ExperimentService(demo.platform)
    changed = msgspec.structs.replace(
        demo_config(), traffic=TrafficSplit(holdout=5, ab=15, bandit=80)
    )
    change = experiments.propose(DEMO_EXPERIMENT_KEY, changed, "user:admin", "more bandit").change
    assert change is not None

    token = switch(ui, "viewer")
    listed = ui.get("/ui/changes")
    assert f"/ui/changes/{change.id}" in listed.text
    page = ui.get(f"/ui/changes/{change.id}")
    assert page.status_code == 200
    assert "Traffic split" in page.text
    assert "<ins><code>5</code></ins>" in page.text
    assert "Unified diff" in page.text
    assert (
        ui.post(
            f"/ui/changes/{change.id}/approve",
            data={"csrf_token": token, "comment": "x"},
            headers=HTML,
        ).status_code
        == 403
    )

    # Four-eyes: the admin proposed it, so the admin cannot approve it.
    token = switch(ui, "admin")
    own = ui.get(f"/ui/changes/{change.id}")
    assert "another approver must decide" in own.text
    mine = ui.post(
        f"/ui/changes/{change.id}/approve",
        data={"csrf_token": token, "comment": "mine"},
        headers=HTML,
    )
    assert mine.status_code == 409
    assert experiments.get(DEMO_EXPERIMENT_KEY).version == 1

    token = switch(ui, "approver")
    blank = ui.post(
        f"/ui/changes/{change.id}/reject", data={"csrf_token": token, "comment": ""}, headers=HTML
    )
    assert blank.status_code == 422
    approved = ui.post(
        f"/ui/changes/{change.id}/approve",
        data={"csrf_token": token, "comment": "split agreed"},
    )
    assert approved.status_code == 303
    assert experiments.change(change.id).status == ChangeStatus.APPROVED
    view = experiments.get(DEMO_EXPERIMENT_KEY)
    assert (view.version, view.approved_version, view.config["traffic"]["holdout"]) == (2, 2, 5.0)
    done = ui.get(f"/ui/changes/{change.id}")
    assert "split agreed" in done.text
    assert "Your decision" not in done.text

    audit = ui.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/audit")
    assert audit.status_code == 200
    assert "change.approved" in audit.text
    assert "split agreed" in audit.text
    filtered = ui.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/audit?action=change.proposed")
    assert "more bandit" in filtered.text
    assert "split agreed" not in filtered.text


def test_rollback_and_who_reads_the_audit_log(ui: Client, demo: Demo, users: UserService) -> None:
    experiments = ExperimentService(demo.platform)
    experiments.warm_start(DEMO_EXPERIMENT_KEY, "test")  # a second model version
    token = switch(ui, "editor")
    manage = ui.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/manage")
    assert 'id="rollback-version"' in manage.text
    assert "Audit log" not in manage.text  # editors do not read the audit log
    assert ui.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/audit", headers=HTML).status_code == 403
    rolled = ui.post(
        f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/rollback",
        data={"csrf_token": token, "version": "1"},
    )
    assert rolled.status_code == 303
    newest = experiments.models(DEMO_EXPERIMENT_KEY)[0]
    assert newest["note"] == "rollback to v1"
    bad = ui.post(
        f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/rollback",
        data={"csrf_token": token, "version": "99"},
        headers=HTML,
    )
    assert bad.status_code == 404

    for role, allowed in (("viewer", False), ("approver", True), ("admin", True)):
        switch(ui, role)
        page = ui.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/audit", headers=HTML)
        assert (page.status_code == 200) is allowed, role
        if allowed:
            assert "model.rollback" in page.text
            assert "user:editor" in page.text
    # A viewer may not roll back either, and nobody without a session may look.
    token = switch(ui, "viewer")
    assert (
        ui.post(
            f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/rollback",
            data={"csrf_token": token, "version": "1"},
            headers=HTML,
        ).status_code
        == 403
    )
    ui.cookies.clear()
    assert ui.get("/ui/changes", headers=HTML).status_code == 303


def test_the_audit_log_pages(ui: Client, demo: Demo, users: UserService) -> None:
    experiments = ExperimentService(demo.platform)
    for i in range(60):
        experiments.change_status(
            DEMO_EXPERIMENT_KEY,
            ExperimentStatus.PAUSED if i % 2 == 0 else ExperimentStatus.RUNNING,
            "test",
        )
    switch(ui, "approver")
    first = ui.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/audit")
    assert first.text.count("<tr>") == 51  # header + 50 rows
    assert 'rel="next"' in first.text
    second = ui.get(f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/audit?page=2")
    assert 'rel="prev"' in second.text
    assert "experiment.create" in second.text
    assert 'rel="next"' not in second.text
