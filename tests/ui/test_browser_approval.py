"""The approval workflow in a real browser (Debian's Chromium, headless, Playwright) against the
real server: an editor cannot start an unapproved draft; an approver, in a second browser
context, reads the diff and approves with a comment; the editor starts, pauses and rolls back
a model; the audit log shows every step. Screenshots go to `$ARTIFACTS_DIR`.
"""

# ruff: noqa: F811 (the fixtures imported from test_browser are parameters here)

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import config_to_builtins
from tests.conftest import PSEUDONYM_KEY, Server, start_server, stop_server
from tests.ui.test_browser import _cli, artifacts, chromium  # noqa: F401

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.browser]

KEY = "savings-push"
EDITOR = "pm"
APPROVER = "compliance"
PASSWORD = "a long pass phrase for the browser"


@pytest.fixture
def approval_server(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    """The real server on SQLite with the demo (no traffic), an editor, an approver and a
    draft experiment written with `experiment apply`."""
    db_url = f"sqlite:///{tmp_path / 'approval.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "OPENBLAS_NUM_THREADS": "1",
    }
    _cli(env, "demo", "--setup-only", "--no-traffic")
    for name, role in ((EDITOR, "editor"), (APPROVER, "approver")):
        _cli(env, "user", "create", name, "--role", role, "--password-stdin", stdin=PASSWORD)
    config = config_to_builtins(msgspec.structs.replace(demo_config(), key=KEY))
    document = tmp_path / "savings-push.json"
    document.write_text(json.dumps(config))
    _cli(env, "experiment", "apply", str(document))
    server = start_server(db_url, tmp_path / "server.log")
    yield server, env
    stop_server(server)


def _sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/ui/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/ui/experiments")


def test_approve_start_pause_roll_back_and_audit(
    chromium: Path, artifacts: Path, approval_server: tuple[Server, dict[str, str]]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    server, env = approval_server
    base = server.url
    manage = f"{base}/ui/experiments/{KEY}/manage"
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            editor = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
            approver = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
            for page in (editor, approver):
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

            # The editor sees the draft; it cannot start before approval.
            _sign_in(editor, base, EDITOR)
            editor.get_by_role("link", name="Changes").click()
            editor.wait_for_url(f"{base}/ui/changes")
            expect(editor.get_by_role("link", name="Review Next best offer")).to_be_visible()
            editor.goto(manage)
            expect(editor.locator("#experiment-status")).to_have_text("draft")
            expect(editor.get_by_text("Version 1 is not approved")).to_be_visible()
            expect(editor.get_by_role("button", name="Start")).to_be_disabled()
            editor.screenshot(path=str(artifacts / "approval-draft-editor.png"), full_page=True)

            # The approver, in a second browser context, reads the diff and approves.
            _sign_in(approver, base, APPROVER)
            approver.get_by_role("link", name="Changes").click()
            approver.get_by_role("link", name="Review Next best offer").click()
            approver.wait_for_url(f"{base}/ui/experiments/{KEY}/review")
            expect(approver.get_by_role("heading", name="Eligibility rules")).to_be_visible()
            expect(approver.get_by_role("heading", name="Traffic split")).to_be_visible()
            approver.get_by_text("Unified diff of the configuration").click()
            expect(approver.locator(".unified-diff")).to_contain_text('"holdout"')
            comment = approver.get_by_label("Comment (required")
            approver.get_by_role("button", name="Approve").click()
            # The browser keeps an empty comment from being sent; nothing is approved.
            assert approver.evaluate("document.getElementById('comment').validity.valueMissing")
            comment.fill("Eligibility and caps checked against the offer policy")
            approver.screenshot(path=str(artifacts / "approval-review.png"))
            approver.get_by_role("button", name="Approve").click()
            approver.wait_for_url(manage)
            expect(approver.locator("#experiment-status")).to_have_text("approved")

            # The editor starts and pauses it.
            editor.reload()
            expect(editor.locator("#experiment-status")).to_have_text("approved")
            editor.get_by_role("button", name="Start").click()
            expect(editor.locator("#experiment-status")).to_have_text("running")
            editor.get_by_role("button", name="Pause").click()
            expect(editor.locator("#experiment-status")).to_have_text("paused")

            # A second model (retrained by an operator), then the editor rolls back to v1.
            _cli(env, "model", "warm-start", "--experiment", KEY)
            editor.reload()
            editor.get_by_label("Serve an earlier model again").select_option("1")
            editor.get_by_role("button", name="Roll back").click()
            expect(editor.get_by_role("cell", name="rollback to v1")).to_be_visible()
            editor.screenshot(path=str(artifacts / "approval-manage.png"), full_page=True)

            # The audit log shows each step, newest first, with the approver's comment.
            approver.goto(f"{base}/ui/experiments/{KEY}/audit")
            table = approver.locator("table.audit tbody")
            expect(table).to_contain_text("model.rollback")
            expect(table).to_contain_text("Eligibility and caps checked")
            actions = approver.locator("table.audit tbody th").all_inner_texts()
            assert actions == [
                "model.rollback",
                "model.warm_start",
                "experiment.status",
                "experiment.status",
                "experiment.approved",
                "experiment.create",
            ], actions
            approver.get_by_label("Action").select_option("experiment.status")
            approver.get_by_role("button", name="Filter").click()
            expect(approver.locator("table.audit tbody tr")).to_have_count(2)
            approver.screenshot(path=str(artifacts / "approval-audit.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
