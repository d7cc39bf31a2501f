"""`evaluate_log` on a decision log exported by an in-process simulation, and its CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bandit_platform.cli import main
from bandit_platform.domain.config import TrafficSplit
from bandit_platform.evaluation import ope
from bandit_platform.evaluation.lift import SufficientStats, absolute_lift, sample_ratio_mismatch
from bandit_platform.evaluation.ope import Estimate
from bandit_platform.evaluation.report import (
    INCOMPLETE_PROBABILITIES,
    LOGGING,
    UNIFORM,
    LogReport,
    chosen_arm,
    evaluate_log,
    format_report,
)
from simulators.runner import SimulationConfig, run_simulation

SPLIT = {"holdout": 10.0, "ab": 20.0, "bandit": 70.0}
CONFIG = SimulationConfig(
    name="evaluate",
    seed=11,
    customers=300,
    days=10,
    max_decisions=1500,
    traffic=TrafficSplit(holdout=10, ab=20, bandit=70),
)


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("evaluate")
    run_simulation(CONFIG, directory)
    path = directory / "sim-evaluate.parquet"  # the export of experiment `sim-<name>`
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def log(log_path: Path) -> pl.DataFrame:
    return pl.read_parquet(log_path)


@pytest.fixture(scope="module")
def report(log_path: Path) -> LogReport:
    return evaluate_log(log_path, traffic=SPLIT)


def test_group_counts_equal_the_parquet(report: LogReport, log: pl.DataFrame) -> None:
    expected = dict(log.group_by("group").len().iter_rows())
    assert dict(report.group_counts) == expected
    assert report.decisions == log.height
    assert set(expected) == {"holdout", "ab", "bandit"}


def test_absolute_lift_matches_numpy_rows(report: LogReport, log: pl.DataFrame) -> None:
    (primary,) = report.horizons
    assert primary.horizon == "primary"
    assert report.learning_horizon == "primary"

    def rewards(group: str) -> tuple[np.ndarray, np.ndarray]:
        rows = log.filter((pl.col("group") == group) & pl.col("reward_primary").is_not_null())
        values = rows["reward_primary"].to_numpy().astype(np.float64)
        return values, rows["customer_key"].to_numpy()

    comparisons = {c.control: c for c in primary.comparisons}
    assert set(comparisons) == {"holdout", "ab"}
    for control in ("holdout", "ab"):
        # customers are the clusters: the interval is the cluster-robust Welch one
        expected = absolute_lift(
            SufficientStats.from_values(*rewards("bandit")),
            SufficientStats.from_values(*rewards(control)),
        )
        assert expected.method == "welch_clustered"
        got = comparisons[control].absolute
        assert got.estimate == pytest.approx(expected.estimate, rel=1e-12, abs=1e-15)
        assert got.lower == pytest.approx(expected.lower, rel=1e-9)
        assert got.upper == pytest.approx(expected.upper, rel=1e-9)
        assert got.p_value == pytest.approx(expected.p_value, rel=1e-9)
        assert primary.groups[control].n == rewards(control)[0].size


def _learnable_bandit(log: pl.DataFrame) -> pl.DataFrame:
    return log.filter(
        (pl.col("group") == "bandit") & pl.col("learnable") & pl.col("reward_primary").is_not_null()
    )


def test_logging_policy_ips_is_the_mean_reward(report: LogReport, log: pl.DataFrame) -> None:
    rows = _learnable_bandit(log)
    (logging,) = [p for p in report.policies if p.policy == LOGGING]
    ips = logging.estimates[0]
    assert ips.name == "IPS"
    assert ips.n == rows.height
    assert ips.value == pytest.approx(float(rows["reward_primary"].to_numpy().mean()), rel=1e-12)
    assert [e.name for e in logging.estimates] == ["IPS", "SNIPS", "DR"]


def test_uniform_policy_is_finite_on_the_learnable_bandit_rows(
    report: LogReport, log: pl.DataFrame
) -> None:
    rows = _learnable_bandit(log)
    (uniform,) = [p for p in report.policies if p.policy == UNIFORM]
    assert [e.name for e in uniform.estimates] == ["IPS", "SNIPS", "DR"]
    for estimate in uniform.estimates:
        assert estimate.n == rows.height > 0
        assert math.isfinite(estimate.value)
        assert math.isfinite(estimate.lower)
        assert math.isfinite(estimate.upper)
        assert estimate.lower <= estimate.value <= estimate.upper


def test_srm_flags_a_group_missing_30_percent(report: LogReport, log: pl.DataFrame) -> None:
    assert report.srm is not None
    assert not report.srm.flagged
    bandit = log.filter(pl.col("group") == "bandit")
    customers = bandit["customer_key"].unique().sort()
    lost = customers.head(int(customers.len() * 0.3))
    kept = bandit.filter(~pl.col("customer_key").is_in(lost.implode()))
    damaged = pl.concat([log.filter(pl.col("group") != "bandit"), kept])
    result = evaluate_log(damaged.lazy(), traffic=SPLIT)
    assert result.srm is not None
    assert result.srm.flagged
    assert result.group_counts["bandit"] == kept.height
    assert result.group_customers["bandit"] == customers.len() - lost.len()


def test_srm_counts_customers_not_decisions(report: LogReport, log: pl.DataFrame) -> None:
    # Customers are assigned, stickily; frequent visitors in one group are not a mismatch.
    assert report.srm is not None
    for group, customers in report.group_customers.items():
        assert customers == log.filter(pl.col("group") == group)["customer_key"].n_unique()
    bandit = log.filter(pl.col("group") == "bandit")
    frequent = pl.concat([log, *([bandit] * 3)])  # every bandit customer came back 3 times more
    result = evaluate_log(frequent.lazy(), traffic=SPLIT)
    assert result.group_counts["bandit"] == 4 * bandit.height
    assert result.group_customers == report.group_customers
    assert result.srm is not None
    assert result.srm.p_value == pytest.approx(report.srm.p_value)
    assert not result.srm.flagged
    by_decisions = sample_ratio_mismatch(
        [result.group_counts[g] for g in SPLIT], [SPLIT[g] for g in SPLIT]
    )
    assert by_decisions.flagged  # what counting decisions would have said


def test_no_traffic_no_srm_and_unknown_horizon_rejected(log_path: Path) -> None:
    assert evaluate_log(pl.scan_parquet(log_path)).srm is None
    with pytest.raises(ValueError, match="horizon"):
        evaluate_log(log_path, horizon="nope")
    with pytest.raises(ValueError, match="traffic"):
        evaluate_log(log_path, traffic={"control": 50.0, "bandit": 50.0})


def test_format_report_shows_counts_lifts_and_intervals(report: LogReport) -> None:
    text = format_report(report)
    assert "bandit - holdout" in text
    assert "bandit - ab" in text
    assert "sample ratio: ok" in text
    for policy in (UNIFORM, LOGGING):
        assert policy in text


def test_cli_prints_the_table(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--log", str(log_path), "--traffic", "10,20,70"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.strip() == format_report(evaluate_log(log_path, traffic=SPLIT))
    assert "decisions: " in out
    assert "uniform" in out


def test_cli_missing_file_and_bad_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--log", str(tmp_path / "none.parquet")]) == 2
    assert "no such log file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--log", "x.parquet", "--traffic", "10,90"])


# -------------------------------------------------------------------------------------------
# the vectorised off-policy values against a row-by-row reference


def _reference_policy_values(
    log: pl.DataFrame, horizon: str = "primary"
) -> dict[str, tuple[Estimate, ...]]:
    """The straightforward computation: rows to Python, one loop, `ope.py` on the arrays."""
    column = f"reward_{horizon}"
    rows = log.filter(
        (pl.col("group") == "bandit")
        & pl.col("learnable").fill_null(False)
        & pl.col(column).is_not_null()
    ).with_columns(
        (pl.col("decision_id").hash(seed=0) % 2).cast(pl.Int64).alias("fold"),
        chosen_arm().alias("arm"),
    )
    if rows.height == 0:
        return {}
    r = rows[column].cast(pl.Float64).to_numpy()
    p = rows["propensity"].cast(pl.Float64).to_numpy()
    folds = rows["fold"].to_list()
    arms = rows["arm"].to_list()
    eligible = [list(e or []) for e in rows["eligible"].to_list()]
    logged = [json.loads(text) for text in rows["probabilities"].to_list()]
    overall = float(r.mean())

    def fit(fold: int) -> tuple[dict[str, float], float]:
        # fold k's values come from the model fitted on the other fold
        index = [i for i in range(rows.height) if folds[i] != fold]
        if not index:
            return {}, overall
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for i in index:
            sums[arms[i]] = sums.get(arms[i], 0.0) + r[i]
            counts[arms[i]] = counts.get(arms[i], 0) + 1
        return {a: sums[a] / counts[a] for a in sums}, float(r[index].mean())

    models = [fit(0), fit(1)]
    n = rows.height
    q_logged, t_uniform, q_uniform, q_logging = (np.empty(n) for _ in range(4))
    for i in range(n):
        means, default = models[folds[i]]
        arms_i = eligible[i] or [arms[i]]
        q = [means.get(a, default) for a in arms_i]
        q_logged[i] = means.get(arms[i], default)
        t_uniform[i] = 1.0 / len(arms_i) if arms[i] in arms_i else 0.0
        q_uniform[i] = sum(q) / len(arms_i)
        q_logging[i] = sum(logged[i].get(a, 0.0) * qa for a, qa in zip(arms_i, q, strict=True))
    return {
        name: (
            ope.ips(r, p, target),
            ope.snips(r, p, target),
            ope.dr(r, p, target, q_logged, q_target),
        )
        for name, target, q_target in ((UNIFORM, t_uniform, q_uniform), (LOGGING, p, q_logging))
    }


def _assert_same(got: Estimate, expected: Estimate) -> None:
    assert got.name == expected.name
    assert got.n == expected.n
    assert got.warnings == expected.warnings
    for field in ("value", "lower", "upper", "effective_sample_size", "max_weight"):
        assert getattr(got, field) == pytest.approx(
            getattr(expected, field), rel=1e-9, abs=1e-12
        ), field


def _assert_matches_reference(report: LogReport, log: pl.DataFrame) -> None:
    expected = _reference_policy_values(log)
    assert [p.policy for p in report.policies] == list(expected)
    for policy in report.policies:
        assert policy.warnings == ()
        assert len(policy.estimates) == len(expected[policy.policy]) == 3
        for got, want in zip(policy.estimates, expected[policy.policy], strict=True):
            _assert_same(got, want)


ARMS = ("no_offer", "card/gold", "card/silver", "loan", "savings/plus")


def _small_log(rows: int = 80, seed: int = 5) -> pl.DataFrame:
    """A hand-made log: three groups, learnable or not, open rewards, empty eligible lists,
    chosen arms outside the list, an arm seen once, probability vectors over the listed arms."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(rows):
        pool = list(ARMS[:4])
        eligible = [a for a in pool if rng.random() < 0.7]
        if i % 10 == 3:
            eligible = []
        if i == 7:
            eligible = ["savings/plus", "loan"]  # the only row of this arm
        listed = eligible or [pool[int(rng.integers(len(pool)))]]
        weights = rng.dirichlet(np.ones(len(listed)))
        chosen = int(rng.choice(len(listed), p=weights))
        arm = listed[chosen] if i % 13 else "card/gold"  # sometimes an unlisted choice
        probabilities = dict(zip(listed, weights.tolist(), strict=True))
        offer, _, variant = arm.partition("/")
        records.append(
            {
                "decision_id": f"d{i:04d}",
                "group": "bandit" if i % 6 else ("holdout" if i % 12 else "ab"),
                "learnable": bool(i % 9),
                "chosen_offer": None if arm == "no_offer" else offer,
                "chosen_variant": variant or None,
                "propensity": probabilities.get(arm, 0.5) if arm in probabilities else 0.5,
                "probabilities": json.dumps(probabilities, sort_keys=True),
                "eligible": eligible,
                "reward_primary": None if i % 11 == 0 else float(rng.random() < 0.3 + 0.1 * chosen),
                "reward_day7": float(rng.random() < 0.5),
            }
        )
    schema = {
        "decision_id": pl.String,
        "group": pl.String,
        "learnable": pl.Boolean,
        "chosen_offer": pl.String,
        "chosen_variant": pl.String,
        "propensity": pl.Float64,
        "probabilities": pl.String,
        "eligible": pl.List(pl.String),
        "reward_primary": pl.Float64,
        "reward_day7": pl.Float64,
    }
    return pl.DataFrame(records, schema=schema)


def test_policy_values_equal_the_reference_on_the_simulated_log(
    report: LogReport, log: pl.DataFrame
) -> None:
    _assert_matches_reference(report, log)


def test_policy_values_equal_the_reference_on_a_small_frame(tmp_path: Path) -> None:
    log = _small_log()
    assert log["eligible"].list.len().min() == 0
    _assert_matches_reference(evaluate_log(log.lazy()), log)
    path = tmp_path / "small.parquet"
    log.write_parquet(path)
    _assert_matches_reference(evaluate_log(path), log)


def test_policy_values_with_one_learnable_row() -> None:
    log = _small_log().with_columns(learnable=pl.col("decision_id") == "d0001")
    report = evaluate_log(log.lazy())
    _assert_matches_reference(report, log)
    assert all(e.n == 1 for p in report.policies for e in p.estimates)


def test_no_learnable_bandit_row_means_no_policy_values() -> None:
    log = _small_log().with_columns(learnable=pl.lit(False))
    report = evaluate_log(log.lazy())
    assert report.policies == ()
    assert "no learnable bandit decision" in format_report(report)


def test_struct_probabilities_give_the_json_result() -> None:
    log = _small_log()
    struct = log.with_columns(
        pl.col("probabilities").str.json_decode(pl.Struct({a: pl.Float64 for a in ARMS}))
    )
    assert evaluate_log(struct.lazy()).policies == evaluate_log(log.lazy()).policies


@pytest.mark.parametrize("variant", ["chosen_only", "missing_column"])
def test_incomplete_probabilities_keep_uniform_and_degrade_logging(variant: str) -> None:
    """A log that kept only the chosen arm's propensity (as in the Open Bandit Dataset)."""
    log = _small_log()
    if variant == "chosen_only":
        partial = log.with_columns(
            pl.format('{{"{}": {}}}', chosen_arm(), pl.col("propensity")).alias("probabilities")
        )
    else:
        partial = log.drop("probabilities")
    report = evaluate_log(partial.lazy())
    full = evaluate_log(log.lazy())
    uniform, logging = report.policies
    assert uniform == full.policies[0]
    assert uniform.warnings == ()
    assert logging.policy == LOGGING
    assert logging.warnings == (INCOMPLETE_PROBABILITIES,)
    assert [e.name for e in logging.estimates] == ["IPS", "SNIPS"]
    assert logging.estimates == full.policies[1].estimates[:2]
    assert "no DR" in format_report(report)
