"""Export the joined decision log: Parquet for analysts, VW dsjson for VW's own tools."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlmodel import col

from bandit_platform.domain.errors import NotFound
from bandit_platform.policies.vw_adapter import dsjson_line
from bandit_platform.service.learner import logged_example
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import DecisionRow, RewardRow

BATCH = 5000


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    parquet: Path
    dsjson: Path
    decisions: int
    dsjson_examples: int


def export_log(platform: Platform, experiment_key: str, directory: Path) -> ExportSummary:
    """Write `<key>.parquet` (every decision with its rewards per horizon) and `<key>.dsjson`
    (learnable decisions with a closed learning-horizon reward, cost = -reward).

    A decision whose context a consent withdrawal erased is in the Parquet file with an empty
    context (`{}`) and `context_erased = true`, its propensity and rewards as logged, so that
    reports count it; it is never in the dsjson file, which is for learning.

    Raises:
        NotFound: no such experiment.
    """
    directory.mkdir(parents=True, exist_ok=True)
    parquet_path = directory / f"{experiment_key}.parquet"
    dsjson_path = directory / f"{experiment_key}.dsjson"
    with platform.read_session() as session:
        experiment = repositories.experiment_by_key(session, experiment_key)
        if experiment is None:
            raise NotFound(f"no experiment {experiment_key!r}", field="experiment")
        assert experiment.id is not None
        current = platform.compiled(experiment)
        horizons = [h.name for h in current.config.reward.horizons()]
        learning = horizons[0]
        records: list[dict[str, Any]] = []
        examples = 0
        after = ""
        with dsjson_path.open("w") as dsjson:
            while True:
                decisions = (
                    session.execute(
                        sa.select(DecisionRow)
                        .where(
                            col(DecisionRow.experiment_id) == experiment.id,
                            col(DecisionRow.id) > after,
                        )
                        .order_by(col(DecisionRow.id))
                        .limit(BATCH)
                    )
                    .scalars()
                    .all()
                )
                if not decisions:
                    break
                after = decisions[-1].id
                rewards: dict[str, dict[str, RewardRow]] = defaultdict(dict)
                for reward in session.execute(
                    sa.select(RewardRow).where(
                        col(RewardRow.decision_id).in_([d.id for d in decisions])
                    )
                ).scalars():
                    rewards[reward.decision_id][reward.horizon] = reward
                for decision in decisions:
                    erased = decision.context_erased_at is not None
                    record: dict[str, Any] = {
                        "decision_id": decision.id,
                        "created_at": decision.created_at,
                        "experiment_version": decision.experiment_version,
                        "customer_key": decision.customer_key,
                        "surface": decision.surface,
                        "group": decision.group,
                        "reason": decision.reason,
                        "chosen_offer": decision.chosen_offer,
                        "chosen_variant": decision.chosen_variant,
                        "propensity": decision.propensity,
                        "probabilities": json.dumps(decision.probabilities, sort_keys=True),
                        "eligible": list(decision.eligible),
                        "context": json.dumps({} if erased else decision.context, sort_keys=True),
                        "model_version": decision.model_version,
                        "learnable": decision.learnable,
                        "context_erased": erased,
                    }
                    for horizon in horizons:
                        closed = rewards[decision.id].get(horizon)
                        record[f"reward_{horizon}"] = None if closed is None else closed.reward
                        record[f"reward_source_{horizon}"] = (
                            None if closed is None else closed.source
                        )
                    records.append(record)
                    closed = rewards[decision.id].get(learning)
                    if closed is None or not decision.learnable or erased:
                        continue
                    compiled = platform.compiled_version(
                        session, experiment.id, decision.experiment_version
                    )
                    example = logged_example(
                        decision, closed.id or 0, closed.reward, compiled, current
                    )
                    if example is None:
                        continue
                    probabilities = [decision.probabilities[k] for k in decision.eligible]
                    dsjson.write(
                        dsjson_line(
                            example.shared,
                            example.actions,
                            example.chosen,
                            example.reward,
                            probabilities,
                            decision.id,
                            decision.created_at.isoformat(),
                        )
                        + "\n"
                    )
                    examples += 1
    schema: dict[str, Any] = {
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
        "context_erased": pl.Boolean,
    }
    for horizon in horizons:
        schema[f"reward_{horizon}"] = pl.Float64
        schema[f"reward_source_{horizon}"] = pl.String
    pl.DataFrame(records, schema=schema).write_parquet(parquet_path)
    return ExportSummary(parquet_path, dsjson_path, len(records), examples)
