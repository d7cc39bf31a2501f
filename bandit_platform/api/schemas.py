"""Request and response bodies of the JSON API (msgspec; unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from bandit_platform.domain.decisions import ExperimentStatus

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Text and list lengths are checked by the decision service, which can name the field: msgspec
# reports a value inside a dict as `[...]`, without its key.
ContextValue = bool | int | float | str | list[str]
Section = Annotated[dict[Name, ContextValue], msgspec.Meta(max_length=100)]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: an unknown field is a 4xx, never silently ignored."""


class DecisionContext(_Body, kw_only=True):
    """What the bank knows about the customer now, by section; keys follow the allow-list."""

    profile: Section = msgspec.field(default_factory=dict)
    cash_flow: Section = msgspec.field(default_factory=dict)
    behavior: Section = msgspec.field(default_factory=dict)
    trigger: Section = msgspec.field(default_factory=dict)


class DecisionRequestBody(_Body, kw_only=True):
    """`POST /v1/decisions`: which offer, if any, for this customer on this surface."""

    experiment: Name
    customer_id: Identifier
    context: DecisionContext
    surface: Name
    consent: bool | None = None
    request_id: Identifier | None = None
    requested_at: datetime | None = None


class DecisionResponseBody(msgspec.Struct, kw_only=True):
    """The chosen offer with its propensity and the full probability vector."""

    decision_id: str
    experiment: str
    experiment_version: int
    offer: str | None
    variant: str | None
    propensity: float
    probabilities: dict[str, float]
    arm_probabilities: dict[str, float]
    group: str
    reason: str
    model_version: int | None
    explanation: str
    created_at: datetime
    replayed: bool
    dropped_fields: list[str]


class OutcomeRequestBody(_Body, kw_only=True):
    """`POST /v1/outcomes`: what the customer did after a decision."""

    decision_id: Annotated[str, msgspec.Meta(min_length=1, max_length=36)]
    event: Name
    occurred_at: datetime
    idempotency_key: Identifier
    value: Annotated[float, msgspec.Meta(ge=-1e12, le=1e12)] = 1.0


class OutcomeResponseBody(msgspec.Struct, kw_only=True):
    """A stored outcome."""

    outcome_id: int
    decision_id: str
    event: str
    value: float
    occurred_at: datetime
    received_at: datetime
    late: bool
    replayed: bool


class ExperimentResponseBody(msgspec.Struct, kw_only=True):
    """An experiment with its current configuration."""

    key: str
    name: str
    status: ExperimentStatus
    version: int
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class StatusChangeBody(_Body, kw_only=True):
    """`POST /v1/experiments/{key}/status`."""

    status: ExperimentStatus


class AuditEntryBody(msgspec.Struct, kw_only=True):
    """One audit log row."""

    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


class ModelBody(msgspec.Struct, kw_only=True):
    """One model snapshot (without its bytes)."""

    version: int
    created_at: datetime
    examples_seen: int
    checksum: str
    size_bytes: int
    intact: bool
    note: str
    match_rate: float | None


class RollbackBody(_Body, kw_only=True):
    """`POST /v1/experiments/{key}/models/rollback`."""

    version: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class LearnerStatusBody(msgspec.Struct, kw_only=True):
    """The learner lease as operators see it."""

    holder: str | None
    acquired_at: datetime | None
    heartbeat_at: datetime | None
    details: dict[str, Any]
    this_worker: str
    this_worker_holds: bool
    last_error: str | None
    last_report: dict[str, Any] | None


class SimulationClockBody(_Body, kw_only=True):
    """`PUT /v1/simulation/clock` (simulation mode only): the server's new time."""

    now: datetime


class LearnerReportBody(msgspec.Struct, kw_only=True):
    """What one learner pass did, per experiment key."""

    rewards_closed: int
    examples_learned: dict[str, int]
    snapshots_published: dict[str, int]
