"""Experiment reports from the database, checked against the exported Parquet log.

Decisions and outcomes go through the real services, rewards close through the learner, and
every aggregate the SQL computes is recomputed from `export_log`'s Parquet with polars and
`evaluate_log`: the same n, sums, means, lifts and off-policy values.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import RewardHorizon, TrafficSplit
from bandit_platform.domain.decisions import Decision
from bandit_platform.domain.errors import InvalidInput, NotFound
from bandit_platform.evaluation.report import evaluate_log
from bandit_platform.service.export import export_log
from bandit_platform.service.learner import Learner
from bandit_platform.service.platform import Platform
from bandit_platform.service.reports import (
    UNSEGMENTED,
    experiment_report,
    fairness_report,
    model_timeline,
    segment_report,
    time_series,
    to_json,
)
from bandit_platform.storage.tables import SQLModel
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import (
    apply_change,
    decide,
    demo_variant,
    identity,
    learning,
    random_context,
    report,
    short_reward,
    start,
)

KEY = "report-me"
REWARD = short_reward(
    report_horizons=[
        RewardHorizon(
            name="clicked_30m", event_weights={"click": 1.0}, attribution_window_hours=0.5
        )
    ]
)
PLANTED = "planted-attr-9q7x"


def _play(
    platform: Platform, app: AppIdentity, clock: FakeClock, prefix: str, count: int
) -> list[Decision]:
    rng = random.Random(hash(prefix) % 1000)
    decisions = [
        decide(platform, app, f"{prefix}-{i}", random_context(rng), experiment=KEY)
        for i in range(count)
    ]
    decisions += [
        decide(platform, app, f"{prefix}-nc-{i}", experiment=KEY, consent=False) for i in range(5)
    ]
    for decision in decisions:
        if decision.offer is not None and rng.random() < 0.6:
            report(platform, app, decision, rng.choice(["click", "apply", "convert"]), clock.now)
    return decisions


@pytest.fixture
def logged(demo: Demo, clock: FakeClock) -> list[Decision]:
    """Two hours of decisions of every group (the demo's 10/20/70 split, its segments) with
    outcomes and closed rewards at two horizons, one decision still open."""
    platform = demo.platform
    app = identity(demo)
    start(
        platform,
        demo_variant(
            KEY, reward=REWARD, frequency_caps=[], learning=learning(publish_every_examples=40)
        ),
    )
    decisions = _play(platform, app, clock, "a", 90)
    clock.advance(hours=1, minutes=1)
    Learner(platform).run_once()
    decisions += _play(platform, app, clock, "b", 60)
    clock.advance(hours=1, minutes=1)
    Learner(platform).run_once()
    decisions.append(decide(platform, app, "open", experiment=KEY))
    return decisions


def _parquet(platform: Platform, tmp_path: Path) -> Path:
    return export_log(platform, KEY, tmp_path).parquet


def test_sql_statistics_equal_the_exported_log(
    demo: Demo, logged: list[Decision], tmp_path: Path
) -> None:
    platform = demo.platform
    parquet = _parquet(platform, tmp_path)
    from_file = evaluate_log(parquet, traffic={"holdout": 10, "ab": 20, "bandit": 70})
    result = experiment_report(platform, KEY)

    assert result.decisions == from_file.decisions == len(logged)
    assert dict(result.group_counts) == dict(from_file.group_counts)
    assert [h.horizon for h in result.horizons] == ["primary", "clicked_30m"]
    for summary, expected in zip(result.horizons, from_file.horizons, strict=True):
        assert summary.horizon == expected.horizon
        assert [g.group for g in summary.groups] == list(expected.groups)
        for group in summary.groups:
            stats = expected.groups[group.group]
            assert group.reward.n == stats.n
            assert group.reward.total == pytest.approx(stats.total, abs=1e-9)
            assert group.reward.total_squares == pytest.approx(stats.total_squares, abs=1e-9)
            assert group.reward.mean == pytest.approx(stats.mean, abs=1e-12)
            if stats.n >= 2:
                assert group.reward.lower is not None
                assert group.reward.upper is not None
                assert group.reward.lower <= stats.mean <= group.reward.upper
        assert {c.control for c in summary.comparisons} == {c.control for c in expected.comparisons}
        for comparison in summary.comparisons:
            other = next(c for c in expected.comparisons if c.control == comparison.control)
            assert comparison.n_treatment == expected.groups["bandit"].n
            assert comparison.absolute.estimate == pytest.approx(other.absolute.estimate)
            assert comparison.absolute.lower == pytest.approx(other.absolute.lower)
            assert comparison.absolute.upper == pytest.approx(other.absolute.upper)
            if other.relative is not None:
                assert comparison.relative is not None
                assert comparison.relative.estimate == pytest.approx(other.relative.estimate)
            # the always-valid interval is wider than the fixed-horizon one
            assert comparison.sequential.lower is not None
            assert comparison.sequential.lower <= (comparison.absolute.lower or 0.0)
            assert comparison.probability_to_beat is not None
            if comparison.absolute.p_value is not None:
                assert comparison.absolute.p_value_adjusted is not None
                assert comparison.absolute.p_value_adjusted >= comparison.absolute.p_value

    # SRM against the configured split, the same test as on the file
    assert result.srm is not None
    assert from_file.srm is not None
    assert result.srm.p_value == pytest.approx(from_file.srm.p_value)
    assert result.srm.traffic_source == "configured"

    # the off-policy table: the same rows, the same estimates
    expected_policies = {(p.policy, e.name): e for p in from_file.policies for e in p.estimates}
    assert result.off_policy.horizon == "primary"
    assert result.off_policy.decisions == sum(
        1 for d in logged[:-1] if d.learnable and d.group.value == "bandit"
    )
    assert {(e.policy, e.estimator) for e in result.off_policy.estimates} == set(expected_policies)
    for estimate in result.off_policy.estimates:
        other = expected_policies[(estimate.policy, estimate.estimator)]
        assert estimate.n == other.n
        assert estimate.value == pytest.approx(other.value)
        assert estimate.lower == pytest.approx(other.lower)
        assert estimate.upper == pytest.approx(other.upper)

    assert result.guardrails.trip is None
    assert result.guardrails.status == ("ok" if result.guardrails.configured else "none")
    encoded = json.dumps(to_json(result), allow_nan=False)
    assert "srm_test" not in encoded
    assert "total_squares" in encoded


def test_window_and_horizon_arguments(demo: Demo, logged: list[Decision], clock: FakeClock) -> None:
    platform = demo.platform
    first = min(d.created_at for d in logged)
    later = [d for d in logged if d.created_at > first]
    windowed = experiment_report(platform, KEY, since=first + (later[0].created_at - first))
    assert windowed.decisions == len(later)
    assert experiment_report(platform, KEY, until=first).decisions == 0
    assert experiment_report(platform, KEY, horizon="clicked_30m").off_policy.horizon == (
        "clicked_30m"
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"horizon": "nope"}, "horizon"),
        ({"since": clock.now, "until": clock.now}, "until"),
        ({"since": clock.now.replace(tzinfo=None)}, "since"),
        ({"traffic": {"treatment": 50.0}}, "traffic"),
    ]
    for arguments, field in cases:
        with pytest.raises(InvalidInput) as raised:
            experiment_report(platform, KEY, **arguments)
        assert raised.value.field == field
    with pytest.raises(NotFound) as missing:
        experiment_report(platform, "no-such-experiment")
    assert missing.value.field == "key"
    assert "no-such-experiment" in missing.value.message
    with pytest.raises(InvalidInput) as bad_bucket:
        time_series(platform, KEY, bucket="week")
    assert bad_bucket.value.field == "bucket"


def test_srm_follows_the_split_of_each_version(demo: Demo, clock: FakeClock) -> None:
    platform = demo.platform
    app = identity(demo)
    config = demo_variant(KEY, reward=REWARD, frequency_caps=[])
    start(platform, config)
    rng = random.Random(3)
    for i in range(60):
        decide(platform, app, f"v1-{i}", random_context(rng), experiment=KEY)
    split = TrafficSplit(holdout=50, ab=0, bandit=50)
    apply_change(
        platform,
        KEY,
        demo_variant(KEY, reward=REWARD, frequency_caps=[], traffic=split),
        actor="test",
    )
    for i in range(40):
        decide(platform, app, f"v2-{i}", random_context(rng), experiment=KEY)
    result = experiment_report(platform, KEY)
    assert result.srm is not None
    versions = {v["version"]: v for v in result.srm.versions}
    assert set(versions) == {1, 2}
    n1, n2 = versions[1]["customers"], versions[2]["customers"]
    shares = {g.group: g.expected_share for g in result.srm.groups}
    assert shares["holdout"] == pytest.approx((0.1 * n1 + 0.5 * n2) / (n1 + n2))
    assert shares["ab"] == pytest.approx(0.2 * n1 / (n1 + n2))
    assert not result.srm.flagged

    given = experiment_report(platform, KEY, traffic={"holdout": 1, "ab": 1, "bandit": 98})
    assert given.srm is not None
    assert given.srm.traffic_source == "given"
    assert given.srm.flagged
    assert "sample_ratio_mismatch" in given.warnings


def test_srm_counts_customers_not_decisions(demo: Demo, clock: FakeClock) -> None:
    platform = demo.platform
    app = identity(demo)
    start(platform, demo_variant(KEY, reward=REWARD, frequency_caps=[]))
    rng = random.Random(5)
    customers: dict[str, set[str]] = {}
    for i in range(120):
        first = decide(platform, app, f"c-{i}", random_context(rng), experiment=KEY)
        customers.setdefault(first.group.value, set()).add(f"c-{i}")
        # bandit customers come back four more times: more decisions, not more customers
        for _ in range(4 if first.group.value == "bandit" else 0):
            again = decide(platform, app, f"c-{i}", random_context(rng), experiment=KEY)
            assert again.group == first.group
    result = experiment_report(platform, KEY)
    assert result.srm is not None
    observed = {g.group: g.observed for g in result.srm.groups}
    assert observed == {g: len(c) for g, c in customers.items()}
    assert result.group_counts["bandit"] == 5 * len(customers["bandit"])
    assert [v["customers"] for v in result.srm.versions] == [120]


def test_time_series_add_up_to_the_report(demo: Demo, logged: list[Decision]) -> None:
    platform = demo.platform
    result = experiment_report(platform, KEY)
    for bucket in ("day", "hour"):
        series = time_series(platform, KEY, bucket=bucket)
        totals: dict[str, int] = {}
        for point in series.traffic:
            assert point.time.tzinfo is not None
            totals[point.group] = totals.get(point.group, 0) + point.decisions
        assert totals == dict(result.group_counts)
        assert sum(p.decisions for p in series.allocation) == result.decisions
        shares: dict[tuple[Any, str], float] = {}
        for point in series.allocation:
            assert point.share.rate is not None
            key = (point.time, point.group)
            shares[key] = shares.get(key, 0.0) + point.share.rate
        assert all(value == pytest.approx(1.0) for value in shares.values())
        primary = result.horizons[0]
        for group in primary.groups:
            points = [r for r in series.rewards if r.group == group.group]
            assert sum(p.reward.n for p in points) == group.reward.n
            assert sum(p.reward.total for p in points) == pytest.approx(group.reward.total)
    hours = {p.time for p in time_series(platform, KEY, bucket="hour").traffic}
    assert len(hours) == 3  # 09:00, 10:01 and 11:02 of the fake clock
    assert all(t.minute == 0 for t in hours)
    json.dumps(to_json(time_series(platform, KEY)), allow_nan=False)


def test_model_timeline_without_the_bytes(demo: Demo, logged: list[Decision]) -> None:
    platform = demo.platform
    timeline = model_timeline(platform, KEY)
    versions = [m.version for m in timeline.models]
    assert versions == sorted(versions)
    assert versions[0] == 1
    assert len(versions) >= 2
    served = sum(1 for d in logged if d.model_version is not None)
    assert sum(m.decisions for m in timeline.models) == served
    assert [c.version for c in timeline.configurations] == [1]
    assert timeline.configurations[0].decisions == len(logged)
    encoded = json.dumps(to_json(timeline), allow_nan=False)
    assert "data" not in json.loads(encoded)["models"][0]


def test_segments_partition_the_log_like_the_export(
    demo: Demo, logged: list[Decision], tmp_path: Path
) -> None:
    platform = demo.platform
    result = segment_report(platform, KEY)
    frame = pl.read_parquet(_parquet(platform, tmp_path))
    with platform.read_session() as session:
        from bandit_platform.storage import repositories

        row = repositories.experiment_by_key(session, KEY)
        assert row is not None
        rules = platform.compiled(row).segments
    expected: dict[str, dict[str, int]] = {}
    unsegmented: dict[str, int] = {}
    for record in frame.iter_rows(named=True):
        context = json.loads(record["context"])
        hits = [name for name, rule in rules.items() if context and rule.evaluate(context)]
        for name in hits:
            expected.setdefault(name, {}).setdefault(record["group"], 0)
            expected[name][record["group"]] += 1
        if not hits:
            unsegmented[record["group"]] = unsegmented.get(record["group"], 0) + 1
    assert result.decisions == frame.height
    assert result.without_context == frame.filter(pl.col("context") == "{}").height
    assert [s.segment for s in result.segments] == list(rules)
    for segment in result.segments:
        assert {g.group: g.decisions for g in segment.groups} == expected.get(segment.segment, {})
        for group in segment.groups:
            assert sum(r.count for r in group.offer_rates.values()) == group.decisions
    assert result.unsegmented is not None
    assert result.unsegmented.segment == UNSEGMENTED
    assert {g.group: g.decisions for g in result.unsegmented.groups} == unsegmented
    # each decision is in the unsegmented row or in at least one segment
    covered = sum(s.decisions for s in result.segments) + result.unsegmented.decisions
    assert covered >= frame.height
    json.dumps(to_json(result), allow_nan=False)


def _sweep(platform: Platform, needles: list[str]) -> list[str]:
    """Every (table, column) whose text contains one of `needles`."""
    found = []
    with platform.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                text = " ".join(str(v) for v in row)
                found += [f"{table.name}: {n}" for n in needles if n in text]
    return found


def test_fairness_joins_by_pseudonym_and_stores_nothing(
    demo: Demo, logged: list[Decision], tmp_path: Path
) -> None:
    platform = demo.platform
    customers = sorted({f"a-{i}" for i in range(90)} | {f"b-{i}" for i in range(60)})
    rows = [
        {"customer_id": c, "gender": PLANTED if i % 2 else "other-value", "region": ""}
        for i, c in enumerate(customers)
    ]
    rows.append({"customer_id": "never-decided", "gender": PLANTED})
    result = fairness_report(platform, KEY, rows)
    assert result.customers_supplied == len(customers) + 1
    assert result.customers_matched == len(customers)
    assert result.decisions == len(logged)

    frame = pl.read_parquet(_parquet(platform, tmp_path))
    planted = {platform.pseudonym(c) for i, c in enumerate(customers) if i % 2}
    for disparity in result.attributes:
        assert disparity.attribute == "gender"  # the empty column is left out
        group = frame.filter(pl.col("group") == disparity.group)
        for value_row in disparity.values:
            members = group.filter(
                pl.col("customer_key").is_in(list(planted))
                if value_row.value == PLANTED
                else ~pl.col("customer_key").is_in(list(planted))
                & pl.col("customer_key").str.len_chars().gt(0)
                & pl.col("customer_key").is_in([platform.pseudonym(c) for c in customers])
            )
            assert value_row.decisions == members.height
            shown = members.filter(pl.col("chosen_offer").is_not_null()).height
            assert value_row.offered.count == shown
        if disparity.impact_ratio is not None:
            assert disparity.flagged == (disparity.impact_ratio < 0.8)
    holdout = next(d for d in result.attributes if d.group == "holdout")
    assert all(v.offered.rate == 0.0 for v in holdout.values)
    assert holdout.impact_ratio is None
    assert "undefined_ratio" in holdout.warnings

    json.dumps(to_json(result), allow_nan=False)
    assert _sweep(platform, [PLANTED, "never-decided", "other-value"]) == []

    bad: list[tuple[list[dict[str, str]], str]] = [
        ([], "rows"),
        ([{"gender": "x"}], "rows[0].customer_id"),
        ([{"customer_id": "a-1"}], "rows"),
        ([{"customer_id": "a-1", "g": "x"}, {"customer_id": "a-1", "g": "y"}], "rows[1].g"),
    ]
    for body, field in bad:
        with pytest.raises(InvalidInput) as raised:
            fairness_report(platform, KEY, body)
        assert raised.value.field == field
        assert PLANTED not in raised.value.message
        assert "a-1" not in raised.value.message


def test_an_experiment_without_decisions_reports_empty_not_nan(demo: Demo) -> None:
    start(demo.platform, demo_variant(KEY, reward=REWARD))
    result = experiment_report(demo.platform, KEY)
    assert result.decisions == 0
    assert result.srm is None
    assert "no_closed_rewards" in result.warnings
    assert result.off_policy.estimates == ()
    encoded = to_json(result)
    json.dumps(encoded, allow_nan=False)
    assert all(h["groups"] == [] for h in encoded["horizons"])
    assert math.isfinite(0.0)  # keeps `math` honest for readers


@pytest.mark.slow
def test_cli_evaluates_the_database_with_segments_and_an_audit(
    demo: Demo,
    logged: list[Decision],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bandit_platform.cli import main

    platform = demo.platform
    monkeypatch.setenv("DATABASE_URL", platform.settings.database_url)
    monkeypatch.setenv("BANDIT_PSEUDONYM_KEY", platform.settings.pseudonym_key.decode())
    audit = tmp_path / "groups.csv"
    audit.write_text(
        "customer_id,gender\n" + "".join(f"a-{i},{PLANTED if i % 2 else 'x'}\n" for i in range(90))
    )
    assert main(["evaluate", "--experiment", KEY, "--audit-groups", str(audit)]) == 0
    text = capsys.readouterr().out
    parquet = _parquet(platform, tmp_path / "export")
    assert main(["evaluate", "--log", str(parquet), "--traffic", "10,20,70"]) == 0
    from_file = capsys.readouterr().out
    # the text of the Parquet path, up to the off-policy table, then guardrails and segments
    head = from_file.split("\n\noff-policy")[0]
    assert text.startswith(head)
    assert "off-policy values" in text
    assert "segments (" in text
    assert "young_professional" in text
    assert "fairness audit" in text
    assert "gender / bandit" in text

    assert main(["evaluate", "--experiment", KEY, "--json", "--horizon", "clicked_30m"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert set(body) == {"report", "segments", "fairness"}
    assert body["fairness"] is None
    assert body["report"]["off_policy"]["horizon"] == "clicked_30m"

    assert main(["evaluate", "--experiment", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", "--log", str(parquet), "--audit-groups", str(audit)]) == 2
    assert main(["evaluate", "--experiment", KEY, "--audit-groups", str(tmp_path / "no")]) == 2
    assert "--audit-groups" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--experiment", KEY, "--log", str(parquet)])
    assert _sweep(platform, [PLANTED]) == []
