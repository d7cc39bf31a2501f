"""Rate limits on the app API: the async side of `service.ratelimits.RateLimiter`.

`enforce` admits a request from the worker's local allowance without leaving the event loop;
only when the allowance is used up does it claim more from the shared table, in a worker
thread, one claim per key at a time (other requests of that key wait for it instead of
claiming too). A refusal is `429 Too Many Requests` with `Retry-After` and a problem+json
body naming `X-API-Key`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread
from litestar import Request, Response

from bandit_platform.api.errors import problem
from bandit_platform.service.ratelimits import CLAIMS_PER_WINDOW, RateLimiter, RateLimitExceeded


class AsyncRateLimiter:
    """Wraps a `RateLimiter` for the event loop."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        #: One claim at a time per key and event loop (a lock belongs to the loop it waited in).
        self._claiming: dict[tuple[int, int], asyncio.Lock] = {}

    async def enforce(self, api_key_id: int, key_limit: int | None) -> None:
        """Admit one request of this key or raise `RateLimitExceeded`."""
        limit = self.limiter.limit_for(key_limit)
        if limit <= 0:
            return
        limiter = self.limiter
        now = limiter.clock()
        verdict = limiter.take(api_key_id, limit, now)
        for _ in range(CLAIMS_PER_WINDOW + 2):
            if verdict is not None:
                break
            slot = (id(asyncio.get_running_loop()), api_key_id)
            lock = self._claiming.get(slot)
            if lock is None:
                lock = self._claiming[slot] = asyncio.Lock()
            async with lock:
                verdict = limiter.take(api_key_id, limit, now)
                if verdict is None:
                    await anyio.to_thread.run_sync(limiter.claim, api_key_id, limit, now)
                    verdict = limiter.take(api_key_id, limit, now)
        if verdict is None or not verdict.allowed:
            raise RateLimitExceeded(limit, verdict.retry_after if verdict else 1)


def rate_limited(_: Request[Any, Any, Any], exc: RateLimitExceeded) -> Response[dict[str, Any]]:
    """429 problem+json naming `X-API-Key`, with `Retry-After` in whole seconds."""
    response = problem(429, exc.message, exc.field)
    response.headers["Retry-After"] = str(max(1, exc.retry_after))
    return response


__all__ = ["AsyncRateLimiter", "rate_limited"]
