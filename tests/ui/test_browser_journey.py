"""The whole journey in a real browser (Debian's Chromium, headless, Playwright) against the
real server on a fresh, migrated database: an editor signs in and creates an experiment; an
approver, in a second browser context, reviews and approves it with a comment; the editor starts
it; simulated customers are played into it through the platform's services; the dashboard draws
its charts with data; the editor pauses it and rolls back to an earlier model; the audit log
shows every step. Screenshots go to `$ARTIFACTS_DIR`.
"""

# ruff: noqa: F811 (the fixtures imported from test_browser are parameters here)

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import config_to_builtins
from bandit_platform.settings import Settings
from simulators.traffic import play_traffic
from tests.conftest import PSEUDONYM_KEY, Server, start_server, stop_server
from tests.ui.test_browser import CHARTS, _cli, artifacts, chromium  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.browser]

KEY = "journey-offers"
NAME = "Journey: offers in the app"
EDITOR = "pm"
APPROVER = "compliance"
PASSWORD = "a long pass phrase for the journey"
LAPTOP: ViewportSize = {"width": 1366, "height": 900}
#: A day of rewards, so that a few simulated days close (and are learned) within seconds.
REWARD_HOURS = 24
CUSTOMERS = 120
DAYS = 3
#: Every plotly chart on the page drawn, each with at least one point.
CHARTS_DRAWN = (
    "() => { const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));"
    " return plots.length > 0 && plots.every(e => e.querySelector('.main-svg') && e.data"
    " && e.data.reduce((s, t) => s + (t.x ? t.x.length : 0), 0) > 0); }"
)


@pytest.fixture
def journey_server(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    """The real server on a fresh, migrated SQLite database with an editor and an approver
    created through the CLI (no experiments)."""
    db_url = f"sqlite:///{tmp_path / 'journey.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "BANDIT_LEARNER": "off",
        "OPENBLAS_NUM_THREADS": "1",
    }
    _cli(env, "migrate")
    for name, role in ((EDITOR, "editor"), (APPROVER, "approver")):
        _cli(env, "user", "create", name, "--role", role, "--password-stdin", stdin=PASSWORD)
    # The server looks for newer model versions every second (the default), so the versions
    # the simulated traffic publishes are served without a restart.
    server = start_server(db_url, tmp_path / "server.log", env={"OPENBLAS_NUM_THREADS": "1"})
    yield server, env
    stop_server(server)


def _configuration() -> dict[str, Any]:
    """The demo's offers and context under a new key, with a one-day reward window."""
    config = config_to_builtins(msgspec.structs.replace(demo_config(), key=KEY, name=NAME))
    assert isinstance(config, dict)
    config["reward"]["attribution_window_hours"] = REWARD_HOURS
    config["reward"]["reward_wait_hours"] = REWARD_HOURS
    return config


def _sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/ui/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/ui/experiments")


def test_journey_from_sign_in_to_rollback(
    chromium: Path, artifacts: Path, journey_server: tuple[Server, dict[str, str]]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    server, env = journey_server
    base = server.url
    dashboard = f"{base}/ui/experiments/{KEY}"
    manage = f"{dashboard}/manage"
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            editor = browser.new_context(viewport=LAPTOP).new_page()
            approver = browser.new_context(viewport=LAPTOP).new_page()
            for page in (editor, approver):
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

            # The editor signs in and creates the experiment from its whole configuration.
            _sign_in(editor, base, EDITOR)
            expect(editor.get_by_text(f"Signed in as {EDITOR}")).to_be_visible()
            editor.goto(f"{base}/ui/experiments/new")
            expect(editor.get_by_role("heading", name="New experiment")).to_be_visible()
            editor.get_by_text("Advanced: edit the whole configuration as JSON").click()
            editor.get_by_label("Configuration (JSON)").fill(json.dumps(_configuration()))
            editor.screenshot(path=str(artifacts / "journey-1-create.png"))
            editor.get_by_role("button", name="Save the JSON").click()
            expect(editor.locator(".flash")).to_contain_text("Experiment created as a draft")
            assert editor.url.startswith(dashboard)
            editor.goto(manage)
            expect(editor.locator("#experiment-status")).to_have_text("draft")
            expect(editor.get_by_role("button", name="Start")).to_be_disabled()

            # The approver, in a second browser context, reviews and approves with a comment.
            _sign_in(approver, base, APPROVER)
            approver.get_by_role("link", name="Changes").click()
            approver.get_by_role("link", name=f"Review {NAME}").click()
            approver.wait_for_url(f"{dashboard}/review")
            expect(approver.get_by_role("heading", name="Eligibility rules")).to_be_visible()
            approver.get_by_label("Comment (required").fill("Offers and caps checked for launch")
            approver.screenshot(path=str(artifacts / "journey-2-review.png"), full_page=True)
            approver.get_by_role("button", name="Approve").click()
            approver.wait_for_url(manage)
            expect(approver.locator("#experiment-status")).to_have_text("approved")

            # The editor starts it.
            editor.reload()
            expect(editor.locator("#experiment-status")).to_have_text("approved")
            editor.get_by_role("button", name="Start").click()
            expect(editor.locator("#experiment-status")).to_have_text("running")
            editor.screenshot(path=str(artifacts / "journey-3-started.png"), full_page=True)

            # Simulated customers, through the platform's services on the same database; the
            # learner passes publish model versions the server picks up.
            traffic = play_traffic(
                Settings.from_environment(env), KEY, customers=CUSTOMERS, days=DAYS
            )
            assert traffic.decisions > 0
            assert traffic.outcomes > 0

            # The dashboard draws every chart with data.
            editor.goto(dashboard)
            editor.wait_for_function(CHARTS_DRAWN, timeout=30_000)
            charts = editor.evaluate(
                "Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => e.id)"
            )
            assert len(charts) == CHARTS, charts
            editor.screenshot(path=str(artifacts / "journey-4-dashboard.png"), full_page=True)

            # The editor pauses it and serves an earlier model again.
            editor.goto(manage)
            editor.get_by_role("button", name="Pause").click()
            expect(editor.locator("#experiment-status")).to_have_text("paused")
            models = editor.locator("table", has_text="Model versions, newest first")
            assert models.locator("tbody tr").count() > 2  # the learned versions are listed
            versions = editor.get_by_label("Serve an earlier model again")
            versions.select_option("1")
            editor.get_by_role("button", name="Roll back").click()
            expect(editor.get_by_role("cell", name="rollback to v1")).to_be_visible()
            editor.screenshot(path=str(artifacts / "journey-5-rollback.png"), full_page=True)

            # The audit log shows each step, with the approver's comment.
            approver.goto(f"{dashboard}/audit")
            table = approver.locator("table.audit tbody")
            expect(table).to_contain_text("model.rollback")
            expect(table).to_contain_text("Offers and caps checked for launch")
            actions = approver.locator("table.audit tbody th").all_inner_texts()
            for action in ("experiment.create", "experiment.approved", "model.rollback"):
                assert action in actions, actions
            assert actions.count("experiment.status") == 2, actions  # started, then paused
            assert actions.index("model.rollback") < actions.index("experiment.status")
            expect(table).to_contain_text('"from": "approved", "to": "running"')
            expect(table).to_contain_text('"from": "running", "to": "paused"')
            expect(table).to_contain_text('"to_version": 1')
            approver.screenshot(path=str(artifacts / "journey-6-audit.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
