"""Studies: a base run x arms x seeds, run in parallel processes and aggregated across seeds.

A study file (TOML, `experiments/<study>/study.toml`) names a `kind`, a base run (`[run]`:
fields of `simulators.runner.SimulationConfig` but `name` and `seed`), a list of `[[arms]]`
(a `label` plus overrides of those fields: `policy`, `traffic`, `learn_every_hours`,
`drift_scale`...) and a list of `seeds`. `run_study` runs every (arm, seed) with
`run_simulation` in a process of its own (`ProcessPoolExecutor`, spawn), each into
`runs/<arm>/seed-<seed>/`, and keeps only a small summary of each (`RunSummary`). It then
aggregates across seeds, per arm: the mean and a Student-t interval (`student_t_interval`)
of the cumulative regret at each checkpoint, of the true policy value per decision, and of
the kind's own numbers:

* `explorers`: cumulative regret at the checkpoints and the mean regret curve per arm;
* `personalisation`: a run with a holdout / A-B / bandit split; per group the realised
  reward, and the bandit's lift over the holdout and over the A-B group, measured (Welch
  interval, `welch_interval`) next to the true lift from the runner's counterfactual columns
  (`holdout_expected_reward`, `ab_expected_reward`), and whether the interval covers it;
* `delays`: regret per 1,000 decisions in consecutive time windows (weekly), per arm (learning
  cadence, drift), so that adaptation is visible;
* `planning`: per exploration rate, with a fixed holdout: regret per 1,000 bandit decisions
  and the width of the bandit-vs-holdout lift interval after N weeks, beside the true lift.

The aggregates depend only on the study, the seeds and the scale, never on the number of
workers (every run reproduces bit for bit from its seed; summaries are aggregated in the
study's order). `write_outputs` writes `report.md`, `results.json`, SVG charts and
`report.html` (plotly, with `plotly.min.js` beside it).

`scale` multiplies the number of customers, `max_decisions` and the checkpoints (not the
days), so a tiny version of a study keeps its calendar: weeks are still weeks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import re
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import stats  # type: ignore[import-untyped]

from simulators.runner import SimulationConfig, experiment_for, run_simulation
from simulators.svg import PALETTE, Series, write_line_chart

StudyKind = Literal["explorers", "personalisation", "delays", "planning"]
FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY: Final = 86_400.0
#: Fields of `SimulationConfig` a study sets itself (per arm and seed).
_STUDY_FIELDS: Final = frozenset({"name", "seed"})
_SIMULATION_FIELDS: Final = frozenset(SimulationConfig.__struct_fields__)
GROUPS: Final = ("holdout", "ab", "bandit")


class StudyError(ValueError):
    """A study file that is not valid; the message names the field."""


class StudySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A study: what it asks, a base run, its arms and its seeds (one TOML file).

    Attributes:
        name: short name (runs are named `<name>-<arm>-s<seed>`).
        kind: which analysis the report shows (see the module docstring).
        question: what the study asks, in a sentence or two (the report's first line).
        seeds: the seeds every arm runs with (at least 2 for intervals).
        run: fields of `SimulationConfig` shared by every arm (not `name` or `seed`).
        arms: one table per arm: `label` plus the `SimulationConfig` fields it overrides
            (a field given replaces the run's whole value: `policy` is not merged key by key).
        checkpoints: decision counts at which cumulative regret is reported.
        curve_points: about how many points the regret curves are sampled at.
        window_days: width of the time windows of the `delays` analysis, in days.
        weeks: week cuts of the `planning` analysis (decisions made before each cut).
        lift_every_days: spacing, in days, of the lift-over-time chart of `personalisation`.
        confidence: level of every interval.
    """

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_\-]{0,40}$")]
    kind: StudyKind
    question: str = ""
    seeds: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(min_length=1)]
    run: dict[str, Any] = msgspec.field(default_factory=dict)
    arms: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1)]
    checkpoints: list[Annotated[int, msgspec.Meta(ge=1)]] = msgspec.field(default_factory=list)
    curve_points: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 50
    window_days: Annotated[float, msgspec.Meta(gt=0.0)] = 7.0
    weeks: list[Annotated[float, msgspec.Meta(gt=0.0)]] = msgspec.field(
        default_factory=lambda: [1.0, 2.0, 4.0]
    )
    lift_every_days: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    confidence: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.95

    @classmethod
    def from_toml(cls, path: Path) -> StudySpec:
        """Read and validate a study file.

        Raises:
            StudyError: naming the field that is wrong.
        """
        try:
            document = tomllib.loads(path.read_text())
        except OSError as exc:
            raise StudyError(f"{path}: cannot read the study file: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise StudyError(f"{path}: not TOML: {exc}") from exc
        return cls.from_builtins(document)

    @classmethod
    def from_builtins(cls, document: Mapping[str, Any]) -> StudySpec:
        """Validate a decoded study document (see `from_toml`)."""
        try:
            spec = msgspec.convert(document, cls)
        except msgspec.ValidationError as exc:
            raise StudyError(_located(str(exc), "")) from exc
        spec.check()
        return spec

    def check(self) -> None:
        """Check what the schema cannot: seeds, labels and every arm's run configuration.

        Raises:
            StudyError: naming the field that is wrong.
        """
        if len(set(self.seeds)) != len(self.seeds):
            raise StudyError("seeds: a seed appears twice")
        _check_fields(self.run, "run")
        try:
            msgspec.convert({**self.run, "name": self.name, "seed": 0}, SimulationConfig)
        except msgspec.ValidationError as exc:
            raise StudyError(_located(str(exc), "run")) from exc
        labels: set[str] = set()
        for index, arm in enumerate(self.arms):
            where = f"arms[{index}]"
            label = arm.get("label")
            if not isinstance(label, str) or not label.strip():
                raise StudyError(f"{where}.label: every arm needs a non-empty string label")
            if _slug(label) in labels:
                raise StudyError(f"{where}.label: {label!r} is used twice")
            labels.add(_slug(label))
            _check_fields({k: v for k, v in arm.items() if k != "label"}, where)
            try:
                self.config(index, self.seeds[0])
            except msgspec.ValidationError as exc:
                raise StudyError(_located(str(exc), where)) from exc
            except ValueError as exc:
                raise StudyError(f"{where}: {exc}") from exc

    @property
    def labels(self) -> list[str]:
        """The arms' labels, in order."""
        return [str(arm["label"]) for arm in self.arms]

    def config(self, arm: int, seed: int, scale: float = 1.0) -> SimulationConfig:
        """The run of arm number `arm` with `seed`, at `scale` (customers, max_decisions).

        Raises:
            msgspec.ValidationError: an invalid field (located from the run's root).
        """
        overrides = {k: v for k, v in self.arms[arm].items() if k != "label"}
        label = _slug(str(self.arms[arm]["label"]))
        document = {**self.run, **overrides, "name": f"{self.name}-{label}-s{seed}", "seed": seed}
        config = msgspec.convert(document, SimulationConfig)
        customers = max(1, round(config.customers * scale))
        max_decisions = (
            None if config.max_decisions is None else max(1, round(config.max_decisions * scale))
        )
        return msgspec.structs.replace(config, customers=customers, max_decisions=max_decisions)

    def scaled_checkpoints(self, scale: float) -> tuple[int, ...]:
        """The checkpoints at `scale`."""
        return tuple(max(1, round(c * scale)) for c in self.checkpoints)


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "arm"


def _check_fields(table: Mapping[str, Any], where: str) -> None:
    for key in table:
        if key in _STUDY_FIELDS:
            raise StudyError(f"{where}.{key}: set by the study (its name and `seeds`), not here")
        if key not in _SIMULATION_FIELDS:
            known = ", ".join(sorted(_SIMULATION_FIELDS - _STUDY_FIELDS))
            raise StudyError(f"{where}.{key}: unknown field (a run has: {known})")


def _located(message: str, prefix: str) -> str:
    """`Expected int - at $.run.customers` -> `run.customers: Expected int`."""
    match = re.fullmatch(r"(.*) - at `\$(.*)`", message, flags=re.DOTALL)
    # msgspec gives no path for the document's own fields (the root).
    text, path = match.groups() if match is not None else (message, "")
    where = (prefix + path) if prefix else path.lstrip(".")
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", text)
    if unknown is not None:
        where = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        text = "unknown field"
    return f"{where}: {text}" if where else text


# -- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval (bounds None when not computable).

    Attributes:
        estimate: the point estimate (a mean, or a difference of means).
        low: lower bound.
        high: upper bound.
        n: number of observations behind it (seeds, or decisions of both groups).
        df: degrees of freedom of the t quantile used.
    """

    estimate: float
    low: float | None
    high: float | None
    n: int
    df: float | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (None without bounds)."""
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2.0

    def covers(self, value: float | None) -> bool | None:
        """Whether `value` lies in the interval (None when either is missing)."""
        if value is None or self.low is None or self.high is None:
            return None
        return self.low <= value <= self.high

    def to_json(self) -> dict[str, Any]:
        """The interval as JSON-ready numbers."""
        return {
            "estimate": _json_float(self.estimate),
            "low": _json_float(self.low),
            "high": _json_float(self.high),
            "half_width": _json_float(self.half_width),
            "n": self.n,
            "df": _json_float(self.df),
        }


def student_t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of `values` with the Student-t interval `mean +- t_{(1+c)/2, n-1} s / sqrt(n)`.

    `s` is the sample standard deviation (n - 1 in the denominator). One value gives no
    bounds; identical values give a zero-width interval.

    Raises:
        ValueError: for no values.
    """
    if not values:
        raise ValueError("student_t_interval needs at least one value")
    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    mean = float(data.mean())
    if n < 2:
        return Interval(mean, None, None, n)
    standard_error = float(data.std(ddof=1)) / math.sqrt(n)
    quantile = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
    return Interval(
        mean, mean - quantile * standard_error, mean + quantile * standard_error, n, n - 1.0
    )


@dataclass(frozen=True)
class GroupStats:
    """Sufficient statistics of one group's values: count, mean and sample variance (n - 1)."""

    n: int
    mean: float
    variance: float

    @classmethod
    def of(cls, values: FloatArray) -> GroupStats:
        """The statistics of `values` (variance 0 for fewer than two values)."""
        n = int(values.size)
        if n == 0:
            return cls(0, math.nan, math.nan)
        return cls(n, float(values.mean()), float(values.var(ddof=1)) if n > 1 else 0.0)


def welch_interval(a: GroupStats, b: GroupStats, confidence: float = 0.95) -> Interval:
    """Difference of means `a - b` with Welch's interval (unequal variances).

    `se = sqrt(v_a / n_a + v_b / n_b)`; the degrees of freedom are Welch-Satterthwaite's
    `df = se^4 / ((v_a / n_a)^2 / (n_a - 1) + (v_b / n_b)^2 / (n_b - 1))`; the interval is
    `(m_a - m_b) +- t_{(1+c)/2, df} se`. No bounds when a group has fewer than two values;
    a zero-width interval when both variances are 0. Computed from sufficient statistics, so
    the same numbers come from raw values or from a database's aggregates.
    """
    estimate = a.mean - b.mean
    n = a.n + b.n
    if a.n < 2 or b.n < 2:
        return Interval(estimate, None, None, n)
    term_a, term_b = a.variance / a.n, b.variance / b.n
    se2 = term_a + term_b
    if se2 <= 0.0:
        return Interval(estimate, estimate, estimate, n)
    df = se2**2 / (term_a**2 / (a.n - 1) + term_b**2 / (b.n - 1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, df)) * math.sqrt(se2)
    return Interval(estimate, estimate - half, estimate + half, n, df)


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# -- one run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowStats:
    """Decisions of one time window `[index w, (index + 1) w)` of a run."""

    index: int
    n: int
    regret: float
    policy_value: float
    oracle_value: float


@dataclass(frozen=True)
class CutStats:
    """What was known from the decisions made before `day` (with their realised rewards).

    Attributes:
        day: the cut, in days since the start (inf: the whole run).
        realised: per group, the realised reward of its decisions (closed rewards only).
        true_value: per group, the mean exact expected reward of its decisions' policy.
        true_lift_holdout: mean over bandit decisions of policy minus holdout expected reward.
        true_lift_ab: mean over bandit decisions of policy minus A-B expected reward.
        bandit_decisions: bandit-group decisions before the cut.
        bandit_regret: their summed regret.
    """

    day: float
    realised: dict[str, GroupStats]
    true_value: dict[str, float]
    true_lift_holdout: float | None
    true_lift_ab: float | None
    bandit_decisions: int
    bandit_regret: float


@dataclass(frozen=True)
class RunSummary:
    """The small, picklable result of one (arm, seed) run that the study aggregates."""

    arm: int
    label: str
    seed: int
    decisions: int
    outcomes: int
    seconds: float
    policy_value: float
    oracle_value: float
    realised_reward: float
    regret: float
    fallbacks: int
    unclosed_rewards: int
    regret_at: tuple[float | None, ...]
    curve_step: int
    curve: tuple[float, ...]
    windows: tuple[WindowStats, ...]
    cuts: tuple[CutStats, ...]
    overall: CutStats


@dataclass(frozen=True)
class Job:
    """One (arm, seed) run of a study, as sent to a worker process."""

    arm: int
    label: str
    seed: int
    config: SimulationConfig
    directory: Path
    checkpoints: tuple[int, ...]
    curve_step: int
    window_seconds: float
    cut_days: tuple[float, ...]


def run_job(job: Job) -> RunSummary:
    """Run one job with `run_simulation` and summarise it (in a worker process)."""
    started = time.perf_counter()
    result = run_simulation(job.config, job.directory)
    horizon = experiment_for(job.config).reward.learning_horizon()
    ledger = pl.read_parquet(result.directory / f"{experiment_for(job.config).key}.parquet")
    column = f"reward_{horizon.name}"
    truth = result.truth.join(
        ledger.select("decision_id", pl.col(column).alias("realised")),
        on="decision_id",
        how="left",
        maintain_order="left",
    )
    summary = summarise(job, truth, result.outcomes, result.realised_reward)
    return dataclasses.replace(summary, seconds=time.perf_counter() - started)


def summarise(job: Job, truth: pl.DataFrame, outcomes: int, realised_reward: float) -> RunSummary:
    """Reduce a run's truth (with a `realised` reward column) to its `RunSummary`."""
    n = truth.height
    regret = truth["regret"].to_numpy().astype(np.float64)
    cumulative = np.cumsum(regret)
    seconds = truth["time_seconds"].to_numpy().astype(np.float64)
    policy = truth["policy_expected_reward"].to_numpy().astype(np.float64)
    oracle = truth["oracle_expected_reward"].to_numpy().astype(np.float64)
    regret_at = tuple(float(cumulative[c - 1]) if c <= n else None for c in job.checkpoints)
    step = max(job.curve_step, 1)
    curve = tuple(float(cumulative[i - 1]) for i in range(step, n + 1, step))
    windows = []
    if n:
        index = np.floor(seconds / job.window_seconds).astype(np.int64)
        for w in range(int(index.max()) + 1):
            mask = index == w
            count = int(mask.sum())
            if count:
                windows.append(
                    WindowStats(
                        w,
                        count,
                        float(regret[mask].sum()),
                        float(policy[mask].sum()),
                        float(oracle[mask].sum()),
                    )
                )
    cuts = tuple(_cut(truth, day) for day in job.cut_days)
    reasons = truth["reason"].to_list() if n else []
    return RunSummary(
        arm=job.arm,
        label=job.label,
        seed=job.seed,
        decisions=n,
        outcomes=outcomes,
        seconds=0.0,
        policy_value=float(policy.mean()) if n else math.nan,
        oracle_value=float(oracle.mean()) if n else math.nan,
        realised_reward=realised_reward,
        regret=float(regret.sum()),
        fallbacks=sum(1 for r in reasons if r == "model_fallback"),
        unclosed_rewards=int(truth["realised"].null_count()) if n else 0,
        regret_at=regret_at,
        curve_step=step,
        curve=curve,
        windows=tuple(windows),
        cuts=cuts,
        overall=_cut(truth, math.inf),
    )


def _cut(truth: pl.DataFrame, day: float) -> CutStats:
    before = truth.filter(pl.col("time_seconds") < day * SECONDS_PER_DAY) if truth.height else truth
    realised: dict[str, GroupStats] = {}
    true_value: dict[str, float] = {}
    for group in GROUPS:
        rows = before.filter(pl.col("group") == group) if before.height else before
        rewards = (
            rows["realised"].drop_nulls().to_numpy().astype(np.float64)
            if rows.height
            else np.zeros(0)
        )
        realised[group] = GroupStats.of(rewards)
        true_value[group] = (
            float(rows["policy_expected_reward"].to_numpy().mean()) if rows.height else math.nan
        )
    bandit = before.filter(pl.col("group") == "bandit") if before.height else before
    lift_holdout = lift_ab = None
    if bandit.height:
        policy = bandit["policy_expected_reward"].to_numpy().astype(np.float64)
        lift_holdout = float(
            (policy - bandit["holdout_expected_reward"].to_numpy().astype(np.float64)).mean()
        )
        lift_ab = float(
            (policy - bandit["ab_expected_reward"].to_numpy().astype(np.float64)).mean()
        )
    return CutStats(
        day=day,
        realised=realised,
        true_value=true_value,
        true_lift_holdout=lift_holdout,
        true_lift_ab=lift_ab,
        bandit_decisions=bandit.height,
        bandit_regret=float(bandit["regret"].to_numpy().sum()) if bandit.height else 0.0,
    )


# -- the study --------------------------------------------------------------------------------


#: Visits per customer and day, roughly, to size regret curves when a run has no
#: `max_decisions` (the curve's step only needs to be about right).
_VISITS_PER_CUSTOMER_DAY: Final = 0.5


def jobs_for(spec: StudySpec, directory: Path, scale: float = 1.0) -> list[Job]:
    """Every (arm, seed) run of the study, in the study's order, at `scale`."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError("scale must be a positive number")
    checkpoints = spec.scaled_checkpoints(scale)
    jobs = []
    for arm, label in enumerate(spec.labels):
        for seed in spec.seeds:
            config = spec.config(arm, seed, scale)
            expected = config.max_decisions or max(
                1, round(config.customers * config.days * _VISITS_PER_CUSTOMER_DAY)
            )
            if spec.kind == "personalisation":
                count = int(config.days / spec.lift_every_days + 1e-9)
                cut_days = tuple(spec.lift_every_days * (i + 1) for i in range(count))
            elif spec.kind == "planning":
                cut_days = tuple(7.0 * week for week in spec.weeks)
            else:
                cut_days = ()
            jobs.append(
                Job(
                    arm=arm,
                    label=label,
                    seed=seed,
                    config=config,
                    directory=directory / "runs" / _slug(label) / f"seed-{seed}",
                    checkpoints=checkpoints,
                    curve_step=max(1, expected // spec.curve_points),
                    window_seconds=spec.window_days * SECONDS_PER_DAY,
                    cut_days=cut_days,
                )
            )
    return jobs


@dataclass
class StudyResult:
    """A finished study: its runs' summaries (in the study's order) and the aggregates."""

    spec: StudySpec
    scale: float
    workers: int
    runs: list[RunSummary]
    aggregates: dict[str, Any]
    started: datetime
    seconds: float
    command: str = ""
    files: list[Path] = field(default_factory=list)


def _print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_study(
    study: StudySpec,
    directory: Path,
    workers: int = 2,
    scale: float = 1.0,
    *,
    progress: Callable[[str], None] | None = _print_progress,
    command: str | None = None,
) -> StudyResult:
    """Run every (arm, seed) of `study` into `directory/runs/`, aggregate, write the outputs.

    With `workers` > 1 the runs go to that many spawned processes; each returns only its
    `RunSummary`. One line per finished run goes to `progress` (stderr by default). The
    aggregates are the same whatever `workers` is. Writes `report.md`, `results.json`, the
    SVG charts and `report.html` into `directory` (see `write_outputs`).

    Raises:
        ValueError: for workers < 1 or a non-positive scale.
        Exception: whatever a run raised (the other runs are cancelled).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(study, directory, scale)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    done: dict[tuple[int, int], RunSummary] = {}

    def finished(summary: RunSummary) -> None:
        done[(summary.arm, summary.seed)] = summary
        if progress is not None:
            rate = summary.decisions / summary.seconds if summary.seconds > 0 else 0.0
            progress(
                f"[{len(done)}/{len(jobs)}] {study.name}: {summary.label}, seed {summary.seed}: "
                f"{summary.decisions} decisions in {summary.seconds:.1f} s ({rate:.0f}/s); "
                f"elapsed {time.perf_counter() - clock:.0f} s"
            )

    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            finished(run_job(job))
    else:
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context)
        try:
            pending: set[Future[RunSummary]] = {pool.submit(run_job, job) for job in jobs}
            while pending:
                complete, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in complete:
                    finished(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    runs = [done[(job.arm, job.seed)] for job in jobs]
    result = StudyResult(
        spec=study,
        scale=scale,
        workers=workers,
        runs=runs,
        aggregates=aggregate(study, runs, scale),
        started=started,
        seconds=time.perf_counter() - clock,
        command=command or _default_command(study, directory, workers, scale),
    )
    result.files = write_outputs(result, directory)
    return result


def _default_command(study: StudySpec, directory: Path, workers: int, scale: float) -> str:
    scaled = "" if scale == 1.0 else f" --scale {scale:g}"
    return f"bandit-platform study {directory / 'study.toml'} --workers {workers}{scaled}"


# -- aggregation ------------------------------------------------------------------------------


def aggregate(spec: StudySpec, runs: Sequence[RunSummary], scale: float = 1.0) -> dict[str, Any]:
    """Per arm, across seeds: means and Student-t intervals, plus the kind's analysis.

    Deterministic: depends only on the runs' contents and the study's order (not on wall
    times or on which process ran what).
    """
    confidence = spec.confidence
    arms = []
    for arm, label in enumerate(spec.labels):
        mine = [r for r in runs if r.arm == arm]
        if not mine:
            continue
        entry: dict[str, Any] = {
            "label": label,
            "overrides": {k: v for k, v in spec.arms[arm].items() if k != "label"},
            "seeds": [r.seed for r in mine],
            "decisions": student_t_interval([r.decisions for r in mine], confidence).to_json(),
            "policy_value": _over_seeds([r.policy_value for r in mine], confidence),
            "oracle_value": _over_seeds([r.oracle_value for r in mine], confidence),
            "realised_reward": _over_seeds([r.realised_reward for r in mine], confidence),
            "regret_per_1000": _over_seeds(
                [1000.0 * r.regret / r.decisions for r in mine if r.decisions], confidence
            ),
            "regret_at": [
                {
                    "decisions": checkpoint,
                    **_over_seeds(
                        [v for r in mine if (v := r.regret_at[i]) is not None], confidence
                    ),
                }
                for i, checkpoint in enumerate(spec.scaled_checkpoints(scale))
            ],
            "curve": _curve(mine, confidence),
            "fallbacks": sum(r.fallbacks for r in mine),
            "unclosed_rewards": sum(r.unclosed_rewards for r in mine),
        }
        if spec.kind == "delays":
            entry["windows"] = _windows(mine, spec.window_days, confidence)
        if spec.kind in ("personalisation", "planning"):
            entry["lift"] = _lifts(mine, confidence)
            entry["per_seed_overall"] = [_lift_block(r.overall, confidence) for r in mine]
        if spec.kind == "planning":
            explorer = _explorer(spec.config(arm, spec.seeds[0]).policy.explorer)
            entry["epsilon"] = explorer
        arms.append(entry)
    return {
        "study": spec.name,
        "kind": spec.kind,
        "scale": scale,
        "seeds": list(spec.seeds),
        "confidence": confidence,
        "checkpoints": list(spec.scaled_checkpoints(scale)),
        "arms": arms,
    }


def _explorer(explorer: Mapping[str, Any]) -> float | None:
    value = explorer.get("epsilon")
    return float(value) if isinstance(value, int | float) else None


def _over_seeds(values: Sequence[float], confidence: float) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return Interval(math.nan, None, None, 0).to_json()
    return student_t_interval(finite, confidence).to_json()


def _curve(runs: Sequence[RunSummary], confidence: float) -> dict[str, Any]:
    length = min(len(r.curve) for r in runs)
    step = runs[0].curve_step
    mean: list[float | None] = []
    low: list[float | None] = []
    high: list[float | None] = []
    for i in range(length):
        interval = student_t_interval([r.curve[i] for r in runs], confidence)
        mean.append(_json_float(interval.estimate))
        low.append(_json_float(interval.low))
        high.append(_json_float(interval.high))
    return {
        "decisions": [step * (i + 1) for i in range(length)],
        "mean": mean,
        "low": low,
        "high": high,
    }


def _windows(runs: Sequence[RunSummary], window_days: float, confidence: float) -> list[Any]:
    common = set.intersection(*({w.index for w in r.windows} for r in runs))
    rows = []
    for index in sorted(common):
        per_seed = [next(w for w in r.windows if w.index == index) for r in runs]
        rows.append(
            {
                "window": index,
                "start_day": index * window_days,
                "end_day": (index + 1) * window_days,
                "decisions": float(np.mean([w.n for w in per_seed])),
                "regret_per_1000": _over_seeds(
                    [1000.0 * w.regret / w.n for w in per_seed], confidence
                ),
                "policy_value": _over_seeds([w.policy_value / w.n for w in per_seed], confidence),
                "oracle_value": _over_seeds([w.oracle_value / w.n for w in per_seed], confidence),
            }
        )
    return rows


def _lift_block(cut: CutStats, confidence: float) -> dict[str, Any]:
    """One run's lifts at one cut: measured (Welch) beside the truth, and coverage."""
    bandit = cut.realised["bandit"]
    block: dict[str, Any] = {
        "day": _json_float(cut.day),
        "groups": {
            g: {
                "n": s.n,
                "realised_mean": _json_float(s.mean),
                "realised_variance": _json_float(s.variance),
                "true_value": _json_float(cut.true_value[g]),
            }
            for g, s in cut.realised.items()
        },
        "bandit_decisions": cut.bandit_decisions,
        "bandit_regret_per_1000": (
            1000.0 * cut.bandit_regret / cut.bandit_decisions if cut.bandit_decisions else None
        ),
    }
    for name, other, truth in (
        ("vs_holdout", cut.realised["holdout"], cut.true_lift_holdout),
        ("vs_ab", cut.realised["ab"], cut.true_lift_ab),
    ):
        interval = welch_interval(bandit, other, confidence)
        block[name] = {
            **interval.to_json(),
            "true": _json_float(truth),
            "covers": interval.covers(truth),
        }
    return block


def _lifts(runs: Sequence[RunSummary], confidence: float) -> list[dict[str, Any]]:
    """Per cut (and the whole run), across seeds: measured lifts, truth, widths, coverage."""
    rows = []
    cut_count = min(len(r.cuts) for r in runs)
    for position in [*range(cut_count), None]:
        cuts = [r.overall if position is None else r.cuts[position] for r in runs]
        blocks = [_lift_block(c, confidence) for c in cuts]
        row: dict[str, Any] = {
            "day": None if position is None else cuts[0].day,
            "bandit_decisions": float(np.mean([c.bandit_decisions for c in cuts])),
            "holdout_decisions": float(np.mean([c.realised["holdout"].n for c in cuts])),
            "ab_decisions": float(np.mean([c.realised["ab"].n for c in cuts])),
            "bandit_regret_per_1000": _over_seeds(
                [
                    b["bandit_regret_per_1000"]
                    for b in blocks
                    if b["bandit_regret_per_1000"] is not None
                ],
                confidence,
            ),
        }
        for name in ("vs_holdout", "vs_ab"):
            measured = [b[name]["estimate"] for b in blocks if b[name]["estimate"] is not None]
            truths = [b[name]["true"] for b in blocks if b[name]["true"] is not None]
            widths = [b[name]["half_width"] for b in blocks if b[name]["half_width"] is not None]
            covered = [b[name]["covers"] for b in blocks if b[name]["covers"] is not None]
            row[name] = {
                "measured": _over_seeds(measured, confidence),
                "true": _json_float(float(np.mean(truths))) if truths else None,
                "half_width_mean": _json_float(float(np.mean(widths))) if widths else None,
                "covered": sum(1 for c in covered if c),
                "intervals": len(covered),
                "per_seed": [
                    {"seed": r.seed, **b[name]} for r, b in zip(runs, blocks, strict=True)
                ],
            }
        rows.append(row)
    return rows


# -- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """A line chart of a report: written as `<name>.svg` and drawn again in `report.html`."""

    name: str
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    subtitle: str = ""


def level_of(spec: StudySpec) -> str:
    """The confidence level as a percentage, e.g. `95%`."""
    return f"{round(spec.confidence * 100)}%"


def _band(values: Sequence[Any]) -> list[float | None]:
    return [None if v is None else float(v) for v in values]


def charts(spec: StudySpec, aggregates: Mapping[str, Any]) -> list[Chart]:
    """The study's charts, from its aggregates."""
    arms = aggregates["arms"]
    seeds = len(spec.seeds)
    band = f"{level_of(spec)} t interval over {seeds} seeds" if seeds > 1 else ""
    regret = Chart(
        "regret",
        "Cumulative regret against the oracle (mean over seeds)",
        "decisions",
        "cumulative regret (reward)",
        [
            Series(
                a["label"],
                a["curve"]["decisions"],
                _band(a["curve"]["mean"]),
                _band(a["curve"]["low"]) if seeds > 1 else None,
                _band(a["curve"]["high"]) if seeds > 1 else None,
            )
            for a in arms
        ],
        f"shaded: {band}" if band else "",
    )
    result = [regret]
    if spec.kind == "delays":
        result.append(
            Chart(
                "windows",
                f"Regret per 1,000 decisions, per {spec.window_days:g}-day window",
                "day of the run (window start)",
                "regret per 1,000 decisions",
                [
                    Series(
                        a["label"],
                        [w["start_day"] for w in a["windows"]],
                        _band([w["regret_per_1000"]["estimate"] for w in a["windows"]]),
                    )
                    for a in arms
                ],
            )
        )
    if spec.kind == "personalisation":
        for a in arms:
            cuts = [row for row in a["lift"] if row["day"] is not None]
            first = [
                (row["day"], row["vs_holdout"]["per_seed"][0], row["vs_ab"]["per_seed"][0])
                for row in cuts
            ]
            days = [d for d, _, _ in first]

            def points(values: Sequence[float | None]) -> list[float | None]:
                return [None if v is None else 100.0 * v for v in values]

            result.append(
                Chart(
                    f"lift-{_slug(a['label'])}",
                    f"{a['label']}: lift of the bandit group, seed {spec.seeds[0]}, by day",
                    "day of the run (decisions made before it)",
                    "lift (points: 100 x reward per decision)",
                    [
                        Series(
                            "measured vs holdout",
                            days,
                            points([h["estimate"] for _, h, _ in first]),
                            points([h["low"] for _, h, _ in first]),
                            points([h["high"] for _, h, _ in first]),
                        ),
                        Series(
                            "true vs holdout",
                            days,
                            points([h["true"] for _, h, _ in first]),
                            dashed=True,
                        ),
                        Series(
                            "measured vs A-B",
                            days,
                            points([b["estimate"] for _, _, b in first]),
                            points([b["low"] for _, _, b in first]),
                            points([b["high"] for _, _, b in first]),
                        ),
                        Series(
                            "true vs A-B",
                            days,
                            points([b["true"] for _, _, b in first]),
                            dashed=True,
                        ),
                    ],
                    f"shaded: {level_of(spec)} Welch interval; dashed: the true lift",
                )
            )
    if spec.kind == "planning":
        result.append(
            Chart(
                "lift-width",
                "Half-width of the lift interval (bandit vs holdout) after N weeks",
                "weeks of decisions",
                "half-width (points), mean over seeds",
                [
                    Series(
                        a["label"],
                        [row["day"] / 7.0 for row in a["lift"] if row["day"] is not None],
                        [
                            None
                            if row["vs_holdout"]["half_width_mean"] is None
                            else 100.0 * row["vs_holdout"]["half_width_mean"]
                            for row in a["lift"]
                            if row["day"] is not None
                        ],
                    )
                    for a in arms
                ],
                "decisions made before the cut, with their realised rewards",
            )
        )
        with_epsilon = sorted(
            (a for a in arms if a.get("epsilon") is not None), key=lambda a: a["epsilon"]
        )
        if len(with_epsilon) > 1:
            regrets = [a["lift"][-1]["bandit_regret_per_1000"] for a in with_epsilon]
            result.append(
                Chart(
                    "regret-by-epsilon",
                    "Regret per 1,000 bandit decisions by exploration rate (whole run)",
                    "epsilon",
                    "regret per 1,000 bandit decisions",
                    [
                        Series(
                            "epsilon-greedy",
                            [a["epsilon"] for a in with_epsilon],
                            _band([r["estimate"] for r in regrets]),
                            _band([r["low"] for r in regrets]) if seeds > 1 else None,
                            _band([r["high"] for r in regrets]) if seeds > 1 else None,
                        )
                    ],
                    f"shaded: {band}" if band else "",
                )
            )
    return result


def write_outputs(result: StudyResult, directory: Path) -> list[Path]:
    """Write `report.md`, `results.json`, `<chart>.svg` and `report.html` (+ plotly.min.js)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    drawn = []
    for chart in charts(result.spec, result.aggregates):
        if not any(y is not None and math.isfinite(y) for s in chart.series for y in s.y):
            continue
        path = write_line_chart(
            directory / f"{chart.name}.svg",
            chart.series,
            title=chart.title,
            x_label=chart.x_label,
            y_label=chart.y_label,
            subtitle=chart.subtitle,
        )
        files.append(path)
        drawn.append(chart)
    results = {
        "command": result.command,
        "date": result.started.date().isoformat(),
        "scale": result.scale,
        "workers": result.workers,
        "wall_seconds": round(result.seconds, 1),
        "aggregates": result.aggregates,
        "runs": [
            {
                "arm": r.label,
                "seed": r.seed,
                "decisions": r.decisions,
                "outcomes": r.outcomes,
                "seconds": round(r.seconds, 1),
                "true_policy_value_per_decision": r.policy_value,
                "oracle_value_per_decision": r.oracle_value,
                "realised_reward_per_decision": r.realised_reward,
                "cumulative_regret": r.regret,
                "model_fallbacks": r.fallbacks,
                "unclosed_rewards": r.unclosed_rewards,
            }
            for r in result.runs
        ],
    }
    json_path = directory / "results.json"
    json_path.write_text(json.dumps(_clean(results), indent=2, allow_nan=False) + "\n")
    files.append(json_path)
    report = directory / "report.md"
    report.write_text(markdown(result, drawn))
    files.append(report)
    files.append(_write_html(result, drawn, directory / "report.html"))
    return files


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _write_html(result: StudyResult, drawn: Sequence[Chart], path: Path) -> Path:
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    bodies = []
    for index, chart in enumerate(drawn):
        figure = go.Figure()
        for number, one in enumerate(chart.series):
            colour = PALETTE[number % len(PALETTE)]
            if one.low is not None and one.high is not None:
                pairs = [
                    (x, lo, hi)
                    for x, lo, hi in zip(one.x, one.low, one.high, strict=True)
                    if lo is not None and hi is not None
                ]
                figure.add_trace(
                    go.Scatter(
                        x=[p[0] for p in pairs] + [p[0] for p in reversed(pairs)],
                        y=[p[2] for p in pairs] + [p[1] for p in reversed(pairs)],
                        fill="toself",
                        fillcolor=colour,
                        opacity=0.15,
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                    )
                )
            figure.add_trace(
                go.Scatter(
                    x=list(one.x),
                    y=list(one.y),
                    name=one.label,
                    mode="lines+markers" if len(one.x) < 30 else "lines",
                    line={"color": colour, "dash": "dash" if one.dashed else "solid"},
                )
            )
        figure.update_layout(
            title=chart.title, xaxis_title=chart.x_label, yaxis_title=chart.y_label, height=480
        )
        bodies.append(
            figure.to_html(full_html=False, include_plotlyjs="directory" if index == 0 else False)
        )
    plotly_js = path.parent / "plotly.min.js"
    if not plotly_js.exists():
        plotly_js.write_text(get_plotlyjs())
    name = result.spec.name
    path.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Study {name}</title></head><body>"
        f"<h1>Study {name} ({result.spec.kind})</h1>"
        f"<p>{_html(result.spec.question)}</p>"
        f"<p><code>{_html(result.command)}</code>, {result.started.date().isoformat()}; "
        "tables in report.md</p>"
        + "".join(bodies)
        + "<script type='application/json' id='aggregates'>"
        + json.dumps(_clean(result.aggregates)).replace("</", "<\\/")
        + "</script></body></html>\n"
    )
    return path


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _pm(block: Mapping[str, Any] | None, digits: int = 1, factor: float = 1.0) -> str:
    """`estimate ± half-width` (or the estimate alone, or n/a)."""
    if block is None or block.get("estimate") is None:
        return "n/a"
    estimate = block["estimate"] * factor
    half = block.get("half_width")
    if half is None:
        return f"{estimate:,.{digits}f}"
    return f"{estimate:,.{digits}f} ± {half * factor:,.{digits}f}"


def _number(value: float | None, digits: int = 1, factor: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * factor:,.{digits}f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(result: StudyResult, drawn: Sequence[Chart]) -> str:
    """The study's `report.md`: what it asks, how it was run, tables with intervals, charts."""
    spec, aggregates = result.spec, result.aggregates
    arms = aggregates["arms"]
    level = f"{round(spec.confidence * 100)}%"
    seeds = len(spec.seeds)
    counts = [r.decisions for r in result.runs]
    decisions = (
        f"{min(counts):,} to {max(counts):,}" if min(counts) != max(counts) else f"{counts[0]:,}"
    )
    scale_note = (
        "1 (full size)"
        if result.scale == 1.0
        else f"{result.scale:g} (reduced: customers, decisions and checkpoints x {result.scale:g})"
    )
    lines = [
        f"# Study `{spec.name}` ({spec.kind})",
        "",
        *([f"> {spec.question.strip()}", ""] if spec.question.strip() else []),
        *_table(
            ["", ""],
            [
                ["command", f"`{result.command}`"],
                ["date", result.started.date().isoformat()],
                ["scale", scale_note],
                ["seeds", ", ".join(str(s) for s in spec.seeds)],
                [
                    "runs",
                    f"{len(result.runs)} ({_plural(len(arms), 'arm')} x "
                    f"{_plural(seeds, 'seed')}), {result.seconds / 60:.1f} min with "
                    f"{_plural(result.workers, 'worker')}",
                ],
                ["decisions per run", decisions],
            ],
        ),
        "",
        f"Unless said otherwise a number is the mean over the {seeds} seeds ± the half-width of "
        f"its {level} Student-t interval (t with {_plural(seeds - 1, 'degree')} of freedom, so few "
        "seeds give wide intervals). Rewards are the demo experiment's: a conversion 1, an "
        "application 0.5, a click 0.1 (the largest event within 7 days). Regret is the exact "
        "expected reward lost against the best eligible arm (the oracle), from the simulator's "
        "ground truth.",
        "",
    ]
    section = {
        "explorers": _explorers_section,
        "personalisation": _personalisation_section,
        "delays": _delays_section,
        "planning": _planning_section,
    }[spec.kind]
    lines += section(spec, aggregates, level)
    lines += [
        "",
        "## Every arm: headline numbers",
        "",
        *_table(
            [
                "arm",
                "decisions per run",
                "true value per decision",
                "oracle value per decision",
                "realised reward per decision",
                "regret per 1,000 decisions",
            ],
            [
                [
                    a["label"],
                    f"{a['decisions']['estimate']:,.0f}",
                    _pm(a["policy_value"], 4),
                    _pm(a["oracle_value"], 4),
                    _pm(a["realised_reward"], 4),
                    _pm(a["regret_per_1000"], 1),
                ]
                for a in arms
            ],
        ),
        "",
        "True value is the exact expected reward of the policy's probability vector per "
        "decision; realised reward is what the platform's reward ledger recorded (the "
        "difference is sampling noise).",
        "",
    ]
    fallbacks = sum(a["fallbacks"] for a in arms)
    unclosed = sum(a["unclosed_rewards"] for a in arms)
    if fallbacks or unclosed:
        lines += [
            f"**Warnings:** {fallbacks} model fallback decision(s) (a prediction slower than "
            "the experiment's `model_deadline_ms`, measured on the wall clock: such runs are "
            f"not exactly reproducible); {unclosed} decision(s) without a closed reward.",
            "",
        ]
    if drawn:
        lines += ["## Charts", ""]
        lines += [f"![{chart.title}]({chart.name}.svg)\n" for chart in drawn]
        lines += [
            "Interactive versions: `report.html` beside this file (not committed; the command "
            "above writes it). Aggregates: `results.json`.",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _explorers_section(spec: StudySpec, aggregates: Mapping[str, Any], level: str) -> list[str]:
    arms = aggregates["arms"]
    checkpoints = aggregates["checkpoints"]
    header = ["arm", *[f"regret at {c:,} decisions" for c in checkpoints]]
    rows = []
    for a in arms:
        cells = [a["label"]]
        for block in a["regret_at"]:
            cell = _pm(block, 0)
            if block["n"] < len(a["seeds"]):
                cell += f" ({block['n']} of {len(a['seeds'])} seeds reached it)"
            cells.append(cell)
        rows.append(cells)
    return [
        "## Cumulative regret per explorer",
        "",
        *_table(header, rows),
        "",
        "Cumulative regret at each checkpoint: the expected reward the policy gave up against "
        "the oracle over its first N decisions (lower is better). Every run starts with an "
        "empty model and learns only after rewards close (7 days after each decision), so "
        "the first checkpoint mostly measures cold-start exploration and the last one how "
        "fast each policy learned. Arms whose intervals do not overlap differ by more than "
        "seed-to-seed noise.",
    ]


def _personalisation_section(
    spec: StudySpec, aggregates: Mapping[str, Any], level: str
) -> list[str]:
    lines = ["## Realised reward per group and the bandit's lift", ""]
    for a in aggregates["arms"]:
        overall = a["per_seed_overall"]
        group_rows = []
        for group, name in (("holdout", "holdout"), ("ab", "A-B (uniform)"), ("bandit", "bandit")):
            realised = [s["groups"][group]["realised_mean"] for s in overall]
            truths = [s["groups"][group]["true_value"] for s in overall]
            counts = [s["groups"][group]["n"] for s in overall]
            finite = [v for v in realised if v is not None]
            group_rows.append(
                [
                    name,
                    f"{np.mean(counts):,.0f}",
                    _pm(_over_seeds(finite, spec.confidence), 4) if finite else "n/a",
                    _number(
                        float(np.mean([t for t in truths if t is not None]))
                        if any(t is not None for t in truths)
                        else None,
                        4,
                    ),
                ]
            )
        whole = a["lift"][-1]
        lift_rows = []
        for name, label in (("vs_holdout", "bandit - holdout"), ("vs_ab", "bandit - A-B")):
            for seed in whole[name]["per_seed"]:
                interval = (
                    "n/a"
                    if seed["low"] is None
                    else f"[{100 * seed['low']:.2f}, {100 * seed['high']:.2f}]"
                )
                covers = {True: "yes", False: "**no**", None: "n/a"}[seed["covers"]]
                lift_rows.append(
                    [
                        str(seed["seed"]),
                        label,
                        _number(seed["estimate"], 2, 100.0),
                        interval,
                        _number(seed["true"], 2, 100.0),
                        covers,
                    ]
                )
        coverage = " and ".join(
            f"{whole[name]['covered']} of {whole[name]['intervals']} runs {label}"
            for name, label in (("vs_holdout", "against the holdout"), ("vs_ab", "against A-B"))
        )
        lines += [
            f"### {a['label']}",
            "",
            *_table(
                [
                    "group",
                    "decisions per run",
                    "realised reward per decision",
                    "true expected reward per decision",
                ],
                group_rows,
            ),
            "",
            *_table(
                [
                    "seed",
                    "lift",
                    "measured (points)",
                    f"{level} Welch interval (points)",
                    "true lift (points)",
                    "interval covers the truth",
                ],
                lift_rows,
            ),
            "",
            f"The measured interval covered the true lift in {coverage}. Across seeds the "
            f"measured lift over the holdout is {_pm(whole['vs_holdout']['measured'], 2, 100.0)}"
            f" points (true {_number(whole['vs_holdout']['true'], 2, 100.0)}), over A-B "
            f"{_pm(whole['vs_ab']['measured'], 2, 100.0)} points "
            f"(true {_number(whole['vs_ab']['true'], 2, 100.0)}).",
            "",
        ]
    lines += [
        "A lift in points is 100 x the difference in mean reward per decision (1 point = one "
        "conversion-equivalent per 100 decisions). The measured lift compares the realised "
        "rewards of the bandit group with those of the holdout (no offer) and of the A-B "
        "group (uniform over eligible offers, then variants), with Welch's interval over "
        "decisions. The true lift is exact: over the bandit group's decisions, the expected "
        "reward of the bandit's policy minus that of no offer (or of the uniform A-B arm) in "
        "the very same situation (the runner's `holdout_expected_reward` and "
        "`ab_expected_reward`). Two reasons an interval can miss more often than "
        f"{100 - int(level[:-1])}% of the time: a customer's decisions are correlated (the "
        "group is sticky per customer) while Welch counts decisions as independent, and the "
        "groups hold different customers whose own situations (and fatigue) differ.",
    ]
    return lines


def _delays_section(spec: StudySpec, aggregates: Mapping[str, Any], level: str) -> list[str]:
    arms = aggregates["arms"]
    windows = sorted({w["window"] for a in arms for w in a["windows"]})
    header = [
        "arm",
        *[f"days {w * spec.window_days:g} to {(w + 1) * spec.window_days:g}" for w in windows],
        "whole run",
    ]
    rows = []
    for a in arms:
        by_window = {w["window"]: w for w in a["windows"]}
        rows.append(
            [
                a["label"],
                *[
                    _pm(by_window[w]["regret_per_1000"], 1) if w in by_window else "n/a"
                    for w in windows
                ],
                _pm(a["regret_per_1000"], 1),
            ]
        )
    return [
        f"## Regret per 1,000 decisions, per {spec.window_days:g}-day window",
        "",
        *_table(header, rows),
        "",
        "Each cell is the expected reward lost against the oracle per 1,000 decisions made in "
        "that window. Feedback arrives late by construction (a reward closes 7 days after its "
        "decision), so no policy can improve during the first window; a longer learning "
        "cadence adds up to its own period on top. With drift, customers' needs keep moving, "
        "so a policy that stops adapting sees its regret creep back up in later windows. The "
        "last window can be partial (see `results.json` for the decisions per window).",
    ]


def _planning_section(spec: StudySpec, aggregates: Mapping[str, Any], level: str) -> list[str]:
    arms = aggregates["arms"]
    weeks = [w for w in spec.weeks]
    header = [
        "arm",
        "regret per 1,000 bandit decisions (whole run)",
        *[f"after {w:g} week{'s' if w != 1 else ''}: lift ± half-width (true)" for w in weeks],
    ]
    rows = []
    sentences = []
    for a in arms:
        cuts = [row for row in a["lift"] if row["day"] is not None]
        whole = a["lift"][-1]
        cells = [a["label"], _pm(whole["bandit_regret_per_1000"], 1)]
        for row in cuts:
            block = row["vs_holdout"]
            cells.append(
                f"{_number(block['measured']['estimate'], 2, 100.0)} ± "
                f"{_number(block['half_width_mean'], 2, 100.0)} "
                f"(true {_number(block['true'], 2, 100.0)}; covered "
                f"{block['covered']}/{block['intervals']})"
            )
        rows.append(cells)
        for week, row in zip(weeks, cuts, strict=False):
            block = row["vs_holdout"]
            sentences.append(
                f"- With {a['label']}, after {week:g} week{'s' if week != 1 else ''} "
                f"({row['bandit_decisions']:,.0f} bandit and {row['holdout_decisions']:,.0f} "
                f"holdout decisions) the {level} lift interval is "
                f"±{_number(block['half_width_mean'], 2, 100.0)} points (true lift "
                f"{_number(block['true'], 2, 100.0)} points), and the bandit group has lost "
                f"{_pm(row['bandit_regret_per_1000'], 1)} reward per 1,000 decisions against "
                "a perfect targeter."
            )
    return [
        "## What-if before launch: exploration rate vs lift precision and cost",
        "",
        *_table(header, rows),
        "",
        "Lift and half-width in points (100 x reward per decision: 1 point = one "
        "conversion-equivalent per 100 decisions), bandit group vs holdout, from the decisions "
        "made before the cut and their realised rewards (Welch interval, half-width averaged "
        "over seeds; 'covered' counts the seeds whose interval contains the true lift). A "
        "decision's reward closes 7 days after it, so the interval for the first N weeks can "
        "be computed at week N + 1. The half-width shrinks like 1 / sqrt(decisions): with k "
        "times this traffic it is about 1 / sqrt(k) as wide. Regret is the reward lost "
        "against the oracle (exploring plus what the model has not learned yet).",
        "",
        "### In one sentence each",
        "",
        *sentences,
    ]
