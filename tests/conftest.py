"""Shared fixtures: databases (SQLite always, PostgreSQL when TEST_DATABASE_URL is set),
a platform with an injected clock, an in-process client, and a real server process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.api.app import create_app
from bandit_platform.cli import setup_demo
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage.database import create_engine, normalise_url, upgrade
from bandit_platform.storage.tables import SQLModel

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TEST_DATABASE_URL")
REQUIRE_POSTGRES = os.environ.get("BANDIT_REQUIRE_POSTGRES") == "1"
#: CI: fail the run when the browser test was skipped (e.g. no Chromium could be installed).
REQUIRE_BROWSER = os.environ.get("BANDIT_REQUIRE_BROWSER") == "1"
PSEUDONYM_KEY = b"test-pseudonym-key-0123456789abcdef"

_postgres_ran: list[str] = []
_postgres_skipped: list[str] = []
_browser_ran: list[str] = []
_browser_skipped: list[str] = []


class FakeClock:
    """A settable clock for tests: `clock()` returns the current fake time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _pg_url(database: str) -> str:
    assert PG_ADMIN_URL is not None
    return (
        sa.make_url(normalise_url(PG_ADMIN_URL))
        .set(database=database)
        .render_as_string(hide_password=False)
    )


def create_pg_database(name: str) -> str:
    """(Re)create a PostgreSQL database for this test worker and return its URL."""
    assert PG_ADMIN_URL is not None
    admin = sa.create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return _pg_url(name)


def drop_pg_database(name: str) -> None:
    assert PG_ADMIN_URL is not None
    admin = sa.create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_session_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test worker."""
    if PG_ADMIN_URL is None:
        pytest.skip("TEST_DATABASE_URL is not set")
    name = f"bandit_test_{_worker()}_{os.getpid()}"
    url = create_pg_database(name)
    upgrade(url)
    yield url
    drop_pg_database(name)


def _truncate(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    engine.dispose()


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file."""
    path = tmp_path / "bandit.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database: the test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    url = request.getfixturevalue("postgres_session_url")
    _truncate(url)
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY)


@pytest.fixture
def platform(settings: Settings, clock: FakeClock) -> Iterator[Platform]:
    platform = Platform(settings, clock=clock)
    yield platform
    platform.close()


@dataclass
class Demo:
    """The demo experiment set up on a platform, with an all-scopes API key."""

    platform: Platform
    api_key: str


@pytest.fixture
def demo(platform: Platform) -> Demo:
    secret, _ = setup_demo(platform)
    return Demo(platform, secret)


@pytest.fixture
def client(demo: Demo, settings: Settings) -> Iterator[TestClient[Litestar]]:
    """An in-process client of the app on the demo platform, sending the demo API key."""
    app = create_app(settings, demo.platform)
    with TestClient(app=app, raise_server_exceptions=False) as test_client:
        test_client.headers["X-API-Key"] = demo.api_key
        yield test_client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres" in item.keywords and PG_ADMIN_URL is None:
            item.add_marker(pytest.mark.skip(reason="TEST_DATABASE_URL is not set"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "browser" in report.keywords:
        if report.when == "call" and report.passed:
            _browser_ran.append(report.nodeid)
        elif report.skipped:
            _browser_skipped.append(report.nodeid)
    if "postgres" not in report.keywords:
        return
    if report.when == "call" and report.passed:
        _postgres_ran.append(report.nodeid)
    elif report.skipped:
        _postgres_skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return
    if REQUIRE_BROWSER and _browser_skipped:
        print(f"\n{len(_browser_skipped)} browser tests were skipped", file=sys.stderr)
        session.exitstatus = 1
    elif REQUIRE_BROWSER and not _browser_ran and exitstatus == 0:
        selected = session.config.getoption("-m") or session.config.getoption("-k")
        if not selected and session.testscollected > 0:
            print("\nno browser test ran", file=sys.stderr)
            session.exitstatus = 1
    if not REQUIRE_POSTGRES:
        return
    if PG_ADMIN_URL is None:
        print("\nBANDIT_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set", file=sys.stderr)
        session.exitstatus = 1
    elif _postgres_skipped:
        print(f"\n{len(_postgres_skipped)} PostgreSQL tests were skipped", file=sys.stderr)
        session.exitstatus = 1
    elif not _postgres_ran and session.testscollected > 0 and exitstatus == 0:
        selected = session.config.getoption("-m") or session.config.getoption("-k")
        if not selected:
            print("\nno PostgreSQL test ran", file=sys.stderr)
            session.exitstatus = 1


# --- a real server process -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A `bandit-platform serve` process on a free port."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    handle: BinaryIO

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": api_key} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


SERVER_READY_SECONDS = 180.0


def start_server(
    db_url: str,
    log: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    ready_timeout: float = SERVER_READY_SECONDS,
) -> Server:
    """Start `bandit-platform serve` as its own process and wait until it reports ready.

    The wait is generous because a busy machine (two CI workers, a browser, a study in a
    background process) can take well over a minute to import and migrate; a server that
    fails fast is reported at once from its log.
    """
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "BANDIT_LEARNER": "off",
        **(env or {}),
    }
    handle = log.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bandit_platform.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            handle.close()
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return Server(url, process, log, handle)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    process.wait()
    handle.close()
    raise RuntimeError(f"server did not become ready:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    server.handle.close()


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    running = start_server(db_url, tmp_path / f"server-{uuid.uuid4().hex[:6]}.log")
    yield running
    stop_server(running)
