"""The JSON API in process (Litestar TestClient) on the demo platform and a real database."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.demo import DEMO_EXPERIMENT_KEY, demo_config_bytes
from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import MAX_OFFERS
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from tests.conftest import REPO, Demo, FakeClock

Client = TestClient[Litestar]
EXAMPLES = REPO / "examples" / "requests"
PROBLEM = "application/problem+json"
DECISION: dict[str, Any] = json.loads((EXAMPLES / "decision.json").read_text())
OUTCOME: dict[str, Any] = json.loads((EXAMPLES / "outcome.json").read_text())
DEMO_CONFIG: dict[str, Any] = json.loads(demo_config_bytes())


def count(platform: Platform, table: str) -> int:
    with platform.engine.connect() as connection:
        return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def decide(client: Client, **changes: Any) -> dict[str, Any]:
    response = client.post("/v1/decisions", json={**DECISION, **changes})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def outcome_body(decision_id: str, clock: FakeClock, **changes: Any) -> dict[str, Any]:
    return {
        **OUTCOME,
        "decision_id": decision_id,
        "occurred_at": clock.now.isoformat(),
        **changes,
    }


def new_experiment(key: str = "card-cross-sell") -> dict[str, Any]:
    config = copy.deepcopy(DEMO_CONFIG)
    config["key"] = key
    return config


def problem_mismatch(response: Any, status: int, field: str) -> str | None:
    """Why the response is not the expected problem+json, or None when it is."""
    content_type = response.headers.get("content-type", "")
    if response.status_code != status or not content_type.startswith(PROBLEM):
        return f"{response.status_code} {content_type}: {response.text[:300]}"
    body = response.json()
    if body.get("status") != status or body.get("field") != field or not body.get("detail"):
        return f"problem {body}"
    return None


def check_table(
    cases: dict[str, tuple[int, str]], send: Callable[[str], Any], state: Callable[[], Any]
) -> None:
    """Send every bad case; each must get its problem and leave `state()` unchanged."""
    failures = []
    for name, (status, field) in cases.items():
        before = state()
        response = send(name)
        mismatch = problem_mismatch(response, status, field)
        if mismatch is not None:
            failures.append(f"{name}: expected {status} naming {field!r}, got {mismatch}")
        if response.status_code >= 500:
            failures.append(f"{name}: server error")
        if state() != before:
            failures.append(f"{name}: state changed from {before} to {state()}")
    assert not failures, "\n".join(failures)


def assert_problem(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["field"] == field, body
    assert body["detail"]


# --- happy paths ------------------------------------------------------------------------------


def test_example_decision_request(client: Client, demo: Demo) -> None:
    body = decide(client)
    assert body["experiment"] == DEMO_EXPERIMENT_KEY
    assert body["experiment_version"] == 1
    assert body["group"] in {"holdout", "ab", "bandit"}
    assert body["replayed"] is False
    arms = body["arm_probabilities"]
    assert sum(arms.values()) == pytest.approx(1.0, abs=1e-6)
    chosen = "no_offer" if body["offer"] is None else f"{body['offer']}/{body['variant']}"
    assert body["propensity"] == pytest.approx(arms[chosen])
    offer_total = body["probabilities"].get(body["offer"] or "no_offer")
    assert offer_total >= body["propensity"]
    assert body["explanation"]
    assert count(demo.platform, "decisions") == 1

    # The example carries a request id: sending it again replays the same decision.
    again = decide(client)
    assert again["decision_id"] == body["decision_id"]
    assert again["replayed"] is True
    assert count(demo.platform, "decisions") == 1


def test_protected_attributes_are_dropped_and_reported(client: Client) -> None:
    context = copy.deepcopy(DECISION["context"])
    context["profile"]["gender"] = "f"
    body = decide(client, context=context, request_id=None)
    assert body["dropped_fields"] == ["profile.gender"]


def test_example_outcome_request(client: Client, demo: Demo, clock: FakeClock) -> None:
    decision = decide(client)
    clock.advance(minutes=30)
    body = outcome_body(decision["decision_id"], clock)
    created = client.post("/v1/outcomes", json=body)
    assert created.status_code == 201, created.text
    receipt = created.json()
    assert receipt["decision_id"] == decision["decision_id"]
    assert receipt["event"] == "click"
    assert receipt["late"] is False
    assert receipt["replayed"] is False

    replay = client.post("/v1/outcomes", json=body)
    assert replay.status_code == 200
    assert replay.json()["outcome_id"] == receipt["outcome_id"]
    assert replay.json()["replayed"] is True
    assert count(demo.platform, "outcomes") == 1


def test_experiment_endpoints(client: Client, demo: Demo) -> None:
    listed = client.get("/v1/experiments")
    assert listed.status_code == 200
    assert [e["key"] for e in listed.json()] == [DEMO_EXPERIMENT_KEY]

    read = client.get(f"/v1/experiments/{DEMO_EXPERIMENT_KEY}")
    assert read.status_code == 200
    assert read.json()["status"] == "running"
    assert read.json()["config"]["traffic"] == DEMO_CONFIG["traffic"]

    config = new_experiment()
    created = client.post("/v1/experiments", json=config)
    assert created.status_code == 201, created.text
    assert (created.json()["status"], created.json()["version"]) == ("draft", 1)

    config["traffic"] = {"holdout": 5, "ab": 15, "bandit": 80}
    updated = client.put("/v1/experiments/card-cross-sell", json=config)
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2

    # Only an approved version runs; an API key cannot approve (a person does, in the UI).
    status = "/v1/experiments/card-cross-sell/status"
    refused = client.post(status, json={"status": "running"})
    assert_problem(refused, 409, "status")
    assert "version 2 is not approved" in refused.json()["detail"]
    assert client.post("/v1/experiments/card-cross-sell/approve", json={}).status_code in (
        404,
        405,
    )
    ExperimentService(demo.platform).approve("card-cross-sell", "user:compliance", "reviewed")
    assert client.get("/v1/experiments/card-cross-sell").json()["approved_version"] == 2
    started = client.post(status, json={"status": "running"})
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running"

    entries = client.get("/v1/experiments/card-cross-sell/audit")
    assert entries.status_code == 200
    assert [e["action"] for e in entries.json()] == [
        "experiment.status",
        "experiment.approved",
        "experiment.update",
        "experiment.create",
    ]
    assert entries.json()[2]["details"] == {"version": 2, "changed": ["traffic"]}
    assert {e["actor"] for e in entries.json()} == {"apikey:demo", "user:compliance"}

    # A change to the running experiment waits for approval; the served version stays.
    config["traffic"] = {"holdout": 10, "ab": 10, "bandit": 80}
    proposed = client.put("/v1/experiments/card-cross-sell", json=config)
    assert proposed.status_code == 202, proposed.text
    assert proposed.json()["status"] == "pending"
    assert proposed.json()["base_version"] == 2
    assert client.get("/v1/experiments/card-cross-sell").json()["version"] == 2
    ExperimentService(demo.platform).reject_change(
        proposed.json()["id"], "user:compliance", "keep the holdout"
    )
    (change,) = client.get("/v1/experiments/card-cross-sell/changes").json()
    assert (change["status"], change["decision_comment"]) == ("rejected", "keep the holdout")
    assert client.get("/v1/experiments/card-cross-sell").json()["version"] == 2

    keys = [e["key"] for e in client.get("/v1/experiments").json()]
    assert keys == ["card-cross-sell", DEMO_EXPERIMENT_KEY]  # newest first

    decision = decide(client, experiment="card-cross-sell", request_id=None)
    assert decision["experiment"] == "card-cross-sell"
    assert decision["experiment_version"] == 2


def test_experiment_endpoint_errors(client: Client, demo: Demo) -> None:
    assert_problem(client.get("/v1/experiments/no-such"), 404, "experiment")
    assert_problem(
        client.put("/v1/experiments/no-such", json=new_experiment("no-such")), 404, "experiment"
    )
    assert_problem(
        client.put(f"/v1/experiments/{DEMO_EXPERIMENT_KEY}", json=new_experiment("other")),
        422,
        "key",
    )
    assert_problem(
        client.post("/v1/experiments", json=new_experiment(DEMO_EXPERIMENT_KEY)), 409, "key"
    )
    status = f"/v1/experiments/{DEMO_EXPERIMENT_KEY}/status"
    assert_problem(client.post(status, json={"status": "draft"}), 409, "status")
    assert_problem(client.post(status, json={"status": "approved"}), 422, "status")
    assert_problem(client.post(status, json={}), 422, "status")
    assert client.get(f"/v1/experiments/{DEMO_EXPERIMENT_KEY}").json()["status"] == "running"
    assert count(demo.platform, "experiments") == 1


def test_health_and_openapi(client: Client) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    schema = client.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/v1/decisions", "/v1/outcomes", "/v1/experiments", "/v1/experiments/{key}"):
        assert path in paths, sorted(paths)


# --- authentication and scopes ----------------------------------------------------------------


def test_requests_without_a_valid_key_are_refused(client: Client, demo: Demo) -> None:
    secret = client.headers.pop("X-API-Key")
    cases = {
        "missing": {},
        "empty": {"X-API-Key": ""},
        "garbage": {"X-API-Key": "not-a-key"},
        "unknown": {"X-API-Key": "bpk_0123456789ab_" + "x" * 43},
        "tampered": {"X-API-Key": secret[:-2] + ("zz" if not secret.endswith("zz") else "yy")},
    }
    try:
        for name, headers in cases.items():
            for method, path in (("POST", "/v1/decisions"), ("GET", "/v1/experiments")):
                response = client.request(method, path, headers=headers, json=DECISION)
                assert response.status_code == 401, (name, path, response.text)
                assert response.headers["content-type"].startswith(PROBLEM)
    finally:
        client.headers["X-API-Key"] = secret
    assert count(demo.platform, "decisions") == 0
    assert client.get("/v1/experiments").status_code == 200


def test_a_key_only_does_what_its_scopes_allow(client: Client, demo: Demo) -> None:
    reader = ApiKeyService(demo.platform).create("dashboard", {Scope.READ}).secret
    headers = {"X-API-Key": reader}
    assert client.get("/v1/experiments", headers=headers).status_code == 200
    refused = [
        client.post("/v1/decisions", json=DECISION, headers=headers),
        client.post("/v1/outcomes", json=OUTCOME, headers=headers),
        client.post("/v1/experiments", json=new_experiment(), headers=headers),
        client.post(
            f"/v1/experiments/{DEMO_EXPERIMENT_KEY}/status",
            json={"status": "paused"},
            headers=headers,
        ),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith(PROBLEM)

    app_key = ApiKeyService(demo.platform).create("mobile-backend").secret  # default scopes
    response = client.post("/v1/experiments", json=new_experiment(), headers={"X-API-Key": app_key})
    assert response.status_code == 403
    assert count(demo.platform, "decisions") == 0
    assert count(demo.platform, "experiments") == 1
    assert client.get(f"/v1/experiments/{DEMO_EXPERIMENT_KEY}").json()["status"] == "running"


# --- bad input --------------------------------------------------------------------------------

Raw = bytes | dict[str, Any]


def _changed(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = copy.deepcopy(base)
    change(body)
    return body


def _decision(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    return _changed(DECISION, change)


def _profile(**fields: Any) -> dict[str, Any]:
    return _decision(lambda b: b["context"]["profile"].update(fields))


def _literal(text: str) -> bytes:
    """The example decision with the balance replaced by a raw JSON token."""
    body = json.dumps(DECISION).replace('"balance": 8650.5', f'"balance": {text}')
    assert text in body
    return body.encode()


BAD_DECISIONS: dict[str, tuple[Raw, int, str]] = {
    "malformed JSON": (b'{"experiment": "banking-offers-demo",', 400, "body"),
    "empty body": (b"", 400, "body"),
    "array body": (b"[1, 2]", 422, "body"),
    "string body": (b'"decide"', 422, "body"),
    "null body": (b"null", 422, "body"),
    "missing customer_id": (_decision(lambda b: b.pop("customer_id")), 422, "customer_id"),
    "missing context": (_decision(lambda b: b.pop("context")), 422, "context"),
    "missing surface": (_decision(lambda b: b.pop("surface")), 422, "surface"),
    "customer_id not a string": (
        _decision(lambda b: b.update(customer_id=123)),
        422,
        "customer_id",
    ),
    "empty customer_id": (_decision(lambda b: b.update(customer_id="")), 422, "customer_id"),
    "consent not a boolean": (_decision(lambda b: b.update(consent="yes")), 422, "consent"),
    "context not an object": (_decision(lambda b: b.update(context=[1])), 422, "context"),
    "number as a string": (_profile(tenure_years="4"), 422, "context.profile.tenure_years"),
    "list as a string": (_profile(products_held="checking"), 422, "context.profile.products_held"),
    "requested_at not a time": (
        _decision(lambda b: b.update(requested_at="yesterday")),
        422,
        "requested_at",
    ),
    "requested_at without zone": (
        _decision(lambda b: b.update(requested_at="2026-11-02T08:59:00")),
        422,
        "requested_at",
    ),
    "NaN literal": (_literal("NaN"), 400, "body"),
    "Infinity literal": (_literal("Infinity"), 400, "body"),
    "-Infinity literal": (_literal("-Infinity"), 400, "body"),
    "1e999": (_literal("1e999"), 400, "body"),
    "integer beyond float": (_literal("1" + "0" * 400), 422, "context.cash_flow.balance"),
    "unknown top-level field": (_decision(lambda b: b.update(admin=True)), 422, "admin"),
    "unknown context section": (
        _decision(lambda b: b["context"].update(credit_bureau={"score": 700})),
        422,
        "context.credit_bureau",
    ),
    "field outside the allow-list": (_profile(email="a@b.example"), 422, "context.profile.email"),
    "wrong category value": (_profile(region="atlantis"), 422, "context.profile.region"),
    "wrong item in categories": (
        _profile(products_held=["checking", "yacht"]),
        422,
        "context.profile.products_held",
    ),
    "string too long": (_profile(region="n" * 201), 422, "context.profile.region"),
    "list too long": (
        _profile(products_held=["checking"] * 51),
        422,
        "context.profile.products_held",
    ),
    "list item too long": (
        _profile(products_held=["c" * 201]),
        422,
        "context.profile.products_held",
    ),
    "too many context fields": (
        _decision(lambda b: b["context"].update(profile={f"f{i}": 1 for i in range(101)})),
        422,
        "context.profile",
    ),
    "request_id too long": (_decision(lambda b: b.update(request_id="r" * 129)), 422, "request_id"),
    "body over 64 KiB": (
        _decision(lambda b: b.update(padding="x" * (64 * 1024))),
        413,
        "body",
    ),
    "unknown experiment": (_decision(lambda b: b.update(experiment="no-such")), 404, "experiment"),
    "unknown surface": (_decision(lambda b: b.update(surface="atm_screen")), 422, "surface"),
}


def _post(client: Client, path: str, body: Raw) -> Any:
    if isinstance(body, bytes):
        return client.post(path, content=body, headers={"Content-Type": "application/json"})
    return client.post(path, json=body)


def test_bad_decision_requests(client: Client, demo: Demo) -> None:
    decide(client, request_id="warm-up")
    check_table(
        {name: (status, field) for name, (_, status, field) in BAD_DECISIONS.items()},
        lambda name: _post(client, "/v1/decisions", BAD_DECISIONS[name][0]),
        lambda: count(demo.platform, "decisions"),
    )
    assert count(demo.platform, "decisions") == 1
    assert decide(client, request_id="after")["replayed"] is False  # still serving


#: Each case turns a valid outcome body (for a real decision, at the clock's time) into a bad one.
OutcomeCase = Callable[[dict[str, Any], FakeClock], Raw]


def _set(**fields: Any) -> OutcomeCase:
    return lambda good, _: {**good, **fields}


def _drop(name: str) -> OutcomeCase:
    return lambda good, _: {k: v for k, v in good.items() if k != name}


def _at(delta: timedelta) -> OutcomeCase:
    return lambda good, clock: {**good, "occurred_at": (clock.now + delta).isoformat()}


def _raw(text: str) -> OutcomeCase:
    return lambda good, _: text.encode()


def _nan_value(good: dict[str, Any], _: FakeClock) -> bytes:
    text = json.dumps({**good, "value": 1.5})
    return text.replace('"value": 1.5', '"value": NaN').encode()


BAD_OUTCOMES: dict[str, tuple[OutcomeCase, int, str]] = {
    "malformed JSON": (_raw('{"decision_id": '), 400, "body"),
    "empty body": (_raw(""), 400, "body"),
    "array body": (_raw("[]"), 422, "body"),
    "missing decision_id": (_drop("decision_id"), 422, "decision_id"),
    "missing event": (_drop("event"), 422, "event"),
    "missing occurred_at": (_drop("occurred_at"), 422, "occurred_at"),
    "missing idempotency_key": (_drop("idempotency_key"), 422, "idempotency_key"),
    "value not a number": (_set(value="lots"), 422, "value"),
    "value out of range": (_set(value=1e300), 422, "value"),
    "NaN value": (_nan_value, 400, "body"),
    "unknown field": (_set(customer_email="a@b.example"), 422, "customer_email"),
    "occurred_at not a time": (_set(occurred_at="soon"), 422, "occurred_at"),
    "occurred_at without zone": (
        lambda good, clock: {**good, "occurred_at": clock.now.replace(tzinfo=None).isoformat()},
        422,
        "occurred_at",
    ),
    "occurred_at in the future": (_at(timedelta(hours=1)), 422, "occurred_at"),
    "occurred_at long before the decision": (_at(-timedelta(days=2)), 422, "occurred_at"),
    "unknown event": (_set(event="purchase"), 422, "event"),
    "unknown decision": (
        _set(decision_id="00000000-0000-4000-8000-000000000000"),
        404,
        "decision_id",
    ),
    "decision_id too long": (_set(decision_id="d" * 37), 422, "decision_id"),
    "idempotency_key too long": (_set(idempotency_key="k" * 129), 422, "idempotency_key"),
    "idempotency_key reused": (
        _set(idempotency_key="warm-up", event="apply"),
        422,
        "idempotency_key",
    ),
    "body over 64 KiB": (_set(event="e" * (64 * 1024)), 413, "body"),
}


def test_bad_outcome_requests(client: Client, demo: Demo, clock: FakeClock) -> None:
    decision_id = decide(client)["decision_id"]
    warm_up = outcome_body(decision_id, clock, idempotency_key="warm-up")
    assert client.post("/v1/outcomes", json=warm_up).status_code == 201
    good = outcome_body(decision_id, clock, idempotency_key="bad-input")
    check_table(
        {name: (status, field) for name, (_, status, field) in BAD_OUTCOMES.items()},
        lambda name: _post(client, "/v1/outcomes", BAD_OUTCOMES[name][0](good, clock)),
        lambda: (count(demo.platform, "outcomes"), count(demo.platform, "decisions")),
    )
    assert count(demo.platform, "outcomes") == 1
    assert client.post("/v1/outcomes", json=good).status_code == 201  # still serving


def test_another_apps_key_cannot_reward_a_decision(
    client: Client, demo: Demo, clock: FakeClock
) -> None:
    decision_id = decide(client)["decision_id"]
    other = ApiKeyService(demo.platform).create("other-app").secret
    response = client.post(
        "/v1/outcomes", json=outcome_body(decision_id, clock), headers={"X-API-Key": other}
    )
    assert_problem(response, 404, "decision_id")
    assert count(demo.platform, "outcomes") == 0


def _config(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    return _changed(new_experiment(), change)


def _offers(n: int) -> list[dict[str, Any]]:
    return [
        {
            "key": f"offer-{i}",
            "product": "savings",
            "name": f"Offer {i}",
            "variants": [{"key": "a"}],
        }
        for i in range(n)
    ]


def _minimal(offers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "key": "minimal",
        "name": "Minimal",
        "surfaces": ["home_feed"],
        "context_fields": [],
        "offers": offers,
        "traffic": {"holdout": 10, "ab": 10, "bandit": 80},
        "reward": {"event_weights": {"click": 1.0}},
    }


BAD_CONFIGS: dict[str, tuple[Raw, int, str]] = {
    "malformed JSON": (b'{"key": "x",', 400, "body"),
    "array body": (b"[]", 422, "body"),
    "missing key": (_config(lambda c: c.pop("key")), 422, "key"),
    "missing reward": (_config(lambda c: c.pop("reward")), 422, "reward"),
    "key with spaces": (_config(lambda c: c.update(key="Card Cross Sell")), 422, "key"),
    "name too long": (_config(lambda c: c.update(name="n" * 121)), 422, "name"),
    "unknown top-level field": (_config(lambda c: c.update(owner="me")), 422, "owner"),
    "unknown offer field": (
        _config(lambda c: c["offers"][0].update(colour="red")),
        422,
        "offers[0].colour",
    ),
    "no surfaces": (_config(lambda c: c.update(surfaces=[])), 422, "surfaces"),
    "offer without variants": (
        _config(lambda c: c["offers"][0].update(variants=[])),
        422,
        "offers[0].variants",
    ),
    "duplicate offer": (
        _config(lambda c: c["offers"].append(copy.deepcopy(c["offers"][0]))),
        422,
        "offers[6].key",
    ),
    "too many offers": (_minimal(_offers(MAX_OFFERS + 1)), 422, "offers"),
    "traffic does not add up": (
        _config(lambda c: c.update(traffic={"holdout": 10, "ab": 10, "bandit": 10})),
        422,
        "traffic",
    ),
    "negative traffic": (
        _config(lambda c: c["traffic"].update(holdout=-10, bandit=90)),
        422,
        "traffic.holdout",
    ),
    "unknown explorer": (
        _config(lambda c: c.update(explorer={"kind": "magic"})),
        422,
        "explorer.kind",
    ),
    "epsilon above one": (
        _config(lambda c: c.update(explorer={"kind": "epsilon_greedy", "epsilon": 2})),
        422,
        "explorer.epsilon",
    ),
    "floor too high for the arms": (
        _config(lambda c: c.update(probability_floor=0.3)),
        422,
        "probability_floor",
    ),
    "eligibility does not parse": (
        _config(lambda c: c["offers"][1].update(eligibility="profile.age_band ==")),
        422,
        "offers[1].eligibility",
    ),
    "eligibility reads a protected attribute": (
        _config(lambda c: c["offers"][1].update(eligibility="profile.gender == 'f'")),
        422,
        "offers[1].eligibility",
    ),
    "eligibility reads an unknown field": (
        _config(lambda c: c["offers"][1].update(eligibility="profile.shoe_size > 9")),
        422,
        "offers[1].eligibility",
    ),
    "eligibility calls Python": (
        _config(lambda c: c["offers"][1].update(eligibility="__import__('os').system('true')")),
        422,
        "offers[1].eligibility",
    ),
    "unknown fallback offer": (
        _config(lambda c: c.update(fallback_offer="no-such")),
        422,
        "fallback_offer",
    ),
    "rule names an unknown offer": (
        _config(lambda c: c["ab_arm"]["rules"][0].update(offer="no-such")),
        422,
        "ab_arm.rules[0].offer",
    ),
    "reward wait shorter than the window": (
        _config(lambda c: c["reward"].update(reward_wait_hours=1)),
        422,
        "reward.reward_wait_hours",
    ),
    "cap on an unknown offer": (
        _config(
            lambda c: c["frequency_caps"].append(
                {"scope": "offer", "offer": "no-such", "max_offers": 1, "window_hours": 1}
            )
        ),
        422,
        "frequency_caps[2].offer",
    ),
    "context field outside the sections": (
        _config(lambda c: c["context_fields"].append({"name": "email", "type": "category"})),
        422,
        "context_fields[24].name",
    ),
    "NaN weight": (
        json.dumps(new_experiment()).replace('"click": 0.1', '"click": NaN').encode(),
        400,
        "body",
    ),
    "body over 64 KiB": (_config(lambda c: c.update(description="d" * (64 * 1024))), 413, "body"),
}


def test_bad_experiment_configs(client: Client, demo: Demo) -> None:
    def state() -> tuple[int, ...]:
        version = client.get(f"/v1/experiments/{DEMO_EXPERIMENT_KEY}").json()["version"]
        return count(demo.platform, "experiments"), count(demo.platform, "audit_log"), version

    cases = {name: (status, field) for name, (_, status, field) in BAD_CONFIGS.items()}
    check_table(cases, lambda name: _post(client, "/v1/experiments", BAD_CONFIGS[name][0]), state)
    # The same documents are refused as an update of the running experiment.
    updates = {
        name: ({**body, "key": DEMO_EXPERIMENT_KEY}, status, field)
        for name, (body, status, field) in BAD_CONFIGS.items()
        if isinstance(body, dict) and status == 422 and field != "key"
    }
    check_table(
        {name: (status, field) for name, (_, status, field) in updates.items()},
        lambda name: client.put(f"/v1/experiments/{DEMO_EXPERIMENT_KEY}", json=updates[name][0]),
        state,
    )
    assert state() == (1, 4, 1)  # create, approve, start, key


def test_the_minimal_config_is_valid(client: Client) -> None:
    """The base of the `too many offers` case is itself accepted with fewer offers."""
    response = client.post("/v1/experiments", json=_minimal(_offers(MAX_OFFERS)))
    assert response.status_code == 201, response.text
