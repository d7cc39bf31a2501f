"""Group commit: concurrent decisions of a worker share one transaction, each answered only
after its commit, on a real database.

To make batches form without depending on timing, a test holds the writer busy with a job
that waits for an event, queues its decisions behind it (`pending()` tells when they are all
queued) and then lets it go: everything queued meanwhile lands in the next batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from sqlmodel import Session

from bandit_platform.api.app import create_app
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.decisions import Decision, DecisionReason, Group
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decision_writer import DecisionWriter, WriterClosed
from bandit_platform.service.decisions import DecisionService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage import repositories
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import RULE_ONE, random_context
from tests.service.test_decisions import (
    arm_key,
    customers_in,
    request,
    stored_decisions,
)

#: Only a guard against a hung test, never a performance threshold.
HANG_GUARD_SECONDS = 60.0


@pytest.fixture
def app(demo: Demo) -> AppIdentity:
    identity = ApiKeyService(demo.platform).verify(demo.api_key)
    assert identity is not None
    return identity


def writer_of(platform: Platform) -> DecisionWriter:
    writer = platform.decision_writer
    assert writer is not None, "group commit is on by default"
    return writer


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition never came true")
        time.sleep(0.005)


@contextmanager
def writer_held(writer: DecisionWriter) -> Iterator[None]:
    """The writer busy with a job that waits until the block ends."""
    started = threading.Event()
    release = threading.Event()

    def blocker(_: Session) -> None:
        started.set()
        release.wait(HANG_GUARD_SECONDS)

    held = writer.submit(blocker)
    assert started.wait(HANG_GUARD_SECONDS)
    try:
        yield
    finally:
        release.set()
        held.result(HANG_GUARD_SECONDS)


def queue_in_order(
    pool: ThreadPoolExecutor, writer: DecisionWriter, calls: list[Callable[[], Decision]]
) -> list[Future[Decision]]:
    """Start each call in its own thread, the next one only once the last one is queued."""
    futures = []
    base = writer.pending()
    for index, call in enumerate(calls, start=1):
        futures.append(pool.submit(call))
        wait_until(lambda index=index: writer.pending() == base + index)  # type: ignore[misc]
    return futures


def counter_value(platform: Platform, name: str) -> int:
    with platform.read_session() as session:
        return repositories.counters(session).get(name, 0)


# --- the writer on its own ----------------------------------------------------------------------


def test_a_failing_job_rolls_back_only_its_savepoint(platform: Platform) -> None:
    writer = writer_of(platform)

    def count(name: str, fail: Exception | None = None) -> Callable[[Session], str]:
        def job(session: Session) -> str:
            repositories.increment_counter(session, name)
            if fail is not None:
                raise fail
            return name

        return job

    with writer_held(writer):
        futures = [
            writer.submit(count("ok.a")),
            writer.submit(count("bad.domain", InvalidInput("no", field="x"))),
            writer.submit(count("bad.bug", ValueError("bug"))),
            writer.submit(count("ok.b")),
        ]
        wait_until(lambda: writer.pending() == 4)
    assert futures[0].result() == "ok.a"
    assert futures[3].result() == "ok.b"
    with pytest.raises(InvalidInput):
        futures[1].result()
    with pytest.raises(ValueError, match="bug"):
        futures[2].result()
    assert counter_value(platform, "ok.a") == 1
    assert counter_value(platform, "ok.b") == 1
    assert counter_value(platform, "bad.domain") == 0
    assert counter_value(platform, "bad.bug") == 0
    stats = writer.stats()
    assert (stats.batches, stats.commits, stats.largest_batch) == (2, 2, 4)
    assert stats.replayed_batches == 1, "the batch of four was replayed with savepoints"


def test_a_failing_job_alone_in_its_batch_writes_nothing(platform: Platform) -> None:
    writer = writer_of(platform)

    def job(session: Session) -> None:
        repositories.increment_counter(session, "alone")
        raise InvalidInput("no", field="x")

    with pytest.raises(InvalidInput):
        writer.run(job)
    assert counter_value(platform, "alone") == 0
    stats = writer.stats()
    assert (stats.commits, stats.failed_batches, stats.replayed_batches) == (0, 0, 0)


def test_close_finishes_queued_jobs_and_refuses_later_ones(platform: Platform) -> None:
    writer = writer_of(platform)

    def count(session: Session) -> int:
        repositories.increment_counter(session, "closing")
        return 1

    closer = threading.Thread(target=writer.close)
    with writer_held(writer):
        queued = [writer.submit(count) for _ in range(3)]
        closer.start()
        wait_until(lambda: writer.pending() == 4)  # the three jobs and the stop
        with pytest.raises(WriterClosed):
            writer.submit(count)
    closer.join(HANG_GUARD_SECONDS)
    assert not closer.is_alive()
    assert [future.result() for future in queued] == [1, 1, 1]
    assert counter_value(platform, "closing") == 3
    with pytest.raises(WriterClosed) as closed:
        writer.submit(count)
    assert closed.value.status_hint == 503


# --- decisions through the writer --------------------------------------------------------------


def test_concurrent_decisions_are_answered_once_each_from_shared_commits(
    demo: Demo, app: AppIdentity
) -> None:
    service = DecisionService(demo.platform)
    writer = writer_of(demo.platform)
    rng = random.Random(20261130)
    threads, each = 8, 25
    contexts = [[random_context(rng) for _ in range(each)] for _ in range(threads)]

    def worker(thread: int) -> list[Decision]:
        return [
            service.decide(request(f"conc-{thread}-{i}", contexts[thread][i]), app)
            for i in range(each)
        ]

    with ThreadPoolExecutor(threads) as pool:
        with writer_held(writer):
            futures = [pool.submit(worker, thread) for thread in range(threads)]
            # The first decision of every thread is queued behind the held job: one batch.
            wait_until(lambda: writer.pending() == threads)
        answers = [answer for future in futures for answer in future.result()]

    assert len(answers) == threads * each
    rows = {row["id"]: row for row in stored_decisions(demo.platform)}
    assert len(rows) == threads * each
    assert set(rows) == {answer.decision_id for answer in answers}
    for answer in answers:
        row = rows[answer.decision_id]
        chosen = arm_key(answer)
        stored = (
            "no_offer"
            if row["chosen_offer"] is None
            else f"{row['chosen_offer']}/{row['chosen_variant']}"
        )
        assert stored == chosen
        assert row["propensity"] == pytest.approx(answer.propensity)
        assert row["probabilities"] == pytest.approx(answer.probabilities)
        assert (row["group"], row["reason"]) == (answer.group.value, answer.reason.value)
        assert row["created_at"] == answer.created_at
    assert Counter(a.group for a in answers).keys() == set(Group)
    stats = writer.stats()
    assert stats.jobs == threads * each + 1
    assert stats.largest_batch >= threads
    assert stats.commits == stats.batches < threads * each
    assert stats.failed_batches == 0


def test_request_id_reuse_in_one_batch_fails_only_that_request(
    demo: Demo, app: AppIdentity
) -> None:
    service = DecisionService(demo.platform)
    writer = writer_of(demo.platform)
    changed = {**RULE_ONE, "trigger": {"event": "low_balance"}}
    calls: list[Callable[[], Decision]] = [
        lambda: service.decide(request("batch-reuse", request_id="r-1"), app),
        lambda: service.decide(request("batch-reuse", changed, request_id="r-1"), app),
        lambda: service.decide(request("batch-reuse", request_id="r-1"), app),
        lambda: service.decide(request("batch-other", request_id="r-2"), app),
        lambda: service.decide(request("batch-third"), app),
    ]
    batches_before = writer.stats().batches
    with ThreadPoolExecutor(len(calls)) as pool:
        with writer_held(writer):
            futures = queue_in_order(pool, writer, calls)
        first = futures[0].result()
        with pytest.raises(InvalidInput) as reused:
            futures[1].result()
        replay = futures[2].result()
        others = [futures[3].result(), futures[4].result()]
    assert reused.value.field == "request_id"
    assert reused.value.status_hint == 422
    assert first.replayed is False
    assert replay.replayed is True
    assert replay.decision_id == first.decision_id
    assert (replay.offer, replay.variant, replay.propensity) == (
        first.offer,
        first.variant,
        first.propensity,
    )
    assert len(stored_decisions(demo.platform, request_id="r-1")) == 1
    ids = {row["id"] for row in stored_decisions(demo.platform)}
    assert ids == {first.decision_id, *(o.decision_id for o in others)}
    stats = writer.stats()
    assert stats.batches - batches_before == 2, "the held job's batch and one batch of five"
    assert stats.largest_batch == len(calls)


@pytest.mark.parametrize("group_commit", [True, False], ids=["group-commit", "inline"])
def test_concurrent_decisions_of_one_customer_never_exceed_its_caps(
    demo: Demo, app: AppIdentity, settings: Settings, clock: FakeClock, group_commit: bool
) -> None:
    platform = Platform(dataclasses.replace(settings, group_commit=group_commit), clock=clock)
    try:
        service = DecisionService(platform)
        customer = next(customers_in(platform, Group.AB, "capped-concurrently"))
        decide = lambda: service.decide(request(customer), app)  # noqa: E731
        with ThreadPoolExecutor(8) as pool:
            if group_commit:
                writer = writer_of(platform)
                with writer_held(writer):
                    futures = [pool.submit(decide) for _ in range(8)]
                    wait_until(lambda: writer.pending() == 8)
                futures += [pool.submit(decide) for _ in range(12)]
            else:
                futures = [pool.submit(decide) for _ in range(20)]
            decisions = [future.result() for future in futures]
    finally:
        platform.close()
    # Rule one matches: each of its offers at most 3 a week, 6 offers a day in all.
    shown = Counter(d.offer for d in decisions)
    assert shown == {"high_yield_savings": 3, "overdraft_protection": 3, None: 14}
    capped = [d for d in decisions if d.offer is None]
    assert all(d.reason == DecisionReason.CUSTOMER_CAP for d in capped)
    assert len(stored_decisions(demo.platform)) == 20


def test_a_failing_commit_fails_every_job_of_its_batch_and_writes_none(
    demo: Demo, app: AppIdentity
) -> None:
    service = DecisionService(demo.platform)
    writer = writer_of(demo.platform)
    failed: list[int] = []

    def note_insert(conn: sa.Connection, _c: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DECISIONS"):
            conn.info["wrote_decisions"] = True

    def failing_commit(conn: sa.Connection) -> None:
        # The first transaction that wrote decisions fails to commit; none after it.
        if conn.info.pop("wrote_decisions", False) and not failed:
            failed.append(1)
            raise RuntimeError("injected commit failure")

    customers = [f"lost-{i}" for i in range(5)]
    with ThreadPoolExecutor(len(customers)) as pool:
        with writer_held(writer):
            futures = [
                pool.submit(service.decide, request(customer), app) for customer in customers
            ]
            wait_until(lambda: writer.pending() == len(customers))
            sa.event.listen(demo.platform.engine, "before_cursor_execute", note_insert)
            sa.event.listen(demo.platform.engine, "commit", failing_commit)
        try:
            for future in futures:
                with pytest.raises(Exception, match="injected commit failure"):
                    future.result()
        finally:
            sa.event.remove(demo.platform.engine, "commit", failing_commit)
            sa.event.remove(demo.platform.engine, "before_cursor_execute", note_insert)
    assert failed == [1]
    assert stored_decisions(demo.platform) == []
    assert writer.stats().failed_batches == 1

    # The writer survives: the next batch commits.
    again = service.decide(request("after-failure"), app)
    (row,) = stored_decisions(demo.platform)
    assert row["id"] == again.decision_id


def test_two_workers_deciding_for_the_same_customers_respect_caps(
    demo: Demo, app: AppIdentity, settings: Settings, clock: FakeClock
) -> None:
    """Two platforms on one database stand for two worker processes: each has its own writer,
    engine and batches, and their batches lock overlapping customers."""
    other = Platform(settings, clock=clock)
    try:
        services = [DecisionService(demo.platform), DecisionService(other)]
        customers = list(itertools.islice(customers_in(demo.platform, Group.AB, "two-workers"), 4))
        per_worker = 10

        def play(worker: int, thread: int) -> list[Decision]:
            order = customers if (worker + thread) % 2 == 0 else customers[::-1]
            return [
                services[worker].decide(request(customer), app)
                for _ in range(per_worker // 2)
                for customer in order
            ]

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(play, w, t) for w in range(2) for t in range(4)]
            decisions = [d for future in futures for d in future.result()]
    finally:
        other.close()
    assert len(decisions) == 2 * 4 * (per_worker // 2) * len(customers)
    rows = stored_decisions(demo.platform)
    assert len(rows) == len(decisions)
    for customer in customers:
        key = demo.platform.pseudonym(customer)
        shown = Counter(r["chosen_offer"] for r in rows if r["customer_key"] == key)
        assert shown == {"high_yield_savings": 3, "overdraft_protection": 3, None: 34}, shown
    batches = [writer_of(p).stats() for p in (demo.platform, other)]
    assert all(stats.failed_batches == 0 for stats in batches)


def test_a_closed_worker_answers_503(demo: Demo, settings: Settings) -> None:
    with TestClient(app=create_app(settings, demo.platform)) as client:
        writer_of(demo.platform).close()
        response = client.post(
            "/v1/decisions",
            headers={"X-API-Key": demo.api_key},
            json={
                "experiment": DEMO_EXPERIMENT_KEY,
                "customer_id": "late",
                "surface": "home_feed",
                "consent": True,
                "context": RULE_ONE,
            },
        )
    assert response.status_code == 503, response.text
    assert "shutting down" in response.json()["detail"]
