"""`export_log`: Parquet for analysts and VW dsjson for VW's own tools, after real learning.

The dsjson is checked with VW itself (this test imports `vowpal_wabbit_next`, which the
platform only does in its adapter): every line parses, a fresh `--cb_explore_adf` workspace
learns from the file, and the features hash exactly as the online learner's text format does.

A model trained on the dsjson is not bit-identical to one trained on the same examples through
`ContextualBanditModel.learn`, and the reason is not hashing (namespaces, indices and their
order are identical): VW's text-format parser rounds decimals a few float32 ulps away from the
nearest float (`0.3333333333333333` -> 0.33333322, `0.05` -> 0.049999997), while its JSON
parser rounds correctly. Propensities and numeric features therefore differ by ~1e-7 relative,
the learned weights by < 1e-4 relative, and the predictions on the logged examples agree.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
import vowpal_wabbit_next as vw

from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import RewardHorizon
from bandit_platform.domain.decisions import Decision, DecisionReason
from bandit_platform.domain.errors import NotFound
from bandit_platform.features.context import Namespaces
from bandit_platform.policies.vw_adapter import (
    ContextualBanditModel,
    example_lines,
    model_arguments,
)
from bandit_platform.service.export import export_log
from bandit_platform.service.learner import Learner, logged_example
from bandit_platform.service.platform import Platform
from bandit_platform.storage.tables import DecisionRow, ModelSnapshotRow, RewardRow
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import (
    DEMO,
    decide,
    demo_variant,
    experiment_id,
    identity,
    learning,
    random_context,
    report,
    rows,
    short_reward,
    start,
)

KEY = "export-me"
ARGUMENTS = model_arguments(DEMO.explorer)
#: The learning horizon (`primary`, 1 hour) and a report horizon of 30 minutes.
REWARD = short_reward(
    report_horizons=[
        RewardHorizon(
            name="clicked_30m", event_weights={"click": 1.0}, attribution_window_hours=0.5
        )
    ]
)


def table(platform: Platform, model: Any) -> list[dict[str, Any]]:
    return rows(platform, sa.select(model.__table__))


def loaded(data: bytes) -> vw.Workspace[Any]:
    """A VW workspace from model bytes (the stored model carries its own random seed)."""
    seed = ARGUMENTS.index("--random_seed")
    return vw.Workspace(ARGUMENTS[:seed] + ARGUMENTS[seed + 2 :], model_data=data)


def predict(
    workspace: vw.Workspace[Any], shared: Namespaces, actions: list[Namespaces]
) -> list[float]:
    """A raw workspace's probability per action, in the order given."""
    parser = vw.TextFormatParser(workspace)
    scores = workspace.predict_one([parser.parse_line(x) for x in example_lines(shared, actions)])
    probabilities = [0.0] * len(actions)
    for index, probability in scores:
        probabilities[int(index)] = float(probability)
    return probabilities


def features(example: vw.Example) -> list[tuple[int, list[int], list[float]]]:
    return [
        (group, list(example[group].indices), list(example[group].values))
        for group in example.feat_group_indices
    ]


@pytest.fixture
def logged(demo: Demo, clock: FakeClock) -> list[Decision]:
    """Decisions of every kind with outcomes, their rewards closed and learned (one snapshot
    with every example), and one decision made after that, whose rewards are still open."""
    platform = demo.platform
    app: AppIdentity = identity(demo)
    start(
        platform,
        demo_variant(
            KEY, reward=REWARD, frequency_caps=[], learning=learning(publish_every_examples=1)
        ),
    )
    rng = random.Random(5)
    decisions = [
        decide(platform, app, f"e-{i}", random_context(rng), experiment=KEY) for i in range(70)
    ]
    decisions += [decide(platform, app, f"r-{i}", experiment=KEY, consent=False) for i in range(4)]
    for decision in decisions:
        if decision.offer is not None and rng.random() < 0.5:
            report(platform, app, decision, rng.choice(["click", "apply", "convert"]), clock.now)
    clock.advance(hours=1, minutes=1)
    Learner(platform).run_once()
    decisions.append(decide(platform, app, "open", experiment=KEY))
    return decisions


def test_parquet_has_one_row_per_decision_with_rewards_per_horizon(
    demo: Demo, logged: list[Decision], tmp_path: Path
) -> None:
    platform = demo.platform
    summary = export_log(platform, KEY, tmp_path / "out")
    assert summary.parquet == tmp_path / "out" / f"{KEY}.parquet"
    frame = pl.read_parquet(summary.parquet)
    assert summary.decisions == frame.height == len(logged)
    assert frame["decision_id"].n_unique() == len(logged)
    assert {
        "reward_primary",
        "reward_source_primary",
        "reward_clicked_30m",
        "reward_source_clicked_30m",
    } <= set(frame.columns)

    closed = {(r["decision_id"], r["horizon"]): r for r in table(platform, RewardRow)}
    by_id = {d.decision_id: d for d in logged}
    for record in frame.iter_rows(named=True):
        decision = by_id[record["decision_id"]]
        assert record["group"] == decision.group.value
        assert record["reason"] == decision.reason.value
        assert record["learnable"] is decision.learnable
        assert record["propensity"] == decision.propensity
        assert record["chosen_offer"] == decision.offer
        assert record["created_at"] == decision.created_at
        assert json.loads(record["probabilities"]) == decision.probabilities
        for horizon in ("primary", "clicked_30m"):
            reward = closed.get((decision.decision_id, horizon))
            if decision is logged[-1]:
                assert reward is None  # not closed yet: an empty cell, not a default
                assert record[f"reward_{horizon}"] is None
                continue
            assert reward is not None
            assert record[f"reward_{horizon}"] == reward["reward"]
            assert record[f"reward_source_{horizon}"] == reward["source"]
    sources = frame["reward_source_primary"].value_counts()
    assert set(sources["reward_source_primary"].drop_nulls()) == {"outcomes", "default"}

    with pytest.raises(NotFound):
        export_log(platform, "no-such-experiment", tmp_path)


def test_dsjson_parses_in_vw_and_trains_like_the_online_learner(
    demo: Demo, logged: list[Decision], tmp_path: Path
) -> None:
    platform = demo.platform
    summary = export_log(platform, KEY, tmp_path)
    lines = summary.dsjson.read_text().splitlines()
    learnable = [d for d in logged[:-1] if d.learnable]
    assert {d.reason for d in learnable} == {DecisionReason.BANDIT}
    assert summary.dsjson_examples == len(lines) == len(learnable)
    assert any(d.reason != DecisionReason.BANDIT for d in logged)

    decisions = {r["id"]: r for r in table(platform, DecisionRow)}
    primary = {r["decision_id"]: r for r in table(platform, RewardRow) if r["horizon"] == "primary"}
    # Learn in the order the online learner did: by reward id.
    documents = sorted(
        (json.loads(line) for line in lines), key=lambda d: primary[d["EventId"]]["id"]
    )
    assert {d["EventId"] for d in documents} == {d.decision_id for d in learnable}

    from_dsjson = vw.Workspace(ARGUMENTS)
    dsjson_parser = vw.DSJsonFormatParser(from_dsjson)
    replay = ContextualBanditModel(ARGUMENTS)
    text_parser = vw.TextFormatParser(vw.Workspace(ARGUMENTS))
    compiled = platform.compiled_version
    value_gap = 0.0
    for document in documents:
        decision = decisions[document["EventId"]]
        reward = primary[decision["id"]]
        parsed = dsjson_parser.parse_json(json.dumps(document))
        assert len(parsed) == 1 + len(decision["eligible"])
        labelled = [i for i, ex in enumerate(parsed[1:]) if ex.get_label().label is not None]
        chosen_key = (
            "no_offer"
            if decision["chosen_offer"] is None
            else f"{decision['chosen_offer']}/{decision['chosen_variant']}"
        )
        assert labelled == [decision["eligible"].index(chosen_key)]
        _, cost, probability = parsed[1 + labelled[0]].get_label().label
        assert cost == pytest.approx(-reward["reward"], rel=1e-6)
        assert probability == pytest.approx(decision["propensity"], rel=1e-6)

        with platform.session() as session:
            config = compiled(session, decision["experiment_id"], decision["experiment_version"])
        example = logged_example(DecisionRow(**decision), reward["id"], reward["reward"], config)
        assert example is not None
        text = example_lines(
            example.shared,
            example.actions,
            (example.chosen, -example.reward, example.propensity),
        )
        for from_text, from_json in zip(
            (text_parser.parse_line(line) for line in text), parsed, strict=True
        ):
            # Identical feature hashing: same namespaces, same indices, in the same order.
            hashed_text, hashed_json = features(from_text), features(from_json)
            assert [(g, i) for g, i, _ in hashed_text] == [(g, i) for g, i, _ in hashed_json]
            for (_, _, a), (_, _, b) in zip(hashed_text, hashed_json, strict=True):
                gap = max(
                    (abs(x - y) / max(abs(y), 1e-30) for x, y in zip(a, b, strict=True)), default=0
                )
                value_gap = max(value_gap, gap)
        from_dsjson.learn_one(parsed)
        replay.learn(
            example.shared, example.actions, example.chosen, example.reward, example.propensity
        )
    # Values agree to float32 precision (VW's text parser rounds decimals a few ulps off).
    assert value_gap < 1e-6

    # The online learner's newest snapshot holds exactly these examples, learned as the replay
    # learned them through the adapter.
    exp_id = experiment_id(platform, KEY)
    snapshot = max(
        (s for s in table(platform, ModelSnapshotRow) if s["experiment_id"] == exp_id),
        key=lambda s: s["version"],
    )
    assert snapshot["examples_seen"] == len(documents)
    assert snapshot["data"] == replay.serialize()

    # The workspace trained from the dsjson has learned (it is no longer cold) and agrees with
    # the replay up to that float32 rounding, weight by weight and prediction by prediction.
    weights_json = loaded(from_dsjson.serialize()).weights()
    weights_text = loaded(replay.serialize()).weights()
    assert np.count_nonzero(weights_json) == np.count_nonzero(weights_text) > 0
    # The weights proper agree closely; the optimiser's accumulators (squared-gradient sums,
    # channels 1..) compound the rounding over every example, so they get a looser bound.
    # Absolute tolerances scale with the largest weight: a weight near zero can differ by a
    # few 1e-6 in absolute terms (a large relative gap) after a few hundred rounded updates.
    proper_json, proper_text = weights_json[..., 0], weights_text[..., 0]
    scale = float(np.abs(proper_text).max())
    np.testing.assert_allclose(proper_json, proper_text, rtol=1e-3, atol=1e-3 * scale)
    assert np.linalg.norm(proper_json - proper_text) <= 1e-3 * np.linalg.norm(proper_text)
    np.testing.assert_allclose(
        weights_json, weights_text, rtol=1e-2, atol=1e-2 * float(np.abs(weights_text).max())
    )
    cold = ContextualBanditModel(ARGUMENTS)
    moved = 0
    for document in documents:
        decision = decisions[document["EventId"]]
        with platform.session() as session:
            config = compiled(session, decision["experiment_id"], decision["experiment_version"])
        example = logged_example(DecisionRow(**decision), 0, 0.0, config)
        assert example is not None
        from_replay = replay.predict(example.shared, example.actions)
        assert predict(from_dsjson, example.shared, example.actions) == pytest.approx(
            from_replay, abs=1e-6
        )
        moved += from_replay != cold.predict(example.shared, example.actions)
    assert moved > 0
