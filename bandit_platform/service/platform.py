"""The shared state of one worker: engine, clock, pseudonyms, compiled configs, models."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Session

from bandit_platform.domain.config import CompiledExperiment, config_from_builtins, validate_config
from bandit_platform.policies.vw_adapter import ContextualBanditModel
from bandit_platform.settings import Settings
from bandit_platform.storage import repositories
from bandit_platform.storage.database import create_engine
from bandit_platform.storage.tables import ExperimentRow


def utc_now() -> datetime:
    """The server's clock, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class LoadedModel:
    """A model snapshot loaded into memory."""

    version: int
    model: ContextualBanditModel
    examples_seen: int
    checked_at: float


class Platform:
    """Holds what every use case of a worker shares. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: sa.Engine | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.engine = engine or create_engine(settings.database_url, pool_size=settings.pool_size)
        self.clock = clock
        self._compiled: dict[tuple[int, int], CompiledExperiment] = {}
        self._models: dict[int, LoadedModel] = {}
        self._lock = threading.Lock()

    def session(self) -> Session:
        """A new session; use it as a context manager with `session.begin()`."""
        return Session(self.engine, expire_on_commit=False)

    def pseudonym(self, customer_id: str) -> str:
        """The keyed pseudonym stored in place of a customer id (HMAC-SHA-256, hex)."""
        return hmac.new(
            self.settings.pseudonym_key, customer_id.encode(), hashlib.sha256
        ).hexdigest()

    def compiled(self, row: ExperimentRow) -> CompiledExperiment:
        """The compiled configuration of an experiment row's current version (cached)."""
        assert row.id is not None
        cache_key = (row.id, row.version)
        found = self._compiled.get(cache_key)
        if found is None:
            found = validate_config(config_from_builtins(row.config))
            with self._lock:
                self._compiled[cache_key] = found
        return found

    def model(self, session: Session, experiment_id: int) -> LoadedModel | None:
        """The newest model snapshot of an experiment, reloaded when a newer one appears."""
        loaded = self._models.get(experiment_id)
        now = time.monotonic()
        if loaded is not None and now - loaded.checked_at < self.settings.model_refresh_seconds:
            return loaded
        newest = repositories.latest_snapshot_version(session, experiment_id)
        if newest is None:
            return None
        if loaded is not None and loaded.version == newest:
            loaded.checked_at = now
            return loaded
        row = repositories.snapshot(session, experiment_id, newest)
        if row is None:
            return loaded
        if hashlib.sha256(row.data).hexdigest() != row.checksum:
            # A corrupt snapshot is never served; keep the model we have.
            return loaded
        fresh = LoadedModel(
            version=row.version,
            model=ContextualBanditModel(row.arguments, model_data=row.data),
            examples_seen=row.examples_seen,
            checked_at=now,
        )
        with self._lock:
            self._models[experiment_id] = fresh
        return fresh

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()
