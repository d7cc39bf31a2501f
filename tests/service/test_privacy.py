"""Consent withdrawal: a customer's stored context is erased in every experiment, never learned
from again, left out of the learning export, and still counted by reports. Real database
(SQLite and PostgreSQL), real VW; decisions and outcomes go through the real services.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.decisions import DecisionReason
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.service.export import export_log
from bandit_platform.service.learner import Learner, ensure_model, learnable_examples
from bandit_platform.service.platform import Platform
from bandit_platform.service.policy_evaluation import check_integrity
from bandit_platform.service.privacy import (
    ERASED_COUNTER,
    ERASED_REQUEST_HASH,
    WITHDRAWALS_COUNTER,
    ConsentService,
)
from bandit_platform.service.reports import experiment_report
from bandit_platform.settings import Settings
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import SQLModel
from tests.conftest import PSEUDONYM_KEY, Demo, FakeClock
from tests.service.learning_support import (
    counter,
    decide,
    identity,
    learning,
    report,
    rows,
    start,
    two_offer_world,
)

WORLD = "erasure-world"
#: A customer id no system should store; swept for in every table.
CANARY_CUSTOMER = "cust-canary-5b1e0c7d"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY, model_refresh_seconds=0.0)


@pytest.fixture
def app(demo: Demo) -> AppIdentity:
    return identity(demo)


def decisions_of(demo: Demo, customer: str) -> list[dict[str, Any]]:
    return rows(
        demo.platform,
        "SELECT * FROM decisions WHERE customer_key = :key ORDER BY created_at, id",
        key=demo.platform.pseudonym(customer),
    )


def context_of(row: dict[str, Any]) -> Any:
    """A row's context (SQLite gives the JSON text, PostgreSQL the object)."""
    value = row["context"]
    return json.loads(value) if isinstance(value, str) else value


def sweep(demo: Demo, needle: str) -> list[str]:
    """Every table whose rows, as text, contain `needle`."""
    found = []
    for table in SQLModel.metadata.sorted_tables:
        for row in rows(demo.platform, sa.select(table)):
            if needle in " ".join(str(v) for v in row.values()):
                found.append(table.name)
                break
    return found


def test_withdrawal_erases_the_context_in_every_experiment(
    demo: Demo, app: AppIdentity, clock: FakeClock
) -> None:
    platform = demo.platform
    start(platform, two_offer_world(WORLD))
    for _ in range(2):
        decide(platform, app, CANARY_CUSTOMER)
        decide(platform, app, CANARY_CUSTOMER, experiment=WORLD)
    decide(platform, app, CANARY_CUSTOMER, consent=False)  # no context stored anyway
    decide(platform, app, "someone-else")
    before = {row["id"]: row for row in decisions_of(demo, CANARY_CUSTOMER)}
    assert len(before) == 5
    assert sum(1 for row in before.values() if context_of(row)) == 4
    clock.advance(minutes=5)

    withdrawal = ConsentService(platform).withdraw(CANARY_CUSTOMER, app)

    assert withdrawal.decisions_erased == 5
    assert withdrawal.withdrawn_at == clock.now
    after = decisions_of(demo, CANARY_CUSTOMER)
    assert {row["id"] for row in after} == set(before)
    for row in after:
        kept = before[row["id"]]
        assert context_of(row) == {}
        assert row["context_erased_at"] is not None
        assert row["request_hash"] == ERASED_REQUEST_HASH
        for column in ("propensity", "probabilities", "eligible", "chosen_offer", "group"):
            assert row[column] == kept[column], column
    other = decisions_of(demo, "someone-else")
    assert other[0]["context_erased_at"] is None
    assert context_of(other[0]) != {}

    withdrawals = rows(platform, "SELECT * FROM consent_withdrawals")
    assert len(withdrawals) == 1
    assert withdrawals[0]["customer_key"] == platform.pseudonym(CANARY_CUSTOMER)
    assert withdrawals[0]["api_key_id"] == app.api_key_id
    assert withdrawals[0]["decisions_erased"] == 5
    with platform.read_session() as session:
        (entry,) = repositories.audit_log(session, action="consent.withdrawn")
    assert entry.actor == app.actor
    assert entry.details == {"withdrawal_id": withdrawal.withdrawal_id, "decisions_erased": 5}
    assert counter(platform, WITHDRAWALS_COUNTER) == 1
    assert counter(platform, ERASED_COUNTER) == 5
    assert sweep(demo, CANARY_CUSTOMER) == []


def test_withdrawal_is_idempotent_and_an_unknown_customer_erases_nothing(
    demo: Demo, app: AppIdentity
) -> None:
    platform = demo.platform
    decide(platform, app, CANARY_CUSTOMER)
    service = ConsentService(platform)

    assert service.withdraw(CANARY_CUSTOMER, app).decisions_erased == 1
    assert service.withdraw(CANARY_CUSTOMER, app).decisions_erased == 0
    assert service.withdraw("never-decided", None).decisions_erased == 0

    counts = [r["decisions_erased"] for r in rows(platform, "SELECT * FROM consent_withdrawals")]
    assert sorted(counts) == [0, 0, 1]
    with platform.read_session() as session:
        actors = {e.actor for e in repositories.audit_log(session, action="consent.withdrawn")}
    assert actors == {app.actor, "cli"}
    assert sweep(demo, "never-decided") == []


def test_consent_given_again_is_stored_and_erased_on_the_next_withdrawal(
    demo: Demo, app: AppIdentity, clock: FakeClock
) -> None:
    platform = demo.platform
    decide(platform, app, CANARY_CUSTOMER)
    service = ConsentService(platform)
    assert service.withdraw(CANARY_CUSTOMER, app).decisions_erased == 1

    clock.advance(hours=1)
    again = decide(platform, app, CANARY_CUSTOMER, consent=True)
    (stored,) = [r for r in decisions_of(demo, CANARY_CUSTOMER) if r["id"] == again.decision_id]
    assert stored["context_erased_at"] is None
    assert context_of(stored) != {}

    assert service.withdraw(CANARY_CUSTOMER, app).decisions_erased == 1
    assert all(r["context_erased_at"] is not None for r in decisions_of(demo, CANARY_CUSTOMER))


def test_a_customer_id_must_be_given(demo: Demo) -> None:
    service = ConsentService(demo.platform)
    for bad in ("", "x" * 129):
        with pytest.raises(InvalidInput) as caught:
            service.withdraw(bad, None)
        assert caught.value.field == "customer_id"
    assert rows(demo.platform, "SELECT * FROM consent_withdrawals") == []


def test_the_learner_never_learns_from_an_erased_decision(
    demo: Demo, app: AppIdentity, clock: FakeClock, tmp_path: Path
) -> None:
    platform = demo.platform
    start(platform, two_offer_world(WORLD, learning=learning(publish_every_examples=1)))
    erased = [decide(platform, app, CANARY_CUSTOMER, experiment=WORLD) for _ in range(3)]
    kept = [decide(platform, app, f"kept-{i}", experiment=WORLD) for i in range(4)]
    assert all(d.learnable for d in erased + kept)
    for decision in erased + kept:
        report(platform, app, decision, "convert", clock.now)
    # These are learned before the withdrawal (a model keeps what it learned; a warm start
    # below retrains without them).
    clock.advance(hours=2)
    assert Learner(platform).run_once().examples_learned == {WORLD: 7}
    assert ConsentService(platform).withdraw(CANARY_CUSTOMER, app).decisions_erased == 3

    later = [decide(platform, app, CANARY_CUSTOMER, experiment=WORLD, consent=True)]
    more_erased = [decide(platform, app, "second-canary", experiment=WORLD) for _ in range(2)]
    for decision in later + more_erased:
        report(platform, app, decision, "convert", clock.now)
    # These are erased before their rewards even close.
    ConsentService(platform).withdraw("second-canary", app)
    clock.advance(hours=2)

    learner = Learner(platform)
    result = learner.run_once()

    assert result.rewards_closed == 3  # erased decisions still get their rewards
    assert result.examples_learned == {WORLD: 1}  # the later decision, made with consent
    with platform.read_session() as session:
        experiment = repositories.experiment_by_key(session, WORLD)
        assert experiment is not None
        examples = learnable_examples(platform, session, experiment, 0, 1000)
    erased_ids = {d.decision_id for d in erased + more_erased}
    learned_ids = {
        r["decision_id"]
        for r in rows(platform, "SELECT decision_id, id FROM rewards")
        if r["id"] in {e.reward_id for e in examples}
    }
    assert len(examples) == len(kept) + 1
    assert not learned_ids & erased_ids

    # A warm start retrains without them too.
    with platform.session() as session, session.begin():
        experiment = repositories.experiment_by_key(session, WORLD)
        assert experiment is not None
        snapshot = ensure_model(
            platform,
            session,
            experiment=experiment,
            compiled=platform.compiled(experiment),
            at=clock.now,
            force=True,
        )
    assert snapshot is not None
    assert snapshot.examples_seen == len(kept) + 1

    # Reports keep counting them: every decision has its closed reward.
    headline = experiment_report(platform, WORLD)
    assert headline.decisions == len(erased + kept + later + more_erased)

    # The export keeps them without context and leaves them out of the learning format.
    summary = export_log(platform, WORLD, tmp_path)
    frame = pl.read_parquet(summary.parquet)
    gone = frame.filter(pl.col("decision_id").is_in(list(erased_ids)))
    assert gone.height == len(erased_ids)
    assert gone["context"].to_list() == ["{}"] * len(erased_ids)
    assert gone["context_erased"].to_list() == [True] * len(erased_ids)
    assert gone["propensity"].is_not_null().all()
    assert gone["reward_primary"].to_list() == [1.0] * len(erased_ids)
    assert frame.filter(~pl.col("context_erased"))["context"].str.contains("balance").all()
    dsjson = summary.dsjson.read_text()
    assert summary.dsjson_examples == len(kept) + 1
    assert not any(decision_id in dsjson for decision_id in erased_ids)


def test_the_command_line_erases_reading_the_id_from_stdin(
    demo: Demo,
    app: AppIdentity,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from bandit_platform.cli import main

    platform = demo.platform
    decide(platform, app, CANARY_CUSTOMER)
    decide(platform, app, CANARY_CUSTOMER, consent=False)
    monkeypatch.setenv("DATABASE_URL", platform.settings.database_url)
    monkeypatch.setenv("BANDIT_PSEUDONYM_KEY", PSEUDONYM_KEY.decode())
    monkeypatch.setattr("sys.stdin", io.StringIO(CANARY_CUSTOMER + "\n"))

    assert main(["customer", "erase"]) == 0
    first = capsys.readouterr()
    assert "2 decisions" in first.out
    assert main(["customer", "erase", CANARY_CUSTOMER]) == 0
    second = capsys.readouterr()
    assert "0 decisions" in second.out
    for output in (first, second):
        assert CANARY_CUSTOMER not in output.out + output.err
    assert main(["customer", "erase", ""]) == 2
    assert "customer_id" in capsys.readouterr().err
    assert all(r["context_erased_at"] is not None for r in decisions_of(demo, CANARY_CUSTOMER))
    with platform.read_session() as session:
        entries = repositories.audit_log(session, action="consent.withdrawn")
    assert {e.actor for e in entries} == {"cli"}
    assert sweep(demo, CANARY_CUSTOMER) == []


def test_a_withdrawal_before_any_experiment_is_recorded(
    platform: Platform, clock: FakeClock
) -> None:
    withdrawal = ConsentService(platform).withdraw("anyone", None)
    assert withdrawal.decisions_erased == 0
    assert withdrawal.withdrawn_at == clock.now
    assert len(rows(platform, "SELECT * FROM consent_withdrawals")) == 1


def test_the_integrity_check_skips_erased_decisions_instead_of_flagging_them(
    demo: Demo, app: AppIdentity
) -> None:
    """An erased context cannot be scored again; the check counts those decisions as skipped,
    never as mismatches."""
    platform = demo.platform
    for index in range(6):
        decide(platform, app, f"kept-{index}")
    for _ in range(3):
        decide(platform, app, CANARY_CUSTOMER)
    before = check_integrity(platform, DEMO_EXPERIMENT_KEY)
    assert before.mismatched == 0

    ConsentService(platform).withdraw(CANARY_CUSTOMER, app)

    after = check_integrity(platform, DEMO_EXPERIMENT_KEY)
    assert after.mismatched == 0
    assert after.skipped.get("context_erased") == 3
    recomputable = {DecisionReason.BANDIT.value, DecisionReason.AB_UNIFORM.value}
    erased = [row for row in decisions_of(demo, CANARY_CUSTOMER) if row["reason"] in recomputable]
    assert after.checked == before.checked - len(erased)
