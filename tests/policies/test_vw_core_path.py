"""The adapter's direct calls into VW's core are invisible: bit for bit, for every explorer.

`ContextualBanditModel` parses and predicts through `vowpal_wabbit_next`'s core, skipping the
public wrapper's label-type look-ups. These tests run it beside a reference that goes through
the public API, on the same random sequence of predictions (random contexts, random eligible
subsets in random order, repeats), learns and serialize/reload round trips, and require
identical probability vectors and identical model bytes at every step.

(Reusing parsed action examples between calls also passed these tests, yet models trained
that way sometimes ignored the customer's context: one run in three of
`tests/system/test_learning_loop.py` served one segment the other's best offer. Every
example is therefore parsed afresh.)
"""

from __future__ import annotations

import random
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pytest
import vowpal_wabbit_next as vw
from hypothesis import given, settings
from hypothesis import strategies as st

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
from bandit_platform.features.context import Namespaces, arm_namespaces
from bandit_platform.policies.vw_adapter import (
    ContextualBanditModel,
    _without_random_seed,
    example_lines,
    model_arguments,
)

#: Every explorer the platform offers; explore-first also with a short first phase, so that the
#: sequences reach its greedy part.
EXPLORERS: list[Explorer] = [
    EpsilonGreedy(),
    EpsilonDecay(),
    ExploreFirst(),
    ExploreFirst(first=3),
    Softmax(),
    SquareCB(),
    Bagging(),
    Cover(),
    RND(),
    SynthCover(),
]
EXPLORER_IDS = [
    f"{type(e).__name__}{'-short' if e == ExploreFirst(first=3) else ''}" for e in EXPLORERS
]

DEMO = validate_config(demo_config())
#: The demo experiment's arms (offer x variant, and no offer), as the decision path builds them.
DEMO_ACTIONS: list[Namespaces] = [arm_namespaces(DEMO, arm.key) for arm in DEMO.arms]


class ReferenceModel:
    """The adapter's model as it was before the cache: every line parsed through the public
    `TextFormatParser` for every call, predictions and learns through `Workspace`."""

    def __init__(self, arguments: Sequence[str], model_data: bytes | None = None) -> None:
        if model_data is None:
            self.workspace = vw.Workspace(list(arguments))
        else:
            self.workspace = vw.Workspace(_without_random_seed(arguments), model_data=model_data)
        self.parser = vw.TextFormatParser(self.workspace)

    def predict(self, shared: Namespaces, actions: Sequence[Namespaces]) -> list[float]:
        lines = example_lines(shared, actions)
        scores = self.workspace.predict_one([self.parser.parse_line(line) for line in lines])
        probabilities = [0.0] * len(actions)
        for index, probability in cast(list[tuple[int, float]], scores):
            probabilities[index] = probability
        return probabilities

    def learn(
        self,
        shared: Namespaces,
        actions: Sequence[Namespaces],
        chosen: int,
        reward: float,
        propensity: float,
    ) -> None:
        lines = example_lines(shared, actions, (chosen, -reward, propensity))
        self.workspace.learn_one([self.parser.parse_line(line) for line in lines])

    def serialize(self) -> bytes:
        return self.workspace.serialize()


# --------------------------------------------------------------------------------------------
# Random operations
# --------------------------------------------------------------------------------------------

_TOKENS = ("a", "b", "c", "25_34", "retired", "android", "app_open", "x.y")
_NAMESPACES = ("profile", "cash_flow", "behavior", "trigger")


def _features(draw: st.DrawFn, prefix: str) -> list[tuple[str, float]]:
    features: list[tuple[str, float]] = []
    for index in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            features.append((f"{prefix}{index}={draw(st.sampled_from(_TOKENS))}", 1.0))
        else:
            value = draw(st.floats(-1e5, 1e5, width=32, allow_subnormal=False))
            features.append((f"{prefix}{index}", value))
    return features


@st.composite
def shared_contexts(draw: st.DrawFn) -> Namespaces:
    """A customer's namespaces: a random subset of sections, numeric and categorical."""
    sections = draw(st.lists(st.sampled_from(_NAMESPACES), unique=True, max_size=4))
    return {section: _features(draw, section[:2]) for section in sections}


@st.composite
def eligible_actions(draw: st.DrawFn) -> list[Namespaces]:
    """Eligible arms of the demo in random order, now and then a duplicate or an ad-hoc arm
    (a fresh namespaces object, as a caller that builds its own would pass)."""
    indices = draw(st.lists(st.integers(0, len(DEMO_ACTIONS) - 1), min_size=1, max_size=13))
    actions = [DEMO_ACTIONS[i] for i in indices]
    if draw(st.integers(0, 4)) == 0:
        actions.append({"offer": [(f"key=ad_hoc_{draw(st.integers(0, 3))}", 1.0)]})
    return actions


@dataclass(frozen=True)
class Predict:
    shared: Namespaces
    actions: list[Namespaces]
    repeats: int


@dataclass(frozen=True)
class Learn:
    shared: Namespaces
    actions: list[Namespaces]
    chosen: int
    reward: float
    propensity: float


@dataclass(frozen=True)
class Reload:
    pass


Operation = Predict | Learn | Reload


@st.composite
def operations(draw: st.DrawFn) -> Operation:
    kind = draw(st.sampled_from(("predict", "predict", "learn", "learn", "reload")))
    if kind == "reload":
        return Reload()
    shared = draw(shared_contexts())
    actions = draw(eligible_actions())
    if kind == "predict":
        return Predict(shared, actions, draw(st.integers(1, 3)))
    return Learn(
        shared,
        actions,
        chosen=draw(st.integers(0, len(actions) - 1)),
        reward=draw(st.sampled_from((0.0, 1.0, -0.5, 2.5))),
        propensity=draw(st.floats(0.05, 1.0)),
    )


def _warm_up(model: ContextualBanditModel | ReferenceModel, seed: int) -> None:
    """A short learned history, so that explorers leave their uniform start."""
    rng = random.Random(seed)
    for _ in range(40):
        shared: Namespaces = {"profile": [(f"segment={rng.randrange(3)}", 1.0)]}
        actions = rng.sample(DEMO_ACTIONS, 6)
        chosen = rng.randrange(len(actions))
        model.learn(shared, actions, chosen, float(rng.random() < 0.3), 1.0 / len(actions))


def _bits(probabilities: list[float]) -> bytes:
    """The vector's exact bits (NaN included, which `==` would call unequal to itself)."""
    return struct.pack(f"<{len(probabilities)}d", *probabilities)


# --------------------------------------------------------------------------------------------
# The core path is invisible
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("explorer", EXPLORERS, ids=EXPLORER_IDS)
@settings(max_examples=15, deadline=None)
@given(steps=st.lists(operations(), min_size=1, max_size=25), seed=st.integers(0, 2**16))
def test_the_core_path_predicts_and_learns_exactly_like_the_public_api(
    explorer: Explorer, steps: list[Operation], seed: int
) -> None:
    arguments = model_arguments(explorer, seed=seed)
    core = ContextualBanditModel(arguments)
    reference = ReferenceModel(arguments)
    _warm_up(core, seed)
    _warm_up(reference, seed)

    for step in steps:
        match step:
            case Predict(shared=shared, actions=actions, repeats=repeats):
                for _ in range(repeats):
                    assert _bits(core.predict(shared, actions)) == _bits(
                        reference.predict(shared, actions)
                    )
            case Learn(shared=shared, actions=actions) as learn:
                core.learn(shared, actions, learn.chosen, learn.reward, learn.propensity)
                reference.learn(shared, actions, learn.chosen, learn.reward, learn.propensity)
            case Reload():
                data = core.serialize()
                assert data == reference.serialize()
                core = ContextualBanditModel(arguments, model_data=data)
                reference = ReferenceModel(arguments, model_data=data)
    assert core.serialize() == reference.serialize()
    for actions in (DEMO_ACTIONS, DEMO_ACTIONS[::-1]):
        shared = {"trigger": [("event=app_open", 1.0)]}
        assert _bits(core.predict(shared, actions)) == _bits(reference.predict(shared, actions))


def test_a_changed_namespaces_object_is_read_again() -> None:
    """Contents and key order of the same object are read at every call."""
    model = ContextualBanditModel(model_arguments(Softmax()))
    reference = ReferenceModel(model_arguments(Softmax()))
    shared: Namespaces = {"profile": [("segment=a", 1.0)]}
    action: Namespaces = {"offer": [("key=one", 1.0)], "variant": [("tone=warm", 1.0)]}
    other: Namespaces = {"offer": [("key=two", 1.0)]}
    for model_ in (model, reference):
        for _ in range(30):
            model_.learn(shared, [action, other], 0, 1.0, 0.5)
            model_.learn(shared, [action, other], 1, 0.0, 0.5)

    before = model.predict(shared, [action, other])
    action["offer"][0] = ("key=two", 1.0)
    after = model.predict(shared, [action, other])
    assert after == reference.predict(shared, [action, other])
    assert after != before
    action["offer"].append(("extra", 2.0))
    assert model.predict(shared, [action, other]) == reference.predict(shared, [action, other])
    action["offer"] = action.pop("offer")
    assert list(action) == ["variant", "offer"]
    assert model.predict(shared, [action, other]) == reference.predict(shared, [action, other])


def test_threads_sharing_a_model_get_the_single_threaded_answers() -> None:
    """Each thread predicts its own contexts; every vector equals the one computed alone."""
    model = ContextualBanditModel(model_arguments(Cover(), seed=5))
    _warm_up(model, 5)
    rng = random.Random(9)
    jobs = [
        ({"profile": [(f"segment={rng.randrange(5)}", 1.0)]}, rng.sample(DEMO_ACTIONS, 8))
        for _ in range(200)
    ]
    # Cover's prediction does not depend on earlier predictions, so order does not matter.
    expected = [model.predict(shared, actions) for shared, actions in jobs]
    results: dict[int, list[float]] = {}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for index in range(offset, len(jobs), 4):
                for _ in range(5):
                    results[index] = model.predict(*jobs[index])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [results[i] for i in range(len(jobs))] == expected
