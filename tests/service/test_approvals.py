"""Approval: only an approved configuration version runs (SQLite and PostgreSQL).

A draft needs approval to start; a change to a running experiment is a change request that
serves only once a second person approves it; a rejection keeps the served version; every
step is audited with its comment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from bandit_platform.cli import main
from bandit_platform.demo import demo_config
from bandit_platform.domain.config import ExperimentConfig, TrafficSplit
from bandit_platform.domain.config_diff import config_diff, unified_diff
from bandit_platform.domain.decisions import ChangeStatus, ExperimentStatus
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.domain.users import Role
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.service.users import UserService
from tests.conftest import PSEUDONYM_KEY, Demo
from tests.service.learning_support import decide, identity

KEY = "savings-push"
EDITOR = "user:pm"
APPROVER = "user:compliance"


def config(**changes: Any) -> ExperimentConfig:
    return msgspec.structs.replace(demo_config(), key=KEY, **changes)


@pytest.fixture
def experiments(platform: Platform) -> ExperimentService:
    return ExperimentService(platform)


def actions(experiments: ExperimentService) -> list[str]:
    return [row["action"] for row in experiments.audit_log(KEY)]


def running(experiments: ExperimentService) -> None:
    experiments.create(config(), EDITOR)
    experiments.approve(KEY, APPROVER, "looks right")
    experiments.change_status(KEY, ExperimentStatus.RUNNING, EDITOR)


def test_an_unapproved_version_cannot_start(experiments: ExperimentService) -> None:
    experiments.create(config(), EDITOR)
    with pytest.raises(Conflict) as refused:
        experiments.change_status(KEY, ExperimentStatus.RUNNING, EDITOR)
    assert refused.value.field == "status"
    assert "version 1 is not approved" in refused.value.message
    with pytest.raises(Conflict):  # approval is not a status change
        experiments.change_status(KEY, ExperimentStatus.APPROVED, EDITOR)

    approved = experiments.approve(KEY, APPROVER, "eligibility checked", version=1)
    assert (approved.status, approved.approved_version) == (ExperimentStatus.APPROVED, 1)

    # A change after approval makes a new draft version that needs approval again.
    changed = experiments.update(KEY, config(name="Savings push, v2"), EDITOR)
    assert (changed.status, changed.version, changed.approved_version) == (
        ExperimentStatus.DRAFT,
        2,
        1,
    )
    with pytest.raises(Conflict, match="version 2 is not approved"):
        experiments.change_status(KEY, ExperimentStatus.RUNNING, EDITOR)
    with pytest.raises(Conflict) as stale:
        experiments.approve(KEY, APPROVER, "ok", version=1)  # reviewed an older version
    assert stale.value.field == "version"
    experiments.approve(KEY, APPROVER, "renamed only", version=2)
    started = experiments.change_status(KEY, ExperimentStatus.RUNNING, EDITOR)
    assert (started.status, started.version, started.approved_version) == (
        ExperimentStatus.RUNNING,
        2,
        2,
    )
    log = experiments.audit_log(KEY)
    assert [row["action"] for row in log] == [
        "experiment.status",
        "experiment.approved",
        "experiment.update",
        "experiment.approved",
        "experiment.create",
    ]
    assert log[1]["actor"] == APPROVER
    assert log[1]["details"] == {"version": 2, "comment": "renamed only"}
    assert log[2]["details"]["approval"] == "needed again"


def test_four_eyes_and_comments(experiments: ExperimentService) -> None:
    experiments.create(config(), EDITOR)
    with pytest.raises(Conflict) as own:
        experiments.approve(KEY, EDITOR, "my own work")
    assert own.value.field == "actor"
    with pytest.raises(InvalidInput) as blank:
        experiments.approve(KEY, APPROVER, "   ")
    assert blank.value.field == "comment"
    rejected = experiments.reject(KEY, APPROVER, "the cap is too loose")
    assert rejected.status == ExperimentStatus.DRAFT
    assert actions(experiments) == ["experiment.rejected", "experiment.create"]
    assert experiments.get(KEY).approved_version is None


def test_a_running_change_serves_only_once_approved(demo: Demo) -> None:
    experiments = ExperimentService(demo.platform)
    app = identity(demo)
    running(experiments)
    split = TrafficSplit(holdout=5, ab=15, bandit=80)
    proposal = experiments.propose(KEY, config(traffic=split), EDITOR, "more bandit")
    change = proposal.change
    assert change is not None
    assert (change.status, change.base_version, change.comment) == (
        ChangeStatus.PENDING,
        1,
        "more bandit",
    )
    served = experiments.get(KEY)
    assert (served.version, served.config["traffic"]["holdout"]) == (1, 10.0)
    assert decide(demo.platform, app, "c-1", experiment=KEY).experiment_version == 1

    with pytest.raises(Conflict) as own:
        experiments.approve_change(change.id, EDITOR, "mine")
    assert own.value.field == "actor"
    with pytest.raises(InvalidInput):
        experiments.approve_change(change.id, APPROVER, "")
    assert experiments.get(KEY).version == 1

    applied = experiments.approve_change(change.id, APPROVER, "split agreed with risk")
    assert (applied.status, applied.applied_version, applied.decided_by) == (
        ChangeStatus.APPROVED,
        2,
        APPROVER,
    )
    view = experiments.get(KEY)
    assert (view.version, view.approved_version, view.status) == (2, 2, ExperimentStatus.RUNNING)
    assert view.config["traffic"]["holdout"] == 5.0
    assert decide(demo.platform, app, "c-2", experiment=KEY).experiment_version == 2
    assert experiments.version(KEY, 2).created_by == EDITOR  # the author, not the approver
    log = experiments.audit_log(KEY)
    assert [row["action"] for row in log[:3]] == [
        "experiment.update",
        "change.approved",
        "change.proposed",
    ]
    assert log[1]["details"]["comment"] == "split agreed with risk"
    assert log[0]["details"]["approved_by"] == APPROVER

    # A decided request cannot be decided again.
    with pytest.raises(Conflict):
        experiments.reject_change(change.id, APPROVER, "too late")
    with pytest.raises(NotFound):
        experiments.approve_change(999_999, APPROVER, "x")


def test_rejecting_keeps_the_served_version(experiments: ExperimentService) -> None:
    running(experiments)
    experiments.change_status(KEY, ExperimentStatus.PAUSED, EDITOR)
    change = experiments.propose(KEY, config(name="Renamed"), EDITOR).change
    assert change is not None
    with pytest.raises(InvalidInput):
        experiments.reject_change(change.id, APPROVER, "")
    rejected = experiments.reject_change(change.id, APPROVER, "not now")
    assert (rejected.status, rejected.decision_comment) == (ChangeStatus.REJECTED, "not now")
    view = experiments.get(KEY)
    assert (view.version, view.name, view.approved_version) == (1, demo_config().name, 1)
    # Paused with its approved version: it resumes.
    assert experiments.change_status(KEY, ExperimentStatus.RUNNING, EDITOR).version == 1
    assert "change.rejected" in actions(experiments)


def test_a_newer_proposal_replaces_the_pending_one(experiments: ExperimentService) -> None:
    running(experiments)
    first = experiments.propose(KEY, config(name="First"), EDITOR).change
    second = experiments.propose(KEY, config(name="Second"), "user:other-pm").change
    assert first is not None
    assert second is not None
    assert experiments.change(first.id).status == ChangeStatus.WITHDRAWN
    pending = experiments.changes(KEY, status=ChangeStatus.PENDING)
    assert [c.id for c in pending] == [second.id]
    # The proposer may approve nothing of theirs, but an earlier proposer may approve another's.
    experiments.approve_change(second.id, EDITOR, "fine by me")
    assert experiments.get(KEY).name == "Second"
    with pytest.raises(Conflict):
        experiments.withdraw_change(first.id, EDITOR)


def test_a_stale_change_cannot_be_approved(experiments: ExperimentService) -> None:
    running(experiments)
    stale = experiments.propose(KEY, config(name="A"), EDITOR).change
    assert stale is not None
    # Withdraw-and-replace is the normal path; an applied newer change makes the base stale.
    newer = experiments.propose(KEY, config(name="B"), EDITOR).change
    assert newer is not None
    experiments.approve_change(newer.id, APPROVER, "ok")
    with pytest.raises(Conflict):
        experiments.approve_change(stale.id, APPROVER, "ok")  # withdrawn
    assert experiments.get(KEY).name == "B"


def test_the_audit_log_pages_and_filters(experiments: ExperimentService) -> None:
    running(experiments)
    for name in ("A", "B", "C"):
        change = experiments.propose(KEY, config(name=name), EDITOR).change
        assert change is not None
        experiments.reject_change(change.id, APPROVER, f"no {name}")
    everything = experiments.audit_log(KEY)
    assert experiments.audit_log(KEY, limit=2) == everything[:2]
    assert experiments.audit_log(KEY, limit=2, offset=2) == everything[2:4]
    rejected = experiments.audit_log(KEY, action="change.rejected")
    assert [r["details"]["comment"] for r in rejected] == ["no C", "no B", "no A"]
    family = experiments.audit_log(KEY, action="change.")
    assert {r["action"] for r in family} == {"change.proposed", "change.rejected"}
    assert "experiment.approved" in experiments.audit_actions(KEY)


def test_the_diff_names_each_changed_section() -> None:
    before = msgspec.to_builtins(config())
    after = msgspec.to_builtins(
        config(traffic=TrafficSplit(holdout=5, ab=15, bandit=80), offers=config().offers[:-1])
    )
    after["offers"][0]["eligibility"] = "cash_flow.balance >= 1000"
    sections = {s.section: s for s in config_diff(before, after)}
    assert set(sections) == {"offers", "rules", "traffic"}
    assert [c.kind for c in sections["offers"].changes] == ["removed"]
    assert {c.path for c in sections["traffic"].changes} == {"holdout", "ab", "bandit"}
    rule = next(c for c in sections["rules"].changes if c.path == after["offers"][0]["key"])
    assert rule.after == "cash_flow.balance >= 1000"
    lines = unified_diff(before, after)
    assert any(line.startswith("+") and "1000" in line for line in lines)
    assert config_diff(before, before) == []


def test_the_cli_approves_as_a_named_approver(
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", platform.settings.database_url)
    monkeypatch.setenv("BANDIT_PSEUDONYM_KEY", PSEUDONYM_KEY.decode())
    users = UserService(platform)
    users.create("compliance", "a long pass phrase", Role.APPROVER, actor="test")
    users.create("pm", "a long pass phrase", Role.EDITOR, actor="test")
    document = tmp_path / "experiment.json"
    document.write_bytes(msgspec.json.encode(config()))
    assert main(["experiment", "apply", str(document)]) == 0
    assert "version 1, draft" in capsys.readouterr().out
    experiments = ExperimentService(platform)
    assert experiments.get(KEY).status == ExperimentStatus.DRAFT

    base = ["experiment", "approve", KEY, "--comment", "checked"]
    assert main([*base, "--as", "pm"]) == 2  # an editor does not approve
    assert main([*base, "--as", "compliance"]) == 0
    assert experiments.get(KEY).status == ExperimentStatus.APPROVED
    assert experiments.audit_log(KEY)[0]["actor"] == "user:compliance"

    # `apply --start` starts an approved experiment; a change to it then waits for approval.
    assert main(["experiment", "apply", str(document), "--start"]) == 0
    assert experiments.get(KEY).status == ExperimentStatus.RUNNING
    document.write_bytes(msgspec.json.encode(config(name="Renamed")))
    capsys.readouterr()
    assert main(["experiment", "apply", str(document)]) == 0
    assert "waits for an approver" in capsys.readouterr().out
    (change,) = experiments.changes(KEY, status=ChangeStatus.PENDING)
    assert main([*base, "--as", "compliance", "--change", str(change.id)]) == 0
    assert experiments.get(KEY).name == "Renamed"
