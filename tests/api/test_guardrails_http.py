"""Guardrail endpoints over HTTP (Litestar TestClient, demo platform, real database): read the
guardrails and their rates, see a trip and its baseline, clear it; bad input is a 4xx naming
the field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import Scope
from bandit_platform.domain.decisions import Group
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.guardrails import check_guardrails
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import RULE_ONE, customers_in, identity, start
from tests.service.test_guardrails import guarded, play

Client = TestClient[Litestar]
PROBLEM = "application/problem+json"
DEMO_GUARDRAILS = f"/v1/experiments/{DEMO_EXPERIMENT_KEY}/guardrails"


def problem(response: Any, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert (body["status"], body.get("field")) == (status, field), body
    assert body["detail"]
    return body


def decide(client: Client, key: str, customer: str) -> dict[str, Any]:
    response = client.post(
        "/v1/decisions",
        json={
            "experiment": key,
            "customer_id": customer,
            "surface": "home_feed",
            "consent": True,
            "context": RULE_ONE,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_demo_guardrails_are_shown_with_their_rates(client: Client) -> None:
    response = client.get(DEMO_GUARDRAILS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["experiment"], body["tripped"], body["trip"], body["since"]) == (
        DEMO_EXPERIMENT_KEY,
        False,
        None,
        None,
    )
    complaint, opt_out = body["guardrails"]
    assert (complaint["metric"], complaint["max_increase"], complaint["min_decisions"]) == (
        "complaint",
        0.005,
        1000,
    )
    assert (opt_out["metric"], opt_out["max_rate"]) == ("opt_out", 0.05)
    for status in body["guardrails"]:
        assert status["bandit"] == {
            "n": 0,
            "events": 0,
            "rate": None,
            "lower": None,
            "upper": None,
        }
        assert status["holdout"]["n"] == 0
        assert (status["ready"], status["breached"], status["increase"]) == (False, None, None)


def test_a_trip_is_visible_served_audited_and_cleared(
    client: Client, demo: Demo, clock: FakeClock
) -> None:
    platform = demo.platform
    start(platform, guarded("harm-http"))
    play(platform, identity(demo), clock, "harm-http", "c", {Group.BANDIT: 0.6, Group.HOLDOUT: 0})
    clock.advance(hours=2)
    assert len(check_guardrails(platform)) == 1
    path = "/v1/experiments/harm-http/guardrails"

    body = client.get(path).json()
    assert body["tripped"] is True
    trip = body["trip"]
    assert (trip["metric"], trip["baseline"], trip["n"]) == (
        "complaint",
        "incumbent_rules",
        {"bandit": 40, "holdout": 40},
    )
    (status,) = body["guardrails"]
    assert status["breached"] == "max_increase"
    assert status["ready"] is True
    assert status["increase"]["lower"] > 0.05
    assert status["increase"]["method"] == "msprt"
    assert status["bandit"]["n"] == 40
    assert status["bandit"]["lower"] <= status["bandit"]["rate"]

    customer, later = customers_in(platform, "harm-http", Group.BANDIT, "http", 2)
    served = decide(client, "harm-http", customer)
    assert (served["group"], served["reason"], served["offer"], served["propensity"]) == (
        "bandit",
        "guardrail_baseline",
        "high_yield_savings",
        1.0,
    )
    assert "guardrail 'complaint' tripped" in served["explanation"]
    audit = client.get("/v1/experiments/harm-http/audit").json()
    assert audit[0]["action"] == "guardrail.tripped"
    assert audit[0]["details"]["metric"] == "complaint"

    clock.advance(minutes=5)
    cleared = client.post(f"{path}/clear", json={"comment": "copy fixed, complaints explained"})
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["tripped"], cleared.json()["trip"]) == (False, None)
    audit = client.get("/v1/experiments/harm-http/audit").json()
    assert audit[0]["action"] == "guardrail.cleared"
    assert audit[0]["details"]["comment"] == "copy fixed, complaints explained"
    assert decide(client, "harm-http", later)["reason"] == "bandit"
    problem(client.post(f"{path}/clear", json={"comment": "again"}), 409, "experiment")


def test_bad_guardrail_requests_name_the_field(client: Client, demo: Demo) -> None:
    clear = f"{DEMO_GUARDRAILS}/clear"
    problem(client.post(clear, json={}), 422, "comment")
    problem(client.post(clear, json={"comment": ""}), 422, "comment")
    problem(client.post(clear, json={"comment": "   "}), 422, "comment")
    problem(client.post(clear, json={"comment": "x" * 501}), 422, "comment")
    problem(client.post(clear, json={"comment": 5}), 422, "comment")
    problem(client.post(clear, json={"comment": "ok", "force": True}), 422, "force")
    problem(
        client.post(clear, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "body",
    )
    problem(client.post(clear, json={"comment": "nothing tripped"}), 409, "experiment")
    problem(client.get("/v1/experiments/no-such/guardrails"), 404, "experiment")
    problem(
        client.post("/v1/experiments/no-such/guardrails/clear", json={"comment": "x"}),
        404,
        "experiment",
    )

    reader = ApiKeyService(demo.platform).create("dashboard", {Scope.READ}).secret
    assert client.get(DEMO_GUARDRAILS, headers={"X-API-Key": reader}).status_code == 200
    denied = client.post(clear, json={"comment": "x"}, headers={"X-API-Key": reader})
    assert denied.status_code == 403
    assert client.get(DEMO_GUARDRAILS, headers={"X-API-Key": ""}).status_code == 401


def test_the_outcome_endpoint_accepts_guardrail_events(client: Client, clock: FakeClock) -> None:
    decision = decide(client, DEMO_EXPERIMENT_KEY, "customer-complains")
    for event in ("complaint", "opt_out"):
        response = client.post(
            "/v1/outcomes",
            json={
                "decision_id": decision["decision_id"],
                "event": event,
                "occurred_at": (clock.now + timedelta(minutes=1)).isoformat(),
                "idempotency_key": f"complaint-{event}",
            },
        )
        assert response.status_code == 201, response.text
    response = client.post(
        "/v1/outcomes",
        json={
            "decision_id": decision["decision_id"],
            "event": "unsubscribed",
            "occurred_at": clock.now.isoformat(),
            "idempotency_key": "typo",
        },
    )
    problem(response, 422, "event")
