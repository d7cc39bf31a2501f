"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright, against the
real server process on a database with the demo experiment and simulated traffic.

Chromium comes from apt (`apt-get install chromium`) when `/usr/bin/chromium` is missing;
Playwright never downloads a browser. Screenshots go to `$ARTIFACTS_DIR` (default
`tests/ui/artifacts/`, ignored by git).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PSEUDONYM_KEY, REPO, Server, start_server, stop_server

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
USERNAME = "pm"
PASSWORD = "a long pass phrase for the browser"
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}
CHARTS = 7


def _install_chromium() -> str | None:
    """Install Debian's chromium with apt; None when done, else why it could not be."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "apt-get needs root; install the chromium package first"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # the package lists may be missing or stale
        subprocess.run([apt, "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not CHROMIUM.exists():
        return f"apt-get install chromium failed: {result.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed with apt when missing (skips only when that fails)."""
    if not CHROMIUM.exists():
        problem = _install_chromium()
        if problem is not None:
            pytest.skip(f"no Chromium for the browser test: {problem}")
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    directory = Path(os.environ.get("ARTIFACTS_DIR", REPO / "tests" / "ui" / "artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bandit_platform.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[Server]:
    """The real server on a SQLite database with the demo, simulated traffic and a user
    created through the CLI."""
    db_url = f"sqlite:///{tmp_path / 'ui.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "OPENBLAS_NUM_THREADS": "1",
    }
    _cli(env, "demo", "--setup-only", "--traffic-customers", "250", "--traffic-days", "14")
    _cli(env, "user", "create", USERNAME, "--role", "editor", "--password-stdin", stdin=PASSWORD)
    server = start_server(db_url, tmp_path / "server.log")
    yield server
    stop_server(server)


def test_sign_in_browse_the_dashboard_and_sign_out(
    chromium: Path, artifacts: Path, demo_server: Server
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = demo_server.url
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            page = browser.new_page(viewport=LAPTOP)
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console: {message.text}") if message.type == "error" else None
                ),
            )

            # Anonymous: sent to the sign-in form, which is labelled and keyboard-usable.
            page.goto(f"{base}/ui/experiments")
            assert page.url.startswith(f"{base}/ui/login")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            username = page.get_by_label("Username")
            password = page.get_by_label("Password")
            expect(username).to_be_focused()  # autofocus
            page.keyboard.type(USERNAME)
            page.keyboard.press("Tab")
            expect(password).to_be_focused()
            page.keyboard.type("not the password")
            page.keyboard.press("Tab")
            expect(page.get_by_role("button", name="Sign in")).to_be_focused()
            page.keyboard.press("Enter")
            expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
            expect(password).to_have_attribute("aria-invalid", "true")
            expect(password).to_be_focused()  # where the error is
            page.screenshot(path=str(artifacts / "login-error.png"))

            page.keyboard.type(PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/ui/experiments")
            expect(page.get_by_text(f"Signed in as {USERNAME}")).to_be_visible()
            row = page.get_by_role("row").filter(has_text="banking-offers-demo")
            expect(row).to_contain_text("running")
            page.screenshot(path=str(artifacts / "experiments.png"), full_page=True)

            # The dashboard: every chart drawn by plotly with data.
            page.get_by_role("link", name="Next best offer in the mobile app").click()
            page.wait_for_url(f"{base}/ui/experiments/banking-offers-demo")
            page.wait_for_function(
                "n => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".filter(e => e.data && e.data.length > 0 && e.querySelector('.main-svg'))"
                ".length === n",
                arg=CHARTS,
                timeout=30_000,
            )
            traces = page.evaluate(
                "Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".map(e => [e.id, e.data.reduce((s, t) => s + (t.x ? t.x.length : 0), 0)])"
            )
            assert len(traces) == CHARTS
            assert all(points > 0 for _, points in traces), traces
            for caption in page.locator("figcaption").all_inner_texts():
                assert "n = " in caption, caption
            expect(page.get_by_role("table").filter(has_text="IPS")).to_be_visible()
            page.screenshot(path=str(artifacts / "dashboard-laptop.png"), full_page=True)

            page.set_viewport_size(TABLET)
            page.wait_for_timeout(500)  # plotly redraws responsive charts on resize
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a tablet"
            page.screenshot(path=str(artifacts / "dashboard-tablet.png"), full_page=True)
            page.set_viewport_size(LAPTOP)

            # Sign out: back to the form, and the pages are closed again.
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(f"{base}/ui/login")
            page.goto(f"{base}/ui/experiments")
            assert page.url.startswith(f"{base}/ui/login")
        finally:
            browser.close()

    assert problems == []  # no script errors, no blocked (CSP) loads
    assert requests
    elsewhere = [url for url in requests if not url.startswith(base)]
    assert elsewhere == []  # everything comes from the server: works offline, no CDN
