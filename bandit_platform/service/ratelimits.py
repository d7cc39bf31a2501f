"""Per-API-key rate limits shared by every worker process.

Each API key may make `limit` requests per one-second window (the key's own
`rate_limit_per_second`, else the server's `settings.rate_limit_per_second`; 0 is no limit).
The windows are whole seconds of the platform's clock (epoch seconds), counted in the
`rate_limit_windows` table that every worker shares.

A worker does not write once per request: it claims a chunk of the window's budget
(`max(1, limit // 20)` requests) with one atomic statement and serves requests from that local
allowance until it is used up, so the database sees at most about 20 claims per key, window
and worker. A claim is an `INSERT ... ON CONFLICT DO UPDATE ... WHERE granted + chunk <= limit
RETURNING granted`; when less than a chunk is left, the rest is claimed by a compare-and-set
on the value just read. `granted` therefore never exceeds the limit, and neither does the sum
of the requests that all workers admit in a window. Once a worker finds the window's budget
spent it refuses the key's requests until the next window without asking the database again
(`Retry-After`: the whole seconds until that window starts, at least 1).

Allowance a worker claimed but did not use is not returned: under load from several workers
an app may get somewhat fewer than `limit` requests in a window, never more. Windows older
than `WINDOW_RETENTION_SECONDS` are deleted, at most once a `CLEANUP_EVERY_SECONDS` per
worker.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bandit_platform.domain.errors import DomainError
from bandit_platform.service.platform import Platform
from bandit_platform.storage.tables import RateLimitWindowRow

#: A claim takes this fraction of a window's budget (at least one request).
CLAIMS_PER_WINDOW: Final = 20
#: Windows older than this are deleted.
WINDOW_RETENTION_SECONDS: Final = 60
#: How often one worker deletes old windows.
CLEANUP_EVERY_SECONDS: Final = 60
#: The request header that identifies the caller whose budget is spent.
RATE_LIMIT_FIELD: Final = "X-API-Key"
_WINDOWS = cast(sa.Table, getattr(RateLimitWindowRow, "__table__"))  # noqa: B009 (untyped)
_CAS_ATTEMPTS: Final = 8


class RateLimitExceeded(DomainError):
    """The API key used up its budget of the current window."""

    status_hint = 429

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"this API key may make {limit} requests per second; retry after {retry_after} s",
            field=RATE_LIMIT_FIELD,
        )
        self.limit = limit
        self.retry_after = retry_after


def chunk_size(limit: int) -> int:
    """How many requests one claim takes from a window's budget."""
    return max(1, limit // CLAIMS_PER_WINDOW)


@dataclass
class _Allowance:
    """What this worker may still admit for one key in one window."""

    window: int
    tokens: int = 0
    #: The window's shared budget is spent: refuse without asking the database.
    spent: bool = False


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go on; when not, how long until the next window."""

    allowed: bool
    retry_after: int = 0


class RateLimiter:
    """One worker's view of the shared per-key budgets. Thread-safe.

    `take` answers from memory when it can (the fast path of almost every request); when it
    returns None the caller runs `claim` (a database write, off the event loop) and asks
    `take` again. `admit` does both, for callers that may block.
    """

    def __init__(
        self,
        platform: Platform,
        *,
        default_limit: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.platform = platform
        #: The limit of keys without their own (0: none); the platform's settings unless given.
        self.default_limit = (
            platform.settings.rate_limit_per_second if default_limit is None else default_limit
        )
        #: Seconds since the epoch; the platform's clock unless another is given.
        self.clock: Callable[[], float] = clock or (lambda: platform.clock().timestamp())
        self._allowances: dict[int, _Allowance] = {}
        self._lock = threading.Lock()
        self._claim_locks: dict[int, threading.Lock] = {}
        self._last_cleanup: float | None = None
        #: Claims this worker sent to the database (for tests and diagnostics).
        self.claims = 0

    def limit_for(self, key_limit: int | None) -> int:
        """The limit that applies to a key with its own `key_limit` (None: the default)."""
        return self.default_limit if key_limit is None else key_limit

    def take(self, api_key_id: int, limit: int, now: float | None = None) -> Verdict | None:
        """Admit or refuse one request from memory; None when a claim must be made first."""
        if limit <= 0:
            return Verdict(True)
        now = self.clock() if now is None else now
        window = math.floor(now)
        with self._lock:
            allowance = self._allowances.get(api_key_id)
            if allowance is None or allowance.window != window:
                return None
            if allowance.tokens > 0:
                allowance.tokens -= 1
                return Verdict(True)
            if allowance.spent:
                return Verdict(False, max(1, math.ceil(window + 1 - now)))
            return None

    def claim(self, api_key_id: int, limit: int, now: float | None = None) -> None:
        """Claim a chunk of the current window's shared budget for this worker."""
        if limit <= 0:
            return
        now = self.clock() if now is None else now
        window = math.floor(now)
        with self._claim_lock(api_key_id):
            if self.take_is_possible(api_key_id, window):
                return  # another thread claimed while this one waited
            granted = self._claim_from_database(api_key_id, window, limit)
            with self._lock:
                allowance = self._allowances.get(api_key_id)
                if allowance is None or allowance.window != window:
                    allowance = _Allowance(window)
                    self._allowances[api_key_id] = allowance
                allowance.tokens += granted
                if granted < chunk_size(limit):
                    allowance.spent = True
        self._cleanup(now)

    def admit(self, api_key_id: int, limit: int) -> Verdict:
        """Admit or refuse one request, claiming budget when needed (may block)."""
        now = self.clock()
        for _ in range(CLAIMS_PER_WINDOW + 2):
            verdict = self.take(api_key_id, limit, now)
            if verdict is not None:
                return verdict
            self.claim(api_key_id, limit, now)
        # Claims kept being used up by other threads of this worker: the budget is contended.
        return Verdict(False, max(1, math.ceil(math.floor(now) + 1 - now)))

    def check(self, api_key_id: int, limit: int) -> None:
        """`admit`, raising `RateLimitExceeded` on a refusal."""
        verdict = self.admit(api_key_id, limit)
        if not verdict.allowed:
            raise RateLimitExceeded(limit, verdict.retry_after)

    def forget(self) -> None:
        """Drop the local allowances (tests; a worker never needs to)."""
        with self._lock:
            self._allowances.clear()

    # --- internals ----------------------------------------------------------------------------

    def take_is_possible(self, api_key_id: int, window: int) -> bool:
        """Whether `take` can answer for this window without a claim."""
        with self._lock:
            allowance = self._allowances.get(api_key_id)
            return (
                allowance is not None
                and allowance.window == window
                and (allowance.tokens > 0 or allowance.spent)
            )

    def _claim_lock(self, api_key_id: int) -> threading.Lock:
        with self._lock:
            found = self._claim_locks.get(api_key_id)
            if found is None:
                found = self._claim_locks[api_key_id] = threading.Lock()
            return found

    def _claim_from_database(self, api_key_id: int, window: int, limit: int) -> int:
        """Requests granted to this worker from the window's budget (0 when it is spent)."""
        chunk = chunk_size(limit)
        self.claims += 1
        dialect = self.platform.engine.dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_WINDOWS)
        statement = (
            insert.values(api_key_id=api_key_id, window_start=window, granted=chunk)
            .on_conflict_do_update(
                index_elements=[_WINDOWS.c.api_key_id, _WINDOWS.c.window_start],
                set_={"granted": _WINDOWS.c.granted + chunk},
                where=_WINDOWS.c.granted + chunk <= limit,
            )
            .returning(_WINDOWS.c.granted)
        )
        where = sa.and_(_WINDOWS.c.api_key_id == api_key_id, _WINDOWS.c.window_start == window)
        with self.platform.engine.begin() as connection:
            if connection.execute(statement).first() is not None:
                return chunk
            # Less than a chunk is left: take the rest by compare-and-set.
            for _ in range(_CAS_ATTEMPTS):
                seen = connection.execute(sa.select(_WINDOWS.c.granted).where(where)).scalar()
                if seen is None or seen >= limit:
                    return 0
                updated = connection.execute(
                    sa.update(_WINDOWS)
                    .where(where, _WINDOWS.c.granted == seen)
                    .values(granted=limit)
                    .returning(_WINDOWS.c.granted)
                ).first()
                if updated is not None:
                    return int(limit - seen)
        return 0

    def _cleanup(self, now: float) -> None:
        with self._lock:
            due = self._last_cleanup is None or now - self._last_cleanup >= CLEANUP_EVERY_SECONDS
            if due:
                self._last_cleanup = now
            for key, allowance in list(self._allowances.items()):
                if allowance.window < math.floor(now) - 1:
                    del self._allowances[key]
        if not due:
            return
        cutoff = math.floor(now) - WINDOW_RETENTION_SECONDS
        with self.platform.engine.begin() as connection:
            connection.execute(sa.delete(_WINDOWS).where(_WINDOWS.c.window_start < cutoff))


__all__ = [
    "CLAIMS_PER_WINDOW",
    "RATE_LIMIT_FIELD",
    "RateLimitExceeded",
    "RateLimiter",
    "Verdict",
    "chunk_size",
]
