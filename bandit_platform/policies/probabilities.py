"""Probability vectors: validation, the exploration floor, the served vector and the seeded draw.

A model can emit an invalid vector (NaN, negative, not summing to one, float32 rounding). Every
vector is checked before it is used; a vector that is merely below the floor is mixed with the
uniform vector, and one that is broken is replaced by the uniform vector and flagged.
`served_probabilities` is the one place the bandit's served vector is computed from a model's
prediction: the decision path serves it and the integrity check recomputes it.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from bandit_platform.domain.config import EpsilonDecay, Explorer

#: Tolerance on the sum of a probability vector.
SUM_TOLERANCE = 1e-6
#: How many learned examples halve the exploration rate of the epsilon-decay explorer.
EPSILON_HALF_LIFE_EXAMPLES = 10_000


@dataclass(frozen=True)
class CheckedProbabilities:
    """A valid probability vector and what had to be done to it."""

    probabilities: tuple[float, ...]
    floored: bool
    replaced: bool


def is_valid(probabilities: Sequence[float], floor: float = 0.0) -> bool:
    """True when the vector sums to one within 1e-6 and every entry is at or above `floor`."""
    if not probabilities:
        return False
    total = 0.0
    for p in probabilities:
        if not math.isfinite(p) or p < floor - 1e-12 or p > 1.0 + SUM_TOLERANCE:
            return False
        total += p
    return abs(total - 1.0) <= SUM_TOLERANCE


def check_probabilities(raw: Sequence[float], floor: float) -> CheckedProbabilities:
    """Return a valid vector with every entry at or above `floor`.

    A finite, non-negative vector with a positive sum is normalised; when an entry is then
    below the floor, the vector becomes `floor + (1 - k * floor) * p`, which keeps the order of
    the entries. Anything else is replaced by the uniform vector.
    """
    k = len(raw)
    if k == 0:
        raise ValueError("a probability vector needs at least one entry")
    effective_floor = min(floor, 1.0 / k)
    try:
        total = math.fsum(raw) if all(math.isfinite(p) and p >= 0.0 for p in raw) else math.nan
    except OverflowError:  # finite entries whose sum exceeds the float range
        total = math.nan
    if not math.isfinite(total) or total <= 0.0:
        uniform = tuple(1.0 / k for _ in range(k))
        return CheckedProbabilities(uniform, floored=False, replaced=True)
    normalised = [p / total for p in raw]
    floored = min(normalised) < effective_floor
    if floored:
        scale = 1.0 - k * effective_floor
        normalised = [effective_floor + scale * p for p in normalised]
    total = math.fsum(normalised)
    result = tuple(p / total for p in normalised)
    return CheckedProbabilities(result, floored=floored, replaced=False)


def decayed_epsilon(explorer: EpsilonDecay, examples_seen: int) -> float:
    """The epsilon-decay explorer's uniform share after `examples_seen` learned examples:
    epsilon / (1 + examples_seen / EPSILON_HALF_LIFE_EXAMPLES)."""
    return explorer.epsilon / (1.0 + examples_seen / EPSILON_HALF_LIFE_EXAMPLES)


def served_probabilities(
    raw: Sequence[float], *, explorer: Explorer, examples_seen: int, floor: float
) -> CheckedProbabilities:
    """The vector the bandit serves over the eligible arms, from the model's prediction.

    VW's `--cb_explore_adf` explores by itself for every explorer but `EpsilonDecay`, whose
    decay the platform applies: the prediction `p` (normalised by its sum) becomes
    `(1 - eps) * p / sum(p) + eps / k` with `eps = decayed_epsilon(explorer, examples_seen)`.
    The result then goes through `check_probabilities` with `floor`.

    Args:
        raw: the model's probability of each eligible arm, in the order of the arms.
        explorer: the explorer of the configuration the vector is served under.
        examples_seen: the examples the model learned (the snapshot's count).
        floor: the configuration's probability floor.

    Returns:
        The checked vector; `replaced` says the prediction was broken and uniform is served.

    Raises:
        ValueError: `raw` is empty.
    """
    vector = list(raw)
    if isinstance(explorer, EpsilonDecay):
        epsilon = decayed_epsilon(explorer, examples_seen)
        # `sum`, not `fsum`: the served vectors of the log were computed this way, and the
        # integrity check recomputes them to the last bit.
        total = sum(vector) or 1.0
        vector = [(1.0 - epsilon) * p / total + epsilon / len(vector) for p in vector]
    return check_probabilities(vector, floor)


def decision_seed(salt: str, decision_id: str) -> int:
    """The seed of a decision's draw: reproducible from (experiment salt, decision id)."""
    digest = hashlib.sha256(f"{salt}:{decision_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def draw(probabilities: Sequence[float], seed: int) -> int:
    """Index drawn from the vector by a generator seeded with `seed`."""
    u = random.Random(seed).random()
    cumulative = 0.0
    for index, p in enumerate(probabilities):
        cumulative += p
        if u < cumulative:
            return index
    # Rounding can leave the cumulative sum a hair under u; the last positive entry wins.
    for index in range(len(probabilities) - 1, -1, -1):
        if probabilities[index] > 0.0:
            return index
    return len(probabilities) - 1
