"""The shared state of one worker: engine, clock, pseudonyms, compiled configs, models."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Session

from bandit_platform.domain.config import CompiledExperiment, config_from_builtins, validate_config
from bandit_platform.policies.vw_adapter import ContextualBanditModel
from bandit_platform.service.decision_writer import DecisionWriter
from bandit_platform.settings import Settings
from bandit_platform.storage import repositories
from bandit_platform.storage.database import create_engine, read_only
from bandit_platform.storage.tables import ExperimentRow

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The server's clock, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class LoadedModel:
    """A model snapshot loaded into memory."""

    version: int
    model: ContextualBanditModel
    examples_seen: int


class Platform:
    """Holds what every use case of a worker shares. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: sa.Engine | None = None,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        #: Makes decision ids (random UUIDs; a simulation injects a seeded source so that its
        #: draws, which are seeded by the decision id, reproduce).
        self.new_id: Callable[[], str] = new_id or (lambda: str(uuid.uuid4()))
        self.engine = engine or create_engine(
            settings.database_url, pool_size=settings.pool_size, durable=settings.durable
        )
        self._reader = read_only(self.engine)
        self.clock = clock
        self._compiled: dict[tuple[int, int], CompiledExperiment] = {}
        self._models: dict[int, LoadedModel] = {}
        #: When each experiment's newest snapshot version was last looked up (monotonic).
        self._model_checked: dict[int, float] = {}
        self._bad_snapshots: dict[int, set[int]] = {}
        self._lock = threading.Lock()
        #: Group commit of decisions and outcomes (None with `settings.group_commit` off: a
        #: transaction each). Its thread starts with the first job.
        self.decision_writer: DecisionWriter | None = (
            DecisionWriter(
                self.session,
                repositories.lock_customers,
                max_batch=settings.group_commit_max,
            )
            if settings.group_commit
            else None
        )

    def session(self) -> Session:
        """A new session for work that writes; use it with `session.begin()`.

        On SQLite its transactions hold the database's write lock from their first statement.
        """
        return Session(self.engine, expire_on_commit=False)

    def read_session(self) -> Session:
        """A new session for work that only reads: on SQLite it never blocks a writer."""
        return Session(self._reader, expire_on_commit=False)

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

    def compiled_version(
        self, session: Session, experiment_id: int, version: int
    ) -> CompiledExperiment:
        """The compiled configuration an experiment had at `version` (cached)."""
        cache_key = (experiment_id, version)
        found = self._compiled.get(cache_key)
        if found is None:
            config = repositories.experiment_version_config(session, experiment_id, version)
            if config is None:
                raise LookupError(f"experiment {experiment_id} has no version {version}")
            found = validate_config(config_from_builtins(config))
            with self._lock:
                self._compiled[cache_key] = found
        return found

    def model(self, session: Session, experiment_id: int) -> LoadedModel | None:
        """The newest valid model snapshot of an experiment, reloaded when a newer one appears.

        Looks for a newer version at most every `model_refresh_seconds`; with None, only when
        `forget_model_checks` was called since the last look (the learner calls it on its own
        platform after each pass, so a simulation's decisions see each snapshot at a
        reproducible moment). A snapshot whose bytes do not match its checksum, or that VW
        cannot load, is skipped, logged and counted (`snapshots.corrupt`, in the caller's
        transaction); the next older valid one is used instead.
        """
        loaded = self._models.get(experiment_id)
        now = time.monotonic()
        refresh = self.settings.model_refresh_seconds
        checked = self._model_checked.get(experiment_id)
        if checked is not None and (refresh is None or now - checked < refresh):
            return loaded
        newest = repositories.latest_snapshot_version(session, experiment_id)
        if newest is None:
            if refresh is None:
                self._model_checked[experiment_id] = now
            return None
        self._model_checked[experiment_id] = now
        if loaded is not None and newest <= loaded.version:
            return loaded
        floor = loaded.version if loaded is not None else 0
        for version in range(newest, floor, -1):
            if version in self._bad_snapshots.get(experiment_id, set()):
                continue
            row = repositories.snapshot(session, experiment_id, version)
            if row is None:
                continue
            try:
                if not repositories.snapshot_is_intact(row):
                    raise ValueError("checksum mismatch")
                model = ContextualBanditModel(row.arguments, model_data=row.data)
            except Exception as exc:
                self._report_bad_snapshot(session, experiment_id, version, exc)
                continue
            fresh = LoadedModel(version=row.version, model=model, examples_seen=row.examples_seen)
            with self._lock:
                self._models[experiment_id] = fresh
            return fresh
        return loaded

    def forget_compiled(self) -> None:
        """Drop the compiled configurations (after a rolled-back change that compiled one)."""
        with self._lock:
            self._compiled.clear()

    def forget_model_checks(self, experiment_id: int | None = None) -> None:
        """Make the next decision of the experiment (of every experiment with None) look for a
        newer model snapshot."""
        with self._lock:
            if experiment_id is None:
                self._model_checked.clear()
            else:
                self._model_checked.pop(experiment_id, None)

    def _report_bad_snapshot(
        self, session: Session, experiment_id: int, version: int, exc: Exception
    ) -> None:
        logger.error(
            "model snapshot v%s of experiment %s is corrupt and skipped: %s",
            version,
            experiment_id,
            exc,
        )
        with self._lock:
            self._bad_snapshots.setdefault(experiment_id, set()).add(version)
        # Counted in the caller's transaction: a transaction of its own would wait on SQLite
        # for the write lock that the caller (a decision) holds, until the busy timeout.
        repositories.increment_counter(session, "snapshots.corrupt")

    def close(self) -> None:
        """Finish the decisions already queued, refuse later ones, release the connections."""
        if self.decision_writer is not None:
            self.decision_writer.close()
        self.engine.dispose()
