"""Experiment reports from the database: lift, SRM, off-policy values, time series, models,
segments, and the fairness audit by protected group.

Everything a chart or a table shows is computed here from the decision log and the reward
ledger, then shaped into JSON-ready builtins by `to_json` (NaN and infinities become null, with
a warning naming where), so the HTTP layer only routes and the CLI only prints.

- **Sufficient statistics in SQL.** Per reward horizon and assignment group, `COUNT`, `SUM`
  and `SUM` of squares of the closed rewards (`rewards` joined to `decisions`) are one
  `GROUP BY` (SQLAlchemy Core, the same on SQLite and PostgreSQL); lifts come from them
  (`evaluation.segments.compare`: Welch, delta method, always-valid mSPRT interval,
  probability to beat), Holm-adjusted across the horizons for each control group.
- **SRM** is tested against the configured traffic split of the configuration version each
  decision was made under: when the split changed, the expected share of a group is the
  decision-weighted average of the versions' shares (`evaluation.segments.expected_shares`).
  Without two groups with traffic (e.g. everyone in the bandit group) there is no test.
- **Off-policy values** (IPS, SNIPS, DR of uniform random and of the logging policy) come from
  `evaluation.report.evaluate_log` on a polars frame of only the learnable bandit decisions
  with a closed reward at the horizon, read in keyset batches of a few columns (no context).
- **Segments** are the current configuration's segment rules, evaluated on each decision's
  stored context (decisions without consent store no context and fall in no segment). The
  log is read in batches; only per-segment, per-group tallies stay in memory.
- **Fairness audit.** The bank supplies protected attributes per customer at evaluation time
  (a CSV for the CLI, JSON rows for the API). Each customer id is turned into the platform's
  keyed pseudonym (`Platform.pseudonym`, the function the decision path uses), the rows are
  joined to the log in memory, and the result is returned; nothing of the file is written to
  the database or logged, and error messages name rows by index, never by value.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, cast

import polars as pl
import sqlalchemy as sa
from sqlmodel import Session

from bandit_platform.domain.config import CompiledExperiment
from bandit_platform.domain.errors import InvalidInput, NotFound
from bandit_platform.evaluation import report as log_report
from bandit_platform.evaluation.lift import (
    SampleRatioMismatch,
    SufficientStats,
    absolute_lift,
    relative_lift,
    sample_ratio_mismatch,
)
from bandit_platform.evaluation.segments import (
    CONTROLS,
    GROUPS,
    Comparison,
    Disparity,
    MeanEstimate,
    Proportion,
    SegmentRow,
    SegmentTally,
    adjust_comparisons,
    compare_groups,
    disparity,
    expected_shares,
    mean_estimate,
    proportion,
    segment_rows,
)
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import (
    DecisionRow,
    ExperimentRow,
    ExperimentVersionRow,
    ModelSnapshotRow,
    RewardRow,
)

Bucket = Literal["day", "hour"]

#: Decisions read per batch when a report must look at rows (OPE, segments, fairness).
BATCH: Final = 5000
#: Most rows of protected attributes one fairness audit accepts.
MAX_AUDIT_ROWS: Final = 200_000
#: Most attribute columns one fairness audit accepts.
MAX_AUDIT_ATTRIBUTES: Final = 20

_DECISIONS = cast(sa.Table, getattr(DecisionRow, "__table__"))  # noqa: B009 (untyped)
_REWARDS = cast(sa.Table, getattr(RewardRow, "__table__"))  # noqa: B009
_SNAPSHOTS = cast(sa.Table, getattr(ModelSnapshotRow, "__table__"))  # noqa: B009
_VERSIONS = cast(sa.Table, getattr(ExperimentVersionRow, "__table__"))  # noqa: B009


# --- result types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSummary:
    """One assignment group at one horizon.

    Attributes:
        group: `holdout`, `ab` or `bandit`.
        reward: mean reward with its interval, n and the sufficient statistics.
        conversion: share of closed rewards above zero, Wilson interval.
    """

    group: str
    reward: MeanEstimate
    conversion: Proportion


@dataclass(frozen=True)
class HorizonSummary:
    """Groups and lifts at one reward horizon.

    Attributes:
        horizon: reward horizon name.
        learning: whether the learner uses this horizon.
        groups: per group, in report order.
        comparisons: bandit vs holdout and vs A-B.
    """

    horizon: str
    learning: bool
    groups: tuple[GroupSummary, ...]
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class SrmGroup:
    """One group of the sample-ratio test."""

    group: str
    observed: int
    expected: float
    expected_share: float


@dataclass(frozen=True)
class SrmSummary:
    """The sample-ratio mismatch test of the group sizes.

    Attributes:
        statistic: Pearson's chi-square.
        p_value: its p-value.
        flagged: `p_value < alpha`: do not trust the lifts.
        alpha: the threshold.
        groups: observed and expected counts of customers per tested group (the unit of
            assignment; a customer seen under two configuration versions counts in each).
        traffic_source: `configured` (each version's split) or `given` (a caller's split).
        versions: customers per configuration version with that version's split.
    """

    statistic: float
    p_value: float
    flagged: bool
    alpha: float
    groups: tuple[SrmGroup, ...]
    traffic_source: str
    versions: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class GuardrailSummary:
    """Guardrail health: what is configured and whether one has tripped.

    Attributes:
        status: `tripped`, `ok`, or `none` (no guardrail configured).
        configured: the configured guardrails.
        trip: the recorded trip (what, when, the evidence), or None.
    """

    status: str
    configured: tuple[dict[str, Any], ...]
    trip: dict[str, Any] | None


@dataclass(frozen=True)
class OffPolicyEstimate:
    """One estimator's value of one target policy, with its interval and diagnostics."""

    policy: str
    estimator: str
    value: float
    lower: float
    upper: float
    n: int
    effective_sample_size: float
    max_weight: float
    confidence: float
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class OffPolicyTable:
    """Off-policy values of candidate policies on the learnable bandit decisions.

    Attributes:
        horizon: the reward horizon evaluated.
        decisions: learnable bandit decisions with a closed reward at that horizon.
        estimates: one row per (policy, estimator).
    """

    horizon: str
    decisions: int
    estimates: tuple[OffPolicyEstimate, ...]


@dataclass(frozen=True)
class ExperimentReport:
    """The headline report of an experiment.

    Attributes:
        experiment: experiment key.
        status: its status now.
        version: its configuration version now.
        generated_at: when the report was computed (platform clock).
        since: first decision time included (None: from the start).
        until: decisions before this time are included (None: up to now).
        decisions: decisions in the window.
        group_counts: decisions per group.
        group_customers: distinct customers per group (the unit of assignment).
        srm: the sample-ratio test (None when fewer than two groups have traffic).
        horizons: per reward horizon, the learning one first.
        off_policy: the off-policy table.
        guardrails: guardrail health.
        warnings: report-level warnings (SRM flagged, no rewards yet, ...).
    """

    experiment: str
    status: str
    version: int
    generated_at: datetime
    since: datetime | None
    until: datetime | None
    decisions: int
    group_counts: Mapping[str, int]
    group_customers: Mapping[str, int]
    srm: SrmSummary | None
    horizons: tuple[HorizonSummary, ...]
    off_policy: OffPolicyTable
    guardrails: GuardrailSummary
    warnings: tuple[str, ...]
    #: The same test as `srm`, as `evaluation.lift` returns it (for the text report).
    srm_test: SampleRatioMismatch | None = dataclasses.field(default=None, repr=False)
    #: Sufficient statistics per horizon and group (for the text report).
    stats: Mapping[str, Mapping[str, SufficientStats]] = dataclasses.field(
        default_factory=dict, repr=False
    )
    #: The evaluate_log policy values (for the text report).
    policies: tuple[log_report.PolicyValue, ...] = dataclasses.field(default=(), repr=False)


@dataclass(frozen=True)
class TrafficPoint:
    """Decisions of one group in one time bucket."""

    time: datetime
    group: str
    decisions: int


@dataclass(frozen=True)
class AllocationPoint:
    """Decisions of one group that showed one offer in one time bucket, and their share of
    the group's decisions in the bucket (Wilson interval)."""

    time: datetime
    group: str
    offer: str
    decisions: int
    share: Proportion


@dataclass(frozen=True)
class RewardPoint:
    """Mean reward and conversion of one group in one time bucket (by decision time)."""

    time: datetime
    group: str
    reward: MeanEstimate
    conversion: Proportion


@dataclass(frozen=True)
class TimeSeries:
    """Traffic, allocation and reward over time, in long format (one row per point).

    Attributes:
        experiment: experiment key.
        bucket: `day` or `hour` (UTC).
        horizon: the reward horizon of `rewards`.
        traffic: decisions per bucket and group.
        allocation: decisions per bucket, group and offer (`no_offer` for none), with the
            offer's share of the group's decisions in the bucket.
        rewards: mean reward and conversion per bucket and group.
    """

    experiment: str
    bucket: str
    horizon: str
    traffic: tuple[TrafficPoint, ...]
    allocation: tuple[AllocationPoint, ...]
    rewards: tuple[RewardPoint, ...]


@dataclass(frozen=True)
class ModelVersion:
    """One model snapshot (without its bytes) and the decisions it served."""

    version: int
    created_at: datetime
    examples_seen: int
    note: str
    match_rate: float | None
    decisions: int
    first_decision_at: datetime | None
    last_decision_at: datetime | None


@dataclass(frozen=True)
class ConfigVersion:
    """One configuration version: when and by whom."""

    version: int
    created_at: datetime
    created_by: str
    decisions: int


@dataclass(frozen=True)
class ModelTimeline:
    """Model versions and configuration versions of an experiment, oldest first."""

    experiment: str
    models: tuple[ModelVersion, ...]
    configurations: tuple[ConfigVersion, ...]


@dataclass(frozen=True)
class SegmentReport:
    """Per configured segment: counts, offer rates and lifts per group.

    Attributes:
        experiment: experiment key.
        horizons: the reward horizons reported, learning one first.
        decisions: decisions in the window.
        without_context: decisions that stored no context (no consent): in no segment.
        segments: one row per configured segment (segments may overlap).
        unsegmented: the decisions in no segment, as a row of its own (key `(none)`).
    """

    experiment: str
    horizons: tuple[str, ...]
    decisions: int
    without_context: int
    segments: tuple[SegmentRow, ...]
    unsegmented: SegmentRow | None


@dataclass(frozen=True)
class FairnessReport:
    """Offer rates and rewards by protected group, for audit only.

    Attributes:
        experiment: experiment key.
        horizon: the reward horizon of the mean rewards.
        customers_supplied: distinct customers in the supplied rows.
        customers_matched: of those, customers with at least one decision in the window.
        decisions: decisions in the window.
        decisions_matched: decisions of supplied customers.
        attributes: one entry per attribute and assignment group.
        notice: what happened to the supplied data.
    """

    experiment: str
    horizon: str
    customers_supplied: int
    customers_matched: int
    decisions: int
    decisions_matched: int
    attributes: tuple[Disparity, ...]
    notice: str


# --- JSON ------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """JSON-ready builtins of a report: dataclasses to objects, datetimes to ISO 8601, and
    NaN or infinite numbers to null, each named in the top-level `warnings` list.

    Dataclass fields declared with `repr=False` (copies kept for the text report) are left
    out.
    """
    problems: list[str] = []
    result = _builtins(value, "", problems)
    if problems and isinstance(result, dict):
        result["warnings"] = [*result.get("warnings", []), *problems]
    return result


def _builtins(value: Any, path: str, problems: list[str]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _builtins(getattr(value, f.name), f"{path}.{f.name}".lstrip("."), problems)
            for f in dataclasses.fields(value)
            if f.repr
        }
    if isinstance(value, Mapping):
        return {str(k): _builtins(v, f"{path}.{k}".lstrip("."), problems) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_builtins(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"not_finite:{path}")
        return None
    return value


# --- shared lookups --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    row: ExperimentRow
    compiled: CompiledExperiment
    horizons: tuple[str, ...]
    where: tuple[sa.ColumnElement[bool], ...]

    @property
    def id(self) -> int:
        assert self.row.id is not None
        return self.row.id


def _scope(
    platform: Platform,
    session: Session,
    key: str,
    since: datetime | None,
    until: datetime | None,
) -> _Scope:
    row = repositories.experiment_by_key(session, key)
    if row is None:
        raise NotFound(f"no experiment {key!r}", field="key")
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput(f"{name} needs a timezone", field=name)
    if since is not None and until is not None and until <= since:
        raise InvalidInput("until must be after since", field="until")
    compiled = platform.compiled(row)
    horizons = tuple(h.name for h in compiled.config.reward.horizons())
    where: list[sa.ColumnElement[bool]] = [_DECISIONS.c.experiment_id == row.id]
    if since is not None:
        where.append(_DECISIONS.c.created_at >= since)
    if until is not None:
        where.append(_DECISIONS.c.created_at < until)
    return _Scope(row, compiled, horizons, tuple(where))


def _horizon(scope: _Scope, horizon: str | None) -> str:
    if horizon is None:
        return scope.horizons[0]
    if horizon not in scope.horizons:
        raise InvalidInput(
            f"horizon {horizon!r} is not one of {list(scope.horizons)}", field="horizon"
        )
    return horizon


def _group_order(group: str) -> tuple[int, str]:
    return (GROUPS.index(group) if group in GROUPS else len(GROUPS), group)


def _unlabelled(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The expression under a label (GROUP BY must name the expression, not an alias)."""
    return column.element if isinstance(column, sa.Label) else column


def _reward_stats(
    session: Session,
    scope: _Scope,
    horizons: Sequence[str],
    *extra: sa.ColumnElement[Any],
) -> list[tuple[tuple[Any, ...], SufficientStats, int]]:
    """`((horizon, group, *extra), statistics, positives)` of the closed rewards.

    The statistics carry the customer (cluster) sums too, from a per-customer subquery, so
    that lifts use the cluster-robust variance: decisions of one customer are correlated.
    """
    reward = _REWARDS.c.reward
    keys = [
        _REWARDS.c.horizon.label("horizon"),
        _DECISIONS.c.group.label("group"),
        *(_unlabelled(column).label(f"extra_{i}") for i, column in enumerate(extra)),
    ]
    per_customer = (
        sa.select(
            *keys,
            sa.func.count(reward).label("n"),
            sa.func.coalesce(sa.func.sum(reward), 0.0).label("total"),
            sa.func.coalesce(sa.func.sum(reward * reward), 0.0).label("squares"),
            sa.func.coalesce(sa.func.sum(sa.case((reward > 0, 1), else_=0)), 0).label("positive"),
        )
        .select_from(_REWARDS.join(_DECISIONS, _DECISIONS.c.id == _REWARDS.c.decision_id))
        .where(
            _REWARDS.c.experiment_id == scope.id,
            _REWARDS.c.horizon.in_(list(horizons)),
            *scope.where,
        )
        .group_by(*(key.element for key in keys), _DECISIONS.c.customer_key)
        .subquery()
    )
    c = per_customer.c
    outer_keys = [c.horizon, c.group, *(c[f"extra_{i}"] for i in range(len(extra)))]
    query = sa.select(
        *outer_keys,
        sa.func.sum(c.n),
        sa.func.sum(c.total),
        sa.func.sum(c.squares),
        sa.func.sum(c.positive),
        sa.func.count(),
        sa.func.sum(c.total * c.total),
        sa.func.sum(c.n * c.total),
        sa.func.sum(c.n * c.n),
    ).group_by(*outer_keys)
    width = len(outer_keys)
    result = []
    for row in session.execute(query):
        n, total, squares, positive, clusters, s2, cross, n2 = row[width:]
        stats = SufficientStats(
            int(n),
            float(total),
            max(float(squares), 0.0),
            int(clusters),
            float(s2),
            float(cross),
            float(n2),
        )
        result.append((tuple(row[:width]), stats, int(positive)))
    return result


# --- the headline report ---------------------------------------------------------------------


def experiment_report(
    platform: Platform,
    key: str,
    *,
    horizon: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    traffic: Mapping[str, float] | None = None,
) -> ExperimentReport:
    """Counts, SRM, lifts per horizon, guardrails and the off-policy table of an experiment.

    Args:
        platform: the worker's platform.
        key: experiment key.
        horizon: reward horizon of the off-policy table (default: the learning horizon).
        since: include decisions made at or after this time.
        until: include decisions made before this time.
        traffic: a split (`holdout`, `ab`, `bandit` shares) to test SRM against instead of
            the configured ones.

    Raises:
        NotFound: no such experiment (field `key`).
        InvalidInput: unknown horizon, naive or inverted times, or an invalid `traffic`.
    """
    with platform.read_session() as session:
        scope = _scope(platform, session, key, since, until)
        ope_horizon = _horizon(scope, horizon)
        by_version: dict[int, dict[str, int]] = {}
        customers_by_version: dict[int, dict[str, int]] = {}
        for version, group, count, distinct in session.execute(
            sa.select(
                _DECISIONS.c.experiment_version,
                _DECISIONS.c.group,
                sa.func.count(),
                sa.func.count(sa.distinct(_DECISIONS.c.customer_key)),
            )
            .where(*scope.where)
            .group_by(_DECISIONS.c.experiment_version, _DECISIONS.c.group)
        ):
            by_version.setdefault(int(version), {})[str(group)] = int(count)
            customers_by_version.setdefault(int(version), {})[str(group)] = int(distinct)
        counts: dict[str, int] = {}
        for groups in by_version.values():
            for group, count in groups.items():
                counts[group] = counts.get(group, 0) + count
        counts = {g: counts[g] for g in sorted(counts, key=_group_order)}
        customers = {
            str(group): int(n)
            for group, n in session.execute(
                sa.select(_DECISIONS.c.group, sa.func.count(sa.distinct(_DECISIONS.c.customer_key)))
                .where(*scope.where)
                .group_by(_DECISIONS.c.group)
            )
        }
        customers = {g: customers[g] for g in sorted(customers, key=_group_order)}
        stats: dict[str, dict[str, SufficientStats]] = {h: {} for h in scope.horizons}
        positives: dict[tuple[str, str], int] = {}
        for (h, group), closed, positive in _reward_stats(session, scope, scope.horizons):
            stats[str(h)][str(group)] = closed
            positives[(str(h), str(group))] = positive
        # Customers are the unit of assignment (stickily, per configuration version): counting
        # decisions would weigh frequent visitors and raise false alarms.
        srm, srm_test, srm_warnings = _srm(session, scope, customers_by_version, traffic)
        policies, ope_rows = _off_policy(session, scope, ope_horizon)
        guardrails = _guardrails(scope)
    horizons = []
    per_control: dict[str, list[Comparison]] = {c: [] for c in CONTROLS}
    for h in scope.horizons:
        ordered = {g: stats[h][g] for g in sorted(stats[h], key=_group_order)}
        for comparison in compare_groups(h, ordered):
            per_control[comparison.control].append(comparison)
        horizons.append((h, ordered))
    adjusted = {
        (c.horizon, c.control): c
        for family in per_control.values()
        for c in adjust_comparisons(family)
    }
    summaries = tuple(
        HorizonSummary(
            horizon=h,
            learning=h == scope.horizons[0],
            groups=tuple(
                GroupSummary(g, mean_estimate(s), proportion(positives.get((h, g), 0), s.n))
                for g, s in ordered.items()
            ),
            comparisons=tuple(adjusted[(h, c)] for c in CONTROLS if (h, c) in adjusted),
        )
        for h, ordered in horizons
    )
    warnings = list(srm_warnings)
    if srm is not None and srm.flagged:
        warnings.append("sample_ratio_mismatch")
    if not any(stats[h] for h in scope.horizons):
        warnings.append("no_closed_rewards")
    if guardrails.status == "tripped":
        warnings.append("guardrail_tripped")
    estimates = tuple(
        OffPolicyEstimate(
            policy=p.policy,
            estimator=e.name,
            value=e.value,
            lower=e.lower,
            upper=e.upper,
            n=e.n,
            effective_sample_size=e.effective_sample_size,
            max_weight=e.max_weight,
            confidence=0.95,
            warnings=tuple(e.warnings),
        )
        for p in policies
        for e in p.estimates
    )
    return ExperimentReport(
        experiment=scope.row.key,
        status=scope.row.status,
        version=scope.row.version,
        generated_at=platform.clock(),
        since=since,
        until=until,
        decisions=sum(counts.values()),
        group_counts=counts,
        group_customers=customers,
        srm=srm,
        horizons=summaries,
        off_policy=OffPolicyTable(ope_horizon, ope_rows, estimates),
        guardrails=guardrails,
        warnings=tuple(warnings),
        srm_test=srm_test,
        stats=stats,
        policies=policies,
    )


def _srm(
    session: Session,
    scope: _Scope,
    by_version: Mapping[int, Mapping[str, int]],
    traffic: Mapping[str, float] | None,
) -> tuple[SrmSummary | None, SampleRatioMismatch | None, tuple[str, ...]]:
    if not by_version:
        return None, None, ()
    counts_by_version = {v: sum(groups.values()) for v, groups in by_version.items()}
    if traffic is not None:
        unknown = sorted(set(traffic) - set(GROUPS))
        if unknown or any(not (math.isfinite(s) and s >= 0.0) for s in traffic.values()):
            raise InvalidInput(
                "traffic: shares of holdout, ab and bandit, finite and >= 0", field="traffic"
            )
        splits = {version: dict(traffic) for version in counts_by_version}
        source = "given"
    else:
        splits = {}
        for version, config in session.execute(
            sa.select(_VERSIONS.c.version, _VERSIONS.c.config).where(
                _VERSIONS.c.experiment_id == scope.id,
                _VERSIONS.c.version.in_(list(counts_by_version)),
            )
        ):
            split = config.get("traffic", {}) if isinstance(config, dict) else {}
            splits[int(version)] = {g: float(split.get(g, 0.0)) for g in GROUPS}
        current = scope.compiled.config.traffic
        for version in counts_by_version:
            splits.setdefault(version, {g: float(getattr(current, g)) for g in GROUPS})
        source = "configured"
    try:
        shares = expected_shares(counts_by_version, splits)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="traffic") from None
    observed = {g: sum(groups.get(g, 0) for groups in by_version.values()) for g in GROUPS}
    stray = [g for g in GROUPS if observed[g] > 0 and shares[g] <= 0.0]
    tested = [g for g in GROUPS if shares[g] > 0.0]
    warnings: tuple[str, ...] = tuple(f"decisions_in_group_without_traffic:{g}" for g in stray)
    if len(tested) < 2:
        return None, None, (*warnings, "srm_not_applicable")
    test = sample_ratio_mismatch([observed[g] for g in tested], [shares[g] for g in tested])
    total_share = sum(shares[g] for g in tested)
    summary = SrmSummary(
        statistic=test.statistic,
        p_value=test.p_value,
        flagged=test.flagged or bool(stray),
        alpha=test.alpha,
        groups=tuple(
            SrmGroup(g, observed[g], expected, shares[g] / total_share)
            for g, expected in zip(tested, test.expected_counts, strict=True)
        ),
        traffic_source=source,
        versions=tuple(
            {"version": v, "customers": counts_by_version[v], "traffic": splits[v]}
            for v in sorted(counts_by_version)
        ),
    )
    return summary, test, warnings


def _off_policy(
    session: Session, scope: _Scope, horizon: str
) -> tuple[tuple[log_report.PolicyValue, ...], int]:
    frames = list(_learnable_batches(session, scope, horizon))
    if not frames:
        return (), 0
    frame = pl.concat(frames)
    result = log_report.evaluate_log(frame.lazy(), horizon=horizon)
    return result.policies, frame.height


def _learnable_batches(session: Session, scope: _Scope, horizon: str) -> Iterator[pl.DataFrame]:
    """The learnable bandit decisions with a closed reward at `horizon`, in the exported
    log's columns, a batch at a time (keyset on the decision id)."""
    d = _DECISIONS.c
    schema: dict[str, Any] = {
        "decision_id": pl.String,
        "group": pl.String,
        "chosen_offer": pl.String,
        "chosen_variant": pl.String,
        "propensity": pl.Float64,
        "probabilities": pl.String,
        "eligible": pl.List(pl.String),
        "learnable": pl.Boolean,
        f"reward_{horizon}": pl.Float64,
    }
    after = ""
    while True:
        rows = session.execute(
            sa.select(
                d.id,
                d.chosen_offer,
                d.chosen_variant,
                d.propensity,
                d.probabilities,
                d.eligible,
                _REWARDS.c.reward,
            )
            .select_from(
                _DECISIONS.join(
                    _REWARDS,
                    sa.and_(_REWARDS.c.decision_id == d.id, _REWARDS.c.horizon == horizon),
                )
            )
            .where(*scope.where, d.group == "bandit", d.learnable.is_(True), d.id > after)
            .order_by(d.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        after = str(rows[-1][0])
        yield pl.DataFrame(
            {
                "decision_id": [r[0] for r in rows],
                "group": ["bandit"] * len(rows),
                "chosen_offer": [r[1] for r in rows],
                "chosen_variant": [r[2] for r in rows],
                "propensity": [float(r[3]) for r in rows],
                "probabilities": [json.dumps(r[4], sort_keys=True) for r in rows],
                "eligible": [list(r[5]) for r in rows],
                "learnable": [True] * len(rows),
                f"reward_{horizon}": [float(r[6]) for r in rows],
            },
            schema=schema,
        )


def _guardrails(scope: _Scope) -> GuardrailSummary:
    configured = tuple(
        {
            "metric": g.metric,
            "window_hours": g.window_hours,
            "max_increase": g.max_increase,
            "max_rate": g.max_rate,
            "min_decisions": g.min_decisions,
            "confidence": g.confidence,
        }
        for g in scope.compiled.config.guardrails
    )
    trip = scope.row.guardrail_trip
    status = "tripped" if trip is not None else ("ok" if configured else "none")
    return GuardrailSummary(status, configured, trip)


def as_log_report(report: ExperimentReport) -> log_report.LogReport:
    """The report in `evaluation.report`'s shape, for `format_report` (the CLI's text)."""
    horizons = []
    for summary in report.horizons:
        found = report.stats.get(summary.horizon, {})
        groups = {g: found[g] for g in sorted(found, key=_group_order)}
        comparisons = []
        for comparison in summary.comparisons:
            treatment, control = groups[comparison.treatment], groups[comparison.control]
            comparisons.append(
                log_report.Comparison(
                    summary.horizon,
                    comparison.treatment,
                    comparison.control,
                    absolute_lift(treatment, control),
                    relative_lift(treatment, control) if control.mean != 0.0 else None,
                )
            )
        horizons.append(log_report.HorizonReport(summary.horizon, groups, tuple(comparisons)))
    return log_report.LogReport(
        decisions=report.decisions,
        group_counts=report.group_counts,
        horizons=tuple(horizons),
        srm=report.srm_test,
        learning_horizon=report.off_policy.horizon,
        policies=report.policies,
        group_customers=report.group_customers,
    )


# --- time series -----------------------------------------------------------------------------


def _bucket_expression(session: Session, bucket: Bucket) -> sa.ColumnElement[str]:
    created = _DECISIONS.c.created_at
    if session.get_bind().dialect.name == "postgresql":
        pattern = "YYYY-MM-DD" if bucket == "day" else 'YYYY-MM-DD"T"HH24'
        return sa.func.to_char(sa.func.timezone("UTC", created), pattern)
    # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return sa.func.replace(sa.func.substr(created, 1, 10 if bucket == "day" else 13), " ", "T")


def _bucket_time(text: str) -> datetime:
    return datetime.fromisoformat(
        f"{text}:00:00+00:00" if "T" in text else f"{text}T00:00:00+00:00"
    )


def time_series(
    platform: Platform,
    key: str,
    *,
    bucket: str = "day",
    horizon: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> TimeSeries:
    """Decisions per bucket by group and by offer, and mean reward per bucket by group.

    Raises:
        NotFound: no such experiment (field `key`).
        InvalidInput: `bucket` not `day` or `hour`, unknown horizon, bad times.
    """
    if bucket not in ("day", "hour"):
        raise InvalidInput(f"bucket must be 'day' or 'hour', got {bucket!r}", field="bucket")
    with platform.read_session() as session:
        scope = _scope(platform, session, key, since, until)
        h = _horizon(scope, horizon)
        when = _bucket_expression(session, cast(Bucket, bucket)).label("bucket")
        allocation_rows = session.execute(
            sa.select(when, _DECISIONS.c.group, _DECISIONS.c.chosen_offer, sa.func.count())
            .where(*scope.where)
            .group_by(when, _DECISIONS.c.group, _DECISIONS.c.chosen_offer)
        ).all()
        reward_rows = _reward_stats(session, scope, [h], when)
    per_group: dict[tuple[str, str], int] = {}
    for time, group, _, count in allocation_rows:
        per_group[(time, group)] = per_group.get((time, group), 0) + int(count)
    traffic = tuple(
        TrafficPoint(_bucket_time(t), g, n)
        for (t, g), n in sorted(per_group.items(), key=lambda i: (i[0][0], _group_order(i[0][1])))
    )
    allocation = tuple(
        AllocationPoint(
            _bucket_time(t),
            g,
            offer or log_report.NO_OFFER,
            int(n),
            proportion(int(n), per_group[(t, g)]),
        )
        for t, g, offer, n in sorted(
            allocation_rows, key=lambda r: (r[0], _group_order(r[1]), r[2] or "")
        )
    )
    rewards = tuple(
        RewardPoint(_bucket_time(t), g, mean_estimate(closed), proportion(positive, closed.n))
        for (_, g, t), closed, positive in sorted(
            reward_rows, key=lambda r: (r[0][2], _group_order(r[0][1]))
        )
    )
    return TimeSeries(scope.row.key, bucket, h, traffic, allocation, rewards)


# --- models ----------------------------------------------------------------------------------


def model_timeline(platform: Platform, key: str) -> ModelTimeline:
    """Model versions (without their bytes) with the decisions each served, and configuration
    versions, oldest first.

    Raises:
        NotFound: no such experiment (field `key`).
    """
    with platform.read_session() as session:
        scope = _scope(platform, session, key, None, None)
        s = _SNAPSHOTS.c
        snapshots = session.execute(
            sa.select(s.version, s.created_at, s.examples_seen, s.note, s.match_rate)
            .where(s.experiment_id == scope.id)
            .order_by(s.version)
        ).all()
        served = {
            row[0]: row[1:]
            for row in session.execute(
                sa.select(
                    _DECISIONS.c.model_version,
                    sa.func.count(),
                    sa.func.min(_DECISIONS.c.created_at),
                    sa.func.max(_DECISIONS.c.created_at),
                )
                .where(*scope.where, _DECISIONS.c.model_version.is_not(None))
                .group_by(_DECISIONS.c.model_version)
            )
        }
        per_config = dict(
            session.execute(
                sa.select(_DECISIONS.c.experiment_version, sa.func.count())
                .where(*scope.where)
                .group_by(_DECISIONS.c.experiment_version)
            ).all()
        )
        v = _VERSIONS.c
        configurations = session.execute(
            sa.select(v.version, v.created_at, v.created_by)
            .where(v.experiment_id == scope.id)
            .order_by(v.version)
        ).all()
    models = []
    for version, created_at, examples, note, match_rate in snapshots:
        count, first, last = served.get(version, (0, None, None))
        models.append(
            ModelVersion(
                version=int(version),
                created_at=_aware(created_at),
                examples_seen=int(examples),
                note=str(note),
                match_rate=None if match_rate is None else float(match_rate),
                decisions=int(count),
                first_decision_at=None if first is None else _aware(first),
                last_decision_at=None if last is None else _aware(last),
            )
        )
    return ModelTimeline(
        scope.row.key,
        tuple(models),
        tuple(
            ConfigVersion(int(version), _aware(at), str(by), int(per_config.get(version, 0)))
            for version, at, by in configurations
        ),
    )


def _aware(value: Any) -> datetime:
    """A timestamp read by an aggregate (MIN/MAX skip the column type on SQLite) as UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- rows of the log, a batch at a time --------------------------------------------------------


@dataclass(frozen=True)
class _LoggedDecision:
    id: str
    customer_key: str
    group: str
    offer: str | None
    context: Mapping[str, Any]
    rewards: Mapping[str, float | None]


def _decisions(
    session: Session, scope: _Scope, horizons: Sequence[str], *, with_context: bool
) -> Iterator[_LoggedDecision]:
    d = _DECISIONS.c
    columns = [d.id, d.customer_key, d.group, d.chosen_offer]
    if with_context:
        columns.append(d.context)
    after = ""
    while True:
        batch = session.execute(
            sa.select(*columns).where(*scope.where, d.id > after).order_by(d.id).limit(BATCH)
        ).all()
        if not batch:
            return
        after = str(batch[-1][0])
        rewards: dict[str, dict[str, float]] = {}
        for decision_id, h, reward in session.execute(
            sa.select(_REWARDS.c.decision_id, _REWARDS.c.horizon, _REWARDS.c.reward).where(
                _REWARDS.c.decision_id.in_([row[0] for row in batch]),
                _REWARDS.c.horizon.in_(list(horizons)),
            )
        ):
            rewards.setdefault(str(decision_id), {})[str(h)] = float(reward)
        for row in batch:
            closed = rewards.get(str(row[0]), {})
            yield _LoggedDecision(
                id=str(row[0]),
                customer_key=str(row[1]),
                group=str(row[2]),
                offer=row[3],
                context=row[4] if with_context and isinstance(row[4], dict) else {},
                rewards={h: closed.get(h) for h in horizons},
            )


# --- segments --------------------------------------------------------------------------------

UNSEGMENTED: Final = "(none)"


def segment_report(
    platform: Platform,
    key: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SegmentReport:
    """Per configured segment and group: decisions, offer rates, rewards and lifts.

    Raises:
        NotFound: no such experiment (field `key`).
        InvalidInput: bad times.
    """
    with platform.read_session() as session:
        scope = _scope(platform, session, key, since, until)
        rules = dict(scope.compiled.segments)
        tallies: dict[str, dict[str, SegmentTally]] = {name: {} for name in rules}
        rest: dict[str, SegmentTally] = {}
        total = without_context = 0
        for decision in _decisions(session, scope, scope.horizons, with_context=True):
            total += 1
            if not decision.context:
                without_context += 1
            matched = False
            for name, rule in rules.items():
                if decision.context and rule.evaluate(decision.context):
                    matched = True
                    tallies[name].setdefault(decision.group, SegmentTally()).add(
                        decision.offer, decision.rewards
                    )
            if not matched:
                rest.setdefault(decision.group, SegmentTally()).add(
                    decision.offer, decision.rewards
                )
    rows = segment_rows({**tallies, UNSEGMENTED: rest}, scope.horizons)
    return SegmentReport(
        experiment=scope.row.key,
        horizons=scope.horizons,
        decisions=total,
        without_context=without_context,
        segments=rows[:-1],
        unsegmented=rows[-1] if rest else None,
    )


# --- fairness audit --------------------------------------------------------------------------

NOTICE: Final = (
    "The protected attributes were used for this report only: customer ids were pseudonymised "
    "with the platform's keyed hash and joined in memory; nothing was stored or logged."
)


def fairness_report(
    platform: Platform,
    key: str,
    rows: Sequence[Mapping[str, str]],
    *,
    horizon: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> FairnessReport:
    """Offer rates and mean rewards per protected group, with the gap and impact ratio.

    Args:
        platform: the worker's platform.
        key: experiment key.
        rows: one mapping per customer: `customer_id` and one or more attribute columns
            (e.g. `{"customer_id": "c-1", "gender": "f"}`); empty values are left out.
        horizon: reward horizon of the mean rewards (default: the learning horizon).
        since: include decisions made at or after this time.
        until: include decisions made before this time.

    Raises:
        NotFound: no such experiment (field `key`).
        InvalidInput: no rows, too many, a row without `customer_id`, a customer with two
            different values of one attribute (field `rows[i]...`; values are never quoted).
    """
    attributes_by_customer = _protected_groups(platform, rows)
    with platform.read_session() as session:
        scope = _scope(platform, session, key, since, until)
        h = _horizon(scope, horizon)
        tallies: dict[tuple[str, str], dict[str, SegmentTally]] = {}
        matched: set[str] = set()
        total = matched_decisions = 0
        for decision in _decisions(session, scope, [h], with_context=False):
            total += 1
            found = attributes_by_customer.get(decision.customer_key)
            if found is None:
                continue
            matched.add(decision.customer_key)
            matched_decisions += 1
            for attribute, value in found.items():
                by_value = tallies.setdefault((attribute, decision.group), {})
                by_value.setdefault(value, SegmentTally()).add(decision.offer, decision.rewards)
    names = sorted({a for found in attributes_by_customer.values() for a in found})
    disparities = tuple(
        disparity(attribute, group, tallies[(attribute, group)], h)
        for attribute in names
        for group in sorted({g for a, g in tallies if a == attribute}, key=_group_order)
    )
    return FairnessReport(
        experiment=scope.row.key,
        horizon=h,
        customers_supplied=len(attributes_by_customer),
        customers_matched=len(matched),
        decisions=total,
        decisions_matched=matched_decisions,
        attributes=disparities,
        notice=NOTICE,
    )


def _protected_groups(
    platform: Platform, rows: Sequence[Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Pseudonym -> {attribute: value}; only pseudonyms are kept."""
    if not rows:
        raise InvalidInput("no rows of protected attributes", field="rows")
    if len(rows) > MAX_AUDIT_ROWS:
        raise InvalidInput(f"at most {MAX_AUDIT_ROWS} rows", field="rows")
    result: dict[str, dict[str, str]] = {}
    names: set[str] = set()
    for index, row in enumerate(rows):
        customer = str(row.get("customer_id") or "").strip()
        if not customer:
            raise InvalidInput("customer_id is missing", field=f"rows[{index}].customer_id")
        pseudonym = platform.pseudonym(customer)
        found = result.setdefault(pseudonym, {})
        for name, raw in row.items():
            if name == "customer_id":
                continue
            value = "" if raw is None else str(raw).strip()
            if not value:
                continue
            if len(value) > 120 or len(name) > 63:
                raise InvalidInput(
                    "names and values are at most 63 and 120 characters",
                    field=f"rows[{index}].{name[:63]}",
                )
            if found.get(name, value) != value:
                raise InvalidInput(
                    "this customer has another value of the attribute in an earlier row",
                    field=f"rows[{index}].{name}",
                )
            found[name] = value
            names.add(name)
        if len(names) > MAX_AUDIT_ATTRIBUTES:
            raise InvalidInput(
                f"at most {MAX_AUDIT_ATTRIBUTES} attribute columns", field=f"rows[{index}]"
            )
    if not names:
        raise InvalidInput("no attribute column besides customer_id", field="rows")
    return result


# --- the CLI's evaluation of an experiment ----------------------------------------------------


def read_audit_file(path: Path) -> list[dict[str, str]]:
    """Rows of the bank's protected-attribute CSV (`customer_id` plus attribute columns).

    Raises:
        InvalidInput: the file is missing or unreadable, or has no `customer_id` column
            (field `--audit-groups`; values are never quoted).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "customer_id" not in reader.fieldnames:
                raise InvalidInput("the file needs a customer_id column", field="--audit-groups")
            return [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(
            f"cannot read {path}: {type(exc).__name__}", field="--audit-groups"
        ) from None


@dataclass(frozen=True)
class Evaluation:
    """What `bandit-platform evaluate --experiment` reports.

    Attributes:
        report: the headline report.
        segments: the segment breakdown.
        fairness: the fairness audit (None without `--audit-groups`).
    """

    report: ExperimentReport
    segments: SegmentReport
    fairness: FairnessReport | None

    def text(self) -> str:
        """The text of `evaluate --log` (`format_report`), then guardrails, segments and the
        fairness audit."""
        lines = [log_report.format_report(as_log_report(self.report)), ""]
        guardrails = self.report.guardrails
        lines.append(f"guardrails: {guardrails.status}")
        if self.report.warnings:
            lines.append("warnings:   " + ", ".join(self.report.warnings))
        lines += ["", format_segments(self.segments, self.report.off_policy.horizon)]
        if self.fairness is not None:
            lines += ["", format_fairness(self.fairness)]
        return "\n".join(lines)


def evaluate_experiment(
    platform: Platform,
    key: str,
    *,
    traffic: Mapping[str, float] | None = None,
    horizon: str | None = None,
    audit: Sequence[Mapping[str, str]] | None = None,
) -> Evaluation:
    """The headline report, the segments and (with `audit` rows) the fairness audit.

    Raises:
        NotFound: no such experiment.
        InvalidInput: an unknown horizon, an invalid `traffic` or invalid audit rows.
    """
    report = experiment_report(platform, key, horizon=horizon, traffic=traffic)
    return Evaluation(
        report,
        segment_report(platform, key),
        None if audit is None else fairness_report(platform, key, audit, horizon=horizon),
    )


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _span(lower: float | None, upper: float | None, fmt: str) -> str:
    return f"[{_number(lower, fmt)}, {_number(upper, fmt)}]"


def format_segments(report: SegmentReport, horizon: str) -> str:
    """Per segment: decisions per group, the bandit's offer rates and its lifts at `horizon`."""
    lines = [
        f"segments (current rules over the stored context; {report.without_context} of "
        f"{report.decisions} decisions stored no context)"
    ]
    rows = [*report.segments, *([report.unsegmented] if report.unsegmented else [])]
    for row in rows:
        groups = "  ".join(f"{g.group}={g.decisions}" for g in row.groups)
        lines.append(f"  {row.segment:<32} n={row.decisions:<7} {groups}")
        for comparison in row.comparisons:
            if comparison.horizon != horizon:
                continue
            absolute = comparison.absolute
            lines.append(
                f"    {comparison.treatment} - {comparison.control} ({horizon}): "
                f"{_number(absolute.estimate, '+.5f')} "
                f"{_span(absolute.lower, absolute.upper, '.5f')}"
                f" n={comparison.n_treatment}/{comparison.n_control}"
                f" p(holm over segments)={_number(absolute.p_value_adjusted, '.3g')}"
            )
    return "\n".join(lines)


def format_fairness(report: FairnessReport) -> str:
    """Per protected attribute and group: offer rates with intervals, gap and impact ratio."""
    lines = [
        f"fairness audit (horizon {report.horizon}; {report.customers_matched} of "
        f"{report.customers_supplied} supplied customers matched, {report.decisions_matched} "
        f"of {report.decisions} decisions)",
        f"  {report.notice}",
    ]
    for item in report.attributes:
        verdict = "FLAGGED (below four-fifths)" if item.flagged else "ok"
        ratio = _number(item.impact_ratio, ".3f")
        gap = (
            ""
            if item.gap is None
            else f"; gap {_number(item.gap.estimate, '+.3f')} "
            f"{_span(item.gap.lower, item.gap.upper, '+.3f')}"
        )
        lines.append(f"  {item.attribute} / {item.group}: impact ratio {ratio} {verdict}{gap}")
        for value in item.values:
            offered = value.offered
            reward = value.reward
            mean = ""
            if reward is not None:
                interval = _span(reward.lower, reward.upper, ".4f")
                mean = f"  reward {_number(reward.mean, '.4f')} {interval}"
            lines.append(
                f"    {value.value:<20} n={value.decisions:<7} offered "
                f"{_number(offered.rate, '.1%')} {_span(offered.lower, offered.upper, '.1%')}{mean}"
            )
    return "\n".join(lines)


__all__ = [
    "Evaluation",
    "ExperimentReport",
    "FairnessReport",
    "ModelTimeline",
    "SegmentReport",
    "TimeSeries",
    "as_log_report",
    "evaluate_experiment",
    "experiment_report",
    "fairness_report",
    "model_timeline",
    "read_audit_file",
    "segment_report",
    "time_series",
    "to_json",
]
