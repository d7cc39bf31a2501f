"""`evaluate_log` on a decision log exported by an in-process simulation, and its CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bandit_platform.cli import main
from bandit_platform.domain.config import TrafficSplit
from bandit_platform.evaluation.lift import SufficientStats, absolute_lift
from bandit_platform.evaluation.report import (
    LOGGING,
    UNIFORM,
    LogReport,
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

    def rewards(group: str) -> np.ndarray:
        column = log.filter(pl.col("group") == group)["reward_primary"].drop_nulls()
        return column.to_numpy().astype(np.float64)

    comparisons = {c.control: c for c in primary.comparisons}
    assert set(comparisons) == {"holdout", "ab"}
    for control in ("holdout", "ab"):
        expected = absolute_lift(
            SufficientStats.from_values(rewards("bandit")),
            SufficientStats.from_values(rewards(control)),
        )
        got = comparisons[control].absolute
        assert got.estimate == pytest.approx(expected.estimate, rel=1e-12, abs=1e-15)
        assert got.lower == pytest.approx(expected.lower, rel=1e-9)
        assert got.upper == pytest.approx(expected.upper, rel=1e-9)
        assert got.p_value == pytest.approx(expected.p_value, rel=1e-9)
        assert primary.groups[control].n == rewards(control).size


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
    kept = bandit.head(int(bandit.height * 0.7))
    damaged = pl.concat([log.filter(pl.col("group") != "bandit"), kept])
    result = evaluate_log(damaged.lazy(), traffic=SPLIT)
    assert result.srm is not None
    assert result.srm.flagged
    assert result.group_counts["bandit"] == kept.height


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
