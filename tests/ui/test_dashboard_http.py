"""The dashboard's analyses over HTTP (SQLite and PostgreSQL): the candidate policies' table,
the integrity badge, guardrail rates, segments and the fairness audit upload."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
import sqlalchemy as sa

from bandit_platform.api.ui import _number as number_filter
from bandit_platform.api.ui import pages
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.service import policy_evaluation
from bandit_platform.service.learner import Learner
from tests.api.test_http import DECISION, outcome_body
from tests.conftest import Demo, FakeClock
from tests.ui.test_ui_http import DASHBOARD, HTML, Client, sign_in, ui, users

__all__ = ["ui", "users"]  # fixtures used by name below

POLICIES = f"{DASHBOARD}/policies"
INTEGRITY = f"{DASHBOARD}/integrity"
FAIRNESS = f"{DASHBOARD}/fairness"
#: A protected-attribute value that must not reach the database or the logs.
PLANTED = "zq-planted-attribute-7731"


@pytest.fixture(autouse=True)
def _fresh_integrity_cache() -> None:
    pages.INTEGRITY._found.clear()


def traffic(ui: Client, demo: Demo, clock: FakeClock, n: int = 60) -> list[dict[str, Any]]:
    """`n` decisions from the demo's request, a third of the offers rewarded, then a model."""
    ui.headers["X-API-Key"] = demo.api_key
    answers = []
    for i in range(n):
        answer = ui.post(
            "/v1/decisions", json={**DECISION, "customer_id": f"u-{i}", "request_id": f"r-{i}"}
        )
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
        if answer.json()["offer"] is not None and i % 3 == 0:
            body = outcome_body(answer.json()["decision_id"], clock, idempotency_key=f"o-{i}")
            assert ui.post("/v1/outcomes", json=body).status_code == 201
    clock.advance(days=8)
    Learner(demo.platform).run_once()
    del ui.headers["X-API-Key"]
    return answers


def figures(text: str) -> dict[str, Any]:
    return {
        name: json.loads(body)
        for name, body in re.findall(
            r'<script type="application/json" id="figure-(\w+)">(.*?)</script>', text, re.S
        )
    }


def shown(value: float) -> str:
    """A number as the page shows it (the templates' `number` filter, 4 digits)."""
    return number_filter(value, 4)


def cell_text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def test_the_policy_table_is_computed_on_demand_and_equals_evaluate_policies(
    ui: Client, demo: Demo, clock: FakeClock
) -> None:
    traffic(ui, demo, clock)
    sign_in(ui, "viewer")
    idle = ui.get(POLICIES)
    assert idle.status_code == 200
    assert 'id="ope-table"' not in idle.text  # nothing computed until asked

    page = ui.get(f"{POLICIES}?run=true")
    assert page.status_code == 200, page.text
    assert "Computed in" in page.text
    expected = policy_evaluation.evaluate_policies(
        demo.platform,
        DEMO_EXPERIMENT_KEY,
        policy_evaluation.standard_targets(demo.platform, DEMO_EXPERIMENT_KEY),
    )
    rows = re.findall(
        r'<tr data-policy="([^"]+)" data-estimator="([^"]+)">(.*?)</tr>', page.text, re.S
    )
    assert len(rows) == 3 * len(expected)
    cells = {(policy, estimator): cell_text(body) for policy, estimator, body in rows}
    for evaluation in expected:
        for estimate in (evaluation.ips, evaluation.snips, evaluation.dr):
            text = cells[(evaluation.policy, estimate.name)]
            assert shown(estimate.value) in text, (evaluation.policy, estimate.name, text)
            assert f"[{shown(estimate.lower)}, {shown(estimate.upper)}]" in text
            assert f"{estimate.n:,}" in text
    assert {e.policy for e in expected} >= {"logging", "uniform", "incumbent_rules"}
    figure = figures(page.text)["policies"]
    assert f"n = {expected[0].n:,}" in figure["layout"]["title"]["text"]
    assert [t["name"] for t in figure["data"]] == ["IPS", "SNIPS", "DR"]
    ips = figure["data"][0]
    assert ips["x"][0] == pytest.approx(expected[0].ips.value)
    assert "error_x" in ips
    assert "low_effective_sample_size" in page.text  # the legend explains every code

    # An earlier snapshot version the user picks is a target of its own.
    assert "snapshot v" in page.text
    wrong = ui.get(f"{POLICIES}?run=true&versions=abc", headers=HTML)
    assert wrong.status_code == 422
    missing = ui.get(f"{POLICIES}?run=true&versions=999", headers=HTML)
    assert missing.status_code == 404


def test_the_integrity_badge_is_clean_then_shows_a_tampered_probability(
    ui: Client, demo: Demo, clock: FakeClock
) -> None:
    answers = traffic(ui, demo, clock, n=30)
    sign_in(ui, "viewer")
    assert "integrity: not checked recently" in ui.get(DASHBOARD).text

    details = ui.get(INTEGRITY)
    assert details.status_code == 200
    report = policy_evaluation.check_integrity(demo.platform, DEMO_EXPERIMENT_KEY)
    assert report.ok
    assert report.checked > 0
    badge = f"integrity ok ({report.checked:,} checked)"
    assert badge in details.text
    assert badge in ui.get(DASHBOARD).text  # cached: the dashboard does not recompute

    bandit = next(a for a in answers if a.get("group") == "bandit" and a["offer"] is not None)
    with demo.platform.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE decisions SET propensity = propensity / 2 WHERE id = :d"),
            {"d": bandit["decision_id"]},
        )
    details = ui.get(INTEGRITY)
    assert "integrity: 1 mismatched" in details.text
    assert bandit["decision_id"] in details.text
    assert "integrity: 1 mismatched" in ui.get(DASHBOARD).text


def test_the_dashboard_shows_guardrail_rates_and_segments_with_n_and_intervals(
    ui: Client, demo: Demo, clock: FakeClock
) -> None:
    traffic(ui, demo, clock)
    sign_in(ui, "viewer")
    page = ui.get(DASHBOARD)
    assert page.status_code == 200, page.text
    table = page.text.split('id="guardrail-table"', 1)[1].split("</table>", 1)[0]
    assert "complaint" in table
    assert "opt_out" in table
    assert "always-valid 95% intervals" in page.text
    segment = figures(page.text)["segments"]
    assert "n = " in segment["layout"]["title"]["text"]
    assert segment["data"]
    assert all("error_y" in trace for trace in segment["data"])
    assert 'id="segment-table"' in page.text
    assert "Holm" in page.text


def test_the_analysis_pages_need_a_session_and_fairness_needs_an_auditor(
    ui: Client, demo: Demo, clock: FakeClock
) -> None:
    for path in (POLICIES, INTEGRITY, FAIRNESS):
        assert ui.get(path).status_code == 401
    token = sign_in(ui, "viewer")
    assert ui.get(FAIRNESS, headers=HTML).status_code == 403
    files = {"groups": ("groups.csv", b"customer_id,band\nu-1,a\n", "text/csv")}
    assert ui.post(FAIRNESS, files=files, data={"csrf_token": token}).status_code == 403
    assert "fairness audit" not in ui.get(DASHBOARD).text
    ui.post("/ui/logout", data={"csrf_token": token})

    token = sign_in(ui, "approver")
    assert ui.get(FAIRNESS).status_code == 200
    assert ui.post(FAIRNESS, files=files).status_code == 403  # no CSRF token
    assert ui.post(FAIRNESS, files=files, data={"csrf_token": "wrong"}).status_code == 403


def test_the_fairness_upload_shows_rates_and_stores_nothing(
    ui: Client, demo: Demo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    traffic(ui, demo, clock)
    token = sign_in(ui, "admin")
    lines = ["customer_id,age_band"] + [
        f"u-{i},{PLANTED if i % 2 else 'under_30'}" for i in range(60)
    ]
    caplog.set_level(logging.DEBUG)
    response = ui.post(
        FAIRNESS,
        files={"groups": ("groups.csv", "\n".join(lines).encode(), "text/csv")},
        data={"csrf_token": token},
    )
    assert response.status_code == 200, response.text
    assert "60 of 60 supplied customers matched" in response.text
    assert "four-fifths" in response.text or "four fifths" in response.text
    figure = figures(response.text)["fairness"]
    assert "n = " in figure["layout"]["title"]["text"]
    assert all("error_y" in trace for trace in figure["data"])
    assert PLANTED in response.text  # shown to the auditor on the page...

    # ...and nowhere else: not in any table, not in the logs.
    with demo.platform.engine.connect() as connection:
        tables = sa.inspect(connection).get_table_names()
        for table in tables:
            for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')):
                assert PLANTED not in str(row), table
    assert PLANTED not in caplog.text

    bad = ui.post(
        FAIRNESS,
        files={"groups": ("groups.csv", b"name,age_band\nx,y\n", "text/csv")},
        data={"csrf_token": token},
        headers=HTML,
    )
    assert bad.status_code == 422
    assert "customer_id" in bad.text
    big = ui.post(
        FAIRNESS,
        files={
            "groups": (
                "g.csv",
                b"customer_id,a\n" + b"x" * (pages.MAX_AUDIT_UPLOAD + 70_000),
                "text/csv",
            )
        },
        data={"csrf_token": token},
        headers=HTML,
    )
    assert big.status_code == 413
