"""The report endpoints over HTTP (Litestar TestClient, demo platform, real database): shapes
the UI charts, intervals and sample sizes on every estimate, and 4xx naming the parameter."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import Scope
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.learner import Learner
from bandit_platform.storage.tables import SQLModel
from tests.api.test_http import DECISION, assert_problem, outcome_body
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import random_context

Client = TestClient[Litestar]
REPORT = f"/v1/experiments/{DEMO_EXPERIMENT_KEY}/report"
PLANTED = "planted-http-7f3k"


@pytest.fixture
def played(client: Client, demo: Demo, clock: FakeClock) -> list[dict[str, Any]]:
    """Decisions and outcomes over HTTP, rewards closed after the demo's 7-day wait."""
    rng = random.Random(11)
    decisions = []
    for i in range(60):
        context = random_context(rng)
        body = {
            **DECISION,
            "customer_id": f"h-{i}",
            "request_id": f"r-{i}",
            "context": {
                section: {k.split(".", 1)[-1]: v for k, v in fields.items()}
                for section, fields in context.items()
            },
        }
        response = client.post("/v1/decisions", json=body)
        assert response.status_code == 200, response.text
        decisions.append(response.json())
    for i, decision in enumerate(decisions):
        if decision["offer"] is not None and i % 2 == 0:
            response = client.post(
                "/v1/outcomes",
                json=outcome_body(decision["decision_id"], clock, idempotency_key=f"o-{i}"),
            )
            assert response.status_code == 201, response.text
    clock.advance(days=8)
    Learner(demo.platform).run_once()
    return decisions


def _estimates_carry_n_and_interval(node: Any) -> int:
    """Count the objects that look like estimates and check each carries n and an interval."""
    found = 0
    if isinstance(node, dict):
        if "mean" in node and "n" in node:
            assert "lower" in node
            assert "upper" in node
            assert "confidence" in node
            found += 1
        if "rate" in node:
            assert {"count", "n", "lower", "upper"} <= set(node)
            found += 1
        for value in node.values():
            found += _estimates_carry_n_and_interval(value)
    elif isinstance(node, list):
        for value in node:
            found += _estimates_carry_n_and_interval(value)
    return found


def test_headline_report(client: Client, played: list[dict[str, Any]]) -> None:
    response = client.get(REPORT)
    assert response.status_code == 200, response.text
    assert "NaN" not in response.text
    assert "Infinity" not in response.text
    body = response.json()
    assert body["experiment"] == DEMO_EXPERIMENT_KEY
    assert body["decisions"] == len(played)
    assert sum(body["group_counts"].values()) == len(played)
    assert {"srm", "horizons", "off_policy", "guardrails", "warnings"} <= set(body)
    primary = body["horizons"][0]
    assert primary["learning"] is True
    for group in primary["groups"]:
        assert {"group", "reward", "conversion"} == set(group)
        assert {"n", "mean", "lower", "upper", "sd", "total", "total_squares"} <= set(
            group["reward"]
        )
    for comparison in primary["comparisons"]:
        assert comparison["treatment"] == "bandit"
        assert comparison["n_treatment"] > 1
        assert comparison["n_control"] > 1
        for part in ("absolute", "sequential"):
            assert {"estimate", "lower", "upper", "p_value", "p_value_adjusted"} <= set(
                comparison[part]
            )
    for estimate in body["off_policy"]["estimates"]:
        assert {"policy", "estimator", "value", "lower", "upper", "n"} <= set(estimate)
        assert "effective_sample_size" in estimate
    assert _estimates_carry_n_and_interval(body) > 0
    assert body["guardrails"]["status"] in {"ok", "none"}

    hour = client.get(REPORT, params={"horizon": body["horizons"][-1]["horizon"]})
    assert hour.status_code == 200, hour.text


def test_timeseries_segments_and_models(client: Client, played: list[dict[str, Any]]) -> None:
    series = client.get(f"{REPORT}/timeseries", params={"bucket": "hour"})
    assert series.status_code == 200, series.text
    body = series.json()
    assert body["bucket"] == "hour"
    assert sum(p["decisions"] for p in body["traffic"]) == len(played)
    assert {"time", "group", "decisions"} == set(body["traffic"][0])
    assert {"time", "group", "offer", "decisions", "share"} == set(body["allocation"][0])
    assert body["rewards"]
    assert {"time", "group", "reward", "conversion"} == set(body["rewards"][0])

    segments = client.get(f"{REPORT}/segments")
    assert segments.status_code == 200, segments.text
    report = segments.json()
    assert report["decisions"] == len(played)
    assert [s["segment"] for s in report["segments"]] == [
        "young_professional",
        "high_balance_saver",
        "revolving_borrower",
        "homeowner",
        "frequent_international_spender",
        "overdraft_prone",
    ]
    assert _estimates_carry_n_and_interval(report) > 0

    models = client.get(f"{REPORT}/models")
    assert models.status_code == 200, models.text
    timeline = models.json()
    assert next(m["version"] for m in timeline["models"]) == 1
    assert set(timeline["models"][0]) == {
        "version",
        "created_at",
        "examples_seen",
        "note",
        "match_rate",
        "decisions",
        "first_decision_at",
        "last_decision_at",
    }
    assert timeline["configurations"][0]["version"] == 1


def test_bad_requests_name_the_parameter(client: Client, demo: Demo) -> None:
    response = client.get("/v1/experiments/no-such-thing/report")
    assert_problem(response, 404, "key")
    assert "no-such-thing" in response.json()["detail"]
    for path in ("timeseries", "segments", "models"):
        assert_problem(client.get(f"/v1/experiments/no-such-thing/report/{path}"), 404, "key")
    assert_problem(client.get(f"{REPORT}/timeseries", params={"bucket": "week"}), 422, "bucket")
    assert_problem(client.get(REPORT, params={"horizon": "nope"}), 422, "horizon")
    assert_problem(client.get(REPORT, params={"since": "yesterday"}), 422, "since")
    assert_problem(
        client.get(
            REPORT, params={"since": "2026-11-03T00:00:00Z", "until": "2026-11-02T00:00:00Z"}
        ),
        422,
        "until",
    )
    assert_problem(client.get(REPORT, params={"since": "2026-11-03T00:00:00"}), 422, "since")

    decide_only = ApiKeyService(demo.platform).create("app", {Scope.DECIDE}).secret
    denied = client.get(REPORT, headers={"X-API-Key": decide_only})
    assert denied.status_code == 403, denied.text


def _sweep(demo: Demo, needles: list[str]) -> list[str]:
    found = []
    with demo.platform.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                text = " ".join(str(v) for v in row)
                found += [f"{table.name}: {n}" for n in needles if n in text]
    return found


def test_fairness_audit_stores_nothing(
    client: Client, demo: Demo, played: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    reader = ApiKeyService(demo.platform).create("auditor", {Scope.READ}).secret
    rows = [
        {"customer_id": f"h-{i}", "ethnicity": PLANTED if i % 3 == 0 else "group-b"}
        for i in range(60)
    ]
    response = client.post(f"{REPORT}/fairness", json={"rows": rows}, headers={"X-API-Key": reader})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customers_supplied"] == body["customers_matched"] == 60
    assert body["decisions_matched"] == len(played)
    bandit = next(a for a in body["attributes"] if a["group"] == "bandit")
    assert {v["value"] for v in bandit["values"]} == {PLANTED, "group-b"}
    for value in bandit["values"]:
        assert {"count", "n", "rate", "lower", "upper"} <= set(value["offered"])
    assert {"gap", "impact_ratio", "flagged", "highest", "lowest"} <= set(bandit)
    assert "nothing was stored" in body["notice"]
    assert _sweep(demo, [PLANTED, "group-b"]) == []
    assert PLANTED not in caplog.text

    bad: list[tuple[Any, int, str]] = [
        ({}, 422, "rows"),
        ({"rows": []}, 422, "rows"),
        ({"rows": [{"ethnicity": "x"}]}, 422, "rows[0].customer_id"),
        ({"rows": rows, "extra": 1}, 422, "extra"),
        ({"rows": rows, "horizon": "nope"}, 422, "horizon"),
        ({"rows": [{"customer_id": "c", "ethnicity": 3}]}, 422, "rows[0][...]"),
    ]
    for payload, status, field in bad:
        answer = client.post(f"{REPORT}/fairness", json=payload)
        assert_problem(answer, status, field)
        assert PLANTED not in answer.text
    assert_problem(
        client.post(
            "/v1/experiments/nope/report/fairness", json={"rows": [{"customer_id": "c", "g": "v"}]}
        ),
        404,
        "key",
    )
    assert _sweep(demo, [PLANTED, "group-b"]) == []
    json.loads(response.text)

    # larger than the API's default body limit (64 KiB): the audit route allows more
    many = [{"customer_id": f"bulk-{i:06d}", "ethnicity": f"value-{i % 4}"} for i in range(3000)]
    big = client.post(f"{REPORT}/fairness", json={"rows": many})
    assert len(big.request.content) > demo.platform.settings.max_body_bytes
    assert big.status_code == 200, big.text
    assert big.json()["customers_matched"] == 0
