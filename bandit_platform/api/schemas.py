"""Request and response bodies of the JSON API (msgspec; unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from bandit_platform.domain.config import MAX_CONTEXT_FIELDS, Explorer
from bandit_platform.domain.decisions import ExperimentStatus

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Text and list lengths are checked by the decision service, which can name the field: msgspec
# reports a value inside a dict as `[...]`, without its key. Numbers are 64-bit integers or
# finite floats (JSON has no infinity; `1e999` is malformed), ranges are the allow-list's.
ContextValue = bool | int | float | str | list[str]
#: Most fields one context section may carry.
MAX_SECTION_FIELDS = 100
Section = Annotated[dict[Name, ContextValue], msgspec.Meta(max_length=MAX_SECTION_FIELDS)]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: an unknown field is a 4xx, never silently ignored."""


class DecisionContext(_Body, kw_only=True):
    """What the bank knows about the customer now, by section; keys follow the allow-list."""

    profile: Section = msgspec.field(default_factory=dict)
    cash_flow: Section = msgspec.field(default_factory=dict)
    behavior: Section = msgspec.field(default_factory=dict)
    trigger: Section = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        total = len(self.profile) + len(self.cash_flow) + len(self.behavior) + len(self.trigger)
        if total > MAX_CONTEXT_FIELDS:
            # msgspec reports this as a validation error at `$.context`.
            raise ValueError(f"at most {MAX_CONTEXT_FIELDS} fields in all sections, not {total}")


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
    #: The newest version an approver approved; only that version runs.
    approved_version: int | None = None


class ChangeRequestBody(msgspec.Struct, kw_only=True):
    """A configuration change to a running or paused experiment and where it stands
    (`PUT /v1/experiments/{key}` answers it with 202 while pending)."""

    id: int
    experiment: str
    status: str
    base_version: int
    proposed_by: str
    proposed_at: datetime
    comment: str
    config: dict[str, Any]
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_comment: str | None = None
    #: The configuration version it became once approved.
    applied_version: int | None = None


class StatusChangeBody(_Body, kw_only=True):
    """`POST /v1/experiments/{key}/status`: start (an approved version), pause, resume or
    stop. Approval is not a status an app sets: an approver approves in the web UI."""

    status: Literal["draft", "running", "paused", "stopped"]


class AuditEntryBody(msgspec.Struct, kw_only=True):
    """One audit log row."""

    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


class ModelBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One model snapshot (without its bytes); `evidence` only on a promoted version."""

    version: int
    created_at: datetime
    examples_seen: int
    checksum: str
    size_bytes: int
    intact: bool
    note: str
    match_rate: float | None
    evidence: dict[str, Any] | None = None


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


class GuardrailClearBody(_Body, kw_only=True):
    """`POST /v1/experiments/{key}/guardrails/clear`: why the bandit may serve again."""

    comment: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class GuardrailRateBody(msgspec.Struct, kw_only=True):
    """One group's rate of a guardrail metric with its always-valid interval and n."""

    n: int
    events: int
    rate: float | None
    lower: float | None
    upper: float | None


class GuardrailIncreaseBody(msgspec.Struct, kw_only=True):
    """Bandit minus holdout rate with its always-valid interval."""

    estimate: float
    lower: float
    upper: float
    confidence: float
    method: str


class GuardrailStatusBody(msgspec.Struct, kw_only=True):
    """One configured guardrail and where it stands now."""

    metric: str
    window_hours: float
    max_increase: float | None
    max_rate: float | None
    min_decisions: int
    confidence: float
    bandit: GuardrailRateBody
    holdout: GuardrailRateBody | None
    increase: GuardrailIncreaseBody | None
    ready: bool
    breached: str | None
    warnings: list[str]


class GuardrailReportBody(msgspec.Struct, kw_only=True):
    """`GET /v1/experiments/{key}/guardrails`: the guardrails, their rates and the trip."""

    experiment: str
    tripped: bool
    trip: dict[str, Any] | None
    since: datetime | None
    guardrails: list[GuardrailStatusBody]


#: Most rows one fairness audit request may carry.
MAX_AUDIT_ROWS = 100_000
AttributeName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
AttributeValue = Annotated[str, msgspec.Meta(max_length=120)]


class FairnessAuditBody(_Body, kw_only=True):
    """`POST /v1/experiments/{key}/report/fairness`: protected attributes for an audit only.

    `rows` are the bank's file as JSON, one object per customer: `customer_id` and the
    attribute columns (e.g. `{"customer_id": "c-1", "gender": "f"}`). They are joined to the
    log in memory through the customer pseudonym and never stored or logged.
    """

    rows: Annotated[
        list[Annotated[dict[AttributeName, AttributeValue], msgspec.Meta(max_length=21)]],
        msgspec.Meta(min_length=1, max_length=MAX_AUDIT_ROWS),
    ]
    horizon: Name | None = None
    since: datetime | None = None
    until: datetime | None = None


class IntegrityBody(msgspec.Struct, kw_only=True):
    """`GET /v1/experiments/{key}/policies/integrity`: recent logged probability vectors
    recomputed from the snapshots (and A-B rule) that produced them."""

    experiment: str
    ok: bool
    sampled: int
    checked: int
    mismatched: int
    max_difference: float | None
    tolerance: float
    mismatched_ids: list[str]
    unverifiable: int
    skipped: dict[str, int]


class EstimateBody(msgspec.Struct, kw_only=True):
    """One off-policy estimate with its two-sided interval, n and overlap diagnostics."""

    estimator: str
    value: float | None
    lower: float | None
    upper: float | None
    n: int
    effective_sample_size: float
    max_weight: float
    warnings: list[str]


class PolicyValueBody(msgspec.Struct, kw_only=True):
    """`GET /v1/experiments/{key}/policies`: one target policy's IPS, SNIPS and DR values."""

    policy: str
    horizon: str
    n: int
    confidence: float
    estimates: list[EstimateBody]


class CandidateRequestBody(_Body, kw_only=True):
    """`POST /v1/experiments/{key}/candidates`: train a candidate on the log before a cutoff,
    judge it against the served model on the rows after it, and promote it when its lower
    confidence bound is above the served model's (unless `dry_run`).

    `explorer` (any explorer of the configuration schema) or its shortcut `epsilon` (an
    epsilon-greedy explorer); neither: the configured explorer.
    """

    explorer: Explorer | None = None
    epsilon: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    holdout_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.3
    cutoff: datetime | None = None
    confidence: Annotated[float, msgspec.Meta(ge=0.5, lt=1.0)] = 0.95
    estimator: Literal["snips", "ips", "dr"] = "snips"
    dry_run: bool = False


class CandidateResponseBody(msgspec.Struct, kw_only=True):
    """The promotion gate's verdict: whether the candidate was promoted, as which version, and
    the evidence stored with it."""

    promoted: bool
    would_promote: bool
    version: int | None
    evidence: dict[str, Any]


class ProblemBody(msgspec.Struct, kw_only=True):
    """An error (RFC 9457 problem details), `application/problem+json`. Some carry more
    members (a refused promotion: its evidence)."""

    type: str
    title: str
    status: int
    detail: str
    #: The request field that was wrong, when one was.
    field: str | None = None
