"""Report rows with intervals from aggregates: group comparisons, rates, segments, fairness.

Pure computation over what a database (or a pass over the log) aggregates: per group the
sufficient statistics of a reward (`SufficientStats`), counts of decisions per offer, and
counts of successes. Every number a user sees is an estimate with its sample size and its
interval; numerical trouble (zero variance, a zero control mean, an empty group) is returned
as a coded warning beside a missing value (None), never as NaN and never as an exception.

- `mean_estimate`: a group's mean reward with Student's t interval.
- `proportion`: a rate with Wilson's score interval.
- `compare`: treatment vs control at one horizon: Welch absolute lift, delta-method
  relative lift, the always-valid mixture-SPRT interval and the probability to beat.
- `adjust_comparisons`: Holm-adjusted p-values over a family of comparisons.
- `expected_shares`: the traffic split to test SRM against when the split changed between
  configuration versions.
- `segment_rows`: per segment, per group counts, offer rates and lifts.
- `disparity`: offer rates per protected group, their largest gap (Newcombe's interval of
  a difference of proportions) and the disparate-impact ratio (the "four-fifths rule").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from scipy import stats  # type: ignore[import-untyped]

from bandit_platform.evaluation.lift import (
    Lift,
    SufficientStats,
    absolute_lift,
    adjust_p_values,
    probability_to_beat,
    relative_lift,
    sequential_absolute_lift,
)

#: Assignment groups in report order; comparisons are `bandit` against each control.
GROUPS: Final = ("holdout", "ab", "bandit")
TREATMENT: Final = "bandit"
CONTROLS: Final = ("holdout", "ab")
#: Arm key of "show nothing" (offer rates count it like an offer).
NO_OFFER: Final = "no_offer"
#: The disparate-impact ratio below which a protected group is flagged (four-fifths rule).
FOUR_FIFTHS: Final = 0.8
#: Relative effect size the mixture of the sequential interval is centred on: its standard
#: deviation is this share of the control mean (never below `MIN_MIXING_SCALE`).
MIXING_RELATIVE_EFFECT: Final = 0.1
MIN_MIXING_SCALE: Final = 1e-3

#: Warning codes.
TOO_FEW_UNITS: Final = "too_few_units"
ZERO_CONTROL_MEAN: Final = "zero_control_mean"
UNDEFINED_RATIO: Final = "undefined_ratio"


def finite(value: float) -> float | None:
    """`value`, or None when it is NaN or infinite (JSON has no such numbers)."""
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class MeanEstimate:
    """A mean with its interval and sample size.

    Attributes:
        n: number of units.
        mean: sample mean (None when n = 0).
        lower: lower end of the Student's t interval (None when n < 2).
        upper: upper end of the interval (None when n < 2).
        sd: sample standard deviation (None when n < 2).
        total: sum of the values.
        total_squares: sum of the squared values.
        confidence: nominal coverage.
        warnings: coded warnings (`too_few_units`).
    """

    n: int
    mean: float | None
    lower: float | None
    upper: float | None
    sd: float | None
    total: float
    total_squares: float
    confidence: float
    warnings: tuple[str, ...] = ()


def mean_estimate(values: SufficientStats, confidence: float = 0.95) -> MeanEstimate:
    """Mean `ybar = total / n` with the interval `ybar +- t_{n-1, (1+c)/2} s / sqrt(n)`.

    With clusters (customers), the interval is `ybar +- t_{G-1, (1+c)/2} sqrt(V)` with `V` the
    cluster-robust variance of the mean (`SufficientStats.variance_of_mean`); `sd` stays the
    decisions' standard deviation.
    """
    clustered = values.clusters is not None and values.clusters >= 2
    if values.n < 2 or (values.clusters is not None and not clustered):
        mean = values.mean if values.n >= 1 else None
        return MeanEstimate(
            values.n,
            mean,
            None,
            None,
            None,
            values.total,
            values.total_squares,
            confidence,
            (TOO_FEW_UNITS,),
        )
    sd = math.sqrt(values.variance)
    if clustered:
        half = float(stats.t.ppf(0.5 + confidence / 2.0, values.degrees_of_freedom)) * math.sqrt(
            values.variance_of_mean
        )
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2.0, values.n - 1)) * sd / math.sqrt(values.n)
    return MeanEstimate(
        values.n,
        values.mean,
        values.mean - half,
        values.mean + half,
        sd,
        values.total,
        values.total_squares,
        confidence,
    )


@dataclass(frozen=True)
class Proportion:
    """A rate `count / n` with Wilson's score interval.

    Attributes:
        count: units with the property.
        n: units in all.
        rate: `count / n` (None when n = 0).
        lower: lower end of the interval (None when n = 0).
        upper: upper end of the interval (None when n = 0).
        confidence: nominal coverage.
    """

    count: int
    n: int
    rate: float | None
    lower: float | None
    upper: float | None
    confidence: float


def proportion(count: int, n: int, confidence: float = 0.95) -> Proportion:
    """Rate with Wilson's score interval:
    `(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`.

    Reference: Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", JASA 22; Brown, Cai, DasGupta (2001), Statistical Science 16.
    """
    if n < 0 or not 0 <= count <= n:
        raise ValueError(f"need 0 <= count <= n, got {count} of {n}")
    if n == 0:
        return Proportion(0, 0, None, None, None, confidence)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p = count / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denominator
    return Proportion(count, n, p, max(centre - half, 0.0), min(centre + half, 1.0), confidence)


@dataclass(frozen=True)
class Interval:
    """One estimated lift for a report: finite numbers or None, and why a number is missing.

    Attributes:
        estimate: point estimate.
        lower: lower end of the interval.
        upper: upper end of the interval.
        p_value: two-sided p-value of "no lift".
        p_value_adjusted: the p-value adjusted for the comparisons made alongside (Holm).
        standard_error: standard error of the estimate.
        method: `welch`, `delta`, `msprt` or `newcombe`.
        confidence: nominal coverage.
        warnings: coded warnings.
    """

    estimate: float | None
    lower: float | None
    upper: float | None
    p_value: float | None
    p_value_adjusted: float | None
    standard_error: float | None
    method: str
    confidence: float
    warnings: tuple[str, ...] = ()


def interval(lift: Lift) -> Interval:
    """The lift with NaN and infinities turned into None."""
    return Interval(
        finite(lift.estimate),
        finite(lift.lower),
        finite(lift.upper),
        finite(lift.p_value),
        None,
        finite(lift.standard_error),
        lift.method,
        lift.confidence,
        lift.warnings,
    )


@dataclass(frozen=True)
class Comparison:
    """The treatment group against one control group at one reward horizon.

    Attributes:
        horizon: reward horizon name.
        treatment: `bandit`.
        control: `holdout` or `ab`.
        n_treatment: rewards in the treatment group.
        n_control: rewards in the control group.
        absolute: difference of means, Welch interval (fixed horizon).
        relative: relative change, delta-method interval (None when the control mean is 0).
        sequential: difference of means, always-valid interval (safe to watch continuously).
        probability_to_beat: posterior probability that the treatment mean is higher.
        warnings: why a part is missing.
    """

    horizon: str
    treatment: str
    control: str
    n_treatment: int
    n_control: int
    absolute: Interval
    relative: Interval | None
    sequential: Interval
    probability_to_beat: float | None
    warnings: tuple[str, ...] = ()


def mixing_variance(control: SufficientStats) -> float:
    """Variance of the normal mixture of the sequential interval: effects of about
    `MIXING_RELATIVE_EFFECT` times the control mean (at least `MIN_MIXING_SCALE`), squared."""
    scale = abs(control.mean) * MIXING_RELATIVE_EFFECT if control.n > 0 else 0.0
    return max(scale, MIN_MIXING_SCALE) ** 2


def compare(
    horizon: str,
    treatment: SufficientStats,
    control: SufficientStats,
    control_name: str,
    confidence: float = 0.95,
) -> Comparison | None:
    """`bandit` against `control_name`; None when either has fewer than 2 rewards (or
    customers, when the statistics carry them)."""
    if treatment.units < 2 or control.units < 2:
        return None
    warnings: tuple[str, ...] = ()
    relative: Interval | None = None
    if control.mean != 0.0:
        relative = interval(relative_lift(treatment, control, confidence))
    else:
        warnings = (ZERO_CONTROL_MEAN,)
    return Comparison(
        horizon=horizon,
        treatment=TREATMENT,
        control=control_name,
        n_treatment=treatment.n,
        n_control=control.n,
        absolute=interval(absolute_lift(treatment, control, confidence)),
        relative=relative,
        sequential=interval(
            sequential_absolute_lift(treatment, control, mixing_variance(control), confidence)
        ),
        probability_to_beat=finite(probability_to_beat(treatment, control)),
        warnings=warnings,
    )


def compare_groups(
    horizon: str, groups: Mapping[str, SufficientStats], confidence: float = 0.95
) -> tuple[Comparison, ...]:
    """`bandit` vs `holdout` and `bandit` vs `ab` where both sides have 2+ rewards."""
    treatment = groups.get(TREATMENT)
    if treatment is None:
        return ()
    found = (
        compare(horizon, treatment, groups[name], name, confidence)
        for name in CONTROLS
        if name in groups
    )
    return tuple(c for c in found if c is not None)


def adjust_comparisons(comparisons: Sequence[Comparison]) -> tuple[Comparison, ...]:
    """Holm-adjust the absolute lifts' p-values over the family `comparisons` (e.g. one
    control across every reward horizon); comparisons without a p-value keep None."""
    tested = [i for i, c in enumerate(comparisons) if c.absolute.p_value is not None]
    adjusted = adjust_p_values(
        [min(max(comparisons[i].absolute.p_value or 0.0, 0.0), 1.0) for i in tested], "holm"
    )
    result = list(comparisons)
    for index, value in zip(tested, adjusted, strict=True):
        absolute = replace(result[index].absolute, p_value_adjusted=value)
        result[index] = replace(result[index], absolute=absolute)
    return tuple(result)


def expected_shares(
    counts_by_version: Mapping[int, int], traffic_by_version: Mapping[int, Mapping[str, float]]
) -> dict[str, float]:
    """The share of decisions each group should have had, over configuration versions.

    When the traffic split changed, decisions made under version `v` follow its split, so
    the expected share of group `g` is `sum_v n_v share_v(g) / sum_v n_v` (shares of each
    version normalised to sum to one).

    Raises:
        ValueError: a version with decisions has no traffic split, or no decisions at all.
    """
    total = sum(counts_by_version.values())
    if total <= 0:
        raise ValueError("counts_by_version: no decisions")
    result = dict.fromkeys(GROUPS, 0.0)
    for version, count in counts_by_version.items():
        traffic = traffic_by_version.get(version)
        if traffic is None:
            raise ValueError(f"traffic_by_version: no split for version {version}")
        weight = sum(traffic.get(g, 0.0) for g in GROUPS)
        if weight <= 0.0:
            raise ValueError(f"traffic_by_version: version {version} has no traffic")
        for group in GROUPS:
            result[group] += count * traffic.get(group, 0.0) / weight / total
    return result


@dataclass(frozen=True)
class GroupSegmentRow:
    """One assignment group inside one segment.

    Attributes:
        group: `holdout`, `ab` or `bandit`.
        decisions: decisions of the group in the segment.
        offer_rates: share of the decisions per offer key (`no_offer` for none).
        rewards: mean reward per horizon, with its interval.
    """

    group: str
    decisions: int
    offer_rates: Mapping[str, Proportion]
    rewards: Mapping[str, MeanEstimate]


@dataclass(frozen=True)
class SegmentRow:
    """One segment: its groups and the bandit's lifts in it.

    Attributes:
        segment: segment key.
        decisions: decisions in the segment (all groups).
        groups: per-group counts, offer rates and rewards.
        comparisons: bandit vs holdout and vs A-B per horizon, p-values Holm-adjusted over
            the segments of the report (per horizon and control).
    """

    segment: str
    decisions: int
    groups: tuple[GroupSegmentRow, ...]
    comparisons: tuple[Comparison, ...]


@dataclass
class SegmentTally:
    """What a pass over the log accumulates for one segment and one group.

    Attributes:
        decisions: decisions counted.
        offers: decisions per offer key (`no_offer` for none).
        rewards: reward statistics per horizon.
    """

    decisions: int = 0
    offers: dict[str, int] = field(default_factory=dict)
    rewards: dict[str, SufficientStats] = field(default_factory=dict)

    def add(self, offer: str | None, rewards: Mapping[str, float | None]) -> None:
        """Count one decision with its chosen offer and its closed rewards (None: open)."""
        self.decisions += 1
        key = offer or NO_OFFER
        self.offers[key] = self.offers.get(key, 0) + 1
        for horizon, value in rewards.items():
            if value is None:
                continue
            unit = SufficientStats(1, value, value * value)
            found = self.rewards.get(horizon)
            self.rewards[horizon] = unit if found is None else found.combine(unit)


def _group_order(group: str) -> tuple[int, str]:
    return (GROUPS.index(group) if group in GROUPS else len(GROUPS), group)


def segment_rows(
    tallies: Mapping[str, Mapping[str, SegmentTally]],
    horizons: Sequence[str],
    confidence: float = 0.95,
) -> tuple[SegmentRow, ...]:
    """Rows with intervals from per-segment, per-group tallies (segments in the given order).

    Lift p-values are Holm-adjusted across the segments for each (horizon, control): looking
    at many segments finds a "significant" one by chance.
    """
    rows: list[SegmentRow] = []
    for segment, by_group in tallies.items():
        groups = []
        for group in sorted(by_group, key=_group_order):
            tally = by_group[group]
            groups.append(
                GroupSegmentRow(
                    group=group,
                    decisions=tally.decisions,
                    offer_rates={
                        offer: proportion(count, tally.decisions, confidence)
                        for offer, count in sorted(tally.offers.items())
                    },
                    rewards={
                        h: mean_estimate(tally.rewards[h], confidence)
                        for h in horizons
                        if h in tally.rewards
                    },
                )
            )
        comparisons: list[Comparison] = []
        for horizon in horizons:
            stats_by_group = {
                g: t.rewards[horizon] for g, t in by_group.items() if horizon in t.rewards
            }
            comparisons.extend(compare_groups(horizon, stats_by_group, confidence))
        rows.append(
            SegmentRow(
                segment=segment,
                decisions=sum(t.decisions for t in by_group.values()),
                groups=tuple(groups),
                comparisons=tuple(comparisons),
            )
        )
    return _adjust_across_segments(rows)


def _adjust_across_segments(rows: list[SegmentRow]) -> tuple[SegmentRow, ...]:
    families: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for r, row in enumerate(rows):
        for c, comparison in enumerate(row.comparisons):
            families.setdefault((comparison.horizon, comparison.control), []).append((r, c))
    updated = [list(row.comparisons) for row in rows]
    for members in families.values():
        adjusted = adjust_comparisons([rows[r].comparisons[c] for r, c in members])
        for (r, c), comparison in zip(members, adjusted, strict=True):
            updated[r][c] = comparison
    return tuple(replace(row, comparisons=tuple(updated[r])) for r, row in enumerate(rows))


@dataclass(frozen=True)
class ProtectedGroupRow:
    """One value of a protected attribute within one assignment group.

    Attributes:
        value: the attribute's value (as the bank supplied it).
        decisions: decisions of customers with that value.
        offered: share of those decisions that showed an offer.
        offer_rates: share of the decisions per offer key (`no_offer` for none).
        reward: mean reward at the report's horizon (None when no reward has closed).
    """

    value: str
    decisions: int
    offered: Proportion
    offer_rates: Mapping[str, Proportion]
    reward: MeanEstimate | None


@dataclass(frozen=True)
class Disparity:
    """Offer rates of one protected attribute's values within one assignment group.

    Attributes:
        attribute: the attribute name (a column of the bank's file).
        group: the assignment group.
        values: one row per attribute value, by value.
        highest: the value with the highest offer rate.
        lowest: the value with the lowest offer rate.
        gap: offer rate of `highest` minus that of `lowest`, Newcombe's interval.
        impact_ratio: lowest offer rate over highest (None when the highest is 0).
        flagged: `impact_ratio < 0.8` (the four-fifths rule of disparate impact).
        warnings: why a number is missing.
    """

    attribute: str
    group: str
    values: tuple[ProtectedGroupRow, ...]
    highest: str | None
    lowest: str | None
    gap: Interval | None
    impact_ratio: float | None
    flagged: bool
    warnings: tuple[str, ...] = ()


def difference_of_proportions(
    first: Proportion, second: Proportion, confidence: float = 0.95
) -> Interval:
    """`p1 - p2` with Newcombe's hybrid score interval (method 10):
    `d - sqrt((p1 - l1)^2 + (u2 - p2)^2)`, `d + sqrt((u1 - p1)^2 + (p2 - l2)^2)` from the two
    Wilson intervals, and the p-value of the pooled two-proportion z-test.

    Reference: Newcombe (1998), "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17.
    """
    if not (first.n > 0 and second.n > 0):
        raise ValueError("both proportions need at least one unit")
    p1, p2 = first.count / first.n, second.count / second.n
    l1, u1 = first.lower or 0.0, first.upper or 0.0
    l2, u2 = second.lower or 0.0, second.upper or 0.0
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (first.count + second.count) / (first.n + second.n)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / first.n + 1.0 / second.n))
    p_value = float(2.0 * stats.norm.sf(abs(d) / se)) if se > 0.0 else None
    return Interval(
        d,
        lower,
        upper,
        p_value,
        None,
        se if se > 0.0 else None,
        "newcombe",
        confidence,
        () if se > 0.0 else ("zero_variance",),
    )


def disparity(
    attribute: str,
    group: str,
    tallies: Mapping[str, SegmentTally],
    horizon: str,
    confidence: float = 0.95,
) -> Disparity:
    """Offer rates per value of a protected attribute, their gap and the impact ratio.

    Args:
        attribute: the attribute's name.
        group: the assignment group the tallies belong to.
        tallies: per attribute value, the decisions of customers with that value.
        horizon: the reward horizon of the mean rewards.
        confidence: nominal coverage of the intervals.
    """
    rows = []
    for value in sorted(tallies):
        tally = tallies[value]
        shown = tally.decisions - tally.offers.get(NO_OFFER, 0)
        reward = tally.rewards.get(horizon)
        rows.append(
            ProtectedGroupRow(
                value=value,
                decisions=tally.decisions,
                offered=proportion(shown, tally.decisions, confidence),
                offer_rates={
                    offer: proportion(count, tally.decisions, confidence)
                    for offer, count in sorted(tally.offers.items())
                },
                reward=None if reward is None else mean_estimate(reward, confidence),
            )
        )
    rated = [row for row in rows if row.offered.rate is not None]
    if len(rated) < 2:
        return Disparity(
            attribute, group, tuple(rows), None, None, None, None, False, (TOO_FEW_UNITS,)
        )
    highest = max(rated, key=lambda row: (row.offered.rate or 0.0, row.value))
    lowest = min(rated, key=lambda row: (row.offered.rate or 0.0, row.value))
    gap = difference_of_proportions(highest.offered, lowest.offered, confidence)
    top = highest.offered.rate or 0.0
    warnings: tuple[str, ...] = ()
    ratio: float | None = None
    if top > 0.0:
        ratio = (lowest.offered.rate or 0.0) / top
    else:
        warnings = (UNDEFINED_RATIO,)
    return Disparity(
        attribute,
        group,
        tuple(rows),
        highest.value,
        lowest.value,
        gap,
        ratio,
        ratio is not None and ratio < FOUR_FIFTHS,
        warnings,
    )
