"""Types of a decision and an outcome, shared by the service, storage and API layers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Group(enum.StrEnum):
    """The experiment group a customer is stickily assigned to."""

    HOLDOUT = "holdout"
    AB = "ab"
    BANDIT = "bandit"


class ExperimentStatus(enum.StrEnum):
    """Lifecycle of an experiment: draft -> approved -> running <-> paused -> stopped.

    Only an approver's act moves a draft to approved (never a plain status change), and a
    change to an approved experiment makes it a draft again: only an approved version runs.
    """

    DRAFT = "draft"
    APPROVED = "approved"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


#: Allowed status changes. draft -> approved happens only by approval, approved -> draft only
#: by a change of the configuration; `ExperimentService.change_status` makes the others.
STATUS_TRANSITIONS: dict[ExperimentStatus, frozenset[ExperimentStatus]] = {
    ExperimentStatus.DRAFT: frozenset({ExperimentStatus.APPROVED, ExperimentStatus.STOPPED}),
    ExperimentStatus.APPROVED: frozenset(
        {ExperimentStatus.DRAFT, ExperimentStatus.RUNNING, ExperimentStatus.STOPPED}
    ),
    ExperimentStatus.RUNNING: frozenset({ExperimentStatus.PAUSED, ExperimentStatus.STOPPED}),
    ExperimentStatus.PAUSED: frozenset({ExperimentStatus.RUNNING, ExperimentStatus.STOPPED}),
    ExperimentStatus.STOPPED: frozenset(),
}


#: Targets that only approval or a configuration change reach, never a plain status change.
APPROVAL_STATUSES = frozenset({ExperimentStatus.DRAFT, ExperimentStatus.APPROVED})


class ChangeStatus(enum.StrEnum):
    """Where a proposed change to a running or paused experiment stands."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    #: The proposer withdrew it, or a newer proposal replaced it.
    WITHDRAWN = "withdrawn"


class DecisionReason(enum.StrEnum):
    """Why the decision came out as it did; the API explains it in words."""

    HOLDOUT = "holdout"
    AB_UNIFORM = "ab_uniform"
    AB_RULE = "ab_rule"
    AB_DEFAULT = "ab_default"
    BANDIT = "bandit"
    NO_CONSENT = "no_consent"
    NO_ELIGIBLE_OFFER = "no_eligible_offer"
    CUSTOMER_CAP = "customer_cap"
    MODEL_FALLBACK = "model_fallback"
    APPRENTICE = "apprentice"
    #: A guardrail tripped: the bandit group is served the experiment's baseline.
    GUARDRAIL_BASELINE = "guardrail_baseline"


#: Reasons whose decisions a learner may use: the policy chose with a logged propensity.
LEARNABLE_REASONS = frozenset({DecisionReason.BANDIT, DecisionReason.AB_UNIFORM})


@dataclass(frozen=True)
class Decision:
    """A decision as it is logged and answered."""

    decision_id: str
    experiment_key: str
    experiment_version: int
    group: Group
    reason: DecisionReason
    offer: str | None
    variant: str | None
    propensity: float
    probabilities: dict[str, float]
    eligible: list[str]
    model_version: int | None
    explanation: str
    created_at: datetime
    surface: str
    request_id: str | None = None
    learnable: bool = False
    replayed: bool = False
    dropped_fields: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OutcomeReceipt:
    """What the platform answers when it stores an outcome."""

    outcome_id: int
    decision_id: str
    event: str
    value: float
    occurred_at: datetime
    received_at: datetime
    late: bool
    replayed: bool
