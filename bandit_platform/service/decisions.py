"""Decide: consent -> eligibility -> frequency caps -> sticky group -> policy -> draw -> log.

The decision row is committed before `decide` returns, so an answer that leaves the service is
always in the database (DESIGN.md invariant 1). Concurrent decisions of a worker share one
transaction (group commit, `service.decision_writer`); each still waits for that commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import anyio.to_thread
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import (
    NO_OFFER,
    Arm,
    CompiledExperiment,
    Offer,
)
from bandit_platform.domain.decisions import (
    LEARNABLE_REASONS,
    Decision,
    DecisionReason,
    ExperimentStatus,
    Group,
)
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.features.context import (
    ValidatedContext,
    arm_namespaces,
    context_namespaces,
    validate_context,
)
from bandit_platform.policies.assignment import assign_group
from bandit_platform.policies.probabilities import (
    check_probabilities,
    decision_seed,
    draw,
    served_probabilities,
)
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.repositories import ExperimentHead
from bandit_platform.storage.tables import DecisionRow

logger = logging.getLogger(__name__)

#: Longest text value, and longest list, a decision's context may carry.
MAX_CONTEXT_TEXT = 200
MAX_CONTEXT_LIST = 50
#: PostgreSQL's SQLSTATE of a transaction chosen to break a deadlock.
DEADLOCK_DETECTED = "40P01"


#: `Session.info` key of the experiment heads a transaction has read.
_HEADS = "decisions.experiment_heads"


def _experiment_head(session: Session, key: str) -> repositories.ExperimentHead | None:
    """The experiment's head, read once per session: a group-commit batch is one transaction,
    so its decisions of one experiment see the same head whether it is read once or each time.
    """
    heads: dict[str, repositories.ExperimentHead | None] = session.info.setdefault(_HEADS, {})
    if key not in heads:
        heads[key] = repositories.experiment_head(session, key)
    return heads[key]


def _concurrent_request_id() -> Conflict:
    return Conflict(
        "a decision with this request_id is being made concurrently; retry", field="request_id"
    )


@dataclass(frozen=True)
class DecisionRequest:
    """What the app backend asks: which offer, if any, for this customer on this surface."""

    experiment: str
    customer_id: str
    context: Mapping[str, Mapping[str, object]]
    surface: str
    consent: bool | None = None
    request_id: str | None = None
    requested_at: datetime | None = None


@dataclass
class _Choice:
    reason: DecisionReason
    arms: list[Arm]
    probabilities: list[float]
    chosen: int | None
    explanation: str
    model_version: int | None = None
    notes: list[str] = field(default_factory=list)


def _no_offer(reason: DecisionReason, explanation: str) -> _Choice:
    return _Choice(reason, [Arm(None, None)], [1.0], 0, explanation)


def _single(reason: DecisionReason, arm: Arm, explanation: str) -> _Choice:
    return _Choice(reason, [arm], [1.0], 0, explanation)


def _first_variant(offer: Offer) -> Arm:
    return Arm(offer.key, offer.variants[0].key)


def check_request(request: DecisionRequest) -> None:
    """Reject what no experiment accepts: oversized context values, naive timestamps.

    Raises:
        InvalidInput: naming the field.
    """
    if request.requested_at is not None:
        if request.requested_at.tzinfo is None:
            raise InvalidInput("must carry a timezone (e.g. Z)", field="requested_at")
        try:
            request.requested_at.astimezone(UTC)
        except OverflowError as exc:
            raise InvalidInput("is out of range", field="requested_at") from exc
    for section, fields in request.context.items():
        for name, value in fields.items():
            items = value if isinstance(value, list) else [value]
            if len(items) > MAX_CONTEXT_LIST:
                raise InvalidInput(
                    f"at most {MAX_CONTEXT_LIST} items", field=f"context.{section}.{name}"
                )
            if any(isinstance(item, str) and len(item) > MAX_CONTEXT_TEXT for item in items):
                raise InvalidInput(
                    f"text longer than {MAX_CONTEXT_TEXT} characters",
                    field=f"context.{section}.{name}",
                )


def request_fingerprint(
    request: DecisionRequest, customer_key: str, context: ValidatedContext, key: bytes
) -> str:
    """Keyed hash of the request's content, to tell a replay from a reuse of its request id.

    An HMAC with the pseudonym key over the validated context (protected attributes already
    dropped): a plain hash of a few-valued context could be reversed by trying the values.
    """
    body = {
        "experiment": request.experiment,
        "customer": customer_key,
        "context": context.values,
        "surface": request.surface,
        "consent": request.consent,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


class BanditPolicy(Protocol):
    """A policy other than the experiment's VW model that scores the bandit group's arms.

    The default is the experiment's own VW model. A research baseline (LinUCB, Thompson
    sampling, an oracle in the simulator) implements this to run through the same decision
    path: eligibility, caps, consent and the sticky split still apply, and its probabilities
    are validated, floored, drawn from and logged exactly like the model's.
    """

    name: str

    def probabilities(
        self, compiled: CompiledExperiment, context: ValidatedContext, arms: Sequence[Arm]
    ) -> list[float]:
        """One probability per arm, in the order given."""
        ...


class DecisionService:
    """Chooses and logs offers."""

    def __init__(self, platform: Platform, *, bandit_policy: BanditPolicy | None = None) -> None:
        self.platform = platform
        self.bandit_policy = bandit_policy

    def decide(self, request: DecisionRequest, app: AppIdentity) -> Decision:
        """Choose an offer (or none) for the customer and log the decision durably.

        What needs no database (checks, pseudonym, decision id, time) happens in the caller's
        thread. With group commit (`settings.group_commit`) the rest runs in the platform's
        decision writer, in a transaction shared with the worker's concurrent decisions, and
        this returns once that transaction committed; otherwise in a transaction of its own.
        Either way the customer is locked first and the answer leaves only after the commit.

        Raises:
            NotFound: unknown experiment.
            Conflict: the experiment is not running; the request id is being used concurrently.
            InvalidInput: unknown surface, context outside the allow-list or its size limits,
                a timestamp without timezone, request id reused with another body. Nothing is
                written in any of these cases.
            WriterClosed: the worker is shutting down (503).
        """
        job, lock_key = self._prepare(request, app)
        writer = self.platform.decision_writer
        if writer is not None:
            return writer.run(job, [lock_key])
        with self.platform.session() as session, session.begin():
            repositories.lock_customers(session, [lock_key])
            return job(session)

    async def decide_async(self, request: DecisionRequest, app: AppIdentity) -> Decision:
        """`decide` for the event loop: with group commit, the checks run here and the loop
        awaits the writer's commit without a worker thread of its own; otherwise `decide`
        runs in a worker thread. Raises as `decide` does."""
        writer = self.platform.decision_writer
        if writer is None:
            return await anyio.to_thread.run_sync(self.decide, request, app)
        job, lock_key = self._prepare(request, app)
        return await asyncio.wrap_future(writer.submit(job, [lock_key]))

    def _prepare(
        self, request: DecisionRequest, app: AppIdentity
    ) -> tuple[Callable[[Session], Decision], repositories.CustomerLockKey]:
        """What needs no database (checks, pseudonym, decision id, time), and the job that
        does the rest in a transaction, with the customer's lock key."""
        check_request(request)
        now = self.platform.clock()
        customer_key = self.platform.pseudonym(request.customer_id)
        decision_id = self.platform.new_id()
        lock_key = repositories.customer_lock_key(request.experiment, customer_key)

        def job(session: Session) -> Decision:
            try:
                return self._decide_locked(session, request, app, customer_key, decision_id, now)
            except IntegrityError as exc:
                raise _concurrent_request_id() from exc
            except OperationalError as exc:
                # Two workers inserting the same request ids for other customers in opposite
                # orders: PostgreSQL breaks the deadlock by failing one of the inserts.
                if getattr(exc.orig, "sqlstate", None) == DEADLOCK_DETECTED:
                    raise _concurrent_request_id() from exc
                raise

        return job, lock_key

    def _decide_locked(
        self,
        session: Session,
        request: DecisionRequest,
        app: AppIdentity,
        customer_key: str,
        decision_id: str,
        now: datetime,
    ) -> Decision:
        """The decision in the caller's transaction, the customer already locked."""
        experiment_row = _experiment_head(session, request.experiment)
        if experiment_row is None:
            raise NotFound(f"no experiment {request.experiment!r}", field="experiment")
        if experiment_row.status != ExperimentStatus.RUNNING:
            raise Conflict(
                f"experiment {request.experiment!r} is {experiment_row.status}, not running",
                field="experiment",
            )
        compiled = self.platform.compiled_version(
            session, experiment_row.id, experiment_row.version
        )
        if request.surface not in compiled.config.surfaces:
            raise InvalidInput(
                f"unknown surface; expected one of {compiled.config.surfaces}",
                field="surface",
            )
        context = validate_context(request.context, compiled)
        fingerprint = request_fingerprint(
            request, customer_key, context, self.platform.settings.pseudonym_key
        )
        if request.request_id is not None:
            existing = repositories.decision_by_request_id(
                session, app.api_key_id, request.request_id
            )
            if existing is not None:
                if existing.request_hash != fingerprint:
                    raise InvalidInput(
                        "request_id was already used with a different request",
                        field="request_id",
                    )
                return decision_from_row(existing, experiment_row.key, replayed=True)
        group = assign_group(customer_key, experiment_row.salt, compiled.config.traffic)
        trip = (
            experiment_row.guardrail_trip
            if group == Group.BANDIT and compiled.config.guardrails
            else None
        )
        choice = self._choose(
            session,
            experiment_row,
            compiled,
            context,
            customer_key,
            group,
            request.consent,
            decision_id,
            now,
            trip,
        )
        values = self._row(
            decision_id,
            experiment_row,
            compiled,
            app,
            request,
            customer_key,
            fingerprint,
            group,
            choice,
            context,
            now,
        )
        repositories.insert_decision(session, values)
        return decision_from_values(
            values, request.experiment, dropped=list(context.dropped_protected)
        )

    def _choose(
        self,
        session: Session,
        experiment_row: ExperimentHead,
        compiled: CompiledExperiment,
        context: ValidatedContext,
        customer_key: str,
        group: Group,
        consent: bool | None,
        decision_id: str,
        now: datetime,
        trip: Mapping[str, Any] | None = None,
    ) -> _Choice:
        config = compiled.config
        if group == Group.HOLDOUT:
            return _no_offer(DecisionReason.HOLDOUT, "holdout group: no offer (control for lift)")
        if trip is not None and config.ab_arm.kind != "incumbent_rules":
            # Without incumbent rules the baseline is the holdout's treatment: no offer.
            return _no_offer(
                DecisionReason.GUARDRAIL_BASELINE,
                f"guardrail {trip.get('metric')!r} tripped: the baseline (no offer) is served",
            )
        capped, customer_capped = self._caps(
            session, experiment_row.id, compiled, customer_key, now
        )
        eligible: list[Offer] = []
        ineligible: list[str] = []
        for offer in config.offers:
            if offer.key in capped:
                continue
            if compiled.eligibility[offer.key].evaluate(context.values):
                eligible.append(offer)
            else:
                ineligible.append(offer.key)
        notes = []
        if capped:
            notes.append(f"capped: {', '.join(sorted(capped))}")
        if ineligible:
            notes.append(f"not eligible: {', '.join(ineligible)}")
        fallback = next((o for o in eligible if o.key == config.fallback_offer), None)

        if consent is not True and config.consent_required:
            if fallback is not None and not customer_capped:
                return _single(
                    DecisionReason.NO_CONSENT,
                    _first_variant(fallback),
                    "no personalisation consent: the standard offer is shown",
                )
            return _no_offer(DecisionReason.NO_CONSENT, "no personalisation consent: no offer")
        if customer_capped:
            return _no_offer(
                DecisionReason.CUSTOMER_CAP, "the customer's frequency cap is reached: no offer"
            )
        arms = [Arm(o.key, v.key) for o in eligible for v in o.variants]
        if config.include_no_offer:
            arms.append(Arm(None, None))
        if not arms:
            choice = _no_offer(DecisionReason.NO_ELIGIBLE_OFFER, "no offer is eligible")
            choice.notes = notes
            return choice
        if group == Group.AB:
            choice = self._ab(compiled, context, eligible, arms)
        elif trip is not None:
            choice = self._guardrail_baseline(compiled, context, eligible, arms, trip)
        elif config.learning.apprentice and experiment_row.apprentice_state != "online":
            choice = self._apprentice(compiled, context, eligible, arms)
        else:
            choice = self._bandit(
                session, experiment_row, compiled, context, arms, fallback, decision_id
            )
        choice.notes = notes + choice.notes
        return choice

    def _caps(
        self,
        session: Session,
        experiment_id: int,
        compiled: CompiledExperiment,
        customer_key: str,
        now: datetime,
    ) -> tuple[set[str], bool]:
        caps = compiled.config.frequency_caps
        if not caps:
            return set(), False
        longest = max(cap.window_hours for cap in caps)
        shown = repositories.offers_shown_since(
            session, experiment_id, customer_key, now - timedelta(hours=longest)
        )
        capped: set[str] = set()
        customer_capped = False
        for cap in caps:
            since = now - timedelta(hours=cap.window_hours)
            recent = [offer for offer, at in shown if at >= since]
            if cap.scope == "customer":
                customer_capped = customer_capped or len(recent) >= cap.max_offers
                continue
            keys = [cap.offer] if cap.offer is not None else list(compiled.offers)
            for key in keys:
                if sum(1 for offer in recent if offer == key) >= cap.max_offers:
                    capped.add(key)
        return capped, customer_capped

    def _ab(
        self,
        compiled: CompiledExperiment,
        context: ValidatedContext,
        eligible: Sequence[Offer],
        arms: list[Arm],
    ) -> _Choice:
        ab_arm = compiled.config.ab_arm
        eligible_keys = {o.key: o for o in eligible}
        if ab_arm.kind == "uniform":
            # Uniform over offers (no-offer counts as one), then over each offer's variants.
            choices = len(eligible) + (1 if compiled.config.include_no_offer else 0)
            probabilities = [
                1.0 / choices / (len(compiled.offers[a.offer].variants) if a.offer else 1)
                for a in arms
            ]
            return _Choice(
                DecisionReason.AB_UNIFORM,
                arms,
                probabilities,
                None,
                f"A-B group: uniform over {choices} eligible choices",
            )
        for position, (expression, rule) in enumerate(compiled.incumbent_rules, start=1):
            offer = eligible_keys.get(rule.offer)
            if offer is not None and expression.evaluate(context.values):
                variant = rule.variant or offer.variants[0].key
                return _single(
                    DecisionReason.AB_RULE,
                    Arm(offer.key, variant),
                    f"A-B group: incumbent rule {position} ({rule.when}) matched",
                )
        default = eligible_keys.get(ab_arm.default_offer or "")
        if default is not None:
            return _single(
                DecisionReason.AB_DEFAULT,
                _first_variant(default),
                "A-B group: no incumbent rule matched; default offer",
            )
        return _no_offer(DecisionReason.AB_DEFAULT, "A-B group: no incumbent rule matched")

    def _apprentice(
        self,
        compiled: CompiledExperiment,
        context: ValidatedContext,
        eligible: Sequence[Offer],
        arms: list[Arm],
    ) -> _Choice:
        """Serve the incumbent rules while the model learns to imitate them.

        Every eligible arm is logged (probability 0 but the chosen one), so that the learner
        can rebuild the choice set it imitates.
        """
        rule_choice = self._ab(compiled, context, eligible, arms)
        chosen_arm = rule_choice.arms[0]
        if chosen_arm not in arms:
            arms = [*arms, chosen_arm]
        chosen = arms.index(chosen_arm)
        probabilities = [1.0 if i == chosen else 0.0 for i in range(len(arms))]
        return _Choice(
            DecisionReason.APPRENTICE,
            arms,
            probabilities,
            chosen,
            "apprentice: " + rule_choice.explanation.removeprefix("A-B group: "),
        )

    def _guardrail_baseline(
        self,
        compiled: CompiledExperiment,
        context: ValidatedContext,
        eligible: Sequence[Offer],
        arms: list[Arm],
        trip: Mapping[str, Any],
    ) -> _Choice:
        """Serve the incumbent rules in the bandit group while a guardrail is tripped.

        The rules' single choice with probability 1, as in the A-B group, under a reason of
        its own: not learned from, and not an apprentice lesson.
        """
        rule_choice = self._ab(compiled, context, eligible, arms)
        rule_choice.reason = DecisionReason.GUARDRAIL_BASELINE
        rule_choice.explanation = (
            f"guardrail {trip.get('metric')!r} tripped: the baseline is served; "
            + rule_choice.explanation.removeprefix("A-B group: ")
        )
        return rule_choice

    def _bandit(
        self,
        session: Session,
        experiment_row: ExperimentHead,
        compiled: CompiledExperiment,
        context: ValidatedContext,
        arms: list[Arm],
        fallback: Offer | None,
        decision_id: str,
    ) -> _Choice:
        config = compiled.config
        if self.bandit_policy is not None:
            return self._external(experiment_row, compiled, context, arms, decision_id)
        loaded = self.platform.model(session, experiment_row.id)
        raw: list[float] | None = None
        if loaded is not None:
            shared = context_namespaces(context.values)
            actions = [arm_namespaces(compiled, a.key) for a in arms]
            started = time.perf_counter()
            try:
                raw = loaded.model.predict(shared, actions)
                why = ""
            except Exception:
                logger.exception("model prediction failed for experiment %s", experiment_row.key)
                why = "the model failed"
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if raw is not None and elapsed_ms > config.learning.model_deadline_ms:
                raw = None
                why = (
                    f"the model took {elapsed_ms:.1f} ms, over the "
                    f"{config.learning.model_deadline_ms:g} ms deadline"
                )
        else:
            why = "no model"
        if loaded is None or raw is None:
            if fallback is not None:
                return _single(
                    DecisionReason.MODEL_FALLBACK,
                    _first_variant(fallback),
                    f"{why}: the fallback offer is shown",
                )
            return _no_offer(DecisionReason.MODEL_FALLBACK, f"{why}: no offer")
        notes: list[str] = []
        checked = served_probabilities(
            raw,
            explorer=config.explorer,
            examples_seen=loaded.examples_seen,
            floor=config.probability_floor,
        )
        if checked.replaced:
            notes.append("invalid model probabilities were replaced by uniform")
        chosen = draw(checked.probabilities, decision_seed(experiment_row.salt, decision_id))
        arm = arms[chosen]
        return _Choice(
            DecisionReason.BANDIT,
            arms,
            list(checked.probabilities),
            chosen,
            f"bandit ({config.explorer.__struct_config__.tag}): {arm.key} with probability "
            f"{checked.probabilities[chosen]:.3f} among {len(arms)} eligible choices",
            model_version=loaded.version,
            notes=notes,
        )

    def _external(
        self,
        experiment_row: ExperimentHead,
        compiled: CompiledExperiment,
        context: ValidatedContext,
        arms: list[Arm],
        decision_id: str,
    ) -> _Choice:
        assert self.bandit_policy is not None
        checked = check_probabilities(
            self.bandit_policy.probabilities(compiled, context, arms),
            compiled.config.probability_floor,
        )
        notes = (
            ["invalid policy probabilities were replaced by uniform"] if checked.replaced else []
        )
        chosen = draw(checked.probabilities, decision_seed(experiment_row.salt, decision_id))
        return _Choice(
            DecisionReason.BANDIT,
            arms,
            list(checked.probabilities),
            chosen,
            f"bandit ({self.bandit_policy.name}): {arms[chosen].key} with probability "
            f"{checked.probabilities[chosen]:.3f} among {len(arms)} eligible choices",
            notes=notes,
        )

    def _row(
        self,
        decision_id: str,
        experiment_row: ExperimentHead,
        compiled: CompiledExperiment,
        app: AppIdentity,
        request: DecisionRequest,
        customer_key: str,
        fingerprint: str,
        group: Group,
        choice: _Choice,
        context: ValidatedContext,
        now: datetime,
    ) -> dict[str, Any]:
        """The decision's row, as the columns of `DecisionRow`."""
        if choice.chosen is None:
            choice.chosen = draw(
                choice.probabilities, decision_seed(experiment_row.salt, decision_id)
            )
        arm = choice.arms[choice.chosen]
        # Without consent no context is kept, whatever the group (holdout included).
        consented = request.consent is True or not compiled.config.consent_required
        explanation = "; ".join([choice.explanation, *choice.notes])[:500]
        return {
            "id": decision_id,
            "experiment_id": experiment_row.id,
            "experiment_version": experiment_row.version,
            "api_key_id": app.api_key_id,
            "request_id": request.request_id,
            "customer_key": customer_key,
            "surface": request.surface,
            "group": group.value,
            "reason": choice.reason.value,
            "context": dict(context.values) if consented else {},
            "eligible": [a.key for a in choice.arms],
            "probabilities": {
                a.key: p for a, p in zip(choice.arms, choice.probabilities, strict=True)
            },
            "chosen_offer": arm.offer,
            "chosen_variant": arm.variant,
            "propensity": choice.probabilities[choice.chosen],
            "model_version": choice.model_version,
            "learnable": choice.reason in LEARNABLE_REASONS,
            "explanation": explanation,
            "request_hash": fingerprint,
            "requested_at": request.requested_at,
            "created_at": now,
        }


def decision_from_row(
    row: DecisionRow,
    experiment_key: str,
    *,
    replayed: bool = False,
    dropped: list[str] | None = None,
) -> Decision:
    """The answer for a logged decision."""
    return decision_from_values(
        row.model_dump(), experiment_key, replayed=replayed, dropped=dropped
    )


def decision_from_values(
    values: Mapping[str, Any],
    experiment_key: str,
    *,
    replayed: bool = False,
    dropped: list[str] | None = None,
) -> Decision:
    """The answer for a decision row given as its columns."""
    return Decision(
        decision_id=values["id"],
        experiment_key=experiment_key,
        experiment_version=values["experiment_version"],
        group=Group(values["group"]),
        reason=DecisionReason(values["reason"]),
        offer=values["chosen_offer"],
        variant=values["chosen_variant"],
        propensity=values["propensity"],
        probabilities=dict(values["probabilities"]),
        eligible=list(values["eligible"]),
        model_version=values["model_version"],
        explanation=values["explanation"],
        created_at=values["created_at"],
        surface=values["surface"],
        request_id=values["request_id"],
        learnable=values["learnable"],
        replayed=replayed,
        dropped_fields=dropped or [],
    )


def offer_probabilities(arm_probabilities: Mapping[str, float]) -> dict[str, float]:
    """Arm probabilities summed per offer key (`no_offer` for showing nothing)."""
    result: dict[str, float] = {}
    for key, probability in arm_probabilities.items():
        offer = key.split("/", 1)[0] if key != NO_OFFER else NO_OFFER
        result[offer] = result.get(offer, 0.0) + probability
    return result
