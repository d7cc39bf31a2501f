"""The evaluation surfaces of a running server, over real HTTP, on SQLite and PostgreSQL.

A small experiment with a holdout, a uniform A-B arm and the bandit receives decisions and
outcomes through the real server; `bandit-platform learner --once` closes the rewards (the
attribution window is about a second) and publishes a model, which the server then serves.
The reports, the integrity check, the off-policy values and the guardrails are read over
HTTP, and `bandit-platform evaluate --experiment KEY --json` on the same database must print
the same group counts and lifts as the report endpoint.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import ExperimentConfig, config_from_builtins
from bandit_platform.domain.decisions import ExperimentStatus
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from tests.conftest import PSEUDONYM_KEY, REPO, start_server, stop_server

pytestmark = [pytest.mark.system, pytest.mark.slow]

KEY = "reports-e2e"
GROUPS = ("holdout", "ab", "bandit")
STAGES = ("student", "retired")
#: Click probability per (life stage, offer); no offer is never clicked.
CLICK = {
    ("student", "travel_card"): 0.5,
    ("student", "savings"): 0.1,
    ("retired", "travel_card"): 0.1,
    ("retired", "savings"): 0.5,
}
#: Decisions before the first model, then after it.
FIRST_ROUND = 160
SECOND_ROUND = 160


def experiment_config() -> ExperimentConfig:
    def offer(key: str, product: str) -> dict[str, Any]:
        return {"key": key, "product": product, "name": key, "variants": [{"key": "standard"}]}

    return config_from_builtins(
        {
            "key": KEY,
            "name": "Reports over HTTP",
            "surfaces": ["home_feed"],
            "context_fields": [
                {"name": "profile.life_stage", "type": "category", "values": list(STAGES)},
                {"name": "cash_flow.balance", "type": "number"},
            ],
            "segments": [
                {"key": "students", "rule": "profile.life_stage == 'student'"},
                {"key": "high_balance", "rule": "cash_flow.balance >= 5000"},
            ],
            "offers": [offer("savings", "savings"), offer("travel_card", "credit_card")],
            "include_no_offer": True,
            "traffic": {"holdout": 20, "ab": 30, "bandit": 50},
            "ab_arm": {"kind": "uniform"},
            # The platform mixes this explorer's decaying uniform share into VW's greedy pmf:
            # the integrity check recomputes that mix too.
            "explorer": {"kind": "epsilon_decay", "epsilon": 0.3},
            "reward": {
                "event_weights": {"click": 1.0},
                # About one second, so that rewards close while the test runs.
                "attribution_window_hours": 0.0003,
            },
            "learning": {"publish_every_examples": 20},
            "guardrails": [
                {"metric": "complaint", "window_hours": 0.0003, "max_rate": 0.5},
            ],
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
        return ApiKeyService(platform).create("reports-e2e", set(Scope)).secret
    finally:
        platform.close()


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`bandit-platform ARGS` on the test database, as an operator runs it."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "OPENBLAS_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bandit_platform.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def strict_json(text: str) -> Any:
    """JSON that must not carry NaN or infinities (the standard forbids them)."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-finite number {constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def get(client: httpx.Client, path: str) -> Any:
    response = client.get(f"/v1/experiments/{KEY}{path}")
    assert response.status_code == 200, (path, response.text)
    return strict_json(response.text)


def send_traffic(client: httpx.Client, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` decisions with their clicks (and one complaint), over HTTP: the answers, each with
    the life stage sent."""
    rng = random.Random(seed)
    answers = []
    for index in range(n):
        stage = STAGES[index % 2]
        response = client.post(
            "/v1/decisions",
            json={
                "experiment": KEY,
                "customer_id": f"c-{seed}-{index}",
                "surface": "home_feed",
                "context": {
                    "profile": {"life_stage": stage},
                    "cash_flow": {"balance": rng.choice([800, 2500, 9000])},
                },
            },
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        answers.append({**answer, "life_stage": stage})
        events = []
        if rng.random() < CLICK.get((stage, answer["offer"]), 0.0):
            events.append("click")
        if index == 0:
            events.append("complaint")
        for event in events:
            outcome = client.post(
                "/v1/outcomes",
                json={
                    "decision_id": answer["decision_id"],
                    "event": event,
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "idempotency_key": f"{event}-{answer['decision_id']}",
                },
            )
            assert outcome.status_code == 201, outcome.text
    return answers


def intervals(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object of a report that carries an interval (`lower` and `upper`), with its path."""
    if isinstance(value, dict):
        if "lower" in value and "upper" in value:
            yield path, value
        for key, item in value.items():
            yield from intervals(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from intervals(item, f"{path}[{index}]")


def lifts(report: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The comparisons of a headline report by (horizon, treatment, control), without the
    time the report was generated."""
    return {
        (h["horizon"], c["treatment"], c["control"]): {
            k: c[k] for k in ("n_treatment", "n_control", "absolute", "relative", "sequential")
        }
        for h in report["horizons"]
        for c in h["comparisons"]
    }


def test_reports_integrity_and_cli_agree_over_http(db_url: str, tmp_path: Path) -> None:
    api_key = set_up(db_url)
    server = start_server(db_url, tmp_path / "server.log")
    try:
        with server.client(api_key) as client:
            answers = send_traffic(client, FIRST_ROUND, seed=1)
            time.sleep(1.2)  # past the attribution window
            cli(db_url, "learner", "--once")
            models = client.get(f"/v1/experiments/{KEY}/models").json()
            assert models, "the learner published no model"
            assert models[0]["examples_seen"] > 0, models
            time.sleep(1.2)  # past the workers' model refresh interval
            answers += send_traffic(client, SECOND_ROUND, seed=2)
            time.sleep(1.2)
            cli(db_url, "learner", "--once")

            sent = Counter(a["group"] for a in answers)
            assert set(sent) == set(GROUPS), sent
            served_by_model = Counter(
                a["model_version"] for a in answers if a["model_version"] is not None
            )
            assert served_by_model, "no bandit decision was served by a published model"

            report = get(client, "/report")
            timeseries = get(client, "/report/timeseries")
            segments = get(client, "/report/segments")
            model_report = get(client, "/report/models")
            integrity = get(client, "/policies/integrity")
            policies = get(client, "/policies")
            guardrails = get(client, "/guardrails")
    finally:
        stop_server(server)

    # Headline: the decisions sent per group, every reward closed, every estimate with n.
    assert report["decisions"] == len(answers)
    assert report["group_counts"] == dict(sent)
    learning = [h for h in report["horizons"] if h["learning"]]
    assert len(learning) == 1
    for group in learning[0]["groups"]:
        assert group["reward"]["n"] == sent[group["group"]], group
        assert group["conversion"]["n"] == sent[group["group"]], group
    assert {(c["treatment"], c["control"]) for c in learning[0]["comparisons"]} == {
        ("bandit", "holdout"),
        ("bandit", "ab"),
    }
    for comparison in learning[0]["comparisons"]:
        assert comparison["n_treatment"] == sent["bandit"]
        assert comparison["n_control"] == sent[comparison["control"]]
        assert comparison["absolute"]["lower"] <= comparison["absolute"]["upper"]
    found = list(intervals(report))
    assert len(found) >= 10
    for path, estimate in found:
        has_n = "n" in estimate or ".comparisons[" in path  # a lift's n is its comparison's
        assert has_n, (path, estimate)
        assert (
            estimate["lower"] is None
            or estimate["upper"] is None
            or (estimate["lower"] <= estimate["upper"])
        ), (path, estimate)
    assert report["off_policy"]["decisions"] > 0
    assert {e["policy"] for e in report["off_policy"]["estimates"]} >= {"uniform", "logging"}
    assert report["guardrails"]["status"] in {"ok", "tripped"}

    # Time series: the decisions per group add up over the buckets.
    per_group: Counter[str] = Counter()
    for point in timeseries["traffic"]:
        per_group[point["group"]] += point["decisions"]
    assert per_group == sent

    # Segments: every decision stored its context; a row per segment plus `(none)` at most.
    assert segments["decisions"] == len(answers)
    assert segments["without_context"] == 0
    students = next(s for s in segments["segments"] if s["segment"] == "students")
    assert students["decisions"] == sum(a["life_stage"] == "student" for a in answers)

    # Models: each version with the bandit decisions it served.
    served = {m["version"]: m["decisions"] for m in model_report["models"]}
    for version, count in served_by_model.items():
        assert served[version] == count, (version, served)

    # Integrity: the logged vectors of bandit and uniform A-B decisions recompute exactly.
    assert integrity["ok"] is True, integrity
    assert integrity["mismatched"] == 0
    assert integrity["unverifiable"] == 0
    expected_checked = sent["ab"] + sum(served_by_model.values())
    assert integrity["checked"] == expected_checked, integrity
    assert integrity["skipped"].get("holdout") == sent["holdout"]

    # Off-policy values of the standard targets, each with n and an interval.
    assert {p["policy"] for p in policies} >= {"logging", "uniform"}
    for policy in policies:
        for estimate in policy["estimates"]:
            assert estimate["n"] == policy["n"] > 0
            assert estimate["lower"] <= estimate["value"] <= estimate["upper"], estimate

    # Guardrails: the configured one, measured on both groups.
    assert [g["metric"] for g in guardrails["guardrails"]] == ["complaint"]
    complaint = guardrails["guardrails"][0]
    assert complaint["bandit"]["n"] + complaint["holdout"]["n"] > 0

    # The command line reads the same database and prints the same numbers.
    printed = strict_json(cli(db_url, "evaluate", "--experiment", KEY, "--json").stdout)
    assert printed["report"]["group_counts"] == report["group_counts"]
    assert printed["report"]["decisions"] == report["decisions"]
    assert lifts(printed["report"]) == lifts(report)
