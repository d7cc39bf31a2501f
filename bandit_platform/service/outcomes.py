"""Outcomes: what a customer did after a decision, stored once per idempotency key.

Time rules (all on the server's clock):

* an outcome may not be more than `clock_skew_seconds` before its decision, nor more than
  `clock_skew_seconds` after the server's current time: either is rejected (422, `occurred_at`);
* an outcome after the experiment's attribution window is stored and marked `late`: reports
  see it, the learner does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.decisions import OutcomeReceipt
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories

#: Counter of outcomes rejected because their decision is unknown (to this app).
UNKNOWN_DECISION_COUNTER = "outcomes.unknown_decision"
#: Events every experiment accepts besides those that carry reward weight.
ALWAYS_ACCEPTED_EVENTS = frozenset({"impression", "dismiss"})


@dataclass(frozen=True)
class OutcomeRequest:
    """One event reported by the app backend or core banking."""

    decision_id: str
    event: str
    value: float
    occurred_at: datetime
    idempotency_key: str


def _fingerprint(request: OutcomeRequest) -> str:
    body = {
        "decision_id": request.decision_id,
        "event": request.event,
        "value": request.value,
        "occurred_at": request.occurred_at.isoformat(),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _receipt(values: Mapping[str, Any], *, replayed: bool) -> OutcomeReceipt:
    return OutcomeReceipt(
        outcome_id=values["id"],
        decision_id=values["decision_id"],
        event=values["event"],
        value=values["value"],
        occurred_at=values["occurred_at"],
        received_at=values["received_at"],
        late=values["late"],
        replayed=replayed,
    )


class OutcomeService:
    """Stores outcomes against decisions."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def record(self, request: OutcomeRequest, app: AppIdentity) -> OutcomeReceipt:
        """Store the outcome, or return the stored one for a repeated idempotency key.

        Raises:
            NotFound: the decision is unknown to this app (counted).
            InvalidInput: event not configured, time out of bounds, or the idempotency key
                reused with a different body.
            Conflict: the same key is being stored concurrently.
        """
        job = self._prepare(request, app)
        writer = self.platform.decision_writer
        if writer is not None:
            receipt = writer.run(job)
        else:
            with self.platform.session() as session, session.begin():
                receipt = job(session)
        if receipt is None:
            self._count_unknown()
            raise NotFound(f"no decision {request.decision_id!r}", field="decision_id")
        return receipt

    async def record_async(self, request: OutcomeRequest, app: AppIdentity) -> OutcomeReceipt:
        """`record` for the event loop: with group commit the loop awaits the writer's commit
        without a worker thread of its own; otherwise `record` runs in a worker thread."""
        writer = self.platform.decision_writer
        if writer is None:
            return await anyio.to_thread.run_sync(self.record, request, app)
        receipt = await asyncio.wrap_future(writer.submit(self._prepare(request, app)))
        if receipt is None:
            await anyio.to_thread.run_sync(self._count_unknown)
            raise NotFound(f"no decision {request.decision_id!r}", field="decision_id")
        return receipt

    def _count_unknown(self) -> None:
        with self.platform.session() as session, session.begin():
            repositories.increment_counter(session, UNKNOWN_DECISION_COUNTER)

    def _prepare(
        self, request: OutcomeRequest, app: AppIdentity
    ) -> Callable[[Session], OutcomeReceipt | None]:
        """The checks that need no database, and the job that stores the outcome in a
        transaction (None: the decision is unknown to this app). The job is safe to run again:
        its time and fingerprint are fixed here."""
        now = self.platform.clock()
        fingerprint = _fingerprint(request)
        skew = timedelta(seconds=self.platform.settings.clock_skew_seconds)
        if request.occurred_at.tzinfo is None:
            raise InvalidInput("must carry a timezone (e.g. Z)", field="occurred_at")

        def job(session: Session) -> OutcomeReceipt | None:
            existing = repositories.outcome_by_idempotency_key(
                session, app.api_key_id, request.idempotency_key
            )
            if existing is not None:
                if existing["request_hash"] != fingerprint:
                    raise InvalidInput(
                        "idempotency_key was already used with a different outcome",
                        field="idempotency_key",
                    )
                return _receipt(existing, replayed=True)
            decision = repositories.decision_for_outcome(session, request.decision_id)
            if decision is None or decision.api_key_id != app.api_key_id:
                return None
            compiled = self.platform.compiled_version(
                session,
                decision.experiment_id,
                repositories.experiment_version(session, decision.experiment_id),
            )
            reward = compiled.config.reward
            # Guardrail metrics (complaints, opt-outs...) are accepted without a reward
            # weight: the guardrail check counts them, the learner ignores them.
            accepted = (
                reward.accepted_events()
                | ALWAYS_ACCEPTED_EVENTS
                | {g.metric for g in compiled.config.guardrails}
            )
            if request.event not in accepted:
                raise InvalidInput(
                    f"unknown event; expected one of {sorted(accepted)}", field="event"
                )
            if request.occurred_at < decision.created_at - skew:
                raise InvalidInput("is before the decision was made", field="occurred_at")
            if request.occurred_at > now + skew:
                raise InvalidInput("is in the future", field="occurred_at")
            window = timedelta(hours=reward.attribution_window_hours)
            values: dict[str, Any] = {
                "decision_id": request.decision_id,
                "api_key_id": app.api_key_id,
                "event": request.event,
                "value": request.value,
                "occurred_at": request.occurred_at,
                "received_at": now,
                "idempotency_key": request.idempotency_key,
                "request_hash": fingerprint,
                "late": request.occurred_at > decision.created_at + window,
            }
            try:
                values["id"] = repositories.insert_outcome(session, values)
            except IntegrityError as exc:
                raise Conflict(
                    "an outcome with this idempotency_key is being stored concurrently; retry",
                    field="idempotency_key",
                ) from exc
            return _receipt(values, replayed=False)

        return job
