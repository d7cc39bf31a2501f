"""`/v1/experiments/{key}/report`: the JSON the UI charts (read scope).

Each handler calls one function of `service.reports` and returns its JSON-ready builtins:
every estimate carries its sample size and its interval, and a number that is not finite is
null with a warning naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK

from bandit_platform.api.auth import api_key_guard, provide_identity
from bandit_platform.api.schemas import FairnessAuditBody
from bandit_platform.service import reports

#: Largest fairness audit body (the API's default limit is far smaller).
MAX_AUDIT_BODY_BYTES = 16 * 1024 * 1024


class ReportController(Controller):
    """Lift, SRM, guardrails, off-policy values, time series, models, segments, fairness."""

    path = "/v1/experiments/{key:str}/report"
    tags = ["reports"]
    guards = [api_key_guard]
    dependencies = {"app_identity": Provide(provide_identity, sync_to_thread=False)}

    @get("/", opt={"scope": "read"}, sync_to_thread=True)
    def headline(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        horizon: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> dict[str, Any]:
        """Counts, SRM, lifts per horizon, guardrails and the off-policy table."""
        report = reports.experiment_report(
            request.app.state.platform, key, horizon=horizon, since=since, until=until
        )
        result: dict[str, Any] = reports.to_json(report)
        return result

    @get("/timeseries", opt={"scope": "read"}, sync_to_thread=True)
    def timeseries(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        bucket: FromQuery[str] = "day",
        horizon: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> dict[str, Any]:
        """Traffic and allocation per bucket by group and offer; reward per bucket by group."""
        series = reports.time_series(
            request.app.state.platform,
            key,
            bucket=bucket,
            horizon=horizon,
            since=since,
            until=until,
        )
        result: dict[str, Any] = reports.to_json(series)
        return result

    @get("/segments", opt={"scope": "read"}, sync_to_thread=True)
    def segments(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> dict[str, Any]:
        """Per configured segment and group: decisions, offer rates, rewards and lifts."""
        report = reports.segment_report(request.app.state.platform, key, since=since, until=until)
        result: dict[str, Any] = reports.to_json(report)
        return result

    @get("/models", opt={"scope": "read"}, sync_to_thread=True)
    def models(self, request: Request[Any, Any, Any], key: FromPath[str]) -> dict[str, Any]:
        """Model versions with the decisions each served, and configuration versions."""
        result: dict[str, Any] = reports.to_json(
            reports.model_timeline(request.app.state.platform, key)
        )
        return result

    @post(
        "/fairness",
        opt={"scope": "read"},
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        request_max_body_size=MAX_AUDIT_BODY_BYTES,
    )
    def fairness(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        data: JSONBody[FairnessAuditBody],
    ) -> dict[str, Any]:
        """Offer rates and rewards by protected group (audit only: nothing is stored)."""
        report = reports.fairness_report(
            request.app.state.platform,
            key,
            data.rows,
            horizon=data.horizon,
            since=data.since,
            until=data.until,
        )
        result: dict[str, Any] = reports.to_json(report)
        return result
