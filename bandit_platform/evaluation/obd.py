"""Open Bandit Dataset import: an OBD log as the platform's exported decision log.

The Open Bandit Dataset (ZOZOTOWN fashion recommendations; Saito, Aihara, Matsutani & Narita,
"Open Bandit Dataset and Pipeline: towards realistic and reproducible off-policy evaluation",
NeurIPS 2021 Datasets and Benchmarks) ships one CSV per logging policy (`random`, `bts`) and
campaign (`all`, `men`, `women`), at `<policy>/<campaign>/<campaign>.csv`, with the columns

    (unnamed index), timestamp, item_id, position, click, propensity_score,
    user_feature_0, ..., user_feature_3, user-item_affinity_0, ..., user-item_affinity_{K-1}

one row per (impression, slot): `item_id` in 0..K-1 (K items of the campaign, one affinity
column each), `position` the slot 1..3, `click` 0/1, `propensity_score` the logging policy's
probability of the item in that slot (1/K for `random`), `user_feature_*` hashed categorical
user features (strings). The format is the one `obp.dataset.OpenBanditDataset` reads
(`pd.read_csv(..., index_col=0)`).

`read_obd` scans the CSV lazily and checks its columns; `obd_frame` maps it to the columns of
`bandit-platform export` (see `OBD_LOG_SCHEMA`), so that `report.evaluate_log` evaluates it.
Each row becomes one learnable decision of the bandit group:

- `decision_id` = `obd-<index>`; `created_at` = `timestamp` (UTC);
- `surface` = `position_<slot>` (OBD logs one decision per slot; filter by `position` to study
  one slot as its own bandit, or keep all slots as one log of per-slot decisions);
- `customer_key` = the four user features joined by `|`: OBD has no customer id, so this is a
  segment of identical-looking customers, coarser than a customer (clustering by it is
  conservative);
- `chosen_offer` = `item_<item_id>`, `chosen_variant` null, `eligible` = all K items;
- `propensity` = `propensity_score`; `probabilities` = the JSON object
  `{"item_<item_id>": propensity_score}`: OBD records only the chosen item's propensity, so the
  object holds that one entry and its values do not sum to 1 (see the note below);
- `context` = JSON of the user features and affinities; `model_version` null;
- `learnable` = true, `reward_primary` = `click`, `reward_source_primary` = `observed`.

Note for consumers of `probabilities`: IPS, SNIPS and DR of any target policy need only the
chosen arm's propensity and are unaffected; the uniform target is 1/K with K = len(eligible),
so on a `random` log (propensity 1/K) every weight is 1 and IPS is the mean click rate. Only
computations that need the logging policy's full distribution (the reward-model value of the
logging policy, sum_a mu(a|x) qhat(x, a), in its DR) must detect the partial object (its values
sum to less than 1 over `eligible`) and not use it as a distribution; `evaluate_log` does so
and leaves that one DR out with its `incomplete_probabilities` warning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import polars as pl

#: Columns every OBD log has, before the user features and the affinities.
OBD_COLUMNS: Final = ("timestamp", "item_id", "position", "click", "propensity_score")
#: The unnamed pandas index column (an empty header).
OBD_INDEX: Final = ""
#: The four hashed user-feature columns.
OBD_USER_FEATURES: Final = tuple(f"user_feature_{i}" for i in range(4))
#: Prefix of the per-item affinity columns (note the hyphen).
OBD_AFFINITY_PREFIX: Final = "user-item_affinity_"
#: The reward horizon the clicks are written to (`reward_<horizon>`).
OBD_HORIZON: Final = "primary"

#: Columns and types of the exported decision log that `obd_frame` produces.
OBD_LOG_SCHEMA: Final[dict[str, pl.DataType]] = {
    "decision_id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "experiment_version": pl.Int64(),
    "customer_key": pl.String(),
    "surface": pl.String(),
    "group": pl.String(),
    "reason": pl.String(),
    "chosen_offer": pl.String(),
    "chosen_variant": pl.String(),
    "propensity": pl.Float64(),
    "probabilities": pl.String(),
    "eligible": pl.List(pl.String()),
    "context": pl.String(),
    "model_version": pl.Int64(),
    "learnable": pl.Boolean(),
    f"reward_{OBD_HORIZON}": pl.Float64(),
    f"reward_source_{OBD_HORIZON}": pl.String(),
}

_AFFINITY = re.compile(re.escape(OBD_AFFINITY_PREFIX) + r"(\d+)")
_INTEGERS: Final = (OBD_INDEX, "item_id", "position", "click")


def item_count(columns: list[str]) -> int:
    """K, the number of items: the affinity columns must be exactly 0..K-1.

    Raises:
        ValueError: no affinity column, or their numbers are not 0..K-1.
    """
    numbers = sorted(int(m.group(1)) for c in columns if (m := _AFFINITY.fullmatch(c)))
    if not numbers:
        raise ValueError(f"column {OBD_AFFINITY_PREFIX}0: no item-affinity column")
    missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
    if missing:
        raise ValueError(f"column {OBD_AFFINITY_PREFIX}{missing[0]} is missing")
    return len(numbers)


def _check_columns(schema: pl.Schema) -> int:
    names = schema.names()
    for name in (OBD_INDEX, *OBD_COLUMNS, *OBD_USER_FEATURES):
        if name not in names:
            label = "(unnamed index)" if name == OBD_INDEX else name
            raise ValueError(f"column {label} is missing from the OBD log")
    for name in _INTEGERS:
        if not schema[name].is_integer():
            label = "(unnamed index)" if name == OBD_INDEX else name
            raise ValueError(f"column {label} must hold integers, got {schema[name]}")
    if not schema["propensity_score"].is_numeric():
        raise ValueError(
            f"column propensity_score must be numeric, got {schema['propensity_score']}"
        )
    return item_count(names)


def read_obd(path: str | Path, *, position: int | None = None) -> pl.LazyFrame:
    """Scan an Open Bandit Dataset CSV lazily, checking its columns.

    Args:
        path: the campaign CSV (e.g. `random/all/all.csv`).
        position: keep only this slot (1-based, as in the file), or all slots when None.

    Returns:
        The OBD columns as in the file (the index column named ""), user features as strings.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing or mistyped column (named in the message), or an invalid
            `position`.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such OBD log: {file}")
    if position is not None and not (isinstance(position, int) and position >= 1):
        raise ValueError(f"position must be a slot number >= 1, got {position!r}")
    # user features are hashes that may look numeric in the first rows: read them as strings
    overrides: dict[str, pl.DataType] = {name: pl.String() for name in OBD_USER_FEATURES}
    overrides["timestamp"] = pl.String()
    overrides["propensity_score"] = pl.Float64()
    header = pl.scan_csv(file, n_rows=0).collect_schema().names()
    frame = pl.scan_csv(file, schema_overrides={k: v for k, v in overrides.items() if k in header})
    _check_columns(frame.collect_schema())
    if position is not None:
        frame = frame.filter(pl.col("position") == position)
    return frame


def check_obd_values(obd: pl.LazyFrame) -> None:
    """Check the values of an OBD log in one aggregate pass (the column checks are lazy).

    Raises:
        ValueError: naming the first offending column: nulls, `propensity_score` outside
            (0, 1], `click` not 0/1, `item_id` outside 0..K-1, `position` below 1, or a
            duplicated index.
    """
    k = _check_columns(obd.collect_schema())
    checks: dict[str, pl.Expr] = {
        "(unnamed index)": pl.col(OBD_INDEX).is_duplicated().any()
        | pl.col(OBD_INDEX).is_null().any(),
        "timestamp": pl.col("timestamp").is_null().any(),
        "item_id": ((pl.col("item_id") < 0) | (pl.col("item_id") >= k)).any()
        | pl.col("item_id").is_null().any(),
        "position": (pl.col("position") < 1).any() | pl.col("position").is_null().any(),
        "click": (~pl.col("click").is_in([0, 1])).any() | pl.col("click").is_null().any(),
        "propensity_score": (
            (pl.col("propensity_score") <= 0.0) | (pl.col("propensity_score") > 1.0)
        ).any()
        | pl.col("propensity_score").is_null().any(),
    }
    row = obd.select([expr.fill_null(False).alias(name) for name, expr in checks.items()]).collect()
    bad = [name for name in checks if bool(row[name][0])]
    if bad:
        expected = {
            "(unnamed index)": "unique and not null",
            "timestamp": "not null",
            "item_id": f"in 0..{k - 1}",
            "position": ">= 1",
            "click": "0 or 1",
            "propensity_score": "in (0, 1]",
        }
        raise ValueError(f"column {bad[0]} must be {expected[bad[0]]}")


def obd_frame(
    obd: pl.LazyFrame, *, experiment_version: int = 1, check_values: bool = True
) -> pl.LazyFrame:
    """An OBD log (from `read_obd`) as the exported decision log (`OBD_LOG_SCHEMA`).

    The mapping is in the module docstring. The result is lazy; `evaluate_log` accepts it.

    Args:
        obd: the frame of `read_obd` (optionally filtered further).
        experiment_version: the version written to every row.
        check_values: run `check_obd_values` first (one pass over the data).

    Raises:
        ValueError: a missing or invalid column, named in the message.
    """
    k = _check_columns(obd.collect_schema())
    if check_values:
        check_obd_values(obd)
    items = [f"item_{i}" for i in range(k)]
    affinities = [f"{OBD_AFFINITY_PREFIX}{i}" for i in range(k)]
    offer = pl.concat_str([pl.lit("item_"), pl.col("item_id").cast(pl.String)])
    propensity = pl.col("propensity_score").cast(pl.Float64)
    context = pl.struct(
        pl.col("position"),
        *[pl.col(c) for c in OBD_USER_FEATURES],
        *[pl.col(c) for c in affinities],
    ).struct.json_encode()
    return obd.select(
        pl.concat_str([pl.lit("obd-"), pl.col(OBD_INDEX).cast(pl.String)]).alias("decision_id"),
        pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC").alias("created_at"),
        pl.lit(experiment_version, dtype=pl.Int64).alias("experiment_version"),
        pl.concat_str([pl.col(c) for c in OBD_USER_FEATURES], separator="|").alias("customer_key"),
        pl.concat_str([pl.lit("position_"), pl.col("position").cast(pl.String)]).alias("surface"),
        pl.lit("bandit").alias("group"),
        pl.lit("bandit").alias("reason"),
        offer.alias("chosen_offer"),
        pl.lit(None, dtype=pl.String).alias("chosen_variant"),
        propensity.alias("propensity"),
        # only the chosen item's propensity is known (see the module docstring)
        pl.concat_str(
            [pl.lit('{"'), offer, pl.lit('": '), propensity.cast(pl.String), pl.lit("}")]
        ).alias("probabilities"),
        pl.lit(pl.Series([items], dtype=pl.List(pl.String))).first().alias("eligible"),
        context.alias("context"),
        pl.lit(None, dtype=pl.Int64).alias("model_version"),
        pl.lit(True).alias("learnable"),
        pl.col("click").cast(pl.Float64).alias(f"reward_{OBD_HORIZON}"),
        pl.lit("observed").alias(f"reward_source_{OBD_HORIZON}"),
    )
