"""Off-policy estimates from moment sums: IPS, SNIPS and DR in one pass and O(1) memory.

`ope.py` takes the per-decision arrays; here a polars (lazy) query reduces the log to a fixed
set of sums, minima and maxima (what SQL computes with COUNT, SUM, MIN, MAX), and the normal
(delta-method) intervals are rebuilt from them. Moments of disjoint parts of a log combine by
adding (`OpeMoments.combine`), so they can also be aggregated per day or per partition.

With w_i = pi(a_i|x_i) / p_i the raw importance weight, v_i = min(w_i, M) the clipped weight
(M = `clip`, v = w without clipping), r_i the reward, qhat(x_i, a_i) = `q_logged` and
qhat_pi(x_i) = `q_target`, the moments are

- weights: n, sum w, sum w^2, max w (diagnostics);
- IPS terms a_i = v_i r_i: sum a, sum a^2, min a, max a;
- DR terms d_i = qhat_pi(x_i) + v_i (r_i - qhat(x_i, a_i)): sum d, sum d^2, min d, max d;
- SNIPS: sum w r, sum w^2 r, sum w^2 r^2, and min and max of r where w > 0.

IPS and DR are plain means: V = sum a / n, and the normal interval uses the sample variance
s^2 = (sum a^2 - (sum a)^2 / n) / (n - 1). SNIPS is V = theta = sum w r / sum w; its linearised
terms (`ope.linearised_terms` with c = 0, a = w r, b = w) are
psi_i = theta + w_i (r_i - theta) / mean(w). The centred terms w_i (r_i - theta) sum to zero, so

    s^2 = sum_i w_i^2 (r_i - theta)^2 / ((n - 1) mean(w)^2)
        = (sum w^2 r^2 - 2 theta sum w^2 r + theta^2 sum w^2) / ((n - 1) mean(w)^2).

The interval is V +/- z_{1 - alpha/2} s / sqrt(n), as in `ope.py`.

The results are `ope.Estimate` objects equal to those of `ope.ips`, `ope.snips` and `ope.dr`
with `interval="normal"` up to floating-point rounding, with the same diagnostics and warnings,
all of which are computable from the moments. One difference: the `zero_variance` warning is
raised exactly when all the (linearised) terms are equal, read from their minimum and maximum,
and the interval is then a point; `ope.py` computes the standard deviation of the terms and may
see rounding noise instead (e.g. terms all equal to 0.3 can give sd = 1e-17, no warning). The
minima and maxima cost about as much as all the sums, so `ope_moments` queries them only in a
second pass when a variance is within rounding of zero; one pass otherwise.

Sums of squares lose precision when a term's mean is large compared with its spread (the
variance is a difference of two large numbers); the terms here are rewards and weighted
rewards, where that does not bite, and a negative variance from rounding is clipped to zero.
Invalid inputs (nulls, non-finite values, propensities outside (0, 1], target probabilities
outside [0, 1]) are counted by the same query and raise `ValueError` naming the argument when
an estimate is asked for, as in `ope.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import polars as pl
from scipy import stats  # type: ignore[import-untyped]

from bandit_platform.evaluation.ope import (
    DEFAULT_MAX_WEIGHT_THRESHOLD,
    LARGE_WEIGHT,
    LOW_EFFECTIVE_SAMPLE_SIZE,
    MEAN_WEIGHT_FAR_FROM_ONE,
    MIN_EFFECTIVE_SAMPLE_SIZE,
    NO_OVERLAP,
    ZERO_VARIANCE,
    Estimate,
)

#: A column name or a polars expression of one value per decision.
Column = str | pl.Expr
#: The polars engine of `ope_moments`.
Engine = Literal["auto", "in-memory", "streaming"]


@dataclass(frozen=True)
class TermMoments:
    """Count, sum, sum of squares, minimum and maximum of one per-decision term.

    Attributes:
        n: number of terms.
        total: sum of the terms.
        total_squares: sum of the squared terms.
        minimum: smallest term (nan when n = 0 or not queried).
        maximum: largest term (nan when n = 0 or not queried).
    """

    n: int
    total: float
    total_squares: float
    minimum: float
    maximum: float

    @property
    def mean(self) -> float:
        """total / n (nan when n = 0)."""
        return self.total / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1) (sum x^2 - (sum x)^2 / n) / (n - 1).

        Exactly 0 when n < 2 or all terms are equal (minimum == maximum); clipped at 0.
        """
        if self.n < 2 or self.minimum == self.maximum:
            return 0.0
        centred = self.total_squares - self.total * self.total / self.n
        return max(centred, 0.0) / (self.n - 1)

    def combine(self, other: TermMoments) -> TermMoments:
        """The moments of the union of two disjoint sets of terms."""
        return TermMoments(
            self.n + other.n,
            self.total + other.total,
            self.total_squares + other.total_squares,
            _extreme(min, self.minimum, self.n > 0, other.minimum, other.n > 0),
            _extreme(max, self.maximum, self.n > 0, other.maximum, other.n > 0),
        )


@dataclass(frozen=True)
class OpeMoments:
    """The sums IPS, SNIPS and DR with normal intervals need (see the module docstring).

    Attributes:
        n: number of logged decisions (rows).
        clip: the weight cap M of the IPS and DR terms (None: no clipping).
        weights: moments of the raw importance weights w_i (diagnostics).
        ips: moments of the IPS terms v_i r_i.
        dr: moments of the DR terms, or None when no reward-model columns were given.
        sum_weighted_reward: sum w r.
        sum_squared_weight_reward: sum w^2 r.
        sum_squared_weighted_reward: sum w^2 r^2.
        overlap_reward_min: min of r over decisions with w > 0 (nan if none or not queried).
        overlap_reward_max: max of r over decisions with w > 0 (nan if none or not queried).
        propensity_range: (min, max) of the logged propensities p_i.
        target_range: (min, max) of the target probabilities pi(a_i|x_i).
        complete: rows whose reward, propensity and target probability are all non-null.
    """

    n: int
    clip: float | None
    weights: TermMoments
    ips: TermMoments
    dr: TermMoments | None
    sum_weighted_reward: float
    sum_squared_weight_reward: float
    sum_squared_weighted_reward: float
    overlap_reward_min: float
    overlap_reward_max: float
    propensity_range: tuple[float, float]
    target_range: tuple[float, float]
    complete: int

    @property
    def _overlaps(self) -> bool:
        # some decision has w > 0 (then the overlap extremes are known, or nan if not queried)
        return self.weights.maximum > 0.0

    def combine(self, other: OpeMoments) -> OpeMoments:
        """The moments of the union of two disjoint logs (same clip, both with or without DR).

        A minimum or maximum left out of either query (nan where there are terms) stays nan.

        Raises:
            ValueError: different clips, or only one of the two has DR moments.
        """
        if self.clip != other.clip:
            raise ValueError(f"clip: cannot combine moments with clip {self.clip} and {other.clip}")
        if (self.dr is None) != (other.dr is None):
            raise ValueError("dr: cannot combine moments with and without reward-model columns")
        dr = None if self.dr is None or other.dr is None else self.dr.combine(other.dr)
        return OpeMoments(
            n=self.n + other.n,
            clip=self.clip,
            weights=self.weights.combine(other.weights),
            ips=self.ips.combine(other.ips),
            dr=dr,
            sum_weighted_reward=self.sum_weighted_reward + other.sum_weighted_reward,
            sum_squared_weight_reward=self.sum_squared_weight_reward
            + other.sum_squared_weight_reward,
            sum_squared_weighted_reward=self.sum_squared_weighted_reward
            + other.sum_squared_weighted_reward,
            overlap_reward_min=_extreme(
                min,
                self.overlap_reward_min,
                self._overlaps,
                other.overlap_reward_min,
                other._overlaps,
            ),
            overlap_reward_max=_extreme(
                max,
                self.overlap_reward_max,
                self._overlaps,
                other.overlap_reward_max,
                other._overlaps,
            ),
            propensity_range=(
                _nan_min(self.propensity_range[0], other.propensity_range[0]),
                _nan_max(self.propensity_range[1], other.propensity_range[1]),
            ),
            target_range=(
                _nan_min(self.target_range[0], other.target_range[0]),
                _nan_max(self.target_range[1], other.target_range[1]),
            ),
            complete=self.complete + other.complete,
        )


def _extreme(
    pick: Callable[[float, float], float], a: float, a_has: bool, b: float, b_has: bool
) -> float:
    """min or max of two parts' extremes; a part without terms is ignored, unknown is nan."""
    if not a_has:
        return b
    if not b_has:
        return a
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return pick(a, b)


def _nan_min(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _nan_max(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


def _as_expr(column: Column) -> pl.Expr:
    return pl.col(column) if isinstance(column, str) else column


def _check_clip(clip: float | None) -> None:
    if clip is not None and not clip > 0.0:
        raise ValueError(f"clip must be positive, got {clip}")


# ---------------------------------------------------------------------------------------------
# the query


def ope_moment_exprs(
    *,
    reward: Column,
    propensity: Column,
    target: Column,
    q_logged: Column | None = None,
    q_target: Column | None = None,
    clip: float | None = None,
    prefix: str = "",
    extremes: bool = True,
) -> list[pl.Expr]:
    """The aggregation expressions of the moments, each aliased `<prefix><field>`.

    Use them in one `select` (several policies side by side with different prefixes) and read
    the one-row result back with `moments_from_row`.

    Args:
        reward: r_i.
        propensity: the logged propensity p_i.
        target: the target policy's probability pi(a_i|x_i) of the logged action.
        q_logged: the reward model's qhat(x_i, a_i), for DR (with `q_target`).
        q_target: the reward model's value of the target policy sum_a pi(a|x_i) qhat(x_i, a).
        clip: weight cap M of the IPS and DR terms, or None.
        prefix: prefix of the output column names.
        extremes: also the minima and maxima of the IPS and DR terms and of the overlapping
            rewards, which decide the `zero_variance` warning exactly (without them, nan).

    Raises:
        ValueError: a non-positive `clip`, or only one of `q_logged` and `q_target`.
    """
    _check_clip(clip)
    if (q_logged is None) != (q_target is None):
        raise ValueError("q_logged and q_target: give both (for DR) or neither")
    r = _as_expr(reward).cast(pl.Float64)
    p = _as_expr(propensity).cast(pl.Float64)
    t = _as_expr(target).cast(pl.Float64)
    w = t / p
    v = w if clip is None else w.clip(upper_bound=clip)
    wr = w * r
    ips = wr if clip is None else v * r
    overlap_r = pl.when(w > 0.0).then(r)
    values = {
        "n": pl.len(),
        "n_complete": ips.count(),
        "sum_w": w.sum(),
        "sum_w2": (w * w).sum(),
        "max_w": w.max(),
        "min_p": p.min(),
        "max_p": p.max(),
        "min_t": t.min(),
        "max_t": t.max(),
        "sum_ips": ips.sum(),
        "sum_ips2": (ips * ips).sum(),
        "sum_wr": wr.sum(),
        "sum_w2r": (w * wr).sum(),
        "sum_w2r2": (wr * wr).sum(),
    }
    if extremes:
        values |= {
            "min_ips": ips.min(),
            "max_ips": ips.max(),
            "min_r_overlap": overlap_r.min(),
            "max_r_overlap": overlap_r.max(),
        }
    if q_logged is not None and q_target is not None:
        d = _as_expr(q_target).cast(pl.Float64) + v * (r - _as_expr(q_logged).cast(pl.Float64))
        values |= {"n_dr": d.count(), "sum_dr": d.sum(), "sum_dr2": (d * d).sum()}
        if extremes:
            values |= {"min_dr": d.min(), "max_dr": d.max()}
    return [expr.alias(f"{prefix}{name}") for name, expr in values.items()]


def _number(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    return math.nan if value is None else float(value)


def moments_from_row(
    row: Mapping[str, Any], *, prefix: str = "", clip: float | None = None
) -> OpeMoments:
    """Read the moments back from the one-row result of `ope_moment_exprs`.

    Minima and maxima left out of the query (`extremes=False`) read as nan (unknown).

    Args:
        row: the row as a mapping (e.g. `frame.row(0, named=True)`).
        prefix: the prefix given to `ope_moment_exprs`.
        clip: the clip given to `ope_moment_exprs`.
    """

    def get(name: str) -> float:
        return _number(row, f"{prefix}{name}")

    n = int(row[f"{prefix}n"])

    def term(stem: str, count: int) -> TermMoments:
        return TermMoments(
            count, get(f"sum_{stem}"), get(f"sum_{stem}2"), get(f"min_{stem}"), get(f"max_{stem}")
        )

    complete = int(row[f"{prefix}n_complete"])
    dr = term("dr", int(row[f"{prefix}n_dr"])) if f"{prefix}n_dr" in row else None
    return OpeMoments(
        n=n,
        clip=clip,
        weights=TermMoments(n, get("sum_w"), get("sum_w2"), math.nan, get("max_w")),
        ips=term("ips", complete),
        dr=dr,
        sum_weighted_reward=get("sum_wr"),
        sum_squared_weight_reward=get("sum_w2r"),
        sum_squared_weighted_reward=get("sum_w2r2"),
        overlap_reward_min=get("min_r_overlap"),
        overlap_reward_max=get("max_r_overlap"),
        propensity_range=(get("min_p"), get("max_p")),
        target_range=(get("min_t"), get("max_t")),
        complete=complete,
    )


def ope_moments(
    frame: pl.LazyFrame | pl.DataFrame,
    *,
    reward: Column,
    propensity: Column,
    target: Column,
    q_logged: Column | None = None,
    q_target: Column | None = None,
    clip: float | None = None,
    engine: Engine = "streaming",
) -> OpeMoments:
    """The moments of IPS, SNIPS and (with both reward-model columns) DR in one query.

    The query is a single aggregation, so the streaming engine reads the log (e.g. a
    `pl.scan_parquet`) in batches with memory independent of its length. It leaves out the
    minima and maxima of the terms (they cost about as much as all the sums); only when a
    variance is within rounding of zero (centred sum of squares below 1e-8 of the raw one) is
    the query run a second time with them, to decide `zero_variance` exactly.

    Args:
        frame: the logged decisions, one row each.
        reward: r_i (column name or expression).
        propensity: p_i, in (0, 1].
        target: pi(a_i|x_i), in [0, 1].
        q_logged: qhat(x_i, a_i), for DR.
        q_target: sum_a pi(a|x_i) qhat(x_i, a), for DR.
        clip: weight cap M of the IPS and DR terms, or None (SNIPS is never clipped, as in
            `ope.snips`).
        engine: polars engine of the query.

    Raises:
        ValueError: a non-positive `clip`, or only one of `q_logged` and `q_target`.
    """
    lazy = frame.lazy()

    def query(extremes: bool) -> OpeMoments:
        exprs = ope_moment_exprs(
            reward=reward,
            propensity=propensity,
            target=target,
            q_logged=q_logged,
            q_target=q_target,
            clip=clip,
            extremes=extremes,
        )
        row = lazy.select(exprs).collect(engine=engine).row(0, named=True)
        return moments_from_row(row, clip=clip)

    moments = query(extremes=False)
    if _near_zero_variance(moments):
        moments = query(extremes=True)
    return moments


#: A variance from sums whose centred sum of squares is below this fraction of the raw sum of
#: squares may be rounding noise around 0: the minima and maxima then decide.
_NEAR_ZERO: Final = 1e-8


def _near_zero_variance(moments: OpeMoments) -> bool:
    """Whether any variance from sums is within rounding of zero (then terms may be equal)."""
    if moments.n < 2:
        return False
    candidates = [moments.ips] + ([moments.dr] if moments.dr is not None else [])
    for terms in candidates:
        centred = terms.total_squares - terms.total * terms.total / terms.n if terms.n else 0.0
        if centred <= _NEAR_ZERO * terms.total_squares:
            return True
    sum_w = moments.weights.total
    if sum_w == 0.0:
        return False
    theta = moments.sum_weighted_reward / sum_w
    centred = (
        moments.sum_squared_weighted_reward
        - 2.0 * theta * moments.sum_squared_weight_reward
        + theta * theta * moments.weights.total_squares
    )
    return centred <= _NEAR_ZERO * moments.sum_squared_weighted_reward


# ---------------------------------------------------------------------------------------------
# estimates


def _validate(moments: OpeMoments, alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if moments.n == 0:
        raise ValueError("rewards must not be empty")
    if moments.complete != moments.n:
        raise ValueError("rewards, logged_propensities and target_probabilities must not be null")
    low_p, high_p = moments.propensity_range
    if not (low_p > 0.0 and high_p <= 1.0):
        raise ValueError("logged_propensities must lie in (0, 1]")
    low_t, high_t = moments.target_range
    if not (low_t >= 0.0 and high_t <= 1.0):
        raise ValueError("target_probabilities must lie in [0, 1]")
    # With p in (0, 1] and pi in [0, 1], a non-finite reward makes sum v r (or, where v = 0,
    # 0 * inf = nan) non-finite, so checking the sums checks the rows.
    sums = (
        moments.ips.total,
        moments.ips.total_squares,
        moments.sum_squared_weighted_reward,
    )
    if not all(math.isfinite(value) for value in sums):
        raise ValueError("rewards must be finite")


def _validate_dr(moments: OpeMoments) -> TermMoments:
    dr = moments.dr
    if dr is None:
        raise ValueError("dr: the moments have no reward-model columns (q_logged, q_target)")
    if dr.n != moments.n:
        raise ValueError("reward_model_logged and reward_model_target must not be null")
    if not (math.isfinite(dr.total) and math.isfinite(dr.total_squares)):
        raise ValueError("reward_model_logged and reward_model_target must be finite")
    return dr


def _diagnostics(
    moments: OpeMoments, max_weight_threshold: float
) -> tuple[float, float, list[str]]:
    # The same rules as ope._diagnostics, from the weight moments.
    n = moments.n
    weights = moments.weights
    ess = weights.total**2 / weights.total_squares if weights.total_squares > 0.0 else 0.0
    largest = weights.maximum
    warnings: list[str] = []
    if largest == 0.0:
        warnings.append(NO_OVERLAP)
    if ess < 0.01 * n or ess < MIN_EFFECTIVE_SAMPLE_SIZE:
        warnings.append(LOW_EFFECTIVE_SAMPLE_SIZE)
    if largest > max_weight_threshold:
        warnings.append(LARGE_WEIGHT)
    mean = weights.mean
    spread = math.sqrt(weights.variance) / math.sqrt(n) if n > 1 else 0.0
    if abs(mean - 1.0) > max(0.1, 4.0 * spread):
        warnings.append(MEAN_WEIGHT_FAR_FROM_ONE)
    return ess, largest, warnings


def _estimate(
    name: str,
    moments: OpeMoments,
    value: float,
    variance: float,
    *,
    alpha: float,
    max_weight_threshold: float,
) -> Estimate:
    ess, largest, warnings = _diagnostics(moments, max_weight_threshold)
    if math.isnan(value):
        lower = upper = math.nan
    else:
        sd = math.sqrt(variance)
        half = float(stats.norm.ppf(1.0 - alpha / 2.0)) * sd / math.sqrt(moments.n)
        lower, upper = value - half, value + half
        if sd == 0.0:
            warnings.append(ZERO_VARIANCE)
    return Estimate(
        name=name,
        value=value,
        lower=lower,
        upper=upper,
        n=moments.n,
        effective_sample_size=ess,
        max_weight=largest,
        warnings=tuple(dict.fromkeys(warnings)),
        interval_method="normal",
    )


def ips_from_moments(
    moments: OpeMoments,
    *,
    alpha: float = 0.05,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
) -> Estimate:
    """IPS with its normal interval, as `ope.ips(..., clip=moments.clip, interval="normal")`.

    V_IPS = (1/n) sum_i min(w_i, M) r_i; the interval is V +/- z_{1-alpha/2} s / sqrt(n) with
    s^2 the sample variance of the terms, (sum a^2 - (sum a)^2 / n) / (n - 1).

    Args:
        moments: the log's moments (`ope_moments`).
        alpha: one minus the interval's confidence level.
        max_weight_threshold: weights above it raise the `large_weight` warning.

    Raises:
        ValueError: no decisions, invalid inputs counted in the moments, or a bad `alpha`.
    """
    _validate(moments, alpha)
    terms = moments.ips
    return _estimate(
        "IPS",
        moments,
        terms.total / moments.n,
        terms.variance,
        alpha=alpha,
        max_weight_threshold=max_weight_threshold,
    )


def snips_variance(moments: OpeMoments) -> float:
    """Sample variance (ddof=1) of SNIPS's linearised terms, from the moments.

    With theta = sum w r / sum w and mean(w) = sum w / n,
    s^2 = (sum w^2 r^2 - 2 theta sum w^2 r + theta^2 sum w^2) / ((n - 1) mean(w)^2): the
    linearised terms theta + w_i (r_i - theta) / mean(w) centred at their mean theta. Exactly 0
    when n < 2 or all overlapping rewards are equal (then every centred term is 0); nan when
    sum w = 0.
    """
    n = moments.n
    sum_w = moments.weights.total
    if sum_w == 0.0:
        return math.nan
    if n < 2 or moments.overlap_reward_min == moments.overlap_reward_max:
        return 0.0
    theta = moments.sum_weighted_reward / sum_w
    centred = (
        moments.sum_squared_weighted_reward
        - 2.0 * theta * moments.sum_squared_weight_reward
        + theta * theta * moments.weights.total_squares
    )
    mean_w = sum_w / n
    return max(centred, 0.0) / ((n - 1) * mean_w * mean_w)


def snips_from_moments(
    moments: OpeMoments,
    *,
    alpha: float = 0.05,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
) -> Estimate:
    """SNIPS with its delta-method normal interval, as `ope.snips(..., interval="normal")`.

    V_SNIPS = sum w r / sum w (unclipped weights, whatever `moments.clip` is); the variance is
    `snips_variance`. The value and interval are nan (with `no_overlap`) when all w_i = 0.

    Args:
        moments: the log's moments (`ope_moments`).
        alpha: one minus the interval's confidence level.
        max_weight_threshold: weights above it raise the `large_weight` warning.

    Raises:
        ValueError: no decisions, invalid inputs counted in the moments, or a bad `alpha`.
    """
    _validate(moments, alpha)
    sum_w = moments.weights.total
    value = moments.sum_weighted_reward / sum_w if sum_w != 0.0 else math.nan
    return _estimate(
        "SNIPS",
        moments,
        value,
        snips_variance(moments),
        alpha=alpha,
        max_weight_threshold=max_weight_threshold,
    )


def dr_from_moments(
    moments: OpeMoments,
    *,
    alpha: float = 0.05,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
) -> Estimate:
    """DR with its normal interval, as `ope.dr(..., clip=moments.clip, interval="normal")`.

    V_DR = (1/n) sum_i d_i with d_i = qhat_pi(x_i) + min(w_i, M) (r_i - qhat(x_i, a_i)); the
    interval uses the sample variance of the d_i, (sum d^2 - (sum d)^2 / n) / (n - 1).

    Args:
        moments: the log's moments (`ope_moments` with `q_logged` and `q_target`).
        alpha: one minus the interval's confidence level.
        max_weight_threshold: weights above it raise the `large_weight` warning.

    Raises:
        ValueError: no reward-model moments, no decisions, invalid inputs, or a bad `alpha`.
    """
    _validate(moments, alpha)
    terms = _validate_dr(moments)
    return _estimate(
        "DR",
        moments,
        terms.total / moments.n,
        terms.variance,
        alpha=alpha,
        max_weight_threshold=max_weight_threshold,
    )


def estimates_from_moments(
    moments: OpeMoments,
    *,
    alpha: float = 0.05,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
) -> tuple[Estimate, ...]:
    """IPS, SNIPS and (when the moments have reward-model columns) DR, in that order."""
    estimates = [
        ips_from_moments(moments, alpha=alpha, max_weight_threshold=max_weight_threshold),
        snips_from_moments(moments, alpha=alpha, max_weight_threshold=max_weight_threshold),
    ]
    if moments.dr is not None:
        estimates.append(
            dr_from_moments(moments, alpha=alpha, max_weight_threshold=max_weight_threshold)
        )
    return tuple(estimates)
