"""`LearnerLease`: one learner among many workers, on SQLite (flock) and PostgreSQL (advisory
lock). Each "worker" is a Platform of its own on the same database; the lease of a worker that
dies (its process killed, or its PostgreSQL connection cut) passes to another.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bandit_platform.service.leader import LearnerLease, holder_name, learner_lease
from bandit_platform.service.learner import LearnerRunner
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from tests.conftest import PSEUDONYM_KEY, REPO, Demo, FakeClock


@pytest.fixture
def other(settings: Settings, clock: FakeClock) -> Iterator[Platform]:
    """A second worker on the same database."""
    platform = Platform(settings, clock=clock)
    yield platform
    platform.close()


@pytest.fixture
def leases(demo: Demo, other: Platform) -> Iterator[tuple[LearnerLease, LearnerLease]]:
    first, second = LearnerLease(demo.platform), LearnerLease(other)
    # Both run in this process, so name them apart (holder_name() is host:pid).
    first.holder, second.holder = "worker-a", "worker-b"
    yield first, second
    first.release()
    second.release()


def test_exactly_one_lease_is_held_and_passes_on_release(
    demo: Demo, other: Platform, clock: FakeClock, leases: tuple[LearnerLease, LearnerLease]
) -> None:
    first, second = leases
    assert learner_lease(demo.platform) is None
    assert first.try_acquire() is True
    assert first.try_acquire() is True  # re-entrant for its holder
    assert second.try_acquire() is False
    assert (first.held, second.held) == (True, False)
    assert first.alive() is True
    assert second.alive() is False
    row = learner_lease(other)
    assert row is not None
    assert (row.holder, row.acquired_at, row.heartbeat_at) == ("worker-a", clock.now, clock.now)

    clock.advance(minutes=1)
    first.heartbeat({"examples_learned": {"x": 3}})
    second.heartbeat({"ignored": True})  # a non-holder does not write the row
    row = learner_lease(demo.platform)
    assert row is not None
    assert (row.holder, row.heartbeat_at, row.details) == (
        "worker-a",
        clock.now,
        {"examples_learned": {"x": 3}},
    )

    first.release()
    assert first.held is False
    clock.advance(minutes=1)
    assert second.try_acquire() is True
    assert first.try_acquire() is False
    row = learner_lease(demo.platform)
    assert row is not None
    assert (row.holder, row.acquired_at) == ("worker-b", clock.now)
    with demo.platform.engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM learner_leases")).scalar_one()
    assert count == 1


def test_the_runner_of_a_non_holder_does_not_learn(demo: Demo, other: Platform) -> None:
    holder, waiting = LearnerRunner(demo.platform), LearnerRunner(other)
    holder.lease.holder, waiting.lease.holder = "worker-a", "worker-b"
    try:
        report = holder.step()
        assert report is not None
        assert waiting.step() is None
        assert waiting.last_report is None
        row = learner_lease(other)
        assert row is not None
        assert row.holder == "worker-a"
        assert row.details == {
            "rewards_closed": 0,
            "examples_learned": {},
            "snapshots_published": {},
        }
        holder.stop()  # releases the lease
        assert waiting.step() is not None
        assert holder.step() is None
        row = learner_lease(demo.platform)
        assert row is not None
        assert row.holder == "worker-b"
    finally:
        holder.stop()
        waiting.stop()


def test_holder_name_is_host_and_pid() -> None:
    host, pid = holder_name().rsplit(":", 1)
    assert host
    assert int(pid) == os.getpid()


@pytest.mark.postgres
def test_postgres_lease_passes_on_when_the_holders_connection_dies(
    postgres_session_url: str, clock: FakeClock
) -> None:
    settings = Settings(database_url=postgres_session_url, pseudonym_key=PSEUDONYM_KEY)
    first_platform = Platform(settings, clock=clock)
    second_platform = Platform(settings, clock=clock)
    first, second = LearnerLease(first_platform), LearnerLease(second_platform)
    try:
        assert first.try_acquire() is True
        assert second.try_acquire() is False
        # Disposing the engine does not end the lease: its connection is checked out.
        first_platform.engine.dispose()
        assert second.try_acquire() is False
        # The holder's connection dies (the server ends its backend, as when a worker is killed).
        with second_platform.engine.connect() as connection:
            (pid,) = connection.execute(
                sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
            ).one()
            connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            connection.commit()
        # pg_terminate_backend only signals the backend: its locks go when it has exited.
        deadline = time.monotonic() + 10.0
        while not second.try_acquire() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.held is True
        # The old holder finds out on its next check and stops counting itself the learner.
        assert first.alive() is False
        assert first.held is False
        assert first.try_acquire() is False
    finally:
        first.release()
        second.release()
        first_platform.close()
        second_platform.close()


HOLD_SCRIPT = """
import sys, time
from bandit_platform.service.leader import LearnerLease
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings

platform = Platform(Settings(database_url=sys.argv[1], pseudonym_key=b"x" * 32))
lease = LearnerLease(platform)
print("held" if lease.try_acquire() else "free", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_the_lease_of_a_killed_worker_passes_to_another(demo: Demo, db_url: str) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, db_url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    lease = LearnerLease(demo.platform)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "held"
        assert lease.try_acquire() is False
        row = learner_lease(demo.platform)
        assert row is not None
        assert row.holder.endswith(f":{worker.pid}")

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        # The kernel drops the flock at once; PostgreSQL ends the backend when it notices the
        # closed socket, which can take a moment: poll, without a timing assertion.
        for _ in range(300):
            if lease.try_acquire():
                break
            time.sleep(0.05)
        assert lease.held is True
        row = learner_lease(demo.platform)
        assert row is not None
        assert row.holder == lease.holder == holder_name()
    finally:
        lease.release()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
