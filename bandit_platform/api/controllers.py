"""Route handlers: each validates its body (msgspec), calls one service method, shapes JSON."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from bandit_platform.api.auth import api_key_guard, provide_identity
from bandit_platform.api.errors import problem
from bandit_platform.api.schemas import (
    AuditEntryBody,
    ChangeRequestBody,
    DecisionRequestBody,
    DecisionResponseBody,
    ExperimentResponseBody,
    LearnerStatusBody,
    ModelBody,
    OutcomeRequestBody,
    OutcomeResponseBody,
    RollbackBody,
    StatusChangeBody,
)
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import ExperimentConfig, explorer_catalogue
from bandit_platform.domain.decisions import Decision, ExperimentStatus
from bandit_platform.service.decisions import DecisionRequest, offer_probabilities
from bandit_platform.service.experiments import ChangeRequestView, ExperimentView
from bandit_platform.service.leader import learner_lease
from bandit_platform.service.learner import LearnerRunner
from bandit_platform.service.outcomes import OutcomeRequest
from bandit_platform.service.platform import Platform
from bandit_platform.storage.database import current_revision, head_revision

_GUARDED: dict[str, Any] = {
    "guards": [api_key_guard],
    "dependencies": {"app_identity": Provide(provide_identity, sync_to_thread=False)},
}


def _decision_body(decision: Decision) -> DecisionResponseBody:
    return DecisionResponseBody(
        decision_id=decision.decision_id,
        experiment=decision.experiment_key,
        experiment_version=decision.experiment_version,
        offer=decision.offer,
        variant=decision.variant,
        propensity=decision.propensity,
        probabilities=offer_probabilities(decision.probabilities),
        arm_probabilities=decision.probabilities,
        group=decision.group.value,
        reason=decision.reason.value,
        model_version=decision.model_version,
        explanation=decision.explanation,
        created_at=decision.created_at,
        replayed=decision.replayed,
        dropped_fields=decision.dropped_fields,
    )


def _experiment_body(view: ExperimentView) -> ExperimentResponseBody:
    return ExperimentResponseBody(
        key=view.key,
        name=view.name,
        status=view.status,
        version=view.version,
        config=view.config,
        created_at=view.created_at,
        updated_at=view.updated_at,
        approved_version=view.approved_version,
    )


def _change_body(change: ChangeRequestView) -> ChangeRequestBody:
    return ChangeRequestBody(
        id=change.id,
        experiment=change.experiment_key,
        status=change.status.value,
        base_version=change.base_version,
        proposed_by=change.proposed_by,
        proposed_at=change.proposed_at,
        comment=change.comment,
        config=change.config,
        decided_by=change.decided_by,
        decided_at=change.decided_at,
        decision_comment=change.decision_comment,
        applied_version=change.applied_version,
    )


class DecisionController(Controller):
    """The app backend asks which offer to show."""

    path = "/v1/decisions"
    tags = ["decisions"]
    guards = _GUARDED["guards"]
    dependencies = _GUARDED["dependencies"]

    @post("/", opt={"scope": "decide"}, status_code=HTTP_200_OK)
    async def decide(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[DecisionRequestBody],
        app_identity: NamedDependency[AppIdentity],
    ) -> DecisionResponseBody:
        """Choose an offer (or none) for a customer and log the decision with its propensity."""
        context = {
            "profile": data.context.profile,
            "cash_flow": data.context.cash_flow,
            "behavior": data.context.behavior,
            "trigger": data.context.trigger,
        }
        decision = await request.app.state.decisions.decide_async(
            DecisionRequest(
                experiment=data.experiment,
                customer_id=data.customer_id,
                context={k: v for k, v in context.items() if v},
                surface=data.surface,
                consent=data.consent,
                request_id=data.request_id,
                requested_at=data.requested_at,
            ),
            app_identity,
        )
        return _decision_body(decision)


class OutcomeController(Controller):
    """The app backend or core banking reports what the customer did."""

    path = "/v1/outcomes"
    tags = ["outcomes"]
    guards = _GUARDED["guards"]
    dependencies = _GUARDED["dependencies"]

    @post(
        "/",
        opt={"scope": "outcome"},
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=OutcomeResponseBody,
                description="A replay (the same idempotency key and body): the first answer",
            )
        },
    )
    async def record(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[OutcomeRequestBody],
        app_identity: NamedDependency[AppIdentity],
    ) -> Response[OutcomeResponseBody]:
        """Store an outcome once per idempotency key; a replay returns the first answer."""
        receipt = await request.app.state.outcomes.record_async(
            OutcomeRequest(
                decision_id=data.decision_id,
                event=data.event,
                value=data.value,
                occurred_at=data.occurred_at,
                idempotency_key=data.idempotency_key,
            ),
            app_identity,
        )
        body = OutcomeResponseBody(
            outcome_id=receipt.outcome_id,
            decision_id=receipt.decision_id,
            event=receipt.event,
            value=receipt.value,
            occurred_at=receipt.occurred_at,
            received_at=receipt.received_at,
            late=receipt.late,
            replayed=receipt.replayed,
        )
        return Response(body, status_code=HTTP_200_OK if receipt.replayed else HTTP_201_CREATED)


class ExperimentController(Controller):
    """Create, read, update, list experiments and change their status."""

    path = "/v1/experiments"
    tags = ["experiments"]
    guards = _GUARDED["guards"]
    dependencies = _GUARDED["dependencies"]

    @get("/", opt={"scope": "read"}, sync_to_thread=True)
    def list_experiments(self, request: Request[Any, Any, Any]) -> list[ExperimentResponseBody]:
        """Every experiment, newest first."""
        return [_experiment_body(v) for v in request.app.state.experiments.all()]

    @post("/", opt={"scope": "manage"}, sync_to_thread=True, status_code=HTTP_201_CREATED)
    def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ExperimentConfig],
        app_identity: NamedDependency[AppIdentity],
    ) -> ExperimentResponseBody:
        """Create an experiment in draft (version 1)."""
        view = request.app.state.experiments.create(data, app_identity.actor)
        return _experiment_body(view)

    @get("/{key:str}", opt={"scope": "read"}, sync_to_thread=True)
    def read(self, request: Request[Any, Any, Any], key: FromPath[str]) -> ExperimentResponseBody:
        """One experiment with its current configuration."""
        return _experiment_body(request.app.state.experiments.get(key))

    @put(
        "/{key:str}",
        opt={"scope": "manage"},
        sync_to_thread=True,
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(
                data_container=ChangeRequestBody,
                description="A running or paused experiment: the change request, pending "
                "an approver",
            )
        },
    )
    def update(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        data: JSONBody[ExperimentConfig],
        app_identity: NamedDependency[AppIdentity],
    ) -> Response[ExperimentResponseBody | ChangeRequestBody]:
        """Change the configuration (audited).

        A draft (or approved, not yet started) experiment gets the next version at once and
        is a draft again: 200 with the experiment; it needs an approver before it starts. A
        running or paused experiment keeps serving its approved version: 202 with the
        pending change request, which an approver approves or rejects in the web UI.
        """
        result = request.app.state.experiments.propose(key, data, app_identity.actor)
        if result.change is None:
            return Response(_experiment_body(result.experiment), status_code=HTTP_200_OK)
        return Response(_change_body(result.change), status_code=HTTP_202_ACCEPTED)

    @get("/{key:str}/changes", opt={"scope": "read"}, sync_to_thread=True)
    def changes(
        self, request: Request[Any, Any, Any], key: FromPath[str]
    ) -> list[ChangeRequestBody]:
        """The experiment's change requests, newest first, with their decisions."""
        return [_change_body(c) for c in request.app.state.experiments.changes(key)]

    @post(
        "/{key:str}/status", opt={"scope": "manage"}, sync_to_thread=True, status_code=HTTP_200_OK
    )
    def change_status(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        data: JSONBody[StatusChangeBody],
        app_identity: NamedDependency[AppIdentity],
    ) -> ExperimentResponseBody:
        """Start (only an approved version), pause, resume or stop the experiment."""
        view = request.app.state.experiments.change_status(
            key, ExperimentStatus(data.status), app_identity.actor
        )
        return _experiment_body(view)

    @get("/{key:str}/audit", opt={"scope": "read"}, sync_to_thread=True)
    def audit(self, request: Request[Any, Any, Any], key: FromPath[str]) -> list[AuditEntryBody]:
        """The experiment's audit log, newest first."""
        return [AuditEntryBody(**row) for row in request.app.state.experiments.audit_log(key)]


class ModelController(Controller):
    """Model snapshots of an experiment: list them, roll back to one."""

    path = "/v1/experiments/{key:str}/models"
    tags = ["models"]
    guards = _GUARDED["guards"]
    dependencies = _GUARDED["dependencies"]

    @get("/", opt={"scope": "read"}, sync_to_thread=True)
    def list_models(self, request: Request[Any, Any, Any], key: FromPath[str]) -> list[ModelBody]:
        """Every model version, newest first (the newest valid one is served)."""
        return [ModelBody(**m) for m in request.app.state.experiments.models(key)]

    @post("/rollback", opt={"scope": "manage"}, sync_to_thread=True, status_code=HTTP_200_OK)
    def rollback(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        data: JSONBody[RollbackBody],
        app_identity: NamedDependency[AppIdentity],
    ) -> dict[str, int]:
        """Serve an earlier model version again (published as the newest; audited)."""
        result: dict[str, int] = request.app.state.experiments.rollback_model(
            key, data.version, app_identity.actor
        )
        return result


@get("/v1/learner", tags=["models"], opt={"scope": "read"}, sync_to_thread=True, **_GUARDED)
def learner_status(request: Request[Any, Any, Any]) -> LearnerStatusBody:
    """Who the learner is now, when it last worked, and what this worker sees."""
    runner: LearnerRunner = request.app.state.learner
    lease = learner_lease(request.app.state.platform)
    report = runner.last_report
    return LearnerStatusBody(
        holder=lease.holder if lease else None,
        acquired_at=lease.acquired_at if lease else None,
        heartbeat_at=lease.heartbeat_at if lease else None,
        details=lease.details if lease else {},
        this_worker=runner.lease.holder,
        this_worker_holds=runner.lease.held,
        last_error=runner.last_error,
        last_report=None
        if report is None
        else {
            "rewards_closed": report.rewards_closed,
            "examples_learned": report.examples_learned,
            "snapshots_published": report.snapshots_published,
        },
    )


@get("/v1/explorers", tags=["experiments"], sync_to_thread=False)
def explorers() -> list[dict[str, Any]]:
    """The bandit's exploration strategies, each explained in one sentence."""
    return explorer_catalogue()


@get("/health/live", tags=["health"], sync_to_thread=False)
def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/health/ready", tags=["health"], sync_to_thread=True)
def ready(request: Request[Any, Any, Any]) -> Response[Any]:
    """The database answers and its schema is at the newest migration."""
    platform: Platform = request.app.state.platform
    try:
        revision = current_revision(platform.engine)
    except Exception as exc:
        return problem(HTTP_503_SERVICE_UNAVAILABLE, f"database unreachable: {type(exc).__name__}")
    head = head_revision()
    if revision != head:
        return problem(
            HTTP_503_SERVICE_UNAVAILABLE, f"database at revision {revision}, expected {head}"
        )
    return Response({"status": "ready", "revision": revision})
