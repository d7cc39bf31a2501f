"""Studies: statistics against scipy, the SVG writer, study files, and tiny studies of each kind
(their outputs, the runner's counterfactual columns, and aggregates that do not depend on the
number of worker processes)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats

from bandit_platform.cli import main
from simulators.study import (
    GroupStats,
    StudyError,
    StudyResult,
    StudySpec,
    run_study,
    student_t_interval,
    welch_interval,
)
from simulators.svg import Series, line_chart, nice_ticks
from simulators.world import World

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
STUDIES = ("explorers", "personalisation", "delays", "planning")

#: A tiny world: ~210 decisions over 15 days (three weekly windows, the last one partial).
TINY_RUN = {"customers": 28, "days": 15, "max_decisions": 400, "learn_every_hours": 6.0}
EPSILON = {"kind": "bandit", "explorer": {"kind": "epsilon_greedy", "epsilon": 0.1}}
TINY_ARMS: dict[str, list[dict[str, Any]]] = {
    "explorers": [
        {"label": "epsilon-greedy 0.1", "policy": EPSILON},
        {"label": "uniform", "policy": {"kind": "uniform"}},
    ],
    "personalisation": [
        {"label": "bandit 10/20/70", "traffic": {"holdout": 10, "ab": 20, "bandit": 70}}
    ],
    "delays": [
        {"label": "hourly", "learn_every_hours": 1.0},
        {"label": "weekly, no drift", "learn_every_hours": 168.0, "drift_scale": 0.0},
    ],
    "planning": [
        {
            "label": f"epsilon {epsilon}",
            "traffic": {"holdout": 20, "ab": 0, "bandit": 80},
            "policy": {
                "kind": "bandit",
                "explorer": {"kind": "epsilon_greedy", "epsilon": epsilon},
            },
        }
        for epsilon in (0.05, 0.3)
    ],
}


def tiny_spec(which: str, /, **changes: Any) -> StudySpec:
    document: dict[str, Any] = {
        "name": f"tiny-{which}",
        "kind": which,
        "question": f"Does the tiny {which} study run?",
        "seeds": [1, 2],
        "run": TINY_RUN,
        "arms": TINY_ARMS[which],
        "checkpoints": [50, 200],
        "weeks": [1.0, 2.0],
        "curve_points": 20,
    }
    document.update(changes)
    return StudySpec.from_builtins(document)


# -- statistics -------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "confidence"), [(2, 0.95), (3, 0.9), (25, 0.95), (7, 0.99)])
def test_student_t_interval_matches_scipy(n: int, confidence: float) -> None:
    values = np.random.default_rng(n).normal(3.0, 2.0, size=n).tolist()
    interval = student_t_interval(values, confidence)
    low, high = stats.t.interval(
        confidence, n - 1, loc=float(np.mean(values)), scale=stats.sem(values)
    )
    assert interval.estimate == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert interval.low == pytest.approx(low, rel=1e-12)
    assert interval.high == pytest.approx(high, rel=1e-12)
    assert interval.n == n
    assert interval.df == n - 1


def test_student_t_interval_degenerate_cases() -> None:
    single = student_t_interval([4.2])
    assert (single.estimate, single.low, single.high, single.half_width) == (4.2, None, None, None)
    assert single.covers(4.2) is None
    constant = student_t_interval([1.5, 1.5, 1.5])
    assert constant.low == constant.high == 1.5
    assert constant.covers(1.5) is True
    with pytest.raises(ValueError, match="at least one"):
        student_t_interval([])


@pytest.mark.parametrize(
    ("n_a", "n_b", "sd_a", "sd_b"), [(40, 15, 1.0, 3.0), (200, 900, 0.2, 0.25), (2, 3, 1.0, 0.1)]
)
def test_welch_interval_matches_scipy(n_a: int, n_b: int, sd_a: float, sd_b: float) -> None:
    rng = np.random.default_rng(n_a * 1000 + n_b)
    a = rng.normal(0.3, sd_a, size=n_a)
    b = rng.normal(0.1, sd_b, size=n_b)
    interval = welch_interval(GroupStats.of(a), GroupStats.of(b), 0.95)
    reference = stats.ttest_ind(a, b, equal_var=False)
    low, high = reference.confidence_interval(0.95)
    assert interval.df == pytest.approx(reference.df, rel=1e-10)
    assert interval.estimate == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert interval.low == pytest.approx(low, rel=1e-10)
    assert interval.high == pytest.approx(high, rel=1e-10)


def test_welch_interval_on_binary_rewards_like_the_reports() -> None:
    """Realised rewards are mostly 0 with a few 0.1 / 0.5 / 1: the same formula holds."""
    rng = np.random.default_rng(7)
    a = rng.choice([0.0, 0.1, 0.5, 1.0], p=[0.9, 0.05, 0.03, 0.02], size=700)
    b = rng.choice([0.0, 1.0], p=[0.98, 0.02], size=100)
    interval = welch_interval(GroupStats.of(a), GroupStats.of(b), 0.9)
    low, high = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))


def test_welch_interval_degenerate_cases() -> None:
    one = GroupStats.of(np.asarray([1.0]))
    many = GroupStats.of(np.asarray([0.0, 1.0, 0.0]))
    assert welch_interval(one, many).low is None
    zeros = GroupStats.of(np.zeros(5))
    same = welch_interval(zeros, zeros)
    assert same.low == same.high == 0.0
    empty = GroupStats.of(np.zeros(0))
    assert empty.n == 0
    assert math.isnan(empty.mean)
    assert welch_interval(many, empty).low is None


# -- SVG --------------------------------------------------------------------------------------


def test_svg_line_chart_is_well_formed_xml() -> None:
    svg = line_chart(
        [
            Series(
                "policy <A> & co",
                [0.0, 1.0, 2.0, 3.0],
                [0.0, 1.0, None, 2.5],
                [0.0, 0.5, None, 2.0],
                [0.0, 1.5, None, 3.0],
            ),
            Series("truth", [0.0, 3.0], [1.0, 1.0], dashed=True),
            Series("a single point", [1.5], [float("nan")]),
        ],
        title="Regret & more <test>",
        x_label="decisions",
        y_label="regret",
        subtitle="shaded: 95% interval",
    )
    root = ET.fromstring(svg)
    namespace = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{namespace}svg"
    texts = [element.text or "" for element in root.iter(f"{namespace}text")]
    assert "Regret & more <test>" in texts
    assert {"decisions", "regret", "shaded: 95% interval"} <= set(texts)
    assert "policy <A> & co" in texts  # the legend, escaped in the file and read back
    # The gap splits the first line in two; the dashed truth is one more line.
    polylines = list(root.iter(f"{namespace}polyline"))
    assert len(polylines) == 2
    assert any(p.get("stroke-dasharray") for p in polylines)
    assert len(list(root.iter(f"{namespace}polygon"))) == 1  # the band's finite run


def test_svg_line_chart_refuses_nothing_to_draw() -> None:
    with pytest.raises(ValueError, match="finite point"):
        line_chart([Series("empty", [1.0], [None])], title="t", x_label="x", y_label="y")
    with pytest.raises(ValueError, match="both"):
        Series("half band", [1.0], [1.0], low=[0.5])


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, 97.0), (-3.2, 0.4), (1e-4, 3e-4), (5.0, 5.0), (12_000.0, 100_000.0)]
)
def test_nice_ticks_cover_the_range_with_round_steps(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low
    assert ticks[-1] >= high
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)
    assert 2 <= len(ticks) <= 12


# -- study files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STUDIES)
def test_the_checked_in_study_files_are_valid(name: str) -> None:
    spec = StudySpec.from_toml(EXPERIMENTS / name / "study.toml")
    assert spec.kind == name
    assert len(spec.seeds) >= 2
    first = spec.config(0, spec.seeds[0])
    assert first.seed == spec.seeds[0]
    assert (EXPERIMENTS / name / "study.toml").read_text().startswith("#")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kindd": "explorers"}, "kindd"),
        ({"kind": "nonsense"}, "kind"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"run": {"customers": "many"}}, "run.customers"),
        ({"run": {"seed": 3}}, "run.seed"),
        ({"run": {"custmers": 3}}, "run.custmers"),
        ({"arms": [{"label": "a", "polcy": {}}]}, "arms[0].polcy"),
        ({"arms": [{"label": "a", "policy": {"kind": "greedy"}}]}, "arms[0].policy.kind"),
        ({"arms": [{"label": "a", "policy": {"kind": "bandit", "alpha": 1.0}}]}, "arms[0]"),
        ({"arms": [{"policy": {"kind": "uniform"}}]}, "arms[0].label"),
        ({"arms": [{"label": "a b"}, {"label": "A-B"}]}, "arms[1].label"),
        ({"arms": [{"label": "a", "drift_scale": -1.0}]}, "arms[0].drift_scale"),
        ({"confidence": 1.5}, "confidence"),
    ],
)
def test_invalid_study_files_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(StudyError) as caught:
        tiny_spec("explorers", **change)
    assert str(caught.value).startswith(field), str(caught.value)


def test_scale_multiplies_customers_decisions_and_checkpoints() -> None:
    spec = tiny_spec("explorers", run={**TINY_RUN, "customers": 1000, "max_decisions": 4000})
    config = spec.config(0, 1, scale=0.05)
    assert (config.customers, config.max_decisions, config.days) == (50, 200, TINY_RUN["days"])
    assert spec.scaled_checkpoints(0.5) == (25, 100)


# -- tiny studies -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[StudyResult, Path]]:
    """Each kind's tiny study, run once in-process (workers=1)."""
    results = {}
    for kind in STUDIES:
        directory = tmp_path_factory.mktemp(kind)
        results[kind] = (run_study(tiny_spec(kind), directory, workers=1, progress=None), directory)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("kind", STUDIES)
def test_tiny_study_writes_its_report(tiny: dict[str, tuple[StudyResult, Path]], kind: str) -> None:
    result, directory = tiny[kind]
    report = (directory / "report.md").read_text()
    assert report.startswith(f"# Study `tiny-{kind}` ({kind})")
    assert "Does the tiny" in report
    assert "Student-t interval" in report
    results = json.loads((directory / "results.json").read_text())
    assert results["aggregates"]["kind"] == kind
    assert len(results["runs"]) == len(TINY_ARMS[kind]) * 2
    assert all(run["unclosed_rewards"] == 0 for run in results["runs"])
    for image in (directory).glob("*.svg"):
        ET.parse(image)
        assert f"]({image.name})" in report
    assert (directory / "regret.svg").exists()
    assert (directory / "report.html").exists()
    assert (directory / "plotly.min.js").exists()
    assert len(list((directory / "runs").glob("*/seed-*/truth.parquet"))) == len(result.runs)
    checkpoints = result.aggregates["arms"][0]["regret_at"]
    assert [c["decisions"] for c in checkpoints] == [50, 200]


@pytest.mark.slow
def test_explorers_report_regret_at_checkpoints_and_curves(
    tiny: dict[str, tuple[StudyResult, Path]],
) -> None:
    result, _ = tiny["explorers"]
    for arm, runs in zip(
        result.aggregates["arms"], (result.runs[:2], result.runs[2:]), strict=True
    ):
        at_50 = arm["regret_at"][0]
        assert at_50["n"] == 2
        assert at_50["estimate"] == pytest.approx(np.mean([r.regret_at[0] for r in runs]))
        curve = arm["curve"]
        assert len(curve["decisions"]) == len(curve["mean"]) >= 10
        assert all(b >= a for a, b in zip(curve["mean"], curve["mean"][1:], strict=False))


@pytest.mark.slow
def test_runner_records_the_holdout_and_ab_counterfactuals(
    tiny: dict[str, tuple[StudyResult, Path]],
) -> None:
    """A holdout decision's policy is no offer and an A-B decision's is the uniform A-B arm,
    so there the counterfactual columns equal the policy's own exact expected reward."""
    _, directory = tiny["personalisation"]
    truth = pl.concat(
        [pl.read_parquet(path) for path in sorted(directory.glob("runs/*/seed-*/truth.parquet"))]
    )
    assert set(truth["group"].unique()) == {"holdout", "ab", "bandit"}
    holdout = truth.filter(pl.col("group") == "holdout")
    assert (
        holdout["holdout_expected_reward"] - holdout["policy_expected_reward"]
    ).abs().max() < 1e-12
    ab = truth.filter(pl.col("reason") == "ab_uniform")
    assert ab.height > 0
    assert (ab["ab_expected_reward"] - ab["policy_expected_reward"]).abs().max() < 1e-12
    # The holdout's A-B counterfactual comes from the eligibility rules: offers are there.
    assert (holdout["ab_expected_reward"] != holdout["holdout_expected_reward"]).any()


@pytest.mark.slow
def test_personalisation_compares_measured_and_true_lift(
    tiny: dict[str, tuple[StudyResult, Path]],
) -> None:
    result, directory = tiny["personalisation"]
    whole = result.aggregates["arms"][0]["lift"][-1]
    assert whole["day"] is None
    for name in ("vs_holdout", "vs_ab"):
        for seed in whole[name]["per_seed"]:
            assert seed["true"] is not None
            if seed["low"] is not None:
                assert seed["covers"] == (seed["low"] <= seed["true"] <= seed["high"])
    # The true lift is recomputed here from the truth of the first seed.
    truth = pl.read_parquet(directory / "runs" / "bandit-10-20-70" / "seed-1" / "truth.parquet")
    bandit = truth.filter(pl.col("group") == "bandit")
    expected = float((bandit["policy_expected_reward"] - bandit["holdout_expected_reward"]).mean())
    assert whole["vs_holdout"]["per_seed"][0]["true"] == pytest.approx(expected, rel=1e-12)
    assert "interval covers the truth" in (directory / "report.md").read_text()


@pytest.mark.slow
def test_delays_report_weekly_windows(tiny: dict[str, tuple[StudyResult, Path]]) -> None:
    result, directory = tiny["delays"]
    windows = result.aggregates["arms"][0]["windows"]
    assert [w["window"] for w in windows] == [0, 1, 2]
    assert "days 7 to 14" in (directory / "report.md").read_text()


@pytest.mark.slow
def test_planning_reports_widths_after_each_week(
    tiny: dict[str, tuple[StudyResult, Path]],
) -> None:
    result, directory = tiny["planning"]
    arms = result.aggregates["arms"]
    assert [a["epsilon"] for a in arms] == [0.05, 0.3]
    cuts = [row["day"] for row in arms[0]["lift"]]
    assert cuts == [7.0, 14.0, None]
    report = (directory / "report.md").read_text()
    assert "With epsilon 0.05, after 2 weeks" in report


@pytest.mark.slow
def test_workers_do_not_change_the_aggregates(
    tiny: dict[str, tuple[StudyResult, Path]], tmp_path: Path
) -> None:
    one, _ = tiny["explorers"]
    two = run_study(tiny_spec("explorers"), tmp_path, workers=2, progress=None)
    assert two.aggregates == one.aggregates
    assert json.loads((tmp_path / "results.json").read_text())["aggregates"] == json.loads(
        json.dumps(one.aggregates)
    )


def test_drift_scale_changes_only_the_drift() -> None:
    still = World(200, 4, 90, drift_scale=0.0)
    usual = World(200, 4, 90)
    strong = World(200, 4, 90, drift_scale=3.0)
    ids = usual.population.ids()
    assert np.array_equal(still.latent(ids, 0).needs, usual.latent(ids, 0).needs)
    assert still.visits_on(0) == usual.visits_on(0)
    moved = [
        np.abs(w.latent(ids, 80).needs - w.latent(ids, 0).needs).mean()
        for w in (still, usual, strong)
    ]
    assert moved[0] < moved[1] < moved[2]
    with pytest.raises(ValueError, match="drift_scale"):
        World(10, 1, 5, drift_scale=-0.5)


# -- CLI --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_runs_a_study_into_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "study.toml"
    study.write_text(
        'name = "cli"\nkind = "explorers"\nseeds = [1, 2]\ncheckpoints = [100]\n'
        "[run]\ncustomers = 200\ndays = 20\nmax_decisions = 1000\n"
        '[[arms]]\nlabel = "uniform"\npolicy = { kind = "uniform" }\n'
    )
    out = tmp_path / "out"
    assert main(["study", str(study), "--workers", "1", "--scale", "0.1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "uniform: regret per 1,000 decisions" in captured.out
    assert "[2/2] cli: uniform, seed 2: 100 decisions" in captured.err
    report = (out / "report.md").read_text()
    assert f"`bandit-platform study {study} --workers 1 --scale 0.1 --out {out}`" in report
    assert "0.1 (reduced" in report


def test_cli_names_the_field_of_an_invalid_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study.toml"
    study.write_text(
        'name = "bad"\nkind = "explorers"\nseeds = [1]\n[[arms]]\nlabel = "x"\nday = 3\n'
    )
    assert main(["study", str(study)]) == 2
    assert "arms[0].day: unknown field" in capsys.readouterr().err
    assert main(["study", str(tmp_path / "missing.toml")]) == 2
