"""The experiment editor in a real browser (Debian's Chromium, headless, Playwright) against the
real server: an editor types a small experiment (keyboard first), sees a field's error next
to it, fixes it, saves, and runs the rule tester on a pasted context. Screenshots go to
`$ARTIFACTS_DIR`.
"""

# ruff: noqa: F811 (the fixtures imported from test_browser are parameters here)

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PSEUDONYM_KEY, Server, start_server, stop_server
from tests.ui.test_browser import _cli, artifacts, chromium  # noqa: F401

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.browser]

EDITOR = "pm"
PASSWORD = "a long pass phrase for the browser"
KEY = "card-upsell"
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}


@pytest.fixture
def editor_server(tmp_path: Path) -> Iterator[Server]:
    """The real server on SQLite with the demo (no traffic) and an editor."""
    db_url = f"sqlite:///{tmp_path / 'editor.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "OPENBLAS_NUM_THREADS": "1",
    }
    _cli(env, "demo", "--setup-only", "--no-traffic")
    _cli(env, "user", "create", EDITOR, "--role", "editor", "--password-stdin", stdin=PASSWORD)
    server = start_server(db_url, tmp_path / "server.log")
    yield server
    stop_server(server)


def test_create_an_experiment_and_test_its_rules(
    chromium: Path, artifacts: Path, editor_server: Server
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = editor_server.url
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            page = browser.new_page(viewport=LAPTOP)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console: {message.text}") if message.type == "error" else None
                ),
            )
            page.goto(f"{base}/ui/login")
            page.get_by_label("Username").fill(EDITOR)
            page.get_by_label("Password").fill(PASSWORD)
            page.keyboard.press("Enter")
            expect(page.get_by_role("heading", name="Experiments")).to_be_visible()

            page.goto(f"{base}/ui/experiments/new")
            expect(page.get_by_role("heading", name="New experiment")).to_be_visible()
            # The first fields with the keyboard: each input is labelled and in tab order.
            page.locator("#f-key").focus()
            page.keyboard.type(KEY)
            page.keyboard.press("Tab")
            expect(page.locator("#f-name")).to_be_focused()
            page.keyboard.type("Card upsell")
            page.keyboard.press("Tab")
            expect(page.get_by_label("Description", exact=True).first).to_be_focused()
            page.keyboard.type("Cards for travellers")
            page.keyboard.press("Tab")
            expect(page.get_by_label("Surfaces")).to_be_focused()
            page.keyboard.press("End")
            page.keyboard.type(", banner")

            page.get_by_label("Context fields as JSON").fill(
                json.dumps([{"name": "cash_flow.balance", "type": "number"}])
            )
            page.get_by_label("Protected attributes").fill("profile.gender")
            page.locator("#f-offers-0-key").fill("travel_card")
            page.locator("#f-offers-0-product").fill("credit_card")
            page.locator("#f-offers-0-name").fill("Travel card")
            rule = page.locator("#f-offers-0-eligibility")
            rule.fill("cash_flow.balance >=")
            # Only the chosen explorer's explanation shows (script), next to the choice.
            page.get_by_label("Explorer").select_option("softmax")
            expect(
                page.get_by_text("Show offers in proportion to how good they look")
            ).to_be_visible()
            expect(page.get_by_text("Keep a small set of diverse policies")).to_be_hidden()
            page.get_by_role("button", name="Save").first.click()

            # The error is next to the rule, the input is kept, the summary links to it.
            expect(rule).to_have_attribute("aria-invalid", "true")
            expect(rule).to_have_value("cash_flow.balance >=")
            expect(page.locator("#f-offers-0-eligibility-error")).to_contain_text("expected")
            expect(page.locator("#error-summary")).to_be_focused()
            expect(page.locator("#f-name")).to_have_value("Card upsell")
            page.locator("#error-summary a").first.click()
            page.screenshot(path=str(artifacts / "editor-field-error.png"), full_page=False)

            rule.fill("cash_flow.balance >= 1000")
            page.get_by_role("button", name="Save").first.click()
            expect(page.locator(".flash")).to_contain_text("Experiment created as a draft")
            assert page.url.startswith(f"{base}/ui/experiments/{KEY}")

            page.goto(f"{base}/ui/experiments/{KEY}/rules")
            page.set_viewport_size(TABLET)
            sample = {"cash_flow": {"balance": 5000}, "profile": {"gender": "female"}}
            page.get_by_label("Sample context (JSON)").fill(json.dumps(sample))
            page.get_by_role("button", name="Test the rules").click()
            row = page.locator('tr[data-offer="travel_card"]')
            expect(row).to_contain_text("eligible")
            expect(row).to_contain_text("cash_flow.balance = 5000")
            expect(page.locator(".dropped")).to_contain_text("profile.gender")
            page.screenshot(path=str(artifacts / "editor-rule-tester.png"), full_page=True)

            page.get_by_label("Sample context (JSON)").fill('{"cash_flow": {"balance": 10}}')
            page.get_by_role("button", name="Test the rules").click()
            expect(page.locator('tr[data-offer="travel_card"]')).to_contain_text("not eligible")
        finally:
            browser.close()
    # An invalid form answers 422 on purpose (the browser logs that); nothing else may fail.
    assert [p for p in problems if "status of 422" not in p] == []
