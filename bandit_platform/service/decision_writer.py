"""Group commit: the concurrent decisions and outcomes of one worker share one transaction.

Callers submit jobs (a callable that does its reads and writes in the session it is given)
and block until the transaction holding their job has committed. One writer thread takes
every job queued (up to `max_batch`), opens one transaction, takes the customer locks of all
of them in sorted order (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises), runs every
job and commits once. Should a job raise, the whole transaction is rolled back and the batch
replayed with each job inside a SAVEPOINT (jobs must therefore be safe to run again: a
decision's id and time are fixed before it is queued); the job that raises again rolls back
its own savepoint and fails alone, the others commit. Savepoints cost two statements a job, a
round trip each on PostgreSQL, so the common batch goes without them. If anything else fails
(a lock, a savepoint, the commit), every job of the batch gets that exception and nothing of
the batch is written. Results are handed out only after the commit, so an answer never leaves
before its row is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlmodel import Session

from bandit_platform.domain.errors import DomainError
from bandit_platform.storage.repositories import CustomerLockKey

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Takes the customer locks of a batch in the batch's transaction.
LockCustomers = Callable[[Session, Sequence[CustomerLockKey]], None]


class WriterClosed(DomainError):
    """The worker is shutting down and takes no more decisions."""

    status_hint = 503


@dataclass
class _Job:
    run: Callable[[Session], Any]
    lock_keys: tuple[CustomerLockKey, ...]
    future: Future[Any]


@dataclass(frozen=True)
class WriterStats:
    """What the writer did since it was made."""

    #: Jobs taken from the queue (each in exactly one batch).
    jobs: int
    #: Transactions opened, one per batch.
    batches: int
    #: Batches that committed something.
    commits: int
    #: Batches that failed as a whole (nothing of them written).
    failed_batches: int
    #: The most jobs one batch held.
    largest_batch: int
    #: Batches replayed with a savepoint per job because one of their jobs raised.
    replayed_batches: int = 0


_STOP = object()


class _JobFailed(Exception):
    """A job raised inside an optimistic batch (carries the job's exception)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


class DecisionWriter:
    """One writer thread that runs submitted jobs in shared transactions. Thread-safe."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        lock_customers: LockCustomers,
        *,
        max_batch: int,
        name: str = "decision-writer",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._session_factory = session_factory
        self._lock_customers = lock_customers
        self._max_batch = max_batch
        self._name = name
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._jobs = 0
        self._batches = 0
        self._commits = 0
        self._failed = 0
        self._largest = 0
        self._replayed = 0

    # --- callers ------------------------------------------------------------------------------

    def submit(
        self, run: Callable[[Session], T], lock_keys: Sequence[CustomerLockKey] = ()
    ) -> Future[T]:
        """Queue a job; its future resolves after the transaction holding it committed.

        Raises:
            WriterClosed: after `close`.
        """
        future: Future[T] = Future()
        job = _Job(run, tuple(lock_keys), future)
        with self._lock:
            if self._closed:
                raise WriterClosed("the service is shutting down; retry on another worker")
            if self._thread is not None and not self._thread.is_alive():
                raise WriterClosed("the decision writer has stopped; retry on another worker")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put(job)
        return future

    def run(self, run: Callable[[Session], T], lock_keys: Sequence[CustomerLockKey] = ()) -> T:
        """Submit a job and wait for its result (raised exceptions are re-raised here)."""
        return self.submit(run, lock_keys).result()

    def pending(self) -> int:
        """Jobs queued and not yet taken into a batch."""
        return self._queue.qsize()

    def stats(self) -> WriterStats:
        """Counts of jobs, batches and commits so far."""
        with self._lock:
            return WriterStats(
                self._jobs,
                self._batches,
                self._commits,
                self._failed,
                self._largest,
                self._replayed,
            )

    def close(self, timeout: float | None = None) -> None:
        """Finish every job already queued, then stop; later submissions raise WriterClosed."""
        with self._lock:
            if self._closed:
                thread = self._thread
            else:
                self._closed = True
                thread = self._thread
                if thread is not None:
                    self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the writer thread --------------------------------------------------------------------

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            jobs = [job for job in batch if isinstance(job, _Job)]
            try:
                self._run_batch(jobs)
            except BaseException as exc:  # never leave a caller waiting
                logger.exception("the decision writer failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    def _run_batch(self, batch: list[_Job]) -> None:
        jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
        with self._lock:
            self._jobs += len(batch)
            self._batches += 1
            self._largest = max(self._largest, len(batch))
        if not jobs:
            return
        try:
            outcomes = self._optimistic(jobs)
            if outcomes is None:
                with self._lock:
                    self._replayed += 1
                outcomes = self._isolated(jobs)
        except Exception as exc:
            with self._lock:
                self._failed += 1
            if not isinstance(exc, DomainError):
                logger.error(
                    "a batch of %d decisions failed and was rolled back: %r", len(jobs), exc
                )
            for job in jobs:
                job.future.set_exception(exc)
            return
        if any(succeeded for _, succeeded, _ in outcomes):
            with self._lock:
                self._commits += 1
        for job, succeeded, value in outcomes:
            if succeeded:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _optimistic(self, jobs: list[_Job]) -> list[tuple[_Job, bool, Any]] | None:
        """Every job in one transaction without savepoints (two statements fewer per job).

        Returns None, with nothing written, when one of several jobs raised; a batch of one
        job has its exception as its outcome.
        """
        outcomes: list[tuple[_Job, bool, Any]] = []
        try:
            with self._session_factory() as session, session.begin():
                self._lock_customers(session, [key for job in jobs for key in job.lock_keys])
                for job in jobs:
                    try:
                        result = job.run(session)
                        session.flush()
                    except Exception as exc:
                        raise _JobFailed(exc) from exc
                    outcomes.append((job, True, result))
        except _JobFailed as failed:
            if len(jobs) == 1:
                return [(jobs[0], False, failed.error)]
            return None
        return outcomes

    def _isolated(self, jobs: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        """Every job in one transaction, each inside a SAVEPOINT: a job that raises is rolled
        back alone and the others commit."""
        outcomes: list[tuple[_Job, bool, Any]] = []
        with self._session_factory() as session, session.begin():
            self._lock_customers(session, [key for job in jobs for key in job.lock_keys])
            connection = session.connection()
            for job in jobs:
                # A Core savepoint (cheaper than the ORM's `session.begin_nested`): the
                # session is flushed inside it, and cleared when it is rolled back, so
                # that nothing a failed job added to the session survives.
                savepoint = connection.begin_nested()
                try:
                    result = job.run(session)
                    session.flush()
                except Exception as exc:
                    savepoint.rollback()
                    session.expunge_all()
                    outcomes.append((job, False, exc))
                else:
                    savepoint.commit()
                    outcomes.append((job, True, result))
        return outcomes
