"""Guardrail routes: read an experiment's guardrails and clear a trip."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from bandit_platform.api.auth import api_key_guard, provide_identity
from bandit_platform.api.schemas import (
    GuardrailClearBody,
    GuardrailIncreaseBody,
    GuardrailRateBody,
    GuardrailReportBody,
    GuardrailStatusBody,
)
from bandit_platform.domain.access import AppIdentity
from bandit_platform.service.guardrails import (
    GroupRate,
    GuardrailReport,
    GuardrailService,
    GuardrailVerdict,
)


def _rate(rate: GroupRate | None) -> GuardrailRateBody | None:
    if rate is None:
        return None
    return GuardrailRateBody(
        n=rate.n, events=rate.events, rate=rate.rate, lower=rate.lower, upper=rate.upper
    )


def _status(verdict: GuardrailVerdict) -> GuardrailStatusBody:
    guardrail, increase = verdict.guardrail, verdict.increase
    bandit = _rate(verdict.bandit)
    assert bandit is not None
    return GuardrailStatusBody(
        metric=guardrail.metric,
        window_hours=guardrail.window_hours,
        max_increase=guardrail.max_increase,
        max_rate=guardrail.max_rate,
        min_decisions=guardrail.min_decisions,
        confidence=guardrail.confidence,
        bandit=bandit,
        holdout=_rate(verdict.holdout),
        increase=None
        if increase is None
        else GuardrailIncreaseBody(
            estimate=increase.estimate,
            lower=increase.lower,
            upper=increase.upper,
            confidence=increase.confidence,
            method=increase.method,
        ),
        ready=verdict.ready,
        breached=verdict.breached,
        warnings=list(verdict.warnings),
    )


def _report(report: GuardrailReport) -> GuardrailReportBody:
    return GuardrailReportBody(
        experiment=report.experiment,
        tripped=report.trip is not None,
        trip=report.trip,
        since=report.since,
        guardrails=[_status(v) for v in report.verdicts],
    )


def _service(request: Request[Any, Any, Any]) -> GuardrailService:
    return GuardrailService(request.app.state.platform)


class GuardrailController(Controller):
    """An experiment's guardrails: the rates that switch the bandit group to the baseline."""

    path = "/v1/experiments/{key:str}/guardrails"
    tags = ["guardrails"]
    guards = [api_key_guard]
    dependencies = {"app_identity": Provide(provide_identity, sync_to_thread=False)}

    @get("/", opt={"scope": "read"}, sync_to_thread=True)
    def read(self, request: Request[Any, Any, Any], key: FromPath[str]) -> GuardrailReportBody:
        """The configured guardrails, each group's current rate (interval, n), and the trip."""
        return _report(_service(request).report(key))

    @post("/clear", opt={"scope": "manage"}, sync_to_thread=True, status_code=HTTP_200_OK)
    def clear(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        data: JSONBody[GuardrailClearBody],
        app_identity: NamedDependency[AppIdentity],
    ) -> GuardrailReportBody:
        """Clear a trip: the bandit group is served the bandit again (audited, with why)."""
        return _report(_service(request).clear(key, data.comment, app_identity.actor))
