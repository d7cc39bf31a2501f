"""Settings are built once and passed in (`create_app(settings)`); nothing reads them at import."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

DEFAULT_DATABASE_URL = "sqlite:///data/bandit-platform.db"


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run.

    Attributes:
        database_url: SQLAlchemy URL; SQLite by default, PostgreSQL in production.
        pseudonym_key: secret key of the keyed hash that turns customer ids into pseudonyms.
            It must stay the same for assignments to stay sticky; it is never logged.
        max_body_bytes: requests with a larger body get 413.
        clock_skew_seconds: how far an outcome's time may lie before its decision or after
            the server's clock and still be accepted.
        model_refresh_seconds: how often a worker looks for a newer model snapshot; None for
            only when its own learner published one (simulations: reproducible timing).
        pool_size: database connections per worker.
        run_learner: run the learner in a background thread of each worker (one of them
            holds the lease and learns); off for tests that drive the learner themselves.
        learner_interval_seconds: pause between two passes of the learner.
        durable: fsync every commit (SQLite); only offline simulations turn it off.
        simulation_seed: simulation mode, never for production: with a seed, the server's
            clock moves only when a simulator sets it, decision ids come from the seed, the
            background learner must be off and `/v1/simulation` lets a simulator set the
            clock and run learner passes (see `service.simulation`).
        simulation_start: where the simulation clock starts (timezone-aware); None for the
            wall time until the first time a simulator sets the clock.
        ui_session_hours: a web UI session ends this long after sign-in, whatever happens.
        ui_idle_minutes: a web UI session ends after this long without a request.
        ui_secure_cookies: mark the UI's cookies `Secure` (sent over HTTPS only); on in
            production behind TLS, off for plain-HTTP local use.
        rate_limit_per_second: requests per second an API key may make, shared by every
            worker, unless the key carries its own limit; 0 turns the default limit off.
        group_commit: concurrent decisions of a worker share one transaction (each answered
            only after its commit); off: one transaction per decision.
        group_commit_max: the most decisions one shared transaction holds.
    """

    database_url: str = DEFAULT_DATABASE_URL
    pseudonym_key: bytes = field(default=b"", repr=False)
    max_body_bytes: int = 64 * 1024
    clock_skew_seconds: float = 300.0
    model_refresh_seconds: float | None = 1.0
    pool_size: int = 10
    run_learner: bool = False
    learner_interval_seconds: float = 1.0
    durable: bool = True
    simulation_seed: int | None = None
    simulation_start: datetime | None = None
    ui_session_hours: float = 8.0
    ui_idle_minutes: float = 30.0
    ui_secure_cookies: bool = False
    rate_limit_per_second: int = 1000
    group_commit: bool = True
    group_commit_max: int = 256

    def __post_init__(self) -> None:
        if len(self.pseudonym_key) < 16:
            raise ValueError("the pseudonym key must have at least 16 bytes")
        if self.simulation_seed is not None and self.run_learner:
            raise ValueError("simulation mode drives the learner itself: set BANDIT_LEARNER=off")
        if not (self.ui_session_hours > 0 and self.ui_idle_minutes > 0):
            raise ValueError("UI session lifetime and idle timeout must be positive")
        if self.rate_limit_per_second < 0:
            raise ValueError("BANDIT_RATE_LIMIT_PER_SECOND must be 0 (off) or positive")
        if self.group_commit_max < 1:
            raise ValueError("the group commit size must be at least 1")
        if self.simulation_start is not None and self.simulation_start.utcoffset() is None:
            raise ValueError("BANDIT_SIMULATION_START must carry a timezone (e.g. Z)")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment.

        `DATABASE_URL`, `BANDIT_PSEUDONYM_KEY`, `BANDIT_LEARNER` (`on` or `off`),
        `BANDIT_LEARNER_INTERVAL_SECONDS`, `BANDIT_MODEL_REFRESH_SECONDS` (seconds, or `none`
        for only when this worker's own learner published), `BANDIT_UI_SESSION_HOURS`,
        `BANDIT_UI_IDLE_MINUTES`, `BANDIT_UI_SECURE_COOKIES` (`on` or `off`),
        `BANDIT_RATE_LIMIT_PER_SECOND` (0: off), `BANDIT_GROUP_COMMIT` (`on` or `off`),
        `BANDIT_GROUP_COMMIT_MAX`; for simulation
        mode only (never in production) `BANDIT_SIMULATION_SEED` (an integer; the learner then
        defaults to off and the model refresh to `none`) and `BANDIT_SIMULATION_START` (ISO
        8601 with timezone).

        Without `BANDIT_PSEUDONYM_KEY`, a SQLite database keeps a random key in a file beside
        it (mode 0600), created on first use; PostgreSQL requires the variable.
        """
        env = os.environ if environ is None else environ
        url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        key_text = env.get("BANDIT_PSEUDONYM_KEY")
        key = key_text.encode() if key_text else _local_key(url)
        seed_text = env.get("BANDIT_SIMULATION_SEED")
        seed = int(seed_text) if seed_text else None
        start_text = env.get("BANDIT_SIMULATION_START")
        refresh = env.get("BANDIT_MODEL_REFRESH_SECONDS", "1.0" if seed is None else "none")
        return cls(
            database_url=url,
            pseudonym_key=key,
            simulation_seed=seed,
            simulation_start=datetime.fromisoformat(start_text) if start_text else None,
            run_learner=env.get("BANDIT_LEARNER", "on" if seed is None else "off") != "off",
            learner_interval_seconds=float(env.get("BANDIT_LEARNER_INTERVAL_SECONDS", "1.0")),
            model_refresh_seconds=None if refresh.lower() == "none" else float(refresh),
            ui_session_hours=float(env.get("BANDIT_UI_SESSION_HOURS", "8")),
            ui_idle_minutes=float(env.get("BANDIT_UI_IDLE_MINUTES", "30")),
            ui_secure_cookies=env.get("BANDIT_UI_SECURE_COOKIES", "off") == "on",
            rate_limit_per_second=int(env.get("BANDIT_RATE_LIMIT_PER_SECOND", "1000")),
            group_commit=env.get("BANDIT_GROUP_COMMIT", "on") != "off",
            group_commit_max=int(env.get("BANDIT_GROUP_COMMIT_MAX", "256")),
        )


def _local_key(url: str) -> bytes:
    parsed = sa.make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        raise ValueError("set BANDIT_PSEUDONYM_KEY: it is required with a server database")
    if parsed.database == ":memory:":
        return secrets.token_hex(32).encode()
    path = Path(parsed.database).with_suffix(".pseudonym-key")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_bytes().strip()
