"""`ExperimentService`: versions, audit, status transitions and the first model snapshot."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import EpsilonGreedy, ExperimentConfig, TrafficSplit
from bandit_platform.domain.decisions import (
    APPROVAL_STATUSES,
    STATUS_TRANSITIONS,
    ExperimentStatus,
)
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.storage.database import create_engine

ACTOR = "pm@bank.example"


def config(key: str = "savings-push", **changes: Any) -> ExperimentConfig:
    return msgspec.structs.replace(demo_config(), key=key, **changes)


@pytest.fixture
def experiments(platform: Platform) -> ExperimentService:
    return ExperimentService(platform)


def rows(platform: Platform, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows read through a NEW engine: only committed data is visible."""
    engine = create_engine(platform.settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def experiment_id(platform: Platform, key: str) -> int:
    (row,) = rows(platform, "SELECT id FROM experiments WHERE key = :key", key=key)
    return int(row["id"])


def audit(platform: Platform, key: str) -> list[dict[str, Any]]:
    return ExperimentService(platform).audit_log(key)


def test_create_is_a_draft_at_version_one_with_its_rows(
    platform: Platform, experiments: ExperimentService
) -> None:
    view = experiments.create(config(), ACTOR)
    assert (view.key, view.status, view.version) == ("savings-push", ExperimentStatus.DRAFT, 1)
    assert view.config["traffic"] == {"holdout": 10.0, "ab": 20.0, "bandit": 70.0}

    exp_id = experiment_id(platform, "savings-push")
    versions = rows(
        platform,
        "SELECT version, created_by FROM experiment_versions WHERE experiment_id = :id",
        id=exp_id,
    )
    assert versions == [{"version": 1, "created_by": ACTOR}]
    offers = rows(platform, "SELECT key, active FROM offers WHERE experiment_id = :id", id=exp_id)
    assert sorted(o["key"] for o in offers) == sorted(o.key for o in demo_config().offers)
    assert all(o["active"] for o in offers)
    (entry,) = audit(platform, "savings-push")
    assert (entry["action"], entry["actor"], entry["details"]) == (
        "experiment.create",
        ACTOR,
        {"version": 1},
    )
    # No model before the experiment starts.
    assert rows(platform, "SELECT id FROM model_snapshots") == []

    with pytest.raises(Conflict) as duplicate:
        experiments.create(config(), ACTOR)
    assert duplicate.value.field == "key"


def test_update_makes_a_new_version_and_a_noop_does_not(
    platform: Platform, experiments: ExperimentService
) -> None:
    experiments.create(config(), ACTOR)
    exp_id = experiment_id(platform, "savings-push")
    changed = config(
        traffic=TrafficSplit(holdout=20, ab=20, bandit=60),
        offers=demo_config().offers[:-1],  # drop budgeting_tool ...
        fallback_offer=None,  # ... which the fallback, A-B default and rules name
        ab_arm=msgspec.structs.replace(demo_config().ab_arm, default_offer=None),
    )
    view = experiments.update("savings-push", changed, "reviewer")
    assert view.version == 2
    assert view.config["traffic"]["holdout"] == 20.0

    versions = rows(
        platform,
        "SELECT version FROM experiment_versions WHERE experiment_id = :id ORDER BY version",
        id=exp_id,
    )
    assert [v["version"] for v in versions] == [1, 2]
    latest = audit(platform, "savings-push")[0]
    assert latest["action"] == "experiment.update"
    assert latest["actor"] == "reviewer"
    assert latest["details"] == {
        "version": 2,
        "changed": ["ab_arm", "fallback_offer", "offers", "traffic"],
    }
    offers = rows(platform, "SELECT key, active FROM offers WHERE experiment_id = :id", id=exp_id)
    assert {o["key"]: bool(o["active"]) for o in offers}["budgeting_tool"] is False

    same = experiments.update("savings-push", changed, "reviewer")
    assert same.version == 2
    assert len(audit(platform, "savings-push")) == 2
    assert len(rows(platform, "SELECT version FROM experiment_versions")) == 2

    with pytest.raises(InvalidInput) as rename:
        experiments.update("savings-push", config("other-key"), ACTOR)
    assert rename.value.field == "key"
    with pytest.raises(NotFound):
        experiments.update("no-such", config("no-such"), ACTOR)


def _reach(experiments: ExperimentService, key: str, status: ExperimentStatus) -> None:
    path = {
        ExperimentStatus.DRAFT: [],
        ExperimentStatus.APPROVED: [],
        ExperimentStatus.RUNNING: [ExperimentStatus.RUNNING],
        ExperimentStatus.PAUSED: [ExperimentStatus.RUNNING, ExperimentStatus.PAUSED],
        ExperimentStatus.STOPPED: [ExperimentStatus.STOPPED],
    }[status]
    experiments.create(config(key), ACTOR)
    if status not in (ExperimentStatus.DRAFT, ExperimentStatus.STOPPED):
        experiments.approve(key, "approver", "reviewed")
    for step in path:
        experiments.change_status(key, step, ACTOR)
    assert experiments.get(key).status == status


@pytest.mark.parametrize("start", list(ExperimentStatus), ids=str)
def test_status_transitions(
    platform: Platform, experiments: ExperimentService, start: ExperimentStatus
) -> None:
    # Draft and approved are reached by a configuration change and by approval, never by a
    # plain status change.
    allowed = STATUS_TRANSITIONS[start] - APPROVAL_STATUSES
    for target in ExperimentStatus:
        key = f"from-{start}-to-{target}"
        _reach(experiments, key, start)
        entries = len(audit(platform, key))
        if target == start:
            assert experiments.change_status(key, target, ACTOR).status == start
            assert len(audit(platform, key)) == entries  # nothing happened, nothing audited
        elif target in allowed:
            assert experiments.change_status(key, target, ACTOR).status == target
            latest = audit(platform, key)[0]
            assert latest["action"] == "experiment.status"
            assert latest["details"] == {"from": start.value, "to": target.value}
        else:
            with pytest.raises(Conflict) as error:
                experiments.change_status(key, target, ACTOR)
            assert error.value.field == "status"
            assert experiments.get(key).status == start
            assert len(audit(platform, key)) == entries
    with pytest.raises(NotFound):
        experiments.change_status("no-such", ExperimentStatus.RUNNING, ACTOR)


def test_starting_publishes_a_checksummed_cold_model(
    platform: Platform, experiments: ExperimentService
) -> None:
    experiments.create(config(), ACTOR)
    experiments.approve("savings-push", "approver", "reviewed")
    experiments.change_status("savings-push", ExperimentStatus.RUNNING, ACTOR)
    snapshots = rows(
        platform,
        "SELECT version, checksum, data, size_bytes, examples_seen FROM model_snapshots "
        "WHERE experiment_id = :id",
        id=experiment_id(platform, "savings-push"),
    )
    assert len(snapshots) == 1
    snapshot = snapshots[0]
    assert snapshot["version"] == 1
    assert snapshot["examples_seen"] == 0
    data = bytes(snapshot["data"])
    assert snapshot["size_bytes"] == len(data) > 0
    assert snapshot["checksum"] == hashlib.sha256(data).hexdigest()

    # Pausing and resuming keeps the model; changing the explorer publishes a fitting one.
    experiments.change_status("savings-push", ExperimentStatus.PAUSED, ACTOR)
    experiments.change_status("savings-push", ExperimentStatus.RUNNING, ACTOR)
    assert len(rows(platform, "SELECT id FROM model_snapshots")) == 1
    proposal = experiments.propose(
        "savings-push", config(explorer=EpsilonGreedy(epsilon=0.2)), ACTOR
    )
    assert proposal.change is not None
    assert len(rows(platform, "SELECT id FROM model_snapshots")) == 1  # not served yet
    experiments.approve_change(proposal.change.id, "approver", "more exploration")
    versions = rows(platform, "SELECT version FROM model_snapshots ORDER BY version")
    assert [v["version"] for v in versions] == [1, 2]


def test_stopped_experiment_cannot_be_updated(
    platform: Platform, experiments: ExperimentService
) -> None:
    experiments.create(config(), ACTOR)
    experiments.change_status("savings-push", ExperimentStatus.STOPPED, ACTOR)
    with pytest.raises(Conflict) as error:
        experiments.update("savings-push", config(name="Renamed"), ACTOR)
    assert error.value.field == "status"
    view = experiments.get("savings-push")
    assert (view.version, view.name) == (1, demo_config().name)
    assert len(rows(platform, "SELECT version FROM experiment_versions")) == 1


def test_invalid_configuration_writes_nothing(
    platform: Platform, experiments: ExperimentService
) -> None:
    with pytest.raises(InvalidInput) as error:
        experiments.create(config(fallback_offer="no-such-offer"), ACTOR)
    assert error.value.field == "fallback_offer"
    assert rows(platform, "SELECT id FROM experiments") == []
    assert rows(platform, "SELECT id FROM audit_log") == []
