"""Evaluate an exported decision log: lift of the bandit group, SRM, and off-policy values.

Reads the Parquet written by `bandit-platform export` lazily with polars and aggregates it
into sufficient statistics per group and reward horizon (COUNT, SUM, SUM of squares), from
which `lift` computes bandit-vs-holdout and bandit-vs-A-B lifts. The group counts are tested
against the designed traffic split (sample-ratio mismatch). On the learnable bandit-group rows
of the learning horizon, two target policies are evaluated off-policy with IPS, SNIPS and DR:
uniform random over the logged eligible arms, and the logging policy itself (whose IPS equals
the plain mean reward, a self-check of the propensities). Both are computed with polars
expressions and reduced to moment sums (`aggregate`), so the log is never loaded row by row.

Uniform's target needs only the `eligible` list. The logging policy's target is the logged
`propensity`; its DR also needs the full logged probability vector (the `probabilities` JSON
column, or a struct column): when some vector does not sum to 1 over the eligible arms (a log
that kept only the chosen arm's propensity), its DR is left out and the policy value carries
the `incomplete_probabilities` warning.

The DR reward model is the mean reward per chosen arm, cross-fitted over two folds of the
rows (fold = a polars hash of `decision_id`, stable for one polars version): each row's model
values come from the other fold. Arms not seen in the other fold get its overall mean.

Rows whose reward at a horizon is still open (null) are left out of that horizon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import polars as pl

from bandit_platform.evaluation import aggregate
from bandit_platform.evaluation.lift import (
    Lift,
    SampleRatioMismatch,
    SufficientStats,
    absolute_lift,
    relative_lift,
    sample_ratio_mismatch,
)
from bandit_platform.evaluation.ope import Estimate

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
        estimates: IPS, SNIPS and DR, in that order (DR left out with the
            `incomplete_probabilities` warning for the logging policy when the logged
            probability vectors are incomplete).
        warnings: coded warnings about the policy's evaluation as a whole.
    """

    policy: str
    horizon: str
    estimates: tuple[Estimate, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogReport:
    """Everything `evaluate_log` computed.

    Attributes:
        decisions: rows in the log.
        group_counts: rows per group.
        group_customers: distinct customers per group (empty when the log has no
            `customer_key`): the unit of assignment, so the SRM test counts them.
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
    group_customers: Mapping[str, int] = field(default_factory=dict)


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
) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, SufficientStats]]]:
    """Rows, customers and reward statistics per group; with `customer_key`, the statistics
    carry per-customer (cluster) sums too, so that lifts use cluster-robust variances."""
    with_customers = "customer_key" in frame.collect_schema().names()
    per_row: list[pl.Expr] = [pl.len().alias("rows")]
    for index, horizon in enumerate(horizons):
        reward = pl.col(f"{_REWARD_PREFIX}{horizon}").cast(pl.Float64)
        per_row += [
            reward.count().alias(f"n_{index}"),
            reward.sum().alias(f"sum_{index}"),
            (reward * reward).sum().alias(f"sq_{index}"),
        ]
    if with_customers:
        # two levels: per (group, customer), then per group
        by_customer = frame.group_by("group", "customer_key").agg(per_row)
        aggregates: list[pl.Expr] = [pl.col("rows").sum(), pl.len().alias("customers")]
        for index in range(len(horizons)):
            size, total = pl.col(f"n_{index}").cast(pl.Float64), pl.col(f"sum_{index}")
            aggregates += [
                pl.col(f"n_{index}").sum(),
                total.sum(),
                pl.col(f"sq_{index}").sum(),
                (pl.col(f"n_{index}") > 0).sum().alias(f"clusters_{index}"),
                (total * total).sum().alias(f"s2_{index}"),
                (size * total).sum().alias(f"cross_{index}"),
                (size * size).sum().alias(f"n2_{index}"),
            ]
        grouped = by_customer.group_by("group").agg(aggregates)
    else:
        grouped = frame.group_by("group").agg(per_row)
    rows = grouped.collect(engine="streaming").to_dicts()
    counts: dict[str, int] = {}
    customers: dict[str, int] = {}
    stats: dict[str, dict[str, SufficientStats]] = {h: {} for h in horizons}
    for row in sorted(rows, key=lambda r: _group_order(str(r["group"]))):
        group = str(row["group"])
        counts[group] = int(row["rows"])
        if with_customers:
            customers[group] = int(row["customers"])
        for index, horizon in enumerate(horizons):
            n = int(row[f"n_{index}"])
            if n == 0:
                continue
            base = (n, float(row[f"sum_{index}"]), float(row[f"sq_{index}"]))
            stats[horizon][group] = (
                SufficientStats(
                    *base,
                    int(row[f"clusters_{index}"]),
                    float(row[f"s2_{index}"]),
                    float(row[f"cross_{index}"]),
                    float(row[f"n2_{index}"]),
                )
                if with_customers
                else SufficientStats(*base)
            )
    return counts, customers, stats


def _group_order(group: str) -> tuple[int, str]:
    return (GROUPS.index(group) if group in GROUPS else len(GROUPS), group)


def _comparisons(horizon: str, groups: Mapping[str, SufficientStats]) -> tuple[Comparison, ...]:
    treatment = groups.get("bandit")
    result: list[Comparison] = []
    if treatment is None or treatment.units < 2:
        return ()
    for control_name in ("holdout", "ab"):
        control = groups.get(control_name)
        if control is None or control.units < 2:
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


#: Warning code of a policy value: some logged probability vectors do not sum to 1 over the
#: eligible arms (e.g. a log that kept only the chosen arm's propensity), so the logging
#: policy's reward-model value, and with it its DR estimate, is not computable.
INCOMPLETE_PROBABILITIES: Final = "incomplete_probabilities"
#: Tolerance on |sum of the logged probabilities over the eligible arms - 1|.
_PROBABILITY_TOLERANCE: Final = 1e-6

_Model = tuple[dict[str, float], float]


def _fold_models(rows: pl.LazyFrame) -> tuple[list[_Model], list[str], int]:
    """Per fold k, the mean reward per arm fitted on the other fold, and the fold's default.

    Returns the two models, the arms that appear in any row's arm list, and the row count.
    """
    # Two separate queries: collected together, polars would cache their common input (all
    # the rows) in memory.
    by_arm = (
        rows.group_by("fold", "arm")
        .agg(pl.col("reward").sum().alias("total"), pl.len().alias("count"))
        .collect(engine="streaming")
    )
    arm_lists = rows.select(pl.col("arms").explode().unique().drop_nulls().sort()).collect(
        engine="streaming"
    )
    totals = {0: 0.0, 1: 0.0}
    counts = {0: 0, 1: 0}
    means: dict[int, dict[str, float]] = {0: {}, 1: {}}
    for fold, arm, total, count in by_arm.iter_rows():
        totals[fold] += total
        counts[fold] += count
        means[fold][arm] = total / count
    n = counts[0] + counts[1]
    overall = (totals[0] + totals[1]) / n if n else math.nan
    models: list[_Model] = []
    for k in (0, 1):
        other = 1 - k
        if counts[other] == 0:
            models.append(({}, overall))
        else:
            models.append((means[other], totals[other] / counts[other]))
    return models, [str(a) for a in arm_lists["arms"].to_list()], n


def _by_fold(zero: pl.Expr, one: pl.Expr) -> pl.Expr:
    return pl.when(pl.col("fold") == 0).then(zero).otherwise(one)


def _model_value(key: pl.Expr, model: _Model) -> pl.Expr:
    means, default = model
    if not means:
        return pl.lit(default, dtype=pl.Float64)
    return key.replace_strict(means, default=default, return_dtype=pl.Float64)


def _logged_probabilities(dtype: pl.DataType, arms: Sequence[str]) -> dict[str, pl.Expr] | None:
    """The logged probability of each arm (null when absent) read from the `mu` struct column
    that `_decoded_probabilities` adds, or None for a `probabilities` column of another type."""
    mu = pl.col("mu")
    if isinstance(dtype, pl.String):
        return {arm: mu.struct.field(arm) for arm in arms}
    if isinstance(dtype, pl.Struct):
        fields = {field.name for field in dtype.fields}
        return {
            arm: mu.struct.field(arm).cast(pl.Float64)
            if arm in fields
            else pl.lit(None, dtype=pl.Float64)
            for arm in arms
        }
    return None


def _decoded_probabilities(dtype: pl.DataType, arms: Sequence[str]) -> pl.Expr:
    """The `probabilities` column as a struct `mu` (the JSON text decoded once per row)."""
    column = pl.col("probabilities")
    if isinstance(dtype, pl.String):
        column = column.str.json_decode(pl.Struct({arm: pl.Float64 for arm in arms}))
    return column.alias("mu")


def _policy_values(frame: pl.LazyFrame, horizon: str) -> tuple[PolicyValue, ...]:
    """IPS, SNIPS and DR of the uniform and the logging policy, in two passes over the rows.

    The first pass fits the cross-fitted reward model (sums per fold and arm); the second
    computes every per-row quantity as a polars expression and aggregates it into the moments
    of `aggregate`. Both run on polars' streaming engine without collecting the rows;
    decoding the JSON `probabilities` text is the costliest step (a struct column skips it).

    Per row i with arm list A_i (the eligible arms, or the chosen arm when none are listed)
    and qhat the model of the other fold: uniform's target probability is 1 / |A_i| if the
    chosen arm is in A_i (else 0) and its model value mean_{a in A_i} qhat(a); the logging
    policy's target probability is the logged propensity and its model value
    sum_{a in A_i} mu_i(a) qhat(a) with mu_i the logged probabilities (only when they sum to 1
    over A_i on every row; otherwise its DR is left out with `incomplete_probabilities`).
    """
    schema = frame.collect_schema()
    reward = pl.col(f"{_REWARD_PREFIX}{horizon}").cast(pl.Float64)
    eligible = pl.col("eligible")
    has_probabilities = "probabilities" in schema.names()
    rows = frame.filter(
        (pl.col("group") == "bandit") & pl.col("learnable").fill_null(False) & reward.is_not_null()
    ).select(
        (pl.col("decision_id").hash(seed=0) % 2).cast(pl.Int64).alias("fold"),
        chosen_arm().alias("arm"),
        pl.col("propensity").cast(pl.Float64),
        reward.alias("reward"),
        pl.when(eligible.list.len() > 0)
        .then(eligible)
        .otherwise(pl.concat_list(chosen_arm()))
        .alias("arms"),
        *([pl.col("probabilities")] if has_probabilities else []),
    )
    models, arms, n = _fold_models(rows)
    if n == 0:
        return ()
    arm_list = pl.col("arms")
    # Per-row values first (each computed once), then one aggregation over plain columns.
    per_row = [
        pl.col("reward"),
        pl.col("propensity"),
        _by_fold(
            _model_value(pl.col("arm"), models[0]), _model_value(pl.col("arm"), models[1])
        ).alias("q_logged"),
        pl.when(arm_list.list.contains(pl.col("arm")))
        .then(1.0 / arm_list.list.len().cast(pl.Float64))
        .otherwise(0.0)
        .alias("t_uniform"),
        _by_fold(
            *(
                arm_list.list.eval(_model_value(pl.element(), model)).list.mean().cast(pl.Float64)
                for model in models
            )
        ).alias("q_uniform"),
    ]
    dtype = schema["probabilities"] if has_probabilities else None
    logged = None if dtype is None or not arms else _logged_probabilities(dtype, arms)
    if logged is not None:
        # sums over a in A_i of mu_i(a) and of mu_i(a) qhat(a); arms outside A_i count 0
        assert dtype is not None
        rows = rows.with_columns(_decoded_probabilities(dtype, arms))
        mu = {
            arm: pl.when(arm_list.list.contains(pl.lit(arm)))
            .then(logged[arm].fill_null(0.0))
            .otherwise(0.0)
            for arm in arms
        }
        mass = pl.sum_horizontal(mu.values())
        q_logging = pl.sum_horizontal(
            mu[arm]
            * _by_fold(
                pl.lit(models[0][0].get(arm, models[0][1])),
                pl.lit(models[1][0].get(arm, models[1][1])),
            )
            for arm in arms
        )
        incomplete = ((mass - 1.0).abs() > _PROBABILITY_TOLERANCE).fill_null(True)
        per_row += [q_logging.alias("q_logging"), incomplete.alias("incomplete")]
    exprs = aggregate.ope_moment_exprs(
        reward="reward",
        propensity="propensity",
        target="t_uniform",
        q_logged="q_logged",
        q_target="q_uniform",
        prefix=f"{UNIFORM}_",
    )
    exprs += aggregate.ope_moment_exprs(
        reward="reward",
        propensity="propensity",
        target="propensity",
        q_logged=None if logged is None else "q_logged",
        q_target=None if logged is None else "q_logging",
        prefix=f"{LOGGING}_",
    )
    if logged is not None:
        exprs.append(pl.col("incomplete").sum())
    row = rows.select(per_row).select(exprs).collect(engine="streaming").row(0, named=True)
    uniform = aggregate.moments_from_row(row, prefix=f"{UNIFORM}_")
    logging = aggregate.moments_from_row(row, prefix=f"{LOGGING}_")
    warnings: tuple[str, ...] = ()
    if logged is None or int(row["incomplete"]) > 0:
        # IPS and SNIPS of the logging policy need only the logged propensity (w_i = 1)
        logging = replace(logging, dr=None)
        warnings = (INCOMPLETE_PROBABILITIES,)
    return (
        PolicyValue(UNIFORM, horizon, aggregate.estimates_from_moments(uniform)),
        PolicyValue(LOGGING, horizon, aggregate.estimates_from_moments(logging), warnings),
    )


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
    counts, customers, stats = _group_stats(frame, horizons)
    reports = tuple(HorizonReport(h, stats[h], _comparisons(h, stats[h])) for h in horizons)
    # Customers, not decisions, are assigned to groups (stickily): a customer who comes back
    # often adds many decisions to one group, so decision counts stray from the split far
    # more than chance allows and the test would raise false alarms.
    srm = None if traffic is None else _srm(customers or counts, traffic)
    return LogReport(
        decisions=sum(counts.values()),
        group_counts=counts,
        horizons=reports,
        srm=srm,
        learning_horizon=learning,
        policies=_policy_values(frame, learning),
        group_customers=customers,
    )


def _interval(lower: float, upper: float, digits: int) -> str:
    return f"[{lower:.{digits}f}, {upper:.{digits}f}]"


def format_report(report: LogReport) -> str:
    """A readable text report: group counts, SRM, lifts per horizon and off-policy values."""
    lines = [f"decisions: {report.decisions}"]
    lines.append("groups:    " + "  ".join(f"{g}={n}" for g, n in report.group_counts.items()))
    if report.group_customers:
        lines.append(
            "customers: " + "  ".join(f"{g}={n}" for g, n in report.group_customers.items())
        )
    if report.srm is not None:
        srm = report.srm
        verdict = "MISMATCH (do not trust the lifts)" if srm.flagged else "ok"
        expected = ", ".join(f"{value:.1f}" for value in srm.expected_counts)
        lines.append(
            f"sample ratio: {verdict}  chi2={srm.statistic:.2f} p={srm.p_value:.4g} "
            f"(alpha {srm.alpha:g}; expected {expected} "
            f"{'customers' if report.group_customers else 'decisions'})"
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
            if INCOMPLETE_PROBABILITIES in policy.warnings:
                lines.append(
                    f"  {policy.policy:<10}(no DR: the logged probabilities do not sum to 1 over "
                    "the eligible arms)"
                )
    return "\n".join(lines)
