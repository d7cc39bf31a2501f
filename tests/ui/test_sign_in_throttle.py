"""Sign-in throttling over HTTP: 5 failures for a username within 15 minutes lock it for 15
minutes, known or unknown alike; the lock holds against the right password; a success clears
the count; failures and locks are audited and logged without the password."""

from __future__ import annotations

import logging
import re

import pytest
import sqlalchemy as sa
from httpx import Response
from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.domain.users import Role
from bandit_platform.service.users import (
    SIGN_IN_LOCK,
    SIGN_IN_MAX_FAILURES,
    SIGN_IN_WINDOW,
    UserService,
)
from tests.conftest import Demo, FakeClock

Client = TestClient[Litestar]
PASSWORD = "correct horse battery staple"  # pragma: allowlist secret
WRONG = "not the password at all"
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def ui(client: Client, demo: Demo) -> Client:
    service = UserService(demo.platform)
    service.create("viewer", PASSWORD, Role.VIEWER, actor="test")
    service.create("editor", PASSWORD, Role.EDITOR, actor="test")
    del client.headers["X-API-Key"]
    client.follow_redirects = False
    return client


def attempt(client: Client, username: str, password: str, **headers: str) -> Response:
    page = client.get("/ui/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return client.post(
        "/ui/login",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
        headers=headers or HTML,
    )


def fail(client: Client, username: str, times: int) -> None:
    for _ in range(times):
        response = attempt(client, username, WRONG)
        assert response.status_code == 200
        assert "Wrong username or password." in response.text


def test_five_failures_lock_a_user_even_against_the_right_password(
    ui: Client, clock: FakeClock
) -> None:
    fail(ui, "viewer", SIGN_IN_MAX_FAILURES)

    locked = attempt(ui, "viewer", PASSWORD)

    assert locked.status_code == 429
    assert locked.headers["retry-after"] == str(int(SIGN_IN_LOCK.total_seconds()))
    assert "Too many failed sign-ins for this username" in locked.text
    assert "bp_session=" not in locked.headers.get("set-cookie", "")
    assert locked.headers["content-security-policy"].startswith("default-src 'self'")
    assert locked.headers["x-content-type-options"] == "nosniff"
    assert locked.headers["cache-control"] == "no-store"

    clock.advance(minutes=10)
    later = attempt(ui, "viewer", PASSWORD)
    assert later.status_code == 429
    assert later.headers["retry-after"] == str(5 * 60)

    clock.advance(minutes=5)
    assert attempt(ui, "viewer", PASSWORD).status_code == 303  # the lock is over


def test_an_unknown_username_is_locked_the_same_way(ui: Client) -> None:
    fail(ui, "viewer", SIGN_IN_MAX_FAILURES)
    fail(ui, "nobody", SIGN_IN_MAX_FAILURES)

    known = attempt(ui, "viewer", WRONG)
    unknown = attempt(ui, "nobody", WRONG)

    assert known.status_code == unknown.status_code == 429
    assert known.headers["retry-after"] == unknown.headers["retry-after"]
    assert known.text == unknown.text  # nothing tells which username exists

    api_known = attempt(ui, "viewer", WRONG, Accept="application/json")
    api_unknown = attempt(ui, "nobody", WRONG, Accept="application/json")
    assert api_known.status_code == 429
    assert api_known.headers["content-type"].startswith("application/problem+json")
    assert api_known.json() == api_unknown.json()
    assert api_known.json()["field"] == "username"
    assert api_known.headers["retry-after"] == api_unknown.headers["retry-after"]


def test_the_lock_is_per_username(ui: Client) -> None:
    fail(ui, "viewer", SIGN_IN_MAX_FAILURES)
    assert attempt(ui, "viewer", PASSWORD).status_code == 429
    assert attempt(ui, "editor", PASSWORD).status_code == 303
    ui.cookies.clear()
    assert attempt(ui, "Viewer ", PASSWORD).status_code == 429  # the same username


def test_a_successful_sign_in_resets_the_count(ui: Client) -> None:
    fail(ui, "viewer", SIGN_IN_MAX_FAILURES - 1)
    assert attempt(ui, "viewer", PASSWORD).status_code == 303
    ui.cookies.clear()
    fail(ui, "viewer", SIGN_IN_MAX_FAILURES - 1)
    assert attempt(ui, "viewer", PASSWORD).status_code == 303


def test_failures_older_than_the_window_do_not_count(ui: Client, clock: FakeClock) -> None:
    fail(ui, "viewer", SIGN_IN_MAX_FAILURES - 1)
    clock.advance(seconds=SIGN_IN_WINDOW.total_seconds())
    fail(ui, "viewer", SIGN_IN_MAX_FAILURES - 1)
    assert attempt(ui, "viewer", PASSWORD).status_code == 303


def test_failures_and_the_lock_are_audited_and_logged_without_the_password(
    ui: Client, demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bandit_platform"):
        fail(ui, "nobody", SIGN_IN_MAX_FAILURES)
        assert attempt(ui, "nobody", PASSWORD).status_code == 429

    with demo.platform.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT action, actor, details FROM audit_log ORDER BY id")
        ).all()
    actions = [row.action for row in rows if row.action.startswith("user.sign_in")]
    assert actions == ["user.sign_in_failed"] * (SIGN_IN_MAX_FAILURES - 1) + ["user.sign_in_locked"]
    assert all("nobody" in str(row.details) for row in rows if row.action in actions)
    audit_text = str(rows)
    assert WRONG not in audit_text
    assert PASSWORD not in audit_text
    assert "locked" in caplog.text
    assert "nobody" in caplog.text
    assert WRONG not in caplog.text
    assert PASSWORD not in caplog.text
