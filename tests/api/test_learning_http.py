"""The learning endpoints over HTTP (Litestar TestClient, demo platform, real database):
model versions, rollback, the learner's status and the explorer catalogue."""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import EXPLORERS
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.learner import LearnerRunner
from tests.conftest import Demo

Client = TestClient[Litestar]
MODELS = f"/v1/experiments/{DEMO_EXPERIMENT_KEY}/models"
PROBLEM = "application/problem+json"
#: The seven explorers the platform started with; the catalogue lists every configured one.
CORE_EXPLORERS = [
    "epsilon_greedy",
    "epsilon_decay",
    "explore_first",
    "softmax",
    "squarecb",
    "bagging",
    "cover",
]


def problem(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert (body["status"], body.get("field")) == (status, field), body
    assert body["detail"]
    return body


def test_models_are_listed_newest_first_without_their_bytes(client: Client) -> None:
    response = client.get(MODELS)
    assert response.status_code == 200, response.text
    (cold,) = response.json()
    assert set(cold) == {
        "version",
        "created_at",
        "examples_seen",
        "checksum",
        "size_bytes",
        "intact",
        "note",
        "match_rate",
    }
    assert (cold["version"], cold["examples_seen"], cold["intact"]) == (1, 0, True)
    assert cold["note"] == "cold start"
    assert re.fullmatch(r"[0-9a-f]{64}", cold["checksum"])
    assert cold["size_bytes"] > 0
    assert client.get("/v1/experiments/no-such-experiment/models").status_code == 404


def test_rollback_needs_manage_and_an_existing_version(client: Client, demo: Demo) -> None:
    reader = ApiKeyService(demo.platform).create("dashboard", {Scope.READ}).secret
    refused = client.post(f"{MODELS}/rollback", json={"version": 1}, headers={"X-API-Key": reader})
    assert refused.status_code == 403
    assert client.get(MODELS, headers={"X-API-Key": reader}).status_code == 200

    problem(client.post(f"{MODELS}/rollback", json={"version": 7}), 404, "version")
    problem(client.post(f"{MODELS}/rollback", json={"version": 0}), 422, "version")
    problem(client.post(f"{MODELS}/rollback", json={"versoin": 1}), 422, "versoin")
    assert len(client.get(MODELS).json()) == 1

    response = client.post(f"{MODELS}/rollback", json={"version": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"version": 2, "rolled_back_to": 1}
    newest, first = client.get(MODELS).json()
    assert (newest["version"], newest["note"]) == (2, "rollback to v1")
    assert newest["checksum"] == first["checksum"]
    audit = client.get(f"/v1/experiments/{DEMO_EXPERIMENT_KEY}/audit").json()
    assert audit[0]["action"] == "model.rollback"
    assert audit[0]["actor"] == "apikey:demo"
    assert audit[0]["details"] == {"to_version": 1, "new_version": 2}


def test_learner_status_shows_the_lease_and_the_last_pass(client: Client) -> None:
    before = client.get("/v1/learner")
    assert before.status_code == 200, before.text
    body = before.json()
    assert (body["holder"], body["this_worker_holds"], body["last_report"]) == (None, False, None)
    assert body["this_worker"]

    app: Any = client.app
    runner: LearnerRunner = app.state.learner
    assert runner.step() is not None  # this worker takes the lease and learns once
    after = client.get("/v1/learner").json()
    assert after["holder"] == after["this_worker"] == body["this_worker"]
    assert after["this_worker_holds"] is True
    assert after["heartbeat_at"] is not None
    assert after["last_error"] is None
    assert after["last_report"] == {
        "rewards_closed": 0,
        "examples_learned": {},
        "snapshots_published": {},
    }
    assert after["details"] == after["last_report"]
    assert client.get("/v1/learner", headers={"X-API-Key": "nope"}).status_code == 401


def test_explorers_are_listed_each_explained_in_one_sentence(client: Client) -> None:
    response = client.get("/v1/explorers")
    assert response.status_code == 200, response.text
    catalogue = response.json()
    kinds = [e["kind"] for e in catalogue]
    assert kinds == [t.__struct_config__.tag for t in EXPLORERS]  # every one, once, in order
    assert kinds[: len(CORE_EXPLORERS)] == CORE_EXPLORERS
    for explorer in catalogue:
        sentence = explorer["explanation"]
        assert re.fullmatch(r"[A-Z][^.]*\.", sentence), sentence  # exactly one sentence
        assert len(sentence) > 20
        assert isinstance(explorer["parameters"], dict)
    by_kind = {e["kind"]: e["parameters"] for e in catalogue}
    assert by_kind["epsilon_greedy"] == {"epsilon": 0.1}
    assert by_kind["softmax"] == {"lambda": 1.0}
