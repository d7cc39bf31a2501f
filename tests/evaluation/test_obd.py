"""Open Bandit Dataset import: the CSV format, the mapping to the exported log, evaluate_log.

The fixture `data/obd_random_small.csv` is 36 rows (12 impressions x 3 slots) in the exact OBD
CSV format (unnamed index column, hashed user features, K = 4 items with one affinity column
each) of a uniform-random logging policy (propensity 1/4). Exact identities are checked to
`rel=1e-12`.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from bandit_platform.cli import main
from bandit_platform.evaluation.obd import (
    OBD_LOG_SCHEMA,
    check_obd_values,
    item_count,
    obd_frame,
    read_obd,
)
from bandit_platform.evaluation.report import LOGGING, UNIFORM, evaluate_log

FIXTURE = Path(__file__).parent / "data" / "obd_random_small.csv"
ITEMS = 4

#: The columns and types written by `bandit-platform export` (service/export.py) for one
#: reward horizon named `primary`.
EXPORT_SCHEMA = {
    "decision_id": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "experiment_version": pl.Int64,
    "customer_key": pl.String,
    "surface": pl.String,
    "group": pl.String,
    "reason": pl.String,
    "chosen_offer": pl.String,
    "chosen_variant": pl.String,
    "propensity": pl.Float64,
    "probabilities": pl.String,
    "eligible": pl.List(pl.String),
    "context": pl.String,
    "model_version": pl.Int64,
    "learnable": pl.Boolean,
    "reward_primary": pl.Float64,
    "reward_source_primary": pl.String,
}


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return pl.read_csv(FIXTURE, schema_overrides={"timestamp": pl.String})


def test_read_obd_is_lazy_and_keeps_the_file_columns(raw: pl.DataFrame) -> None:
    frame = read_obd(FIXTURE)
    assert isinstance(frame, pl.LazyFrame)
    collected = frame.collect()
    assert collected.columns == raw.columns
    assert collected.columns[0] == ""
    assert collected.height == 36
    assert collected.schema["user_feature_0"] == pl.String


def test_position_filter(raw: pl.DataFrame) -> None:
    second = read_obd(FIXTURE, position=2).collect()
    assert second.height == raw.filter(pl.col("position") == 2).height == 12
    assert set(second["position"]) == {2}


def test_the_exported_log_has_the_export_schema(raw: pl.DataFrame) -> None:
    log = obd_frame(read_obd(FIXTURE)).collect()
    assert dict(log.schema) == EXPORT_SCHEMA
    assert dict(OBD_LOG_SCHEMA) == EXPORT_SCHEMA
    first, row = log.row(0, named=True), raw.row(0, named=True)
    assert first["decision_id"] == "obd-0"
    assert first["chosen_offer"] == f"item_{row['item_id']}"
    assert first["chosen_variant"] is None
    assert first["surface"] == f"position_{row['position']}"
    assert first["group"] == "bandit"
    assert first["learnable"] is True
    assert first["eligible"] == [f"item_{i}" for i in range(ITEMS)]
    assert first["propensity"] == row["propensity_score"]
    assert json.loads(first["probabilities"]) == {first["chosen_offer"]: 0.25}
    assert first["reward_primary"] == float(row["click"])
    assert first["reward_source_primary"] == "observed"
    assert first["customer_key"] == "|".join(row[f"user_feature_{i}"] for i in range(4))
    assert first["created_at"].isoformat().startswith(row["timestamp"][:19].replace(" ", "T"))
    context = json.loads(first["context"])
    assert context["user-item_affinity_3"] == row["user-item_affinity_3"]
    assert log["decision_id"].n_unique() == log.height


@pytest.mark.parametrize("position", [None, 1, 3])
def test_ips_of_uniform_on_a_random_log_is_the_click_rate(
    raw: pl.DataFrame, position: int | None
) -> None:
    report = evaluate_log(obd_frame(read_obd(FIXTURE, position=position)))
    clicks = raw if position is None else raw.filter(pl.col("position") == position)
    click_rate = float(clicks["click"].mean())  # type: ignore[arg-type]
    uniform = next(p for p in report.policies if p.policy == UNIFORM)
    names = [e.name for e in uniform.estimates]
    assert names == ["IPS", "SNIPS", "DR"]
    ips, snips, dr = uniform.estimates
    assert ips.n == clicks.height
    assert ips.value == pytest.approx(click_rate, rel=1e-12)
    assert snips.value == pytest.approx(click_rate, rel=1e-12)
    assert ips.max_weight == pytest.approx(1.0, rel=1e-12)
    # DR of the uniform policy with a cross-fitted per-item model: within the reward range
    assert 0.0 <= dr.value <= 1.0
    logging = next(p for p in report.policies if p.policy == LOGGING)
    assert logging.estimates[0].value == pytest.approx(click_rate, rel=1e-12)


def test_item_count() -> None:
    assert item_count(["user-item_affinity_1", "user-item_affinity_0", "click"]) == 2
    with pytest.raises(ValueError, match="user-item_affinity_1 is missing"):
        item_count(["user-item_affinity_0", "user-item_affinity_2"])
    with pytest.raises(ValueError, match="user-item_affinity_0"):
        item_count(["click"])


def _write(raw: pl.DataFrame, path: Path) -> Path:
    raw.write_csv(path)
    return path


@pytest.mark.parametrize(
    "column",
    ["timestamp", "item_id", "position", "click", "propensity_score", "user_feature_2"],
)
def test_missing_columns_are_named(raw: pl.DataFrame, tmp_path: Path, column: str) -> None:
    path = _write(raw.drop(column), tmp_path / "obd.csv")
    with pytest.raises(ValueError, match=f"column {column} is missing"):
        read_obd(path)


def test_a_missing_index_column_is_named(raw: pl.DataFrame, tmp_path: Path) -> None:
    path = _write(raw.drop(""), tmp_path / "obd.csv")
    with pytest.raises(ValueError, match="unnamed index"):
        read_obd(path)


def test_a_text_item_id_is_refused(raw: pl.DataFrame, tmp_path: Path) -> None:
    changed = raw.with_columns(
        pl.concat_str([pl.lit("x"), pl.col("item_id").cast(pl.String)]).alias("item_id")
    )
    with pytest.raises(ValueError, match="column item_id must hold integers"):
        read_obd(_write(changed, tmp_path / "obd.csv"))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("propensity_score", 0.0, "column propensity_score must be in"),
        ("propensity_score", 1.5, "column propensity_score must be in"),
        ("click", 2, "column click must be 0 or 1"),
        ("item_id", ITEMS, "column item_id must be in 0..3"),
        ("position", 0, "column position must be >= 1"),
        ("", 1, "column \\(unnamed index\\) must be unique"),
    ],
)
def test_invalid_values_are_named(
    raw: pl.DataFrame, tmp_path: Path, column: str, value: float, message: str
) -> None:
    index = pl.int_range(pl.len())
    changed = raw.with_columns(
        pl.when(index == 5).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )
    frame = read_obd(_write(changed, tmp_path / "obd.csv"))
    with pytest.raises(ValueError, match=message):
        check_obd_values(frame)
    with pytest.raises(ValueError, match=message):
        obd_frame(frame)


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="position"):
        read_obd(FIXTURE, position=0)
    with pytest.raises(FileNotFoundError):
        read_obd(tmp_path / "absent.csv")


def test_evaluate_command_reads_an_obd_csv(
    raw: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bandit-platform evaluate --obd FILE` prints `evaluate_log` of the mapped log."""
    assert main(["evaluate", "--obd", str(FIXTURE), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["decisions"] == raw.height
    assert printed["group_counts"] == {"bandit": raw.height}
    uniform = next(p for p in printed["policies"] if p["policy"] == UNIFORM)
    assert uniform["estimates"][0]["name"] == "IPS"
    assert uniform["estimates"][0]["value"] == pytest.approx(
        float(raw["click"].mean()),  # type: ignore[arg-type]
        rel=1e-12,
    )

    assert main(["evaluate", "--obd", str(FIXTURE)]) == 0
    assert "off-policy values" in capsys.readouterr().out
    assert main(["evaluate", "--obd", str(tmp_path / "absent.csv")]) == 2
    assert "no such OBD log" in capsys.readouterr().err
    assert main(["evaluate", "--obd", str(_write(raw.drop("click"), tmp_path / "o.csv"))]) == 2
    assert "click" in capsys.readouterr().err
