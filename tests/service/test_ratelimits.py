"""Per-key rate limits shared by workers: budgets claimed in chunks from one table."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.platform import Platform
from bandit_platform.service.ratelimits import (
    WINDOW_RETENTION_SECONDS,
    RateLimiter,
    RateLimitExceeded,
    chunk_size,
)
from bandit_platform.settings import Settings
from tests.conftest import FakeClock


@pytest.fixture
def second_platform(settings: Settings, clock: FakeClock) -> Iterator[Platform]:
    """Another worker on the same database and clock."""
    platform = Platform(settings, clock=clock)
    yield platform
    platform.close()


def _key(platform: Platform, limit: int | None = None) -> int:
    return ApiKeyService(platform).create("app", rate_limit_per_second=limit).identity.api_key_id


def _granted(platform: Platform, key_id: int) -> dict[int, int]:
    with platform.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT window_start, granted FROM rate_limit_windows WHERE api_key_id = :k"),
            {"k": key_id},
        ).all()
    return {int(window): int(granted) for window, granted in rows}


def test_two_workers_together_admit_exactly_the_limit_per_window(
    platform: Platform, second_platform: Platform, clock: FakeClock
) -> None:
    key_id = _key(platform)
    limit = 45  # a chunk of 2: the last claim gets the single request left
    workers = [RateLimiter(platform), RateLimiter(second_platform)]

    verdicts = [workers[i % 2].admit(key_id, limit) for i in range(200)]

    assert sum(v.allowed for v in verdicts) == limit
    assert all(v.retry_after == 1 for v in verdicts if not v.allowed)
    window = int(clock().timestamp())
    assert _granted(platform, key_id) == {window: limit}
    # Each worker claims in chunks: about limit / chunk claims in all, not one per request.
    assert sum(w.claims for w in workers) <= limit // chunk_size(limit) + 2 * 2

    clock.advance(seconds=1)
    assert workers[0].admit(key_id, limit).allowed
    assert workers[1].admit(key_id, limit).allowed


def test_concurrent_threads_of_two_workers_never_exceed_the_limit(
    platform: Platform, second_platform: Platform
) -> None:
    key_id = _key(platform)
    limit = 100
    workers = [RateLimiter(platform), RateLimiter(second_platform)]
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer(worker: RateLimiter) -> None:
        for _ in range(60):
            verdict = worker.admit(key_id, limit)
            with lock:
                allowed.append(verdict.allowed)

    threads = [threading.Thread(target=hammer, args=(workers[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(allowed) == 360
    assert sum(allowed) <= limit
    # Unused local allowance is not returned, so a little may go unserved, never more.
    assert sum(allowed) >= limit - 2 * chunk_size(limit)
    assert sum(_granted(platform, key_id).values()) <= limit


def test_a_thousand_requests_cost_about_twenty_claims(platform: Platform) -> None:
    key_id = _key(platform)
    worker = RateLimiter(platform)
    assert all(worker.admit(key_id, 1000).allowed for _ in range(1000))
    assert not worker.admit(key_id, 1000).allowed
    assert worker.claims == 21  # 20 chunks of 50, then one that finds the budget spent
    before = worker.claims
    for _ in range(100):
        assert not worker.admit(key_id, 1000).allowed
    assert worker.claims == before  # a spent window is refused from memory


def test_retry_after_counts_whole_seconds_to_the_next_window(
    platform: Platform, clock: FakeClock
) -> None:
    key_id = _key(platform)
    worker = RateLimiter(platform)
    clock.now = clock.now.replace(microsecond=100_000)
    assert worker.admit(key_id, 1).allowed
    with pytest.raises(RateLimitExceeded) as refused:
        worker.check(key_id, 1)
    assert refused.value.retry_after == 1
    assert refused.value.field == "X-API-Key"
    assert refused.value.status_hint == 429
    clock.advance(seconds=0.95)  # 0.05 s into the next window
    assert worker.admit(key_id, 1).allowed


def test_per_key_limits_override_the_default_and_zero_turns_them_off(
    platform: Platform,
) -> None:
    worker = RateLimiter(platform)
    assert platform.settings.rate_limit_per_second == 1000
    assert worker.limit_for(None) == 1000
    assert worker.limit_for(3) == 3
    assert worker.limit_for(0) == 0
    key_id = _key(platform, 0)
    assert all(worker.admit(key_id, 0).allowed for _ in range(2000))
    assert worker.claims == 0
    assert _granted(platform, key_id) == {}


def test_old_windows_are_deleted_now_and_then(platform: Platform, clock: FakeClock) -> None:
    key_id = _key(platform)
    worker = RateLimiter(platform)
    first = int(clock().timestamp())
    worker.admit(key_id, 10)
    clock.advance(seconds=5)
    worker.admit(key_id, 10)
    assert set(_granted(platform, key_id)) == {first, first + 5}

    clock.advance(seconds=WINDOW_RETENTION_SECONDS + 10)
    worker.admit(key_id, 10)

    assert set(_granted(platform, key_id)) == {first + 5 + WINDOW_RETENTION_SECONDS + 10}


def test_keys_have_separate_budgets(platform: Platform) -> None:
    worker = RateLimiter(platform)
    one, two = _key(platform), _key(platform)
    assert worker.admit(one, 1).allowed
    assert not worker.admit(one, 1).allowed
    assert worker.admit(two, 1).allowed
