"""Policies judged on the log: integrity of the logged probabilities, off-policy values of
target policies, and candidates for the promotion gate."""

from __future__ import annotations

import math
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK

from bandit_platform.api.auth import api_key_guard, provide_identity
from bandit_platform.api.errors import PROBLEM_JSON, problem
from bandit_platform.api.schemas import (
    CandidateRequestBody,
    CandidateResponseBody,
    EstimateBody,
    IntegrityBody,
    PolicyValueBody,
)
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import EpsilonGreedy
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.evaluation.ope import Estimate
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.service.policy_evaluation import (
    CandidateSpec,
    PromotionRefused,
    check_integrity,
    evaluate_policies,
    standard_targets,
)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _estimate_body(estimate: Estimate) -> EstimateBody:
    return EstimateBody(
        estimator=estimate.name,
        value=_finite(estimate.value),
        lower=_finite(estimate.lower),
        upper=_finite(estimate.upper),
        n=estimate.n,
        effective_sample_size=estimate.effective_sample_size,
        max_weight=estimate.max_weight,
        warnings=list(estimate.warnings),
    )


def refused(_: Request[Any, Any, Any], exc: PromotionRefused) -> Response[dict[str, Any]]:
    """A refused promotion: 409 problem+json that carries the gate's evidence."""
    response = problem(exc.status_hint, exc.message, exc.field)
    content = {**response.content, "promoted": False, "evidence": exc.evidence}
    return Response(content=content, status_code=exc.status_hint, media_type=PROBLEM_JSON)


def _spec(data: CandidateRequestBody) -> CandidateSpec:
    if data.explorer is not None and data.epsilon is not None:
        raise InvalidInput("give explorer or epsilon, not both", field="epsilon")
    explorer = EpsilonGreedy(epsilon=data.epsilon) if data.epsilon is not None else data.explorer
    return CandidateSpec(
        explorer=explorer,
        holdout_fraction=data.holdout_fraction,
        cutoff=data.cutoff,
        confidence=data.confidence,
        estimator=data.estimator,
    )


class PolicyController(Controller):
    """Integrity of the logged probabilities, off-policy values, candidates."""

    path = "/v1/experiments/{key:str}"
    tags = ["policies"]
    guards = [api_key_guard]
    dependencies = {"app_identity": Provide(provide_identity, sync_to_thread=False)}
    exception_handlers = {PromotionRefused: refused}

    @get("/policies/integrity", opt={"scope": "read"}, sync_to_thread=True)
    def integrity(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        limit: int = Parameter(default=1000, ge=1, le=100_000),
    ) -> IntegrityBody:
        """Recompute the newest decisions' probability vectors from the snapshots that made
        them; any difference above the tolerance is a mismatch."""
        platform: Platform = request.app.state.platform
        report = check_integrity(platform, key, limit=limit)
        return IntegrityBody(
            experiment=key,
            ok=report.ok,
            sampled=report.sampled,
            checked=report.checked,
            mismatched=report.mismatched,
            max_difference=_finite(report.max_difference),
            tolerance=report.tolerance,
            mismatched_ids=list(report.mismatched_ids),
            unverifiable=report.unverifiable,
            skipped=report.skipped,
        )

    @get("/policies", opt={"scope": "read"}, sync_to_thread=True)
    def values(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        horizon: str | None = Parameter(default=None, max_length=63),
        confidence: float = Parameter(default=0.95, ge=0.5, lt=1.0),
    ) -> list[PolicyValueBody]:
        """IPS, SNIPS and DR values of the logging policy, uniform random, the incumbent rules
        and the served model on the learnable decisions with a closed reward."""
        platform: Platform = request.app.state.platform
        targets = standard_targets(platform, key)
        evaluations = evaluate_policies(
            platform, key, targets, horizon=horizon, confidence=confidence
        )
        return [
            PolicyValueBody(
                policy=e.policy,
                horizon=e.horizon,
                n=e.n,
                confidence=confidence,
                estimates=[_estimate_body(x) for x in (e.ips, e.snips, e.dr)],
            )
            for e in evaluations
        ]

    @post("/candidates", opt={"scope": "manage"}, sync_to_thread=True, status_code=HTTP_200_OK)
    def candidate(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        data: JSONBody[CandidateRequestBody],
        app_identity: NamedDependency[AppIdentity],
    ) -> CandidateResponseBody:
        """Train a candidate on the log before the cutoff and promote it when its lower bound
        beats the served model's on the rows after it (409 with the evidence otherwise)."""
        experiments: ExperimentService = request.app.state.experiments
        result = experiments.promote_candidate(
            key, _spec(data), app_identity.actor, dry_run=data.dry_run
        )
        return CandidateResponseBody(**result)
