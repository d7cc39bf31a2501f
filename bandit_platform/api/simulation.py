"""`/v1/simulation`: routes that exist only in simulation mode (`Settings.simulation_seed`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post, put
from litestar.di import Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from bandit_platform.api.auth import api_key_guard, provide_identity
from bandit_platform.api.schemas import LearnerReportBody, SimulationClockBody
from bandit_platform.service.simulation import SimulationControl


class SimulationController(Controller):
    """A simulator moves the server's clock and asks for learner passes (manage scope)."""

    path = "/v1/simulation"
    tags = ["simulation"]
    guards = [api_key_guard]
    dependencies = {"app_identity": Provide(provide_identity, sync_to_thread=False)}

    @put("/clock", opt={"scope": "manage"}, sync_to_thread=False)
    def set_clock(
        self, request: Request[Any, Any, Any], data: JSONBody[SimulationClockBody]
    ) -> SimulationClockBody:
        """Move the server's clock forward to `now` (timezone-aware; never backwards)."""
        control: SimulationControl = request.app.state.simulation
        return SimulationClockBody(now=control.set_clock(data.now))

    @post("/learn", opt={"scope": "manage"}, sync_to_thread=True, status_code=HTTP_200_OK)
    def learn(self, request: Request[Any, Any, Any]) -> LearnerReportBody:
        """Run one learner pass now, at the simulated time, and report what it did."""
        control: SimulationControl = request.app.state.simulation
        report = control.learn()
        return LearnerReportBody(
            rewards_closed=report.rewards_closed,
            examples_learned=report.examples_learned,
            snapshots_published=report.snapshots_published,
        )
