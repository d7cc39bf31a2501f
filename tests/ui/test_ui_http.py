"""The web UI over HTTP (Litestar TestClient, demo platform, SQLite and PostgreSQL): sign-in,
sessions, CSRF, roles, the separation of API keys and UI sessions, and the pages."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.api.ui.assets import plotly_js
from bandit_platform.api.ui.auth import safe_next
from bandit_platform.cli import main
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.users import ROLE_PERMISSIONS, Permission, Role
from bandit_platform.service import users as users_module
from bandit_platform.service.learner import Learner
from bandit_platform.service.users import (
    ScryptParameters,
    UserService,
    hash_password,
    needs_rehash,
    token_hash,
    verify_password,
)
from bandit_platform.settings import Settings
from tests.api.test_http import DECISION, outcome_body
from tests.conftest import PSEUDONYM_KEY, Demo, FakeClock

Client = TestClient[Litestar]
PASSWORD = "correct horse battery staple"
HTML = {"Accept": "text/html,application/xhtml+xml"}
DASHBOARD = f"/ui/experiments/{DEMO_EXPERIMENT_KEY}"


@pytest.fixture
def users(demo: Demo) -> UserService:
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


def login_token(client: Client) -> str:
    page = client.get("/ui/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def sign_in(client: Client, username: str, password: str = PASSWORD) -> str:
    """Sign in; returns the session's CSRF token (from the page's sign-out form)."""
    response = client.post(
        "/ui/login",
        data={"username": username, "password": password, "csrf_token": login_token(client)},
    )
    assert response.status_code == 303, response.text
    page = client.get("/ui/experiments")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def session_rows(client: Client, demo: Demo) -> list[sa.Row[tuple[object, ...]]]:
    with demo.platform.engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT * FROM ui_sessions")))


def test_sign_in_sets_a_strict_http_only_cookie_and_shows_the_experiments(
    ui: Client, demo: Demo
) -> None:
    response = ui.post(
        "/ui/login",
        data={
            "username": "Viewer",  # usernames are case-insensitive
            "password": PASSWORD,
            "csrf_token": login_token(ui),
            "next": DASHBOARD,
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == DASHBOARD
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("bp_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ui" in cookie
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    stored = session_rows(ui, demo)
    assert [row.token_hash for row in stored] == [token_hash(token)]  # only the hash
    assert token not in str(stored)

    page = ui.get("/ui/experiments")
    assert page.status_code == 200
    assert DEMO_EXPERIMENT_KEY in page.text
    assert "Signed in as <strong>viewer</strong>" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["cache-control"] == "no-store"


def test_a_wrong_password_or_unknown_user_shows_the_same_error_next_to_the_field(
    ui: Client,
) -> None:
    for username, password in (("viewer", "wrong password here"), ("nobody", PASSWORD)):
        response = ui.post(
            "/ui/login",
            data={"username": username, "password": password, "csrf_token": login_token(ui)},
        )
        assert response.status_code == 200  # the form again, with the error
        assert 'aria-describedby="password-error"' in response.text
        assert 'id="password-error"' in response.text
        assert "Wrong username or password." in response.text
        assert not any(c.startswith("bp_session=") for c in response.headers.get_list("set-cookie"))
    assert ui.get("/ui/experiments").status_code == 401


def test_unknown_users_cost_the_same_scrypt_work(
    users: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = users_module._scrypt

    def counting(password: str, salt: bytes, params: ScryptParameters) -> bytes:
        calls.append(params.n)
        return real(password, salt, params)

    users.authenticate("nobody", PASSWORD)  # builds the dummy hash once
    monkeypatch.setattr(users_module, "_scrypt", counting)
    for username, password in (("nobody", PASSWORD), ("viewer", "wrong"), ("viewer", PASSWORD)):
        calls.clear()
        users.authenticate(username, password)
        assert calls == [users_module.SCRYPT.n], username


def test_posts_without_the_csrf_token_are_forbidden(ui: Client, users: UserService) -> None:
    # The sign-in form: the token must match the cookie set with the form.
    login_token(ui)
    response = ui.post("/ui/login", data={"username": "admin", "password": PASSWORD})
    assert response.status_code == 403
    response = ui.post(
        "/ui/login", data={"username": "admin", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert response.status_code == 403

    csrf = sign_in(ui, "admin")
    assert ui.post("/ui/logout").status_code == 403
    assert ui.post("/ui/logout", data={"csrf_token": "x" * 43}).status_code == 403
    assert ui.post("/ui/admin/users/viewer/disable").status_code == 403
    assert ui.get("/ui/experiments").status_code == 200  # still signed in
    assert [u.disabled_at for u in users.all() if u.username == "viewer"] == [None]
    # The header carries it as well as the form field.
    response = ui.post("/ui/admin/users/viewer/disable", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 303
    assert [u.disabled_at is not None for u in users.all() if u.username == "viewer"] == [True]


def test_roles_guard_the_pages(ui: Client) -> None:
    for role in Role:
        ui.cookies.clear()
        csrf = sign_in(ui, role.value)
        assert ui.get(DASHBOARD).status_code == 200
        users_page = ui.get("/ui/admin/users", headers=HTML)
        disable = ui.post("/ui/admin/users/editor/disable", data={"csrf_token": csrf})
        if role is Role.ADMIN:
            assert users_page.status_code == 200
            assert disable.status_code == 303
        else:
            assert users_page.status_code == 403
            assert "does not allow this" in users_page.text
            assert users_page.headers["content-type"].startswith("text/html")
            assert disable.status_code == 403
            assert 'href="/ui/admin/users"' not in ui.get("/ui/experiments").text


def test_the_role_matrix_keeps_approving_and_editing_apart() -> None:
    assert Permission.EDIT_EXPERIMENTS not in ROLE_PERMISSIONS[Role.APPROVER]
    assert Permission.APPROVE_EXPERIMENTS not in ROLE_PERMISSIONS[Role.EDITOR]
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert all(Permission.VIEW in granted for granted in ROLE_PERMISSIONS.values())
    assert [r.rank for r in Role] == [0, 1, 2, 3]


def test_anonymous_browsers_go_to_sign_in_and_scripts_get_401(ui: Client) -> None:
    response = ui.get(f"{DASHBOARD}?bucket=hour", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/login?next={DASHBOARD}?bucket=hour"
    response = ui.get("/ui/experiments")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert ui.post("/ui/logout").status_code == 401


def test_an_api_key_is_not_a_sign_in_and_a_session_cannot_call_the_api(
    ui: Client, demo: Demo
) -> None:
    assert ui.get("/ui/experiments", headers={"X-API-Key": demo.api_key}).status_code == 401
    sign_in(ui, "admin")
    assert ui.get("/v1/experiments").status_code == 401
    # The cookie's path keeps browsers from sending it to the API at all.
    assert all(cookie.path == "/ui" for cookie in ui.cookies.jar if cookie.name == "bp_session")


def test_sessions_end_when_idle_and_at_their_lifetime(
    ui: Client, demo: Demo, clock: FakeClock
) -> None:
    sign_in(ui, "viewer")
    clock.advance(minutes=29)
    assert ui.get("/ui/experiments").status_code == 200
    clock.advance(minutes=31)
    assert ui.get("/ui/experiments").status_code == 401  # idle for more than 30 minutes

    sign_in(ui, "viewer")
    for _ in range(8 * 60 // 25 + 1):  # active every 25 minutes, past 8 hours
        clock.advance(minutes=25)
        if ui.get("/ui/experiments").status_code != 200:
            break
    assert ui.get("/ui/experiments").status_code == 401


def test_sign_out_revokes_the_session(ui: Client, demo: Demo) -> None:
    csrf = sign_in(ui, "editor")
    token = ui.cookies["bp_session"]
    response = ui.post("/ui/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    # Replaying the old cookie does not work: the session is revoked in the database.
    ui.cookies.set("bp_session", token, domain="testserver.local", path="/ui")
    assert ui.get("/ui/experiments").status_code == 401
    assert [row.revoked_at is not None for row in session_rows(ui, demo)] == [True]


def test_disabling_a_user_ends_their_sessions(ui: Client, users: UserService) -> None:
    sign_in(ui, "editor")
    users.disable("editor", actor="test")
    assert ui.get("/ui/experiments").status_code == 401
    login_page = login_token(ui)
    response = ui.post(
        "/ui/login", data={"username": "editor", "password": PASSWORD, "csrf_token": login_page}
    )
    assert response.status_code == 200
    assert "Wrong username or password." in response.text


def test_passwords_are_stored_as_salted_scrypt(users: UserService, demo: Demo) -> None:
    with demo.platform.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT username, password_hash FROM users")).all()
    stored = {str(row[0]): str(row[1]) for row in rows}
    assert set(stored) == {r.value for r in Role}
    assert len(set(stored.values())) == len(stored)  # same password, different salts
    for encoded in stored.values():
        assert PASSWORD not in encoded
        scheme, n, r, p, salt, _digest = encoded.split("$")
        assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
        assert len(salt) == 24  # 16 bytes, base64
        assert verify_password(PASSWORD, encoded)
        assert not verify_password(PASSWORD + "x", encoded)
        assert not needs_rehash(encoded)


def test_a_weaker_hash_is_upgraded_at_sign_in(users: UserService, demo: Demo) -> None:
    weak = hash_password(PASSWORD, ScryptParameters(n=2**10, r=8, p=1))
    with demo.platform.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE users SET password_hash = :h WHERE username = 'viewer'"), {"h": weak}
        )
    assert needs_rehash(weak)
    assert users.authenticate("viewer", PASSWORD) is not None
    with demo.platform.engine.connect() as connection:
        upgraded = connection.execute(
            sa.text("SELECT password_hash FROM users WHERE username = 'viewer'")
        ).scalar_one()
    assert upgraded.startswith("scrypt$16384$8$1$")
    assert verify_password(PASSWORD, upgraded)


def test_short_passwords_and_bad_usernames_are_refused(users: UserService) -> None:
    from bandit_platform.domain.errors import Conflict, InvalidInput

    with pytest.raises(InvalidInput) as short:
        users.create("carol", "short", Role.VIEWER, actor="test")
    assert short.value.field == "password"
    with pytest.raises(InvalidInput) as bad:
        users.create("carol smith", PASSWORD, Role.VIEWER, actor="test")
    assert bad.value.field == "username"
    with pytest.raises(Conflict):
        users.create("ADMIN", PASSWORD, Role.VIEWER, actor="test")


def test_a_user_created_by_the_cli_can_sign_in(
    client: Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del client.headers["X-API-Key"]
    client.follow_redirects = False
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BANDIT_PSEUDONYM_KEY", PSEUDONYM_KEY.decode())
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PASSWORD}\n"))
    assert main(["user", "create", "Dana", "--role", "approver", "--password-stdin"]) == 0
    assert "created with role approver" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PASSWORD}\n"))
    assert main(["user", "create", "dana", "--password-stdin"]) == 2  # taken
    sign_in(client, "dana")
    assert "(approver)" in client.get("/ui/experiments").text
    assert main(["user", "disable", "dana"]) == 0
    assert client.get("/ui/experiments").status_code == 401


def test_the_dashboard_charts_the_log_with_n_and_intervals(
    ui: Client, demo: Demo, clock: FakeClock
) -> None:
    ui.headers["X-API-Key"] = demo.api_key
    for i in range(40):
        answer = ui.post(
            "/v1/decisions", json={**DECISION, "customer_id": f"u-{i}", "request_id": f"r-{i}"}
        )
        assert answer.status_code == 200, answer.text
        if answer.json()["offer"] is not None and i % 3 == 0:
            body = outcome_body(answer.json()["decision_id"], clock, idempotency_key=f"o-{i}")
            assert ui.post("/v1/outcomes", json=body).status_code == 201
    clock.advance(days=8)
    Learner(demo.platform).run_once()
    del ui.headers["X-API-Key"]

    sign_in(ui, "viewer")
    page = ui.get(DASHBOARD)
    assert page.status_code == 200, page.text
    figures = {
        name: json.loads(text)
        for name, text in re.findall(
            r'<script type="application/json" id="figure-(\w+)">(.*?)</script>', page.text, re.S
        )
    }
    assert set(figures) == {
        "traffic",
        "allocation",
        "reward",
        "conversion",
        "lift",
        "models",
        "segments",
    }
    for name, figure in figures.items():
        assert "n = " in figure["layout"]["title"]["text"], name
        assert figure["data"], name
    traffic = sum(sum(trace["y"]) for trace in figures["traffic"]["data"])
    assert traffic == 40
    assert "n = 40" in figures["traffic"]["layout"]["title"]["text"]
    assert all("error_y" in trace for trace in figures["reward"]["data"])
    assert all("error_x" in trace for trace in figures["lift"]["data"])
    assert '<script src="/ui/vendor/plotly.min.js">' in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text)  # nothing from elsewhere
    assert "Off-policy values" in page.text
    assert "SRM:" in page.text

    assert ui.get(f"{DASHBOARD}?bucket=hour").status_code == 200
    wrong = ui.get(f"{DASHBOARD}?bucket=week", headers=HTML)
    assert wrong.status_code == 422
    assert "bucket" in wrong.text
    assert ui.get("/ui/experiments/no-such-thing", headers=HTML).status_code == 404


def test_plotly_js_is_the_packaged_file(ui: Client) -> None:
    response = ui.get("/ui/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response.content == Path(plotly_js()).read_bytes()
    assert ui.get("/ui/static/ui.css").status_code == 200
    assert ui.get("/ui/static/dashboard.js").status_code == 200


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/experiments/x?bucket=hour", "/ui/experiments/x?bucket=hour"),
        ("//evil.example/ui/", "/ui/experiments"),
        ("https://evil.example/ui/x", "/ui/experiments"),
        ("/ui\\evil", "/ui/experiments"),
        ("/v1/experiments", "/ui/experiments"),
        ("/ui/login", "/ui/experiments"),
        (None, "/ui/experiments"),
    ],
)
def test_sign_in_only_returns_to_ui_pages(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_long_expired_sessions_are_deleted(ui: Client, demo: Demo, clock: FakeClock) -> None:
    sign_in(ui, "viewer")
    clock.advance(days=31, hours=8)
    ui.cookies.clear()
    sign_in(ui, "viewer")
    rows = session_rows(ui, demo)
    assert len(rows) == 1
    assert rows[0].revoked_at is None
