"""Policies over HTTP (Litestar TestClient, demo platform, real database): the integrity check
of the logged probabilities, off-policy values, and candidates through the promotion gate."""

from __future__ import annotations

import random
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import EpsilonGreedy
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.learner import Learner
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import RULE_ONE, learning, start, two_offer_world

Client = TestClient[Litestar]
PROBLEM = "application/problem+json"
DEMO_URL = f"/v1/experiments/{DEMO_EXPERIMENT_KEY}"
SAVER = {"profile": {"life_stage": "retired", "income_band": "high"}}
TRAVELLER = {"profile": {"life_stage": "young_professional", "income_band": "low"}}
BEST = {"saver": "high_yield_savings", "traveller": "premium_travel_card"}


def problem(response: Any, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert (body["status"], body.get("field")) == (status, field), body
    assert body["detail"]
    return body


def test_integrity_of_the_demo_decisions(client: Client, demo: Demo) -> None:
    for index in range(12):
        response = client.post(
            "/v1/decisions",
            json={
                "experiment": DEMO_EXPERIMENT_KEY,
                "customer_id": f"c-{index}",
                "context": RULE_ONE,
                "surface": "home_feed",
                "consent": True,
            },
        )
        assert response.status_code == 200, response.text
    response = client.get(f"{DEMO_URL}/policies/integrity")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["sampled"] == 12
    assert body["mismatched"] == 0
    assert body["mismatched_ids"] == []
    assert body["checked"] + sum(body["skipped"].values()) == 12
    assert body["checked"] > 0  # 12 customers all in the 10% holdout: about 1e-12
    assert body["max_difference"] == 0.0
    assert client.get(f"{DEMO_URL}/policies/integrity?limit=3").json()["sampled"] == 3

    problem(client.get(f"{DEMO_URL}/policies/integrity?limit=0"), 422, "limit")
    assert client.get("/v1/experiments/nope/policies/integrity").status_code == 404
    reader = ApiKeyService(demo.platform).create("dashboard", {Scope.READ}).secret
    as_reader = client.get(f"{DEMO_URL}/policies/integrity", headers={"X-API-Key": reader})
    assert as_reader.status_code == 200
    decider = ApiKeyService(demo.platform).create("app", {Scope.DECIDE}).secret
    denied = client.get(f"{DEMO_URL}/policies/integrity", headers={"X-API-Key": decider})
    assert denied.status_code == 403


def test_candidate_bodies_are_checked_and_need_manage(client: Client, demo: Demo) -> None:
    url = f"{DEMO_URL}/candidates"
    problem(
        client.post(url, json={"epsilon": 0.1, "holdout_fraction": 1.5}), 422, "holdout_fraction"
    )
    problem(client.post(url, json={"epsilon": 2}), 422, "epsilon")
    problem(client.post(url, json={"epsilon": 0.1, "confidnce": 0.9}), 422, "confidnce")
    problem(client.post(url, json={"estimator": "magic"}), 422, "estimator")
    problem(client.post(url, json={"explorer": {"kind": "nope"}}), 422, "explorer.kind")
    both = {"epsilon": 0.1, "explorer": {"kind": "softmax", "lambda": 2.0}}
    problem(client.post(url, json=both), 422, "epsilon")
    problem(client.post(url, json={"cutoff": "2026-11-01T00:00:00"}), 422, "cutoff")
    # No logged decision with a closed reward yet: nothing to hold out.
    problem(client.post(url, json={"epsilon": 0.1}), 422, "holdout_fraction")
    problem(client.post("/v1/experiments/nope/candidates", json={}), 404, "experiment")
    reader = ApiKeyService(demo.platform).create("dashboard", {Scope.READ}).secret
    assert client.post(url, json={}, headers={"X-API-Key": reader}).status_code == 403
    # Off-policy values need closed rewards too.
    problem(client.get(f"{DEMO_URL}/policies"), 422, "horizon")
    problem(client.get(f"{DEMO_URL}/policies?confidence=2"), 422, "confidence")


def _play(client: Client, clock: FakeClock, key: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for index in range(count):
        kind = rng.choice(["saver", "traveller"])
        response = client.post(
            "/v1/decisions",
            json={
                "experiment": key,
                "customer_id": f"{key}-{seed}-{index}",
                "context": SAVER if kind == "saver" else TRAVELLER,
                "surface": "home_feed",
                "consent": True,
            },
        )
        assert response.status_code == 200, response.text
        decision = response.json()
        if rng.random() < (0.9 if decision["offer"] == BEST[kind] else 0.1):
            outcome = client.post(
                "/v1/outcomes",
                json={
                    "decision_id": decision["decision_id"],
                    "event": "convert",
                    "occurred_at": clock.now.isoformat(),
                    "idempotency_key": f"{key}-{seed}-{index}",
                },
            )
            assert outcome.status_code == 201, outcome.text
        clock.advance(seconds=1)
    clock.advance(hours=1, minutes=1)


@pytest.mark.slow
def test_a_candidate_is_promoted_then_a_worse_one_refused(
    client: Client, demo: Demo, clock: FakeClock
) -> None:
    key = "gate"
    start(
        demo.platform,
        two_offer_world(
            key,
            explorer=EpsilonGreedy(epsilon=0.5),
            learning=learning(publish_every_examples=1_000_000),
        ),
    )
    _play(client, clock, key, 200, seed=1)
    Learner(demo.platform).run_once()
    url = f"/v1/experiments/{key}"

    values = client.get(f"{url}/policies")
    assert values.status_code == 200, values.text
    policies = {p["policy"]: p for p in values.json()}
    assert list(policies) == ["logging", "uniform", "incumbent_rules", "snapshot v1"]
    for name, policy in policies.items():
        assert policy["n"] == 200
        assert [e["estimator"] for e in policy["estimates"]] == ["IPS", "SNIPS", "DR"]
        for estimate in policy["estimates"]:
            if name == "incumbent_rules":
                # No rules and no default offer: always "no offer", never a logged arm here.
                assert "no_overlap" in estimate["warnings"]
            else:
                assert estimate["lower"] <= estimate["value"] <= estimate["upper"]

    dry = client.post(f"{url}/candidates", json={"epsilon": 0.05, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert (dry.json()["promoted"], dry.json()["would_promote"]) == (False, True)

    promoted = client.post(f"{url}/candidates", json={"epsilon": 0.05, "holdout_fraction": 0.4})
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert (body["promoted"], body["version"]) == (True, 2)
    assert body["evidence"]["candidate"]["lower"] > body["evidence"]["incumbent"]["lower"]
    assert body["evidence"]["actor"] == "apikey:demo"
    newest, first = client.get(f"{url}/models").json()
    assert newest["version"] == 2
    assert newest["evidence"] == body["evidence"]
    assert "evidence" not in first
    assert client.get(f"{url}/audit").json()[0]["action"] == "model.promoted"

    # Uniform random against the promoted model, on data the promoted model decided.
    served_from = clock.now.isoformat()
    _play(client, clock, key, 120, seed=2)
    Learner(demo.platform).run_once()
    refused = client.post(f"{url}/candidates", json={"epsilon": 1.0, "cutoff": served_from})
    body = problem(refused, 409, "candidate")
    assert body["promoted"] is False
    evidence = body["evidence"]
    assert evidence["candidate"]["lower"] <= evidence["incumbent"]["lower"]
    assert evidence["incumbent"]["version"] == 2
    assert len(client.get(f"{url}/models").json()) == 2
    assert client.get(f"{url}/audit").json()[0]["action"] == "model.promotion_refused"
    integrity = client.get(f"{url}/policies/integrity").json()
    assert integrity["ok"] is True
    assert integrity["checked"] == 320
