"""`create_app(settings)`: the Litestar application of the JSON API and the web UI."""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Litestar, Router
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.openapi.config import OpenAPIConfig

from bandit_platform.api.auth import api_key_guard
from bandit_platform.api.candidates import PolicyController
from bandit_platform.api.controllers import (
    DecisionController,
    ExperimentController,
    ModelController,
    OutcomeController,
    explorers,
    learner_status,
    live,
    ready,
)
from bandit_platform.api.errors import EXCEPTION_HANDLERS
from bandit_platform.api.guardrails import GuardrailController
from bandit_platform.api.openapi import api_key_components, document_problems
from bandit_platform.api.privacy import ConsentController
from bandit_platform.api.ratelimit import AsyncRateLimiter, rate_limited
from bandit_platform.api.reports import ReportController
from bandit_platform.api.simulation import SimulationController
from bandit_platform.api.ui import template_config, ui_route_handlers
from bandit_platform.api.ui.headers import ui_security_headers
from bandit_platform.api.ui.throttle import sign_in_locked
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.learner import LearnerRunner
from bandit_platform.service.outcomes import OutcomeService
from bandit_platform.service.platform import Platform
from bandit_platform.service.ratelimits import RateLimiter, RateLimitExceeded
from bandit_platform.service.simulation import SimulationControl, simulation_platform
from bandit_platform.service.users import SignInLocked, UserService
from bandit_platform.settings import Settings

logger = logging.getLogger(__name__)


_READ: dict[str, Any] = {"scope": "read"}


def _simulation_mode(settings: Settings, platform: Platform | None) -> SimulationControl:
    """Simulation mode's control (settable clock, seeded ids), announced loudly."""
    control = SimulationControl(platform or simulation_platform(settings))
    logger.warning(
        "SIMULATION MODE (BANDIT_SIMULATION_SEED=%s): the clock moves only when "
        "PUT /v1/simulation/clock sets it, decision ids are predictable and the background "
        "learner is off. Never run this in production.",
        settings.simulation_seed,
    )
    return control


def create_app(settings: Settings, platform: Platform | None = None) -> Litestar:
    """Build the app on a platform (made from `settings` unless given).

    With `settings.simulation_seed` (simulation mode) a given platform must have a
    `SimulationClock`, and the `/v1/simulation` routes exist; otherwise they do not.
    """
    simulation: SimulationControl | None = None
    extra: list[Any] = []
    if settings.simulation_seed is not None:
        simulation = _simulation_mode(settings, platform)
        platform = simulation.platform
        extra.append(SimulationController)
    platform = platform or Platform(settings)
    runner = LearnerRunner(platform, interval_seconds=settings.learner_interval_seconds)
    startup = [runner.start] if settings.run_learner else []
    # Rate-limit windows are seconds of the platform's clock, except in simulation mode,
    # whose clock stands still between the simulator's moves: there the wall clock.
    limiter = RateLimiter(
        platform,
        default_limit=settings.rate_limit_per_second,
        clock=time.time if simulation is not None else None,
    )
    state = State(
        {
            "platform": platform,
            "api_keys": ApiKeyService(platform),
            "decisions": DecisionService(platform),
            "outcomes": OutcomeService(platform),
            "experiments": ExperimentService(platform),
            "learner": runner,
            "simulation": simulation,
            "users": UserService(platform),
            "rate_limiter": AsyncRateLimiter(limiter),
        }
    )
    app = Litestar(
        route_handlers=[
            DecisionController,
            OutcomeController,
            ExperimentController,
            ModelController,
            PolicyController,
            ReportController,
            GuardrailController,
            ConsentController,
            learner_status,
            # Every /v1 route needs a key with a scope: the catalogue too (scope read).
            Router(path="/", route_handlers=[explorers], guards=[api_key_guard], opt=_READ),
            live,
            ready,
            *ui_route_handlers(),
            *extra,
        ],
        template_config=template_config(),
        state=state,
        exception_handlers={
            **EXCEPTION_HANDLERS,
            RateLimitExceeded: rate_limited,
            SignInLocked: sign_in_locked,
        },
        request_max_body_size=settings.max_body_bytes,
        middleware=[ui_security_headers],
        openapi_config=OpenAPIConfig(
            title="bandit-platform",
            version="0.1.0",
            path="/schema",
            description="Contextual-bandit offers for digital banking: decide, then report "
            "outcomes.",
            components=api_key_components(),
        ),
        on_startup=startup,
        on_shutdown=[runner.stop, platform.close],
        debug=False,
    )
    document_problems(app)
    return app


def app_from_environment() -> Litestar:
    """App factory for server processes: settings from the environment."""
    return create_app(Settings.from_environment())


__all__ = ["AppConfig", "app_from_environment", "create_app"]
