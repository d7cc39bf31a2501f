"""The one module that talks to Vowpal Wabbit (`vowpal_wabbit_next`).

Everything else in the platform speaks in namespaces of `(feature, value)` pairs and
probability vectors; this adapter turns them into VW's text format, runs
`--cb_explore_adf` with the experiment's explorer, and maps VW's action scores back to the
order of the arms it was given. Cost is the negative reward: VW minimises cost.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

import vowpal_wabbit_next as vw
from vowpal_wabbit_next import _core

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
)
from bandit_platform.features.context import Namespaces

#: Shared (customer) namespaces crossed with action (offer) namespaces: VW's `-q` pairs use
#: first letters: p(rofile), c(ash_flow), b(ehavior), t(rigger) x o(ffer), v(ariant).
_INTERACTIONS = ("po", "pv", "co", "cv", "bo", "bv", "to", "tv")


def explorer_arguments(explorer: Explorer) -> list[str]:
    """VW command-line arguments for the explorer.

    `EpsilonDecay` runs VW greedily (`--epsilon 0`); the platform mixes in the decaying
    uniform share itself, since VW's `--epsilon_decay` is a model-selection reduction, not
    a decaying exploration rate. VW's RegCB is not offered: in vowpal-wabbit-next 0.7.0
    `--regcbopt` returns score vectors that are not probabilities (every entry 1.0) and
    `--regcb` stayed uniform on a two-segment problem where every other explorer learned.
    """
    match explorer:
        case EpsilonGreedy(epsilon=epsilon):
            return ["--epsilon", repr(epsilon)]
        case EpsilonDecay():
            return ["--epsilon", "0"]
        case ExploreFirst(first=first):
            return ["--first", str(first)]
        case Softmax(lambda_=lambda_):
            return ["--softmax", "--lambda", repr(lambda_)]
        case SquareCB(gamma_scale=gamma_scale):
            return ["--squarecb", "--gamma_scale", repr(gamma_scale)]
        case Bagging(bag_size=bag_size, epsilon=epsilon):
            return ["--bag", str(bag_size), "--epsilon", repr(epsilon)]
        case Cover(cover_size=cover_size, psi=psi):
            return ["--cover", str(cover_size), "--psi", repr(psi)]
        case RND(rnd_size=size, alpha=alpha, inverse_lambda=inverse_lambda, epsilon=epsilon):
            return [
                "--rnd",
                str(size),
                "--rnd_alpha",
                repr(alpha),
                "--rnd_invlambda",
                repr(inverse_lambda),
                "--epsilon",
                repr(epsilon),
            ]
        case SynthCover(cover_size=cover_size, psi=psi, epsilon=epsilon):
            return [
                "--synthcover",
                "--synthcoversize",
                str(cover_size),
                "--synthcoverpsi",
                repr(psi),
                "--epsilon",
                repr(epsilon),
            ]
    raise TypeError(f"unknown explorer {explorer!r}")


def model_arguments(explorer: Explorer, seed: int = 0) -> list[str]:
    """Every VW argument of a model for this explorer."""
    arguments = ["--cb_explore_adf", "--quiet", "--random_seed", str(seed)]
    for pair in _INTERACTIONS:
        arguments += ["-q", pair]
    return arguments + explorer_arguments(explorer)


def _line(namespaces: Namespaces, prefix: str = "") -> str:
    parts = [prefix] if prefix else []
    for namespace, features in namespaces.items():
        tokens = " ".join(name if value == 1.0 else f"{name}:{value!r}" for name, value in features)
        parts.append(f"|{namespace} {tokens}" if tokens else f"|{namespace}")
    if not namespaces:
        # Without a `|` VW reads "shared" as an action, and an empty line as the end of the
        # multi-line example.
        parts.append("|")
    return " ".join(parts)


def example_lines(
    shared: Namespaces,
    actions: Sequence[Namespaces],
    label: tuple[int, float, float] | None = None,
) -> list[str]:
    """VW text lines of one multi-line example; `label` is (action index, cost, probability)."""
    lines = [_line(shared, "shared")]
    for index, action in enumerate(actions):
        prefix = ""
        if label is not None and label[0] == index:
            prefix = f"0:{label[1]!r}:{label[2]!r}"
        lines.append(_line(action, prefix))
    return lines


def _without_random_seed(arguments: Sequence[str]) -> list[str]:
    """The arguments without `--random_seed N` (or `--random_seed=N`)."""
    result: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--random_seed":
            skip = True
        elif not argument.startswith("--random_seed="):
            result.append(argument)
    return result


class ContextualBanditModel:
    """A VW `--cb_explore_adf` workspace, safe to share between threads.

    Every prediction and learn parses all its lines afresh. Reusing the parsed action
    examples between calls was tried: predictions stayed identical bit for bit in unit tests,
    yet models trained in the service sometimes ignored the customer's context.

    The hot path calls `vowpal_wabbit_next`'s core (`_core._parse_line_text`,
    `predict_multi_ex_one`) directly: the public wrapper asks the workspace for its label
    type once per parsed example and once more per example at every predict and learn, which
    cost more than VW's own work on an example. The version is pinned, and the tests compare
    this path with the public one (`tests/policies/test_vw_core_path.py`).

    One lock serialises parsing and VW: a workspace is not safe for concurrent use.
    """

    def __init__(
        self,
        arguments: Sequence[str],
        model_data: bytes | None = None,
    ) -> None:
        self.arguments = list(arguments)
        if model_data is None:
            self._workspace = vw.Workspace(self.arguments)
        else:
            # The model stores its random state as `random_seed`, and `--bag` advances it while
            # learning; passing the original seed again would make VW refuse to load the model.
            self._workspace = vw.Workspace(
                _without_random_seed(self.arguments), model_data=model_data
            )
        self._core: _core.Workspace = self._workspace._workspace
        self._lock = threading.Lock()

    def _examples(self, shared: Namespaces, actions: Sequence[Namespaces]) -> list[_core.Example]:
        """The shared example and every action's, parsed now; under the lock."""
        parse = _core._parse_line_text
        workspace = self._core
        return [parse(workspace, line) for line in example_lines(shared, actions)]

    def predict(self, shared: Namespaces, actions: Sequence[Namespaces]) -> list[float]:
        """The model's probability of each action, in the order given."""
        with self._lock:
            scores = self._core.predict_multi_ex_one(self._examples(shared, actions))
        if not isinstance(scores, list):
            raise TypeError(f"unexpected VW prediction {scores!r}")
        probabilities = [0.0] * len(actions)
        for score in cast(list[tuple[int, float]], scores):
            probabilities[int(score[0])] = float(score[1])
        return probabilities

    def learn(
        self,
        shared: Namespaces,
        actions: Sequence[Namespaces],
        chosen: int,
        reward: float,
        propensity: float,
    ) -> None:
        """Learn from one logged decision: cost is the negative reward.

        The chosen action's labelled line is parsed afresh (and not cached); the others are
        the cached unlabelled examples that predictions use.
        """
        lines = example_lines(shared, actions, (chosen, -reward, propensity))
        with self._lock:
            examples = [_core._parse_line_text(self._core, line) for line in lines]
            self._core.learn_multi_ex_one(examples)

    def serialize(self) -> bytes:
        """The model's bytes, loadable by `ContextualBanditModel(arguments, model_data=...)`."""
        with self._lock:
            return self._workspace.serialize()


def dsjson_line(
    shared: Namespaces,
    actions: Sequence[Namespaces],
    chosen: int,
    reward: float,
    probabilities: Sequence[float],
    event_id: str,
    timestamp: str,
) -> str:
    """One decision in VW's dsjson format (as written by VW's own logging), cost = -reward.

    Features keep the names and values of the text format, so a model trained from the export
    sees exactly what the online learner saw.
    """
    import json

    def namespaces(features: Namespaces) -> dict[str, dict[str, float]]:
        return {ns: dict(pairs) for ns, pairs in features.items()}

    document = {
        "_label_cost": -reward,
        "_label_probability": probabilities[chosen],
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "EventId": event_id,
        "Timestamp": timestamp,
        "a": [chosen + 1] + [i + 1 for i in range(len(actions)) if i != chosen],
        "c": {**namespaces(shared), "_multi": [namespaces(a) for a in actions]},
        "p": [probabilities[chosen]] + [p for i, p in enumerate(probabilities) if i != chosen],
    }
    return json.dumps(document, separators=(",", ":"))
