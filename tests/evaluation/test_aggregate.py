"""Off-policy estimates from moment sums against `ope.py`, on frames, expressions and Parquet.

Tolerance, fixed up front: values, interval ends, effective sample sizes and largest weights
agree with `ope.py` to `rel=1e-9` (the two differ only by summation order and the variance
formula, sums of squares against two-pass deviations; both far below 1e-9 here), and the
warnings are equal.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from bandit_platform.evaluation import ope
from bandit_platform.evaluation.aggregate import (
    Engine,
    OpeMoments,
    dr_from_moments,
    estimates_from_moments,
    ips_from_moments,
    moments_from_row,
    ope_moment_exprs,
    ope_moments,
    snips_from_moments,
    snips_variance,
)
from bandit_platform.evaluation.ope import Estimate

REPO = Path(__file__).resolve().parents[2]
Arrays = dict[str, npt.NDArray[np.float64]]
COLUMNS = {"reward": "r", "propensity": "p", "target": "t", "q_logged": "ql", "q_target": "qt"}


def _random_log(n: int, seed: int, *, overlap: float = 0.8) -> Arrays:
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.05, 0.6, n)
    return {
        "r": (rng.random(n) < mean).astype(np.float64) * rng.choice([1.0, 2.5], n),
        "p": rng.uniform(0.02, 1.0, n),
        "t": np.where(rng.random(n) < overlap, rng.uniform(0.0, 1.0, n), 0.0),
        "ql": np.clip(mean + rng.normal(0.0, 0.1, n), 0.0, 1.0),
        "qt": np.clip(mean + rng.normal(0.0, 0.1, n), 0.0, 1.0),
    }


def _expected(data: Arrays, clip: float | None, alpha: float) -> tuple[Estimate, ...]:
    r, p, t, ql, qt = (data[k] for k in ("r", "p", "t", "ql", "qt"))
    return (
        ope.ips(r, p, t, clip=clip, alpha=alpha),
        ope.snips(r, p, t, alpha=alpha),
        ope.dr(r, p, t, ql, qt, clip=clip, alpha=alpha),
    )


def _assert_same(got: Estimate, expected: Estimate) -> None:
    assert got.name == expected.name
    assert got.n == expected.n
    assert got.interval_method == expected.interval_method == "normal"
    assert got.warnings == expected.warnings
    for field in ("value", "lower", "upper", "effective_sample_size", "max_weight"):
        got_value, expected_value = getattr(got, field), getattr(expected, field)
        if math.isnan(expected_value):
            assert math.isnan(got_value), field
        else:
            assert got_value == pytest.approx(expected_value, rel=1e-9, abs=1e-15), field


def _moments(data: Arrays, clip: float | None = None) -> OpeMoments:
    return ope_moments(pl.DataFrame(data).lazy(), **COLUMNS, clip=clip)


# -------------------------------------------------------------------------------------------
# equality with ope.py


@pytest.mark.parametrize("clip", [None, 5.0, 0.5])
@pytest.mark.parametrize(("n", "seed"), [(50, 1), (2_000, 2), (100_000, 3)])
def test_estimates_equal_ope(clip: float | None, n: int, seed: int) -> None:
    data = _random_log(n, seed)
    got = estimates_from_moments(_moments(data, clip))
    for estimate, expected in zip(got, _expected(data, clip, 0.05), strict=True):
        _assert_same(estimate, expected)


def test_alpha_and_weight_threshold_are_passed_on() -> None:
    data = _random_log(500, 4)
    moments = _moments(data, clip=3.0)
    r, p, t, ql, qt = (data[k] for k in ("r", "p", "t", "ql", "qt"))
    options = {"alpha": 0.2, "max_weight_threshold": 5.0}
    _assert_same(ips_from_moments(moments, **options), ope.ips(r, p, t, clip=3.0, **options))
    _assert_same(snips_from_moments(moments, **options), ope.snips(r, p, t, **options))
    _assert_same(dr_from_moments(moments, **options), ope.dr(r, p, t, ql, qt, clip=3.0, **options))
    assert "large_weight" in ips_from_moments(moments, **options).warnings


def test_snips_variance_is_the_variance_of_the_linearised_terms() -> None:
    data = _random_log(5_000, 5)
    w = data["t"] / data["p"]
    psi = ope.linearised_terms(np.zeros_like(w), w * data["r"], w)
    variance = snips_variance(_moments(data))
    assert variance == pytest.approx(float(np.var(psi, ddof=1)), rel=1e-9)


def test_columns_may_be_expressions() -> None:
    data = _random_log(1_000, 6)
    frame = pl.DataFrame(data).with_columns(pl.col("t") * 2.0)
    moments = ope_moments(
        frame.lazy(),
        reward="r",
        propensity=pl.col("p"),
        target=pl.col("t") / 2.0,
        q_logged=pl.col("ql"),
        q_target="qt",
        clip=4.0,
    )
    for got, expected in zip(
        estimates_from_moments(moments), _expected(data, 4.0, 0.05), strict=True
    ):
        _assert_same(got, expected)


def test_several_policies_side_by_side_with_prefixes() -> None:
    data = _random_log(1_000, 7)
    exprs = [
        *ope_moment_exprs(reward="r", propensity="p", target="t", prefix="a_"),
        *ope_moment_exprs(reward="r", propensity="p", target="p", prefix="b_"),
    ]
    row = pl.DataFrame(data).select(exprs).row(0, named=True)
    first = estimates_from_moments(moments_from_row(row, prefix="a_"))
    second = estimates_from_moments(moments_from_row(row, prefix="b_"))
    assert [e.name for e in first] == ["IPS", "SNIPS"]
    _assert_same(first[0], ope.ips(data["r"], data["p"], data["t"]))
    # the logging policy itself: every weight is 1, IPS is the mean reward
    assert second[0].value == pytest.approx(float(data["r"].mean()), rel=1e-12)
    assert second[0].max_weight == 1.0


def test_moments_of_parts_combine_into_the_whole() -> None:
    data = _random_log(3_000, 8)
    frame = pl.DataFrame(data)
    whole = _moments(data, clip=5.0)
    head = ope_moments(frame.head(1_000).lazy(), **COLUMNS, clip=5.0)
    tail = ope_moments(frame.tail(2_000).lazy(), **COLUMNS, clip=5.0)
    combined = head.combine(tail)
    assert combined.n == whole.n
    for got, expected in zip(
        estimates_from_moments(combined), estimates_from_moments(whole), strict=True
    ):
        _assert_same(got, expected)
    with pytest.raises(ValueError, match="clip"):
        head.combine(ope_moments(frame.lazy(), **COLUMNS))


def test_combine_keeps_unknown_extremes_unknown() -> None:
    constant = _moments(_degenerate_cases()["constant_terms"])  # extremes queried
    healthy = _moments(_random_log(200, 15))  # extremes left out
    mixed = constant.combine(healthy)
    assert math.isnan(mixed.ips.minimum)
    assert math.isnan(mixed.overlap_reward_max)
    both = constant.combine(constant)
    assert both.ips.minimum == both.ips.maximum == 1.0
    assert "zero_variance" in ips_from_moments(both).warnings


# -------------------------------------------------------------------------------------------
# Parquet


@pytest.mark.parametrize("engine", ["streaming", "in-memory"])
def test_reading_a_parquet_file(tmp_path: Path, engine: Engine) -> None:
    data = _random_log(50_000, 9)
    path = tmp_path / "log.parquet"
    pl.DataFrame(data).write_parquet(path, row_group_size=7_000)
    moments = ope_moments(pl.scan_parquet(path), **COLUMNS, clip=10.0, engine=engine)
    for got, expected in zip(
        estimates_from_moments(moments), _expected(data, 10.0, 0.05), strict=True
    ):
        _assert_same(got, expected)


# -------------------------------------------------------------------------------------------
# empty and degenerate inputs


def test_empty_frame_has_zero_moments_and_no_estimate() -> None:
    empty = pl.DataFrame({name: pl.Series([], dtype=pl.Float64) for name in COLUMNS.values()})
    moments = ope_moments(empty.lazy(), **COLUMNS)
    assert moments.n == 0
    assert (moments.ips.n, moments.ips.total, moments.ips.total_squares) == (0, 0.0, 0.0)
    assert math.isnan(moments.ips.minimum)
    for estimator in (ips_from_moments, snips_from_moments, dr_from_moments):
        with pytest.raises(ValueError, match="must not be empty"):
            estimator(moments)


def _degenerate_cases() -> dict[str, Arrays]:
    ones = np.ones(200)
    data = _random_log(200, 10)
    return {
        "no_overlap": data | {"t": np.zeros(200)},
        "constant_terms": data
        | {"r": ones, "p": ones * 0.5, "t": ones * 0.5, "ql": ones, "qt": ones},
        "one_row": {k: v[:1] for k, v in data.items()},
        "two_rows": {k: v[:2] for k, v in data.items()},
        "one_overlapping_row": data | {"t": np.where(np.arange(200) == 3, 0.7, 0.0)},
        "zero_rewards": data | {"r": np.zeros(200)},
        "huge_weights": data | {"p": np.full(200, 0.001), "t": np.full(200, 0.5)},
    }


@pytest.mark.parametrize("case", list(_degenerate_cases()))
def test_degenerate_inputs_equal_ope(case: str) -> None:
    data = _degenerate_cases()[case]
    got = estimates_from_moments(_moments(data))
    for estimate, expected in zip(got, _expected(data, None, 0.05), strict=True):
        _assert_same(estimate, expected)


def test_no_overlap_gives_nan_snips_and_the_warning() -> None:
    data = _degenerate_cases()["no_overlap"]
    snips = snips_from_moments(_moments(data))
    assert math.isnan(snips.value)
    assert math.isnan(snips.lower)
    assert "no_overlap" in snips.warnings


def test_equal_terms_give_a_point_interval_with_zero_variance() -> None:
    data = _degenerate_cases()["constant_terms"]
    for estimate in estimates_from_moments(_moments(data)):
        assert estimate.lower == estimate.value == estimate.upper
        assert "zero_variance" in estimate.warnings


def test_one_pass_unless_a_variance_is_near_zero() -> None:
    healthy = _moments(_random_log(1_000, 13))
    assert math.isnan(healthy.ips.minimum)  # the extremes were not queried
    constant = _moments(_degenerate_cases()["constant_terms"])
    assert constant.ips.minimum == constant.ips.maximum == 1.0  # ... but here they were


def test_terms_equal_up_to_rounding_are_zero_variance() -> None:
    # IPS terms all 0.3: the sums leave rounding noise, the extremes say the terms are equal
    # (ope.py's sd of the terms may also be noise: it need not warn here)
    data = _random_log(1_000, 14) | {"r": np.full(1_000, 0.3), "t": np.ones(1_000)}
    data["p"] = np.ones(1_000)
    ips = ips_from_moments(_moments(data))
    assert ips.value == pytest.approx(0.3, rel=1e-12)
    assert ips.lower == ips.upper == ips.value
    assert "zero_variance" in ips.warnings
    expected = ope.ips(data["r"], data["p"], data["t"])
    assert ips.lower == pytest.approx(expected.lower, rel=1e-9)
    assert ips.upper == pytest.approx(expected.upper, rel=1e-9)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("p", 0.0, "logged_propensities must lie in"),
        ("p", 1.5, "logged_propensities must lie in"),
        ("t", -0.1, "target_probabilities must lie in"),
        ("t", 1.01, "target_probabilities must lie in"),
        ("r", math.inf, "rewards must be finite"),
        ("r", math.nan, "rewards must be finite"),
        ("r", None, "must not be null"),
        ("p", None, "must not be null"),
        ("ql", math.nan, "reward_model"),
        ("qt", None, "reward_model"),
    ],
)
def test_invalid_inputs_raise_like_ope(column: str, value: float | None, message: str) -> None:
    data = _random_log(20, 11)
    frame = pl.DataFrame(data).with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(pl.lit(value, dtype=pl.Float64))
        .otherwise(pl.col(column))
        .alias(column)
    )
    moments = ope_moments(frame.lazy(), **COLUMNS)
    estimator = dr_from_moments if column in ("ql", "qt") else ips_from_moments
    with pytest.raises(ValueError, match=message):
        estimator(moments)


def test_invalid_arguments() -> None:
    frame = pl.DataFrame(_random_log(20, 12)).lazy()
    with pytest.raises(ValueError, match="clip"):
        ope_moments(frame, **COLUMNS, clip=0.0)
    with pytest.raises(ValueError, match="q_logged and q_target"):
        ope_moments(frame, reward="r", propensity="p", target="t", q_logged="ql")
    moments = ope_moments(frame, reward="r", propensity="p", target="t")
    assert moments.dr is None
    assert [e.name for e in estimates_from_moments(moments)] == ["IPS", "SNIPS"]
    with pytest.raises(ValueError, match="reward-model"):
        dr_from_moments(moments)
    with pytest.raises(ValueError, match="alpha"):
        ips_from_moments(moments, alpha=1.0)


# -------------------------------------------------------------------------------------------
# the benchmark script


@pytest.mark.slow
def test_benchmark_smoke(tmp_path: Path) -> None:
    """`benchmarks/ope_scale.py` on a tiny log: every path agrees and the output has its form
    (no timing is checked)."""
    output = tmp_path / "result.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "ope_scale.py"),
            "--rows",
            "20000",
            "--repeat",
            "1",
            "--json",
            str(output),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    result = json.loads(output.read_text())
    assert result["rows"] == 20_000
    assert [p["path"] for p in result["paths"]] == ["numpy", "aggregate", "ope"]
    for path in result["paths"]:
        assert path["agrees"]
        assert path["seconds"] > 0.0
        assert path["peak_mb"] >= path["baseline_mb"] > 0.0
        assert set(path["estimates"]) == {"IPS", "SNIPS", "DR"}
    assert result["goals"]["estimates agree"]
    assert "x numpy" in completed.stdout
    assert "PASS  estimates agree" in completed.stdout
