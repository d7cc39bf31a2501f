"""Contract tests of the Vowpal Wabbit adapter, run for every explorer the schema offers.

Real VW models, small synthetic problems, fixed seeds: each test is deterministic. Learning
tests use a uniform logging policy (propensity 1/k) and assert only the argmax per context,
which the data determine by a wide margin.
"""

from __future__ import annotations

import random
import typing
from collections.abc import Iterator

import pytest

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import (
    RND,
    Bagging,
    Cover,
    EpsilonDecay,
    EpsilonGreedy,
    ExploreFirst,
    Explorer,
    Softmax,
    SquareCB,
    SynthCover,
    validate_config,
)
from bandit_platform.features.context import (
    Namespaces,
    context_namespaces,
    offer_namespaces,
    validate_context,
)
from bandit_platform.policies.probabilities import is_valid
from bandit_platform.policies.vw_adapter import (
    ContextualBanditModel,
    example_lines,
    explorer_arguments,
    model_arguments,
)

#: One of each explorer, with the schema's defaults.
EXPLORERS: list[Explorer] = [
    EpsilonGreedy(),
    EpsilonDecay(),
    ExploreFirst(),
    Softmax(),
    SquareCB(),
    Bagging(),
    Cover(),
    RND(),
    SynthCover(),
]
EXPLORER_IDS = [type(explorer).__name__ for explorer in EXPLORERS]
# Explore-first is uniform for its first examples: learn past them.
N_LEARN = ExploreFirst().first + 500

SEGMENTS = ("young_professional", "retired")
#: The action that pays off in each segment (reward 1; every other action pays 0).
BEST = {"young_professional": 0, "retired": 1}


def test_every_explorer_is_tested() -> None:
    assert {type(explorer) for explorer in EXPLORERS} == set(typing.get_args(Explorer))


def _shared(segment: str) -> Namespaces:
    return {"profile": [(f"life_stage={segment}", 1.0)], "trigger": [("event=app_open", 1.0)]}


def _action(key: str) -> Namespaces:
    return {"offer": [(f"key={key}", 1.0)], "variant": [(f"key={key}.a", 1.0)]}


ACTIONS = [_action(key) for key in ("savings", "travel_card", "budgeting")]


def _segment_stream(seed: int, n: int) -> Iterator[tuple[Namespaces, int, float]]:
    """Logged decisions under a uniform policy: (shared features, chosen index, reward)."""
    rng = random.Random(seed)
    for _ in range(n):
        segment = rng.choice(SEGMENTS)
        chosen = rng.randrange(len(ACTIONS))
        yield _shared(segment), chosen, 1.0 if chosen == BEST[segment] else 0.0


def _train(model: ContextualBanditModel, seed: int, n: int) -> None:
    for shared, chosen, reward in _segment_stream(seed, n):
        model.learn(shared, ACTIONS, chosen, reward, 1.0 / len(ACTIONS))


@pytest.fixture(scope="module", params=EXPLORERS, ids=EXPLORER_IDS)
def trained(request: pytest.FixtureRequest) -> ContextualBanditModel:
    """A model per explorer, trained on the two-segment problem (shared by the tests)."""
    model = ContextualBanditModel(model_arguments(request.param, seed=7))
    _train(model, seed=1, n=N_LEARN)
    return model


# --------------------------------------------------------------------------------------------
# Arguments and example lines
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("explorer", "expected"),
    [
        (EpsilonGreedy(epsilon=0.2), ["--epsilon", "0.2"]),
        (EpsilonDecay(epsilon=0.3), ["--epsilon", "0"]),
        (ExploreFirst(first=50), ["--first", "50"]),
        (Softmax(lambda_=2.0), ["--softmax", "--lambda", "2.0"]),
        (SquareCB(gamma_scale=5.0), ["--squarecb", "--gamma_scale", "5.0"]),
        (Bagging(bag_size=8, epsilon=0.05), ["--bag", "8", "--epsilon", "0.05"]),
        (Cover(cover_size=4, psi=0.5), ["--cover", "4", "--psi", "0.5"]),
        (
            RND(rnd_size=2, alpha=0.5, inverse_lambda=0.2, epsilon=0.01),
            ["--rnd", "2", "--rnd_alpha", "0.5", "--rnd_invlambda", "0.2", "--epsilon", "0.01"],
        ),
        (
            SynthCover(cover_size=50, psi=0.2, epsilon=0.1),
            [
                "--synthcover",
                "--synthcoversize",
                "50",
                "--synthcoverpsi",
                "0.2",
                "--epsilon",
                "0.1",
            ],
        ),
    ],
    ids=EXPLORER_IDS,
)
def test_explorer_arguments(explorer: Explorer, expected: list[str]) -> None:
    assert explorer_arguments(explorer) == expected
    arguments = model_arguments(explorer, seed=11)
    assert arguments[:4] == ["--cb_explore_adf", "--quiet", "--random_seed", "11"]
    assert arguments[-len(expected) :] == expected


def test_example_lines() -> None:
    lines = example_lines(
        {"profile": [("age_band=25_34", 1.0), ("tenure_years", 3.5)], "behavior": []},
        [_action("savings"), {"offer": [("key=no_offer", 1.0)]}],
        label=(1, -0.5, 0.25),
    )

    assert lines == [
        "shared |profile age_band=25_34 tenure_years:3.5 |behavior",
        "|offer key=savings |variant key=savings.a",
        "0:-0.5:0.25 |offer key=no_offer",
    ]


def test_a_line_without_features_still_has_a_namespace_bar() -> None:
    """Without `|`, VW would read "shared" as one more action (and "" as the end of the
    example); an empty context must still give one probability per action."""
    assert example_lines({}, [{}]) == ["shared |", "|"]
    model = ContextualBanditModel(model_arguments(EpsilonGreedy()))

    probabilities = model.predict({}, ACTIONS)

    assert len(probabilities) == len(ACTIONS)
    assert is_valid(probabilities)


# --------------------------------------------------------------------------------------------
# Every explorer: valid probabilities, in the order of the actions given
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("explorer", EXPLORERS, ids=EXPLORER_IDS)
def test_untrained_model_returns_a_valid_vector(explorer: Explorer) -> None:
    model = ContextualBanditModel(model_arguments(explorer))

    probabilities = model.predict(_shared("retired"), ACTIONS)

    assert len(probabilities) == len(ACTIONS)
    assert is_valid(probabilities)


@pytest.mark.parametrize("explorer", EXPLORERS, ids=EXPLORER_IDS)
def test_probabilities_follow_the_order_of_the_actions(explorer: Explorer) -> None:
    """Learn that one action ("star") always pays, then move it to every position."""
    model = ContextualBanditModel(model_arguments(explorer, seed=3))
    keys = ["star", "decoy_a", "decoy_b", "decoy_c", "decoy_d"]
    rng = random.Random(5)
    shared: Namespaces = {"trigger": [("event=app_open", 1.0)]}
    for _ in range(N_LEARN):
        order = keys[:]
        rng.shuffle(order)
        chosen = rng.randrange(len(order))
        reward = 1.0 if order[chosen] == "star" else 0.0
        model.learn(shared, [_action(k) for k in order], chosen, reward, 1.0 / len(order))

    decoys = keys[1:]
    for position in range(len(keys)):
        order = [*decoys[:position], "star", *decoys[position:]]
        probabilities = model.predict(shared, [_action(k) for k in order])

        assert len(probabilities) == len(keys)
        assert is_valid(probabilities)
        others = [p for i, p in enumerate(probabilities) if i != position]
        assert probabilities[position] > max(others), (position, probabilities)


def test_model_learns_the_best_action_per_context(trained: ContextualBanditModel) -> None:
    for segment in SEGMENTS:
        probabilities = trained.predict(_shared(segment), ACTIONS)

        assert is_valid(probabilities)
        best = BEST[segment]
        others = [p for i, p in enumerate(probabilities) if i != best]
        assert probabilities[best] > max(others), (segment, probabilities)


def test_serialized_model_round_trips(trained: ContextualBanditModel) -> None:
    """A snapshot loads to identical predictions, and keeps learning identically."""
    original = ContextualBanditModel(trained.arguments, model_data=trained.serialize())
    restored = ContextualBanditModel(trained.arguments, model_data=original.serialize())

    for segment in SEGMENTS:
        assert restored.predict(_shared(segment), ACTIONS) == original.predict(
            _shared(segment), ACTIONS
        )
    # Bagging's random state lives in the model; a reload must resume it, not reset it.
    _train(original, seed=2, n=300)
    _train(restored, seed=2, n=300)
    for segment in SEGMENTS:
        assert restored.predict(_shared(segment), ACTIONS) == original.predict(
            _shared(segment), ACTIONS
        )
    assert restored.arguments == trained.arguments


@pytest.mark.parametrize("explorer", EXPLORERS, ids=EXPLORER_IDS)
def test_same_seed_same_data_same_model(explorer: Explorer) -> None:
    first = ContextualBanditModel(model_arguments(explorer, seed=9))
    second = ContextualBanditModel(model_arguments(explorer, seed=9))
    _train(first, seed=4, n=300)
    _train(second, seed=4, n=300)

    for segment in SEGMENTS:
        assert first.predict(_shared(segment), ACTIONS) == second.predict(_shared(segment), ACTIONS)


# --------------------------------------------------------------------------------------------
# Protected attributes never reach VW (invariant 5)
# --------------------------------------------------------------------------------------------

PROTECTED_VALUES = {
    "gender": "Sentinel-Gender-F",
    "ethnicity": "Sentinel-Ethnicity-X",
    "marital_status": "Sentinel-Married",
    "religion": "Sentinel-Faith",
    "nationality": "Sentinel-Nation",
}


def test_protected_attributes_never_reach_vw() -> None:
    experiment = validate_config(demo_config())
    context: dict[str, dict[str, object]] = {
        "profile": {
            "age_band": "25_34",
            "products_held": ["checking"],
            "tenure_years": 2,
            **PROTECTED_VALUES,
        },
        "cash_flow": {"balance": 4200.0, "pays_minimum_only": True},
        "trigger": {"event": "paycheck_deposit"},
    }
    validated = validate_context(context, experiment)
    assert len(validated.dropped_protected) == len(PROTECTED_VALUES)
    shared = context_namespaces(validated.values)
    actions = [
        offer_namespaces(
            experiment.offers[arm.offer] if arm.offer else None,
            next(v for v in experiment.offers[arm.offer].variants if v.key == arm.variant)
            if arm.offer
            else None,
        )
        for arm in experiment.arms
    ]

    for label in (None, (2, -1.0, 0.3)):
        text = "\n".join(example_lines(shared, actions, label)).lower()
        for name, value in PROTECTED_VALUES.items():
            assert name not in text
            assert value.lower() not in text
        assert "sentinel" not in text

    # and VW parses the lines: the model scores every arm
    model = ContextualBanditModel(model_arguments(EpsilonGreedy()))
    model.learn(shared, actions, 2, 1.0, 0.3)
    assert is_valid(model.predict(shared, actions))
