"""The dashboard's analyses and the simulation page in a real browser (Debian's Chromium,
Playwright) against the real server on the demo with simulated traffic: the candidate policies'
table and chart, the segment chart, a fairness upload and a quick study with its report.
Screenshots go to `$ARTIFACTS_DIR` (default `tests/ui/artifacts/`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from tests.conftest import PSEUDONYM_KEY, Server, start_server, stop_server
from tests.ui.test_browser import _cli, artifacts, chromium

__all__ = ["artifacts", "chromium"]  # fixtures used by name below

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.browser]

USERNAME = "auditor"
PASSWORD = "a long pass phrase for the dashboard"


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[Server]:
    """The real server on SQLite with the demo, simulated traffic and an admin (who may audit
    fairness and run studies)."""
    db_url = f"sqlite:///{tmp_path / 'ui.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "OPENBLAS_NUM_THREADS": "1",
    }
    _cli(env, "demo", "--setup-only", "--traffic-customers", "200", "--traffic-days", "10")
    _cli(env, "user", "create", USERNAME, "--role", "admin", "--password-stdin", stdin=PASSWORD)
    server = start_server(db_url, tmp_path / "server.log", env={"OPENBLAS_NUM_THREADS": "1"})
    yield server
    stop_server(server)


def test_policies_segments_fairness_and_a_study_in_the_browser(
    chromium: Path, artifacts: Path, admin_server: Server, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = admin_server.url
    dashboard = f"{base}/ui/experiments/{DEMO_EXPERIMENT_KEY}"
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console: {message.text}") if message.type == "error" else None
                ),
            )
            page.goto(f"{base}/ui/login")
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.goto(dashboard)

            # Segments: the chart is drawn with data, the table beside it.
            segments = page.locator("#chart-segments")
            expect(segments.locator(".main-svg").first).to_be_visible(timeout=15_000)
            assert segments.locator(".barlayer .point").count() > 0
            page.get_by_text("Segments as a table").click()
            expect(page.locator("#segment-table")).to_be_visible()
            expect(page.locator("#integrity-badge")).to_be_visible()
            page.locator("#segments-title").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts / "dashboard-segments.png"), full_page=True)

            # The candidate policies, on demand.
            page.get_by_role("link", name="candidate policies (off-policy table)").click()
            page.get_by_role("button", name="Estimate policy values").click()
            expect(page.locator("#ope-timing")).to_contain_text("Computed in")
            chart = page.locator("#chart-policies")
            expect(chart.locator(".main-svg").first).to_be_visible(timeout=15_000)
            assert chart.locator(".scatterlayer .point").count() > 0
            assert page.locator("#ope-table tbody tr").count() >= 9
            page.screenshot(path=str(artifacts / "policies.png"), full_page=True)

            # The integrity check, then its badge on the dashboard.
            page.goto(f"{dashboard}/integrity")
            expect(page.locator("#integrity-badge")).to_contain_text("integrity")
            page.goto(dashboard)
            expect(page.locator("#integrity-badge")).not_to_contain_text("not checked")

            # A fairness audit from a small CSV.
            groups = tmp_path / "groups.csv"
            groups.write_text(
                "customer_id,age_band\n"
                + "".join(
                    f"sim-customer-{i},{'under_40' if i % 2 else 'over_40'}\n" for i in range(250)
                )
            )
            page.goto(f"{dashboard}/fairness")
            page.get_by_label("Protected groups (CSV)").set_input_files(str(groups))
            page.get_by_role("button", name="Run the audit").click()
            expect(page.locator("#fairness-summary")).to_contain_text("supplied customers matched")
            fairness = page.locator("#chart-fairness")
            expect(fairness.locator(".main-svg").first).to_be_visible(timeout=15_000)
            expect(page.locator("table.fairness").first).to_contain_text("over_40")
            page.screenshot(path=str(artifacts / "fairness.png"), full_page=True)

            # A quick study; its page reloads itself until the report is there.
            page.goto(f"{base}/ui/simulation")
            page.get_by_label("Experiment", exact=True).select_option(DEMO_EXPERIMENT_KEY)
            page.get_by_label("Study", exact=True).select_option("planning-quick")
            page.get_by_role("button", name="Run the study").click()
            expect(page.locator("#job-state")).to_have_attribute(
                "data-state", "done", timeout=50_000
            )
            report = page.locator("#study-report")
            expect(report.locator("table").first).to_be_visible()
            image = report.locator("img").first
            expect(image).to_be_visible()
            assert image.evaluate("i => i.naturalWidth") > 0
            page.screenshot(path=str(artifacts / "simulation-report.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
