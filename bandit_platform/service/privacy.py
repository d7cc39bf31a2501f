"""Consent withdrawal: a customer's stored context is erased from every decision.

A customer who withdraws consent to personalisation has the context of every decision the
platform logged for them erased, in every experiment, whichever app logged it: the consent is
the customer's, not an app's, so one app's request covers the whole bank. An app reaches the
erasure only with its own API key (scope `decide`), and the customer is named by the same
keyed pseudonym as on the decision path (`Platform.pseudonym`): the raw id is never stored,
logged or audited.

In one transaction, under the decision path's per-customer locks (so a decision of the same
customer being made right now either commits first and is erased, or waits and comes after):

* every decision of the customer not yet erased gets `context = {}`, `context_erased_at = now`
  and a `request_hash` that no request matches (the keyed hash was computed over the context,
  so a replay of an erased request id is refused instead of answered);
* one `consent_withdrawals` row (pseudonym, API key, time, decisions erased);
* one audit entry `consent.withdrawn` (the withdrawal's id and the count; no customer).

An erased decision keeps its group, arms, probabilities, propensity, outcomes and rewards, so
reports keep counting it; the learner, warm starts and the promotion gate never learn from it
(`service.learner.learnable_examples`), and the dsjson export leaves it out. A model that
learned from the decision before the withdrawal keeps what it learned as an aggregate; a warm
start (`bandit-platform model warm-start`) retrains without the erased decisions. A second
withdrawal erases nothing more and answers 0; decisions made later with `consent = true` (the
customer gave consent again) are stored as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col

from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import ConsentWithdrawalRow, DecisionRow, ExperimentRow

logger = logging.getLogger(__name__)

#: The longest customer id accepted (as on the decision path).
MAX_CUSTOMER_ID = 128
#: What an erased decision's `request_hash` becomes: no request's keyed hash (64 hex digits).
ERASED_REQUEST_HASH = "erased"
#: Counter of consent withdrawals, and of decisions whose context they erased.
WITHDRAWALS_COUNTER = "consent.withdrawals"
ERASED_COUNTER = "consent.decisions_erased"


@dataclass(frozen=True)
class Withdrawal:
    """What a consent withdrawal did."""

    withdrawal_id: int
    decisions_erased: int
    withdrawn_at: datetime


def check_customer_id(customer_id: str) -> None:
    """Refuse an empty or oversized customer id (naming `customer_id`, never echoing it).

    Raises:
        InvalidInput: naming `customer_id`.
    """
    if not customer_id:
        raise InvalidInput("must not be empty", field="customer_id")
    if len(customer_id) > MAX_CUSTOMER_ID:
        raise InvalidInput(f"at most {MAX_CUSTOMER_ID} characters", field="customer_id")


class ConsentService:
    """Erases a customer's stored context when they withdraw consent."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def withdraw(self, customer_id: str, app: AppIdentity | None) -> Withdrawal:
        """Erase the context of every decision of the customer, in every experiment.

        `app` is the API key that asked (None: an operator on the command line).

        Returns:
            The withdrawal, with how many decisions it erased (0 for an unknown customer or
            a second withdrawal).

        Raises:
            InvalidInput: an empty or oversized customer id (naming `customer_id`).
        """
        check_customer_id(customer_id)
        customer_key = self.platform.pseudonym(customer_id)
        now = self.platform.clock()
        actor = app.actor if app is not None else "cli"
        with self.platform.session() as session, session.begin():
            experiments = session.execute(
                sa.select(col(ExperimentRow.id), col(ExperimentRow.key))
            ).all()
            experiment_ids = sorted(row.id for row in experiments)
            # The decision path's locks, all in one statement (sorted: no deadlock).
            repositories.lock_customers(
                session,
                [repositories.customer_lock_key(row.key, customer_key) for row in experiments],
            )
            erased = 0
            if experiment_ids:
                result = session.execute(
                    sa.update(DecisionRow)
                    .where(
                        col(DecisionRow.experiment_id).in_(experiment_ids),
                        col(DecisionRow.customer_key) == customer_key,
                        col(DecisionRow.context_erased_at).is_(None),
                    )
                    .values(context={}, context_erased_at=now, request_hash=ERASED_REQUEST_HASH)
                    .execution_options(synchronize_session=False)
                )
                erased = max(int(getattr(result, "rowcount", 0) or 0), 0)
            row = ConsentWithdrawalRow(
                customer_key=customer_key,
                api_key_id=app.api_key_id if app is not None else None,
                withdrawn_at=now,
                decisions_erased=erased,
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="consent.withdrawn",
                experiment_id=None,
                details={"withdrawal_id": row.id, "decisions_erased": erased},
            )
            repositories.increment_counter(session, WITHDRAWALS_COUNTER)
            if erased:
                repositories.increment_counter(session, ERASED_COUNTER, erased)
            withdrawal_id = row.id
        logger.info(
            "consent withdrawal %s by %s erased the context of %d decisions",
            withdrawal_id,
            actor,
            erased,
        )
        return Withdrawal(withdrawal_id=withdrawal_id, decisions_erased=erased, withdrawn_at=now)


def count_refused_identifiers(platform: Platform, counters: tuple[str, ...]) -> None:
    """Add one to each counter of a request refused for a direct identifier in its context.

    Runs after the refusal was answered, in a transaction of its own; a failure is logged
    (without the request) and never turns the refusal into an error.
    """
    try:
        with platform.session() as session, session.begin():
            for name in counters:
                repositories.increment_counter(session, name)
    except Exception:
        logger.exception("could not count a refused identifier (%s)", ", ".join(counters))
