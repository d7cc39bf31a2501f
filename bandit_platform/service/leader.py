"""One learner among many workers: a lease held through a database-level lock.

PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection the holder
keeps open; when the holder dies its connection closes and the lock is free for another
worker. SQLite: an exclusive `flock` on a file beside the database, released by the kernel when
the holder dies. In both cases the `learner_leases` row tells operators who holds it and when
it last did work (`GET /v1/learner`); the lock, not the row, is what enforces one learner.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bandit_platform.service.platform import Platform
from bandit_platform.storage.tables import LearnerLeaseRow

#: The advisory lock key of the learner (an arbitrary constant: "bandit" in ASCII).
ADVISORY_LOCK_ID = 0x62616E646974
LEASE_NAME = "learner"


def holder_name() -> str:
    """This process as operators see it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LearnerLease:
    """Try to become, stay, and stop being the one learner."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.holder = holder_name()
        self._connection: sa.Connection | None = None
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True while this process holds the lease."""
        return self._connection is not None or self._file is not None

    def try_acquire(self) -> bool:
        """Take the lease if it is free; True when this process holds it afterwards."""
        with self._lock:
            if self.held:
                return True
            engine = self.platform.engine
            if engine.dialect.name == "postgresql":
                connection = engine.connect()
                got = connection.execute(
                    sa.text("SELECT pg_try_advisory_lock(:id)"), {"id": ADVISORY_LOCK_ID}
                ).scalar_one()
                connection.commit()
                if not got:
                    connection.close()
                    return False
                self._connection = connection
            else:
                path = _lock_path(engine)
                handle = path.open("a+")
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    return False
                self._file = handle
        self._write_row(acquired=True)
        return True

    def alive(self) -> bool:
        """Check that the lease is still held (the PostgreSQL connection still answers)."""
        with self._lock:
            if self._connection is None:
                return self._file is not None
            try:
                self._connection.execute(sa.text("SELECT 1"))
                self._connection.commit()
                return True
            except sa.exc.DBAPIError:
                self._drop()
                return False

    def heartbeat(self, details: dict[str, Any]) -> None:
        """Record that the holder is working (for operators)."""
        if self.held:
            self._write_row(acquired=False, details=details)

    def release(self) -> None:
        """Give the lease up."""
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.execute(
                        sa.text("SELECT pg_advisory_unlock(:id)"), {"id": ADVISORY_LOCK_ID}
                    )
                    self._connection.commit()
                except sa.exc.DBAPIError:
                    pass
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            # Invalidate rather than close: a pooled connection must never go back to the pool
            # still holding the session-level advisory lock (say, after a failed unlock).
            with contextlib.suppress(sa.exc.DBAPIError):
                self._connection.invalidate()
            self._connection = None
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def _write_row(self, *, acquired: bool, details: dict[str, Any] | None = None) -> None:
        now: datetime = self.platform.clock()
        values: dict[str, Any] = {
            "name": LEASE_NAME,
            "holder": self.holder,
            "acquired_at": now,
            "heartbeat_at": now,
            "details": details or {},
        }
        update = {"holder": self.holder, "heartbeat_at": now, "details": details or {}}
        if acquired:
            update["acquired_at"] = now
        with self.platform.session() as session, session.begin():
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            session.execute(
                insert(LearnerLeaseRow)
                .values(**values)
                .on_conflict_do_update(index_elements=["name"], set_=update)
            )


def _lock_path(engine: sa.Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:":
        raise RuntimeError("the learner lease needs a file database")
    return Path(database).with_suffix(".learner-lock")


def learner_lease(platform: Platform) -> LearnerLeaseRow | None:
    """The lease row operators read: who holds the learner and when it last worked."""
    with platform.session() as session:
        return session.get(LearnerLeaseRow, LEASE_NAME)
