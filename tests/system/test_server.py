"""The real server process, over real HTTP, against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bandit_platform.cli import setup_demo
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage.database import create_engine
from tests.conftest import (
    PSEUDONYM_KEY,
    REPO,
    SERVER_READY_SECONDS,
    free_port,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.system

EXAMPLES = REPO / "examples" / "requests"


def _demo_key(db_url: str) -> str:
    platform = Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))
    try:
        secret, _ = setup_demo(platform)
    finally:
        platform.close()
    return secret


def _count(db_url: str, table: str) -> int:
    engine = create_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        count = connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(count)


def _decision_body(customer: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / "decision.json").read_text())
    body["customer_id"] = customer
    body.pop("request_id")
    return body


def test_decide_then_outcome_over_http(db_url: str, tmp_path: Path) -> None:
    key = _demo_key(db_url)
    server = start_server(db_url, tmp_path / "server.log")
    try:
        with server.client(key) as client:
            decision = client.post(
                "/v1/decisions",
                content=(EXAMPLES / "decision.json").read_bytes(),
                headers={"Content-Type": "application/json"},
            )
            assert decision.status_code == 200, decision.text
            answer = decision.json()
            assert answer["group"] in {"holdout", "ab", "bandit"}
            assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-6
            outcome_body = json.loads((EXAMPLES / "outcome.json").read_text())
            outcome_body["decision_id"] = answer["decision_id"]
            outcome_body["occurred_at"] = datetime.now(UTC).isoformat()
            outcome = client.post("/v1/outcomes", json=outcome_body)
            assert outcome.status_code == 201, outcome.text
            assert client.post("/v1/outcomes", json=outcome_body).status_code == 200

            before = _count(db_url, "decisions")
            bad = client.post(
                "/v1/decisions",
                content=b'{"experiment": "banking-offers-demo", "customer_id":',
                headers={"Content-Type": "application/json"},
            )
            assert bad.status_code == 400
            assert bad.headers["content-type"].startswith("application/problem+json")
            assert bad.json()["field"] == "body"
            assert _count(db_url, "decisions") == before
            assert client.get("/schema/openapi.json").status_code == 200
    finally:
        stop_server(server)

    engine = create_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT propensity, probabilities, customer_key FROM decisions WHERE id = :id"),
            {"id": answer["decision_id"]},
        ).one()
        outcomes = connection.execute(
            sa.text("SELECT event FROM outcomes WHERE decision_id = :id"),
            {"id": answer["decision_id"]},
        ).all()
    engine.dispose()
    assert row.propensity == pytest.approx(answer["propensity"])
    assert "customer-000123" not in row.customer_key  # stored as a keyed pseudonym
    assert [o.event for o in outcomes] == ["click"]


def test_answered_decisions_survive_kill_9(db_url: str, tmp_path: Path) -> None:
    """Invariant 1: every decision the API answered is in the database after a kill -9."""
    key = _demo_key(db_url)
    server = start_server(db_url, tmp_path / "server.log")
    answered: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as c:
            while not stop.is_set():
                try:
                    response = c.post(
                        "/v1/decisions", json=_decision_body(f"c-{rng.randrange(10**9)}")
                    )
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        answered.append(response.json())

    threads = [threading.Thread(target=load, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(answered) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.handle.close()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(answered) >= 150

    engine = create_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        if db_url.startswith("sqlite"):
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        stored = {
            row.id: row
            for row in connection.execute(
                sa.text('SELECT id, propensity, model_version, "group" FROM decisions')
            )
        }
    engine.dispose()
    for answer in answered:
        row = stored.get(answer["decision_id"])
        assert row is not None, "an answered decision was lost"
        assert row.propensity == pytest.approx(answer["propensity"])
        assert row.model_version == answer["model_version"]


@pytest.mark.postgres
def test_two_workers_share_sticky_groups(tmp_path: Path) -> None:
    """Two worker processes on PostgreSQL assign every customer to the same group."""
    from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database

    if PG_ADMIN_URL is None:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = create_pg_database("bandit_two_workers")
    try:
        from bandit_platform.storage.database import upgrade

        upgrade(url)
        key = _demo_key(url)
        server = start_server(url, tmp_path / "server.log", workers=2)
        try:
            groups: dict[str, set[str]] = {}
            with server.client(key) as client:
                for round_ in range(3):
                    for customer in range(40):
                        # A new connection each time, so requests spread over both workers.
                        response = client.post(
                            "/v1/decisions",
                            json=_decision_body(f"sticky-{customer}"),
                            headers={"Connection": "close"},
                        )
                        assert response.status_code == 200, (round_, response.text)
                        groups.setdefault(f"sticky-{customer}", set()).add(response.json()["group"])
                assert client.get("/health/ready").status_code == 200
            assert all(len(g) == 1 for g in groups.values())
        finally:
            stop_server(server)
    finally:
        drop_pg_database("bandit_two_workers")


def test_demo_command_sets_up_and_serves(tmp_path: Path) -> None:
    """`bandit-platform demo` on a fresh SQLite file: experiment running, key printed."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BANDIT_PSEUDONYM_KEY"}}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.db'}"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bandit_platform.cli", "demo", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        key = None
        # The demo plays two weeks of simulated customers before it serves.
        deadline = time.monotonic() + SERVER_READY_SECONDS + 120
        while key is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            match = re.search(r"API key for trying it \(shown once\): (\S+)", line)
            if match:
                key = match.group(1)
        assert key is not None, "".join(lines)
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        response = httpx.post(
            f"{url}/v1/decisions",
            content=(EXAMPLES / "decision.json").read_bytes(),
            headers={"X-API-Key": key, "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        assert (tmp_path / "demo.pseudonym-key").exists()
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()
