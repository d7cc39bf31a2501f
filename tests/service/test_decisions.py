"""`DecisionService` on the demo experiment, against a real database and a real VW model.

Decision ids are random (uuid4), so the draws are not reproducible here: every assertion is
an invariant that holds for every draw, and each test also checks that the case it is about
actually occurred, so it cannot pass vacuously.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from operator import ge
from typing import Any

import pytest
import sqlalchemy as sa

from bandit_platform.demo import DEMO_EXPERIMENT_KEY, demo_config
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import NO_OFFER
from bandit_platform.domain.decisions import Decision, DecisionReason, ExperimentStatus, Group
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.policies.assignment import assign_group
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionRequest, DecisionService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage import repositories
from bandit_platform.storage.database import create_engine
from bandit_platform.storage.tables import DecisionRow
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import RULE_ONE, Context, random_context

DEMO = demo_config()
FLOOR = DEMO.probability_floor
FALLBACK = DEMO.fallback_offer
SURFACE = "home_feed"

# --- hand-written copies of the demo's eligibility rules --------------------------------------
# Written out in Python (not through our expression engine) so that the test is an independent
# oracle. A missing field makes a comparison false, as the expression language specifies.


def _holds(ctx: Mapping[str, Any], field: str, item: str) -> bool:
    value = ctx.get(field)
    return isinstance(value, list) and item in value


def _number(
    ctx: Mapping[str, Any], field: str, op: Callable[[float, float], bool], x: float
) -> bool:
    value = ctx.get(field)
    return isinstance(value, int | float) and not isinstance(value, bool) and op(value, x)


def _one_of(ctx: Mapping[str, Any], field: str, values: set[str]) -> bool:
    value = ctx.get(field)
    return isinstance(value, str) and value in values


def _differs(ctx: Mapping[str, Any], field: str, other: str) -> bool:
    value = ctx.get(field)
    return isinstance(value, str) and value != other


_GOOD_CREDIT = {"good", "very_good", "excellent"}
_MIDDLE_UP = {"middle", "upper_middle", "high"}
PRODUCTS = "profile.products_held"
CREDIT = "profile.credit_score_band"
INCOME = "profile.income_band"

ELIGIBLE: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "high_yield_savings": lambda c: (
        not _holds(c, PRODUCTS, "savings") and _number(c, "cash_flow.balance", ge, 500)
    ),
    "premium_travel_card": lambda c: (
        _one_of(c, CREDIT, _GOOD_CREDIT)
        and _one_of(c, INCOME, _MIDDLE_UP)
        and not _holds(c, PRODUCTS, "premium_card")
    ),
    "debt_consolidation_loan": lambda c: (
        _one_of(c, CREDIT, {"fair"} | _GOOD_CREDIT)
        and _number(c, "cash_flow.revolving_balance", ge, 2000)
        and not _holds(c, PRODUCTS, "personal_loan")
    ),
    "mortgage_prequalification": lambda c: (
        not _holds(c, PRODUCTS, "mortgage")
        and _one_of(c, INCOME, _MIDDLE_UP)
        and _differs(c, CREDIT, "poor")
    ),
    "overdraft_protection": lambda c: (
        _holds(c, PRODUCTS, "checking") and not _holds(c, PRODUCTS, "overdraft_protection")
    ),
    "budgeting_tool": lambda c: True,
}


def flat(context: Context) -> dict[str, Any]:
    return {f"{s}.{n}": v for s, fields in context.items() for n, v in fields.items()}


def request(
    customer: str,
    context: Context | None = None,
    *,
    consent: bool | None = True,
    request_id: str | None = None,
    experiment: str = DEMO_EXPERIMENT_KEY,
    surface: str = SURFACE,
) -> DecisionRequest:
    return DecisionRequest(
        experiment=experiment,
        customer_id=customer,
        context=RULE_ONE if context is None else context,
        surface=surface,
        consent=consent,
        request_id=request_id,
    )


def arm_key(decision: Decision) -> str:
    return NO_OFFER if decision.offer is None else f"{decision.offer}/{decision.variant}"


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def service(demo: Demo) -> DecisionService:
    return DecisionService(demo.platform)


@pytest.fixture
def app(demo: Demo) -> AppIdentity:
    identity = ApiKeyService(demo.platform).verify(demo.api_key)
    assert identity is not None
    return identity


def fresh_engine(platform: Platform) -> sa.Engine:
    """A NEW engine on the platform's database: reads see only what was committed."""
    return create_engine(platform.settings.database_url, pool_size=1)


def stored_decisions(
    platform: Platform, engine: sa.Engine | None = None, **where: Any
) -> list[dict[str, Any]]:
    """Decision rows read through another engine than the platform's (a NEW one by default)."""
    reader = engine or fresh_engine(platform)
    table = DecisionRow.__table__
    query = sa.select(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    try:
        with reader.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        if engine is None:
            reader.dispose()


def count_decisions(platform: Platform) -> int:
    with platform.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one())


def group_of(platform: Platform, customer: str) -> Group:
    """The group a customer must land in: a function of (pseudonym, experiment salt) only."""
    with platform.session() as session:
        row = repositories.experiment_by_key(session, DEMO_EXPERIMENT_KEY)
    assert row is not None
    return assign_group(platform.pseudonym(customer), row.salt, DEMO.traffic)


def customers_in(platform: Platform, group: Group, prefix: str) -> Iterator[str]:
    for index in range(10_000):
        customer = f"{prefix}-{index}"
        if group_of(platform, customer) == group:
            yield customer


def customers_of_every_group(platform: Platform, prefix: str, each: int) -> list[str]:
    return [
        customer
        for group in Group
        for customer in itertools.islice(customers_in(platform, group, f"{prefix}-{group}"), each)
    ]


# --- durability and the logged probability vector ---------------------------------------------


def test_answered_decisions_are_committed_with_their_full_probability_vector(
    demo: Demo, service: DecisionService, app: AppIdentity
) -> None:
    rng = random.Random(20261102)
    reader = fresh_engine(demo.platform)
    answers = []
    try:
        for index in range(40):
            answer = service.decide(request(f"durable-{index}", random_context(rng)), app)
            # Visible to another engine as soon as `decide` has returned: committed.
            (row,) = stored_decisions(demo.platform, reader, id=answer.decision_id)
            answers.append(answer)
            probabilities: dict[str, float] = row["probabilities"]
            chosen = NO_OFFER
            if row["chosen_offer"] is not None:
                chosen = f"{row['chosen_offer']}/{row['chosen_variant']}"
            assert chosen == arm_key(answer)
            assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-6)
            assert chosen in probabilities
            assert row["propensity"] == pytest.approx(probabilities[chosen])
            assert row["propensity"] == pytest.approx(answer.propensity)
            assert sorted(row["eligible"]) == sorted(probabilities)
            assert row["group"] == answer.group.value
            assert row["reason"] == answer.reason.value
            assert row["experiment_version"] == 1
            assert row["created_at"] == answer.created_at
            if row["reason"] == DecisionReason.BANDIT:
                assert row["model_version"] == 1
                assert all(p >= FLOOR - 1e-12 for p in probabilities.values()), probabilities
                assert row["learnable"] is True
            else:
                assert row["model_version"] is None
    finally:
        reader.dispose()
    assert len(stored_decisions(demo.platform)) == 40
    reasons = Counter(d.reason for d in answers)
    assert reasons[DecisionReason.BANDIT] > 0, reasons


# --- eligibility ------------------------------------------------------------------------------


def test_ineligible_offers_are_never_chosen_nor_given_probability(
    demo: Demo, service: DecisionService, app: AppIdentity
) -> None:
    assert set(ELIGIBLE) == {o.key for o in DEMO.offers}, "the oracle must cover every offer"
    rng = random.Random(7)
    groups: Counter[str] = Counter()
    chosen_offers: Counter[str | None] = Counter()
    excluded = 0
    for index in range(300):
        context = random_context(rng)
        values = flat(context)
        decision = service.decide(request(f"elig-{index}", context), app)
        groups[decision.group] += 1
        chosen_offers[decision.offer] += 1
        eligible = {key for key, rule in ELIGIBLE.items() if rule(values)}
        if decision.offer is not None:
            assert decision.offer in eligible, (decision.offer, values)
        for arm, probability in decision.probabilities.items():
            offer = arm.split("/", 1)[0]
            if probability > 0 and arm != NO_OFFER:
                assert offer in eligible, (arm, values)
        if decision.reason == DecisionReason.BANDIT:
            # The vector covers every variant of every eligible offer (no caps on new customers).
            expected = {
                f"{o.key}/{v.key}" for o in DEMO.offers if o.key in eligible for v in o.variants
            } | {NO_OFFER}
            assert set(decision.probabilities) == expected
            excluded += len(DEMO.offers) - len(eligible)
    assert set(groups) == {Group.HOLDOUT, Group.AB, Group.BANDIT}, groups
    assert excluded > 0, "no bandit decision had an ineligible offer to exclude"
    assert len([o for o in chosen_offers if o is not None]) >= 4, chosen_offers
    assert count_decisions(demo.platform) == 300


# --- frequency caps ---------------------------------------------------------------------------


def test_frequency_caps_follow_the_incumbent_rules_and_free_up_after_the_window(
    demo: Demo, service: DecisionService, app: AppIdentity, clock: FakeClock
) -> None:
    customer = next(customers_in(demo.platform, Group.AB, "capped-ab"))
    # Rules 1, 2, 3 match: each offer 3 times (offer cap, 168 h), 6 in all (customer cap, 24 h).
    shown = [service.decide(request(customer), app) for _ in range(8)]
    assert [d.offer for d in shown] == [
        *["high_yield_savings"] * 3,
        *["overdraft_protection"] * 3,
        None,
        None,
    ]
    assert all(d.reason == DecisionReason.AB_RULE for d in shown[:6])
    assert [d.reason for d in shown[6:]] == [DecisionReason.CUSTOMER_CAP] * 2
    assert all(d.propensity == 1.0 for d in shown)

    clock.advance(hours=24, minutes=1)  # the customer cap's window has passed, not the offers'
    after_day = service.decide(request(customer), app)
    assert after_day.offer == "premium_travel_card"
    assert after_day.reason == DecisionReason.AB_RULE

    clock.advance(hours=168)  # every window has passed
    after_week = service.decide(request(customer), app)
    assert after_week.offer == "high_yield_savings"


#: Only `budgeting_tool` is eligible: the customer holds or cannot get everything else.
ONLY_BUDGETING: Context = {
    "profile": {
        "products_held": ["checking", "savings", "mortgage", "overdraft_protection"],
        "credit_score_band": "poor",
        "income_band": "low",
    },
    "cash_flow": {"balance": 100.0},
}


def test_bandit_never_shows_an_offer_beyond_its_cap(
    demo: Demo, service: DecisionService, app: AppIdentity, clock: FakeClock
) -> None:
    customer = next(customers_in(demo.platform, Group.BANDIT, "offer-capped"))
    decisions = [service.decide(request(customer, ONLY_BUDGETING), app) for _ in range(20)]
    assert all(d.reason == DecisionReason.BANDIT for d in decisions)
    shown = [i for i, d in enumerate(decisions) if d.offer is not None]
    assert [decisions[i].offer for i in shown] == ["budgeting_tool"] * 3
    # Once exhausted, the offer is not even a candidate: only "no offer" remains.
    for decision in decisions[shown[-1] + 1 :]:
        assert decision.probabilities == {NO_OFFER: 1.0}
        assert decision.propensity == 1.0

    clock.advance(hours=167)
    assert service.decide(request(customer, ONLY_BUDGETING), app).offer is None
    clock.advance(hours=1, minutes=1)  # the first show leaves the 168-hour window
    freed = service.decide(request(customer, ONLY_BUDGETING), app)
    assert set(freed.probabilities) == {
        "budgeting_tool/insights",
        "budgeting_tool/alerts",
        NO_OFFER,
    }


def test_bandit_never_exceeds_the_customer_cap(
    demo: Demo, service: DecisionService, app: AppIdentity, clock: FakeClock
) -> None:
    customer = next(customers_in(demo.platform, Group.BANDIT, "customer-capped"))
    week: Counter[str] = Counter()
    today = 0
    for _ in range(30):
        decision = service.decide(request(customer), app)
        if today >= 6:
            assert decision.reason == DecisionReason.CUSTOMER_CAP
            assert (decision.offer, decision.propensity) == (None, 1.0)
            assert decision.probabilities == {NO_OFFER: 1.0}
        else:
            assert decision.reason == DecisionReason.BANDIT
            for offer, times in week.items():
                if times >= 3:  # an exhausted offer is not even a candidate
                    assert not any(a.startswith(f"{offer}/") for a in decision.probabilities)
        if decision.offer is not None:
            week[decision.offer] += 1
            today += 1
    assert today == 6, "the customer cap is 6 offers a day"
    assert max(week.values()) <= 3, week

    clock.advance(hours=24, minutes=1)
    today = 0
    for _ in range(15):
        decision = service.decide(request(customer), app)
        if decision.offer is not None:
            week[decision.offer] += 1
            today += 1
    assert today == 6
    assert max(week.values()) <= 3, week


# --- consent ----------------------------------------------------------------------------------


@pytest.mark.parametrize("consent", [False, None], ids=["refused", "absent"])
def test_without_consent_nothing_personal_is_served_or_stored(
    demo: Demo, service: DecisionService, app: AppIdentity, consent: bool | None
) -> None:
    customers = customers_of_every_group(demo.platform, "no-consent", 10)
    decisions = [service.decide(request(c, RULE_ONE, consent=consent), app) for c in customers]
    assert Counter(d.group for d in decisions) == dict.fromkeys(Group, 10)
    for decision in decisions:
        assert decision.offer in (None, FALLBACK)
        assert decision.propensity == 1.0
        assert len(decision.probabilities) == 1
        if decision.group != Group.HOLDOUT:
            assert decision.reason == DecisionReason.NO_CONSENT
            assert decision.offer == FALLBACK
    rows = stored_decisions(demo.platform)
    assert len(rows) == 30
    assert all(row["context"] == {} for row in rows), [r["context"] for r in rows if r["context"]]
    assert not any(row["learnable"] for row in rows)


# --- holdout and sticky groups ----------------------------------------------------------------


def test_holdout_gets_no_offer_and_its_context_is_stored(
    demo: Demo, service: DecisionService, app: AppIdentity
) -> None:
    customer = next(customers_in(demo.platform, Group.HOLDOUT, "holdout"))
    decision = service.decide(request(customer), app)
    assert decision.group == Group.HOLDOUT
    assert decision.reason == DecisionReason.HOLDOUT
    assert decision.offer is None
    assert decision.propensity == 1.0
    assert decision.probabilities == {NO_OFFER: 1.0}
    (row,) = stored_decisions(demo.platform, id=decision.decision_id)
    assert row["context"] == flat(RULE_ONE)
    assert row["chosen_offer"] is None


def test_groups_are_sticky_across_requests_and_restarts(
    demo: Demo, service: DecisionService, app: AppIdentity, settings: Settings, clock: FakeClock
) -> None:
    customers = [f"sticky-{i}" for i in range(20)]
    customers += customers_of_every_group(demo.platform, "sticky", 3)
    first = {c: service.decide(request(c), app).group for c in customers}
    for _ in range(5):
        for customer in customers[:10]:
            assert service.decide(request(customer), app).group == first[customer]

    restarted = Platform(settings, clock=clock)
    try:
        again = DecisionService(restarted)
        for customer in customers:
            assert again.decide(request(customer), app).group == first[customer]
    finally:
        restarted.close()
    assert all(first[c] == group_of(demo.platform, c) for c in customers)


# --- A-B incumbent rules ----------------------------------------------------------------------


def test_ab_group_follows_incumbent_rule_one(service: DecisionService, app: AppIdentity) -> None:
    for index in range(200):
        decision = service.decide(request(f"ab-rule-{index}"), app)
        if decision.group == Group.AB:
            break
    else:
        pytest.fail("no customer landed in the A-B group")
    assert decision.offer == "high_yield_savings"
    assert decision.variant == "paycheck"
    assert decision.reason == DecisionReason.AB_RULE
    assert decision.propensity == 1.0
    assert decision.probabilities == {"high_yield_savings/paycheck": 1.0}
    assert "incumbent rule 1" in decision.explanation


# --- request ids ------------------------------------------------------------------------------


def test_request_id_replays_the_first_answer(
    demo: Demo, service: DecisionService, app: AppIdentity
) -> None:
    first = service.decide(request("replay", request_id="req-1"), app)
    second = service.decide(request("replay", request_id="req-1"), app)
    assert first.replayed is False
    assert second.replayed is True
    assert second.decision_id == first.decision_id
    assert (second.offer, second.variant, second.propensity) == (
        first.offer,
        first.variant,
        first.propensity,
    )
    assert len(stored_decisions(demo.platform, request_id="req-1")) == 1

    changed = {**RULE_ONE, "trigger": {"event": "low_balance"}}
    with pytest.raises(InvalidInput) as error:
        service.decide(request("replay", changed, request_id="req-1"), app)
    assert error.value.field == "request_id"
    with pytest.raises(InvalidInput) as error:
        service.decide(request("someone-else", request_id="req-1"), app)
    assert error.value.field == "request_id"
    assert count_decisions(demo.platform) == 1


# --- experiment state -------------------------------------------------------------------------


def test_paused_or_unknown_experiment_writes_nothing(
    demo: Demo, service: DecisionService, app: AppIdentity
) -> None:
    with pytest.raises(NotFound) as missing:
        service.decide(request("c", experiment="no-such-experiment"), app)
    assert missing.value.field == "experiment"
    with pytest.raises(InvalidInput) as surface:
        service.decide(request("c", surface="atm_screen"), app)
    assert surface.value.field == "surface"

    ExperimentService(demo.platform).change_status(
        DEMO_EXPERIMENT_KEY, ExperimentStatus.PAUSED, actor="test"
    )
    with pytest.raises(Conflict) as paused:
        service.decide(request("c"), app)
    assert paused.value.field == "experiment"
    assert count_decisions(demo.platform) == 0
