"""Simulation mode of a server: a settable clock, seeded decision ids, learning on demand.

Off by default and never for production. With `Settings.simulation_seed` set, the server's
clock stands still until a simulator moves it, its decision ids come from the seed (as in the
in-process runner), its background learner is off and the simulator asks for each learner
pass. A simulation then plays the same decisions, outcomes and learner passes at the same
simulated times over HTTP as in-process, and gets the same decisions, bit for bit.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from bandit_platform.domain.errors import InvalidInput
from bandit_platform.service.learner import Learner, LearnerReport
from bandit_platform.service.platform import Platform, utc_now
from bandit_platform.settings import Settings


def seeded_ids(seed: int) -> Callable[[], str]:
    """Decision ids drawn from `seed`: version-4 UUIDs, the same sequence for the same seed.

    A decision's random draw is seeded by its id, so seeded ids make a simulation's draws
    reproduce.
    """
    source = random.Random(seed)
    return lambda: str(uuid.UUID(int=source.getrandbits(128), version=4))


class SimulationClock:
    """A clock that moves only when set, never backwards.

    Until it is first set (and without a `start`) it tells the wall time; the first `set`
    may then go to any time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.utcoffset() is None:
            raise ValueError("the simulation start must carry a timezone")
        self._now = None if start is None else start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        now = self._now
        return utc_now() if now is None else now

    def set(self, now: datetime) -> datetime:
        """Move the clock to `now` (timezone-aware, not before the current time).

        Raises:
            InvalidInput: naming `now`, for a naive time or one before the clock's.
        """
        if now.utcoffset() is None:
            raise InvalidInput("must carry a timezone (e.g. Z)", field="now")
        moved = now.astimezone(UTC)
        with self._lock:
            if self._now is not None and moved < self._now:
                raise InvalidInput(
                    f"must not move the clock backwards (it is at {self._now.isoformat()})",
                    field="now",
                )
            self._now = moved
        return moved


def simulation_platform(settings: Settings) -> Platform:
    """The platform of a server in simulation mode: settable clock, ids from the seed."""
    if settings.simulation_seed is None:
        raise ValueError("simulation mode is off (no simulation seed)")
    return Platform(
        settings,
        clock=SimulationClock(settings.simulation_start),
        new_id=seeded_ids(settings.simulation_seed),
    )


class SimulationControl:
    """What a simulator may do to a server in simulation mode: move its clock, learn once."""

    def __init__(self, platform: Platform) -> None:
        if not isinstance(platform.clock, SimulationClock):
            raise ValueError("simulation mode needs a platform with a SimulationClock")
        self.platform = platform
        self.clock: SimulationClock = platform.clock
        self.learner = Learner(platform)
        self._learning = threading.Lock()

    def set_clock(self, now: datetime) -> datetime:
        """Move the server's clock (see `SimulationClock.set`)."""
        return self.clock.set(now)

    def learn(self) -> LearnerReport:
        """One learner pass in this server's own platform, at its current simulated time."""
        with self._learning:
            return self.learner.run_once()
