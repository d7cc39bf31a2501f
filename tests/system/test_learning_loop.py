"""The whole loop through running servers: decide -> outcome -> reward -> learn -> serve.

A small synthetic population: students respond to the travel card, retirees to the savings
account, and nobody much to the budgeting tool. Tolerances, fixed before running: after 600
decisions with outcomes, the bandit (epsilon-greedy, epsilon 0.2 over 3 offers, so the best
offer's probability is at most 0.867 once learned) shows each segment its best offer in at
least 60% of 150 new decisions.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import ExperimentConfig, config_from_builtins
from bandit_platform.domain.decisions import ExperimentStatus
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage.database import create_engine, upgrade
from tests.conftest import (
    PG_ADMIN_URL,
    PSEUDONYM_KEY,
    Server,
    create_pg_database,
    drop_pg_database,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.system

KEY = "segments-e2e"
BEST = {"student": "travel_card", "retired": "savings"}
CLICK = {
    ("student", "travel_card"): 0.7,
    ("student", "savings"): 0.1,
    ("student", "budgeting"): 0.15,
    ("retired", "travel_card"): 0.1,
    ("retired", "savings"): 0.7,
    ("retired", "budgeting"): 0.15,
}
FAST_LEARNER = {
    "BANDIT_LEARNER": "on",
    "BANDIT_LEARNER_INTERVAL_SECONDS": "0.2",
    "BANDIT_MODEL_REFRESH_SECONDS": "0.2",
}


def experiment_config() -> ExperimentConfig:
    def offer(key: str, product: str) -> dict[str, Any]:
        return {
            "key": key,
            "product": product,
            "name": key.replace("_", " "),
            "variants": [{"key": "standard"}],
        }

    return config_from_builtins(
        {
            "key": KEY,
            "name": "Two segments, two best offers",
            "surfaces": ["home_feed"],
            "context_fields": [
                {"name": "profile.life_stage", "type": "category", "values": list(BEST)},
                {"name": "cash_flow.balance", "type": "number"},
            ],
            "offers": [
                offer("savings", "savings"),
                offer("travel_card", "credit_card"),
                offer("budgeting", "budgeting"),
            ],
            "include_no_offer": False,
            "traffic": {"holdout": 0, "ab": 0, "bandit": 100},
            "explorer": {"kind": "epsilon_greedy", "epsilon": 0.2},
            "reward": {
                "event_weights": {"click": 1.0},
                # About one second, so that rewards close while the test runs.
                "attribution_window_hours": 0.0003,
            },
            "learning": {"publish_every_examples": 100, "publish_every_seconds": 0.5},
            "consent_required": False,
        }
    )


def set_up(db_url: str) -> str:
    platform = Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))
    try:
        experiments = ExperimentService(platform)
        experiments.create(experiment_config(), actor="test")
        experiments.approve(KEY, actor="test", comment="test setup")
        experiments.change_status(KEY, ExperimentStatus.RUNNING, actor="test")
        return ApiKeyService(platform).create("e2e", set(Scope)).secret
    finally:
        platform.close()


def decide(client: httpx.Client, customer: str, segment: str) -> dict[str, Any]:
    response = client.post(
        "/v1/decisions",
        json={
            "experiment": KEY,
            "customer_id": customer,
            "surface": "home_feed",
            "context": {"profile": {"life_stage": segment}, "cash_flow": {"balance": 2500}},
        },
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def train(client: httpx.Client, decisions: int, seed: int) -> None:
    rng = random.Random(seed)
    for index in range(decisions):
        segment = "student" if index % 2 else "retired"
        answer = decide(client, f"train-{seed}-{index}", segment)
        if rng.random() < CLICK[(segment, answer["offer"])]:
            outcome = client.post(
                "/v1/outcomes",
                json={
                    "decision_id": answer["decision_id"],
                    "event": "click",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "idempotency_key": f"click-{answer['decision_id']}",
                },
            )
            assert outcome.status_code == 201, outcome.text


def wait_for_model(client: httpx.Client, examples: int, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = client.get(f"/v1/experiments/{KEY}/models").json()
        if models and models[0]["examples_seen"] >= examples:
            newest: dict[str, Any] = models[0]
            return newest
        time.sleep(0.3)
    raise AssertionError(f"the learner did not reach {examples} examples: {models[:2]}")


def wait_until_served(client: httpx.Client, version: int, timeout: float = 60.0) -> None:
    """Until the worker answers with model `version` or newer (it refreshes every 0.2 s; a
    busy machine can take longer than that)."""
    deadline = time.monotonic() + timeout
    probe = 0
    while time.monotonic() < deadline:
        probe += 1
        if decide(client, f"probe-{probe}", "student")["model_version"] >= version:
            return
        time.sleep(0.2)
    raise AssertionError(f"model version {version} was not served within {timeout:.0f} s")


def best_offer_share(client: httpx.Client, segment: str, n: int) -> tuple[float, set[int]]:
    answers = [decide(client, f"eval-{segment}-{i}", segment) for i in range(n)]
    share = sum(a["offer"] == BEST[segment] for a in answers) / n
    return share, {a["model_version"] for a in answers}


def test_the_bandit_learns_the_best_offer_per_segment(db_url: str, tmp_path: Path) -> None:
    key = set_up(db_url)
    server = start_server(db_url, tmp_path / "server.log", env=FAST_LEARNER)
    try:
        with server.client(key) as client:
            train(client, 600, seed=7)
            newest = wait_for_model(client, 560)
            wait_until_served(client, newest["version"])
            for segment in BEST:
                share, versions = best_offer_share(client, segment, 150)
                print(f"{segment}: best offer in {share:.0%} of 150 decisions")
                assert share >= 0.6, (segment, share)
                assert versions == {newest["version"]} or min(versions) >= newest["version"]
            learner = client.get("/v1/learner").json()
            assert learner["this_worker_holds"] is True
    finally:
        stop_server(server)

    engine = create_engine(db_url, pool_size=1)
    with engine.connect() as connection:
        duplicates = connection.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT decision_id FROM rewards GROUP BY decision_id, "
                "horizon HAVING count(*) > 1) AS d"
            )
        ).scalar_one()
        defaults = connection.execute(
            sa.text("SELECT count(*) FROM rewards WHERE source = 'default'")
        ).scalar_one()
    engine.dispose()
    assert duplicates == 0
    assert defaults > 0  # decisions without a click got the default reward, once each


@pytest.mark.postgres
def test_two_workers_share_one_learner_and_serve_the_newest_model(tmp_path: Path) -> None:
    if PG_ADMIN_URL is None:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = create_pg_database("bandit_one_learner")
    try:
        upgrade(url)
        key = set_up(url)
        server: Server = start_server(url, tmp_path / "server.log", workers=2, env=FAST_LEARNER)
        try:
            with server.client(key) as client:
                train(client, 300, seed=11)
                newest = wait_for_model(client, 260)
                # One worker serves it (the one that answered); the other refreshes on the same
                # 0.2 s interval.
                wait_until_served(client, newest["version"])
                time.sleep(0.5)
                workers: dict[str, bool] = {}
                versions: set[int] = set()
                # The kernel hands each new connection to either worker; on a loaded machine one
                # worker can take many in a row, so ask until both have answered (bounded).
                for index in range(400):
                    if index >= 40 and len(workers) == 2:
                        break
                    fresh = {"Connection": "close"}
                    status = client.get("/v1/learner", headers=fresh).json()
                    workers[status["this_worker"]] = status["this_worker_holds"]
                    answer = client.post(
                        "/v1/decisions",
                        headers=fresh,
                        json={
                            "experiment": KEY,
                            "customer_id": f"after-{index}",
                            "surface": "home_feed",
                            "context": {"profile": {"life_stage": "student"}},
                        },
                    ).json()
                    versions.add(answer["model_version"])
            assert len(workers) == 2, workers  # both worker processes answered
            assert sum(workers.values()) == 1, workers  # exactly one of them is the learner
            assert min(versions) >= newest["version"]
            engine = create_engine(url, pool_size=1)
            with engine.connect() as connection:
                locks = connection.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND granted AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    )
                ).scalar_one()
            engine.dispose()
            assert locks == 1
        finally:
            stop_server(server)
    finally:
        drop_pg_database("bandit_one_learner")
