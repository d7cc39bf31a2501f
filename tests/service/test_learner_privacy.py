"""A field marked protected later never reaches the model, even from older logs."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import validate_config
from bandit_platform.service.learner import logged_example
from bandit_platform.storage.tables import DecisionRow


def _decision() -> DecisionRow:
    return DecisionRow(
        id="d-1",
        experiment_id=1,
        experiment_version=1,
        api_key_id=1,
        customer_key="k" * 64,
        surface="home_feed",
        group="bandit",
        reason="bandit",
        context={"profile.age_band": "25_34", "cash_flow.balance": 900.0},
        eligible=["budgeting_tool/insights", "no_offer"],
        probabilities={"budgeting_tool/insights": 0.5, "no_offer": 0.5},
        chosen_offer="budgeting_tool",
        chosen_variant="insights",
        propensity=0.5,
        model_version=1,
        learnable=True,
        explanation="",
        request_hash="h",
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
    )


def _names(example: object) -> str:
    return repr(example)


def test_fields_protected_after_the_decision_are_dropped() -> None:
    then = validate_config(demo_config())
    config = demo_config()
    now = validate_config(
        msgspec.structs.replace(
            config,
            context_fields=[f for f in config.context_fields if f.name != "profile.age_band"],
            protected_attributes=[*config.protected_attributes, "profile.age_band"],
        )
    )
    before = logged_example(_decision(), 1, 1.0, then, then)
    after = logged_example(_decision(), 1, 1.0, then, now)
    assert before is not None
    assert after is not None
    assert "age_band" in _names(before.shared)
    assert "age_band" not in _names(after.shared)
    assert "balance" in _names(after.shared)
    assert after.actions == before.actions
