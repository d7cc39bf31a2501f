"""Evaluate an exported decision log: lift of the bandit group, SRM, and off-policy values.

Reads the Parquet written by `bandit-platform export` lazily with polars and aggregates it
into sufficient statistics per group and reward horizon (COUNT, SUM, SUM of squares), from
which `lift` computes bandit-vs-holdout and bandit-vs-A-B lifts. The group counts are tested
against the designed traffic split (sample-ratio mismatch). On the learnable bandit-group rows
of the learning horizon, two target policies are evaluated off-policy with IPS, SNIPS and DR:
uniform random over the logged eligible arms, and the logging policy itself (whose IPS equals
the plain mean reward, a self-check of the propensities).

The DR reward model is the mean reward per chosen arm, cross-fitted over two folds of the
rows (fold = a polars hash of `decision_id`, stable for one polars version): each row's model
values come from the other fold. Arms not seen in the other fold get its overall mean.

Rows whose reward at a horizon is still open (null) are left out of that horizon.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from bandit_platform.evaluation.lift import (
    Lift,
    SampleRatioMismatch,
    SufficientStats,
    absolute_lift,
    relative_lift,
    sample_ratio_mismatch,
)
from bandit_platform.evaluation.ope import Estimate, dr, ips, snips

#: The assignment groups of the log, in report order.
GROUPS: Final = ("holdout", "ab", "bandit")
#: Arm key of "show nothing".
NO_OFFER: Final = "no_offer"
#: Names of the evaluated target policies.
UNIFORM: Final = "uniform"
LOGGING: Final = "logging"

_REWARD_PREFIX: Final = "reward_"
_SOURCE_PREFIX: Final = "reward_source_"


@dataclass(frozen=True)
class Comparison:
    """The bandit group against one control group at one horizon.

    Attributes:
        horizon: reward horizon name.
        treatment: treatment group name (`bandit`).
        control: control group name (`holdout` or `ab`).
        absolute: difference of mean rewards, Welch interval.
        relative: relative change, delta-method interval (None when the control mean is 0).
    """

    horizon: str
    treatment: str
    control: str
    absolute: Lift
    relative: Lift | None


@dataclass(frozen=True)
class HorizonReport:
    """Sufficient statistics per group and the lifts at one reward horizon.

    Attributes:
        horizon: reward horizon name (the Parquet column is `reward_<horizon>`).
        groups: statistics of the closed rewards of each group present.
        comparisons: bandit vs holdout and bandit vs A-B, where both have 2+ rewards.
    """

    horizon: str
    groups: Mapping[str, SufficientStats]
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class PolicyValue:
    """Off-policy estimates of one target policy.

    Attributes:
        policy: `uniform` or `logging`.
        horizon: the reward horizon evaluated.
        estimates: IPS, SNIPS and DR, in that order.
    """

    policy: str
    horizon: str
    estimates: tuple[Estimate, ...]


@dataclass(frozen=True)
class LogReport:
    """Everything `evaluate_log` computed.

    Attributes:
        decisions: rows in the log.
        group_counts: rows per group.
        horizons: one report per reward horizon, in column order.
        srm: the sample-ratio test against the traffic shares (None without `traffic`).
        learning_horizon: the horizon of the off-policy estimates.
        policies: off-policy values (empty when no learnable bandit row has a reward).
    """

    decisions: int
    group_counts: Mapping[str, int]
    horizons: tuple[HorizonReport, ...]
    srm: SampleRatioMismatch | None
    learning_horizon: str
    policies: tuple[PolicyValue, ...]


def reward_horizons(schema: Sequence[str]) -> tuple[str, ...]:
    """Horizon names from the `reward_<horizon>` columns, in column order."""
    return tuple(
        name[len(_REWARD_PREFIX) :]
        for name in schema
        if name.startswith(_REWARD_PREFIX) and not name.startswith(_SOURCE_PREFIX)
    )


def chosen_arm() -> pl.Expr:
    """The arm key of the logged choice: `offer/variant`, `offer`, or `no_offer`."""
    offer, variant = pl.col("chosen_offer"), pl.col("chosen_variant")
    return (
        pl.when(offer.is_null())
        .then(pl.lit(NO_OFFER))
        .when(variant.is_null())
        .then(offer)
        .otherwise(pl.concat_str([offer, pl.lit("/"), variant]))
    )


def _group_stats(
    frame: pl.LazyFrame, horizons: Sequence[str]
) -> tuple[dict[str, int], dict[str, dict[str, SufficientStats]]]:
    aggregates: list[pl.Expr] = [pl.len().alias("rows")]
    for index, horizon in enumerate(horizons):
        reward = pl.col(f"{_REWARD_PREFIX}{horizon}").cast(pl.Float64)
        aggregates += [
            reward.count().alias(f"n_{index}"),
            reward.sum().alias(f"sum_{index}"),
            (reward * reward).sum().alias(f"sq_{index}"),
        ]
    rows = frame.group_by("group").agg(aggregates).collect().to_dicts()
    counts: dict[str, int] = {}
    stats: dict[str, dict[str, SufficientStats]] = {h: {} for h in horizons}
    for row in sorted(rows, key=lambda r: _group_order(str(r["group"]))):
        group = str(row["group"])
        counts[group] = int(row["rows"])
        for index, horizon in enumerate(horizons):
            n = int(row[f"n_{index}"])
            if n > 0:
                stats[horizon][group] = SufficientStats(
                    n, float(row[f"sum_{index}"]), float(row[f"sq_{index}"])
                )
    return counts, stats


def _group_order(group: str) -> tuple[int, str]:
    return (GROUPS.index(group) if group in GROUPS else len(GROUPS), group)


def _comparisons(horizon: str, groups: Mapping[str, SufficientStats]) -> tuple[Comparison, ...]:
    treatment = groups.get("bandit")
    result: list[Comparison] = []
    if treatment is None or treatment.n < 2:
        return ()
    for control_name in ("holdout", "ab"):
        control = groups.get(control_name)
        if control is None or control.n < 2:
            continue
        relative = relative_lift(treatment, control) if control.mean != 0.0 else None
        result.append(
            Comparison(horizon, "bandit", control_name, absolute_lift(treatment, control), relative)
        )
    return tuple(result)


def _srm(counts: Mapping[str, int], traffic: Mapping[str, float]) -> SampleRatioMismatch:
    unknown = sorted(set(traffic) - set(GROUPS))
    if unknown:
        raise ValueError(f"traffic: unknown groups {unknown}; expected {list(GROUPS)}")
    if any(not (math.isfinite(share) and share >= 0.0) for share in traffic.values()):
        raise ValueError("traffic: shares must be finite and non-negative")
    stray = [g for g in counts if counts[g] > 0 and traffic.get(g, 0.0) <= 0.0]
    if stray:
        raise ValueError(f"traffic: groups {stray} have rows but no traffic share")
    tested = [g for g in GROUPS if traffic.get(g, 0.0) > 0.0]
    if len(tested) < 2:
        raise ValueError("traffic: at least two groups need a positive share")
    return sample_ratio_mismatch([counts.get(g, 0) for g in tested], [traffic[g] for g in tested])


def _fold_model(
    arms: np.ndarray, rewards: np.ndarray, fallback: float
) -> tuple[dict[str, float], float]:
    if rewards.size == 0:
        return {}, fallback
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for arm, reward in zip(arms.tolist(), rewards.tolist(), strict=True):
        sums[arm] = sums.get(arm, 0.0) + reward
        counts[arm] = counts.get(arm, 0) + 1
    return {arm: sums[arm] / counts[arm] for arm in sums}, float(rewards.mean())


def _policy_values(frame: pl.LazyFrame, horizon: str) -> tuple[PolicyValue, ...]:
    reward = pl.col(f"{_REWARD_PREFIX}{horizon}").cast(pl.Float64)
    rows = (
        frame.filter(
            (pl.col("group") == "bandit")
            & pl.col("learnable").fill_null(False)
            & reward.is_not_null()
        )
        .select(
            (pl.col("decision_id").hash(seed=0) % 2).cast(pl.Int64).alias("fold"),
            chosen_arm().alias("arm"),
            pl.col("propensity").cast(pl.Float64),
            pl.col("probabilities"),
            pl.col("eligible"),
            reward.alias("reward"),
        )
        .collect()
    )
    if rows.height == 0:
        return ()
    r = rows["reward"].to_numpy().astype(np.float64)
    p = rows["propensity"].to_numpy().astype(np.float64)
    folds = rows["fold"].to_numpy()
    arms = np.asarray(rows["arm"].to_list(), dtype=object)
    eligible: list[list[str]] = [list(e) for e in rows["eligible"].to_list()]
    logged: list[dict[str, float]] = [json.loads(text) for text in rows["probabilities"]]
    overall = float(r.mean())
    # fold k's values come from the model fitted on the other fold
    models = [_fold_model(arms[folds != k], r[folds != k], overall) for k in (0, 1)]

    n = rows.height
    q_logged = np.empty(n)
    t_uniform = np.empty(n)
    q_uniform = np.empty(n)
    q_logging = np.empty(n)
    for i in range(n):
        means, default = models[int(folds[i])]
        arms_i = eligible[i] or [str(arms[i])]
        q = [means.get(a, default) for a in arms_i]
        q_logged[i] = means.get(str(arms[i]), default)
        t_uniform[i] = 1.0 / len(arms_i) if str(arms[i]) in arms_i else 0.0
        q_uniform[i] = sum(q) / len(arms_i)
        q_logging[i] = sum(logged[i].get(a, 0.0) * qa for a, qa in zip(arms_i, q, strict=True))

    result: list[PolicyValue] = []
    for name, target, q_target in ((UNIFORM, t_uniform, q_uniform), (LOGGING, p, q_logging)):
        estimates = (
            ips(r, p, target),
            snips(r, p, target),
            dr(r, p, target, q_logged, q_target),
        )
        result.append(PolicyValue(name, horizon, estimates))
    return tuple(result)


def evaluate_log(
    log: str | Path | pl.LazyFrame,
    *,
    traffic: Mapping[str, float] | None = None,
    horizon: str | None = None,
) -> LogReport:
    """Lift, sample-ratio mismatch and off-policy values of an exported decision log.

    Args:
        log: the Parquet file of `bandit-platform export`, or a LazyFrame of the same columns.
        traffic: designed shares (e.g. percentages) by group name (`holdout`, `ab`, `bandit`),
            for the SRM test; groups with share 0 are left out of the test.
        horizon: the horizon of the off-policy estimates (default: the first reward column,
            the learning horizon).

    Raises:
        FileNotFoundError: `log` is a path that does not exist.
        ValueError: no reward column, an unknown `horizon`, or invalid `traffic`.
    """
    if isinstance(log, pl.LazyFrame):
        frame = log
    else:
        path = Path(log)
        if not path.is_file():
            raise FileNotFoundError(f"no such log file: {path}")
        frame = pl.scan_parquet(path)
    horizons = reward_horizons(frame.collect_schema().names())
    if not horizons:
        raise ValueError("log: no reward_<horizon> column")
    learning = horizons[0] if horizon is None else horizon
    if learning not in horizons:
        raise ValueError(f"horizon: {learning!r} is not one of {list(horizons)}")
    counts, stats = _group_stats(frame, horizons)
    reports = tuple(HorizonReport(h, stats[h], _comparisons(h, stats[h])) for h in horizons)
    srm = None if traffic is None else _srm(counts, traffic)
    return LogReport(
        decisions=sum(counts.values()),
        group_counts=counts,
        horizons=reports,
        srm=srm,
        learning_horizon=learning,
        policies=_policy_values(frame, learning),
    )


def _interval(lower: float, upper: float, digits: int) -> str:
    return f"[{lower:.{digits}f}, {upper:.{digits}f}]"


def format_report(report: LogReport) -> str:
    """A readable text report: group counts, SRM, lifts per horizon and off-policy values."""
    lines = [f"decisions: {report.decisions}"]
    lines.append("groups:    " + "  ".join(f"{g}={n}" for g, n in report.group_counts.items()))
    if report.srm is not None:
        srm = report.srm
        verdict = "MISMATCH (do not trust the lifts)" if srm.flagged else "ok"
        expected = ", ".join(f"{value:.1f}" for value in srm.expected_counts)
        lines.append(
            f"sample ratio: {verdict}  chi2={srm.statistic:.2f} p={srm.p_value:.4g} "
            f"(alpha {srm.alpha:g}; expected {expected})"
        )
    for horizon in report.horizons:
        lines += ["", f"horizon {horizon.horizon}"]
        lines.append(f"  {'group':<10}{'n':>8}{'mean':>12}{'sd':>12}")
        for group, stats in horizon.groups.items():
            sd = math.sqrt(stats.variance) if stats.n >= 2 else math.nan
            lines.append(f"  {group:<10}{stats.n:>8}{stats.mean:>12.5f}{sd:>12.5f}")
        if not horizon.comparisons:
            lines.append("  (no comparison: a group has fewer than 2 rewards)")
        for comparison in horizon.comparisons:
            absolute = comparison.absolute
            lines.append(
                f"  {comparison.treatment} - {comparison.control}: "
                f"{absolute.estimate:+.5f} {_interval(absolute.lower, absolute.upper, 5)} "
                f"p={absolute.p_value:.4g}"
            )
            relative = comparison.relative
            if relative is None:
                lines.append("    relative: undefined (control mean 0)")
            else:
                note = f"  [{', '.join(relative.warnings)}]" if relative.warnings else ""
                lines.append(
                    f"    relative: {relative.estimate:+.2%} "
                    f"[{relative.lower:+.2%}, {relative.upper:+.2%}] "
                    f"p={relative.p_value:.4g}{note}"
                )
    lines += ["", f"off-policy values (bandit group, learnable, horizon {report.learning_horizon})"]
    if not report.policies:
        lines.append("  (no learnable bandit decision with a closed reward)")
    else:
        lines.append(
            f"  {'policy':<10}{'estimator':<10}{'n':>8}{'value':>11}  {'95% interval':<22}"
            f"{'ESS':>9}{'max w':>8}"
        )
        for policy in report.policies:
            for estimate in policy.estimates:
                note = f"  [{', '.join(estimate.warnings)}]" if estimate.warnings else ""
                lines.append(
                    f"  {policy.policy:<10}{estimate.name:<10}{estimate.n:>8}"
                    f"{estimate.value:>11.5f}  {_interval(estimate.lower, estimate.upper, 5):<22}"
                    f"{estimate.effective_sample_size:>9.1f}{estimate.max_weight:>8.2f}{note}"
                )
    return "\n".join(lines)
