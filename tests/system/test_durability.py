"""Durability under `kill -9`: the decision and outcome paths of a real server under load, and
the reward join and learner as a process of their own, killed at seeded random moments and
restarted on the same database.

What must hold after every kill (both databases):

* every decision answered 200 is stored with the propensity, probabilities and model version
  of its answer; every outcome answered 201/200 is stored exactly once; nothing is half
  written (no outcome without its decision, JSON columns parse, SQLite's integrity check);
* requests that got no answer, retried after the restart with the same request id or
  idempotency key, are stored exactly once;
* the logged probability vectors recompute (`check_integrity`);
* the reward ledger holds exactly one row per (decision, horizon), equal to a clean run's on a
  copy of the same data, and every published snapshot verifies and has learned exactly the
  rewards up to its cursor.

`BANDIT_DURABILITY_SEED` replays a run's kill moments.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bandit_platform.cli import setup_demo
from bandit_platform.demo import DEMO_EXPERIMENT_KEY, demo_config_bytes
from bandit_platform.domain.access import AppIdentity, Scope
from bandit_platform.domain.config import config_from_builtins
from bandit_platform.domain.decisions import ExperimentStatus
from bandit_platform.policies.vw_adapter import ContextualBanditModel
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionRequest, DecisionService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.learner import LearnerRunner
from bandit_platform.service.outcomes import OutcomeRequest, OutcomeService
from bandit_platform.service.platform import Platform
from bandit_platform.service.policy_evaluation import check_integrity
from bandit_platform.settings import Settings
from bandit_platform.storage.database import create_engine, normalise_url, read_only
from tests.conftest import (
    PG_ADMIN_URL,
    PSEUDONYM_KEY,
    REPO,
    FakeClock,
    Server,
    _pg_url,
    drop_pg_database,
    free_port,
    stop_server,
)

pytestmark = pytest.mark.system

SEED = int(os.environ.get("BANDIT_DURABILITY_SEED", "20261130"))
KILLS = 3
THREADS = 4
EVENTS = ("click", "apply", "convert")
#: Rate limits off: the load is the point here, not the budget.
SERVER_ENV = {"BANDIT_RATE_LIMIT_PER_SECOND": "0"}
READY_TIMEOUT = 240.0
DECISION_BODY: dict[str, Any] = json.loads((REPO / "examples/requests/decision.json").read_text())


def _start(db_url: str, log: Path) -> Server:
    """`start_server`, waiting longer for readiness: on a machine shared with other work the
    server's imports alone can take most of `start_server`'s minute."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "BANDIT_LEARNER": "off",
        **SERVER_ENV,
    }
    handle = log.open("wb")
    command = [sys.executable, "-m", "bandit_platform.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return Server(url, process, log, handle)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()
    process.wait()
    handle.close()
    raise RuntimeError(f"server did not become ready:\n{log.read_text()}")


def _engine(db_url: str) -> sa.Engine:
    return create_engine(db_url, pool_size=1)


def _structural_checks(connection: sa.Connection, db_url: str) -> None:
    """Nothing half written: the file is sound, every outcome and reward has its decision,
    and every JSON column parses into a vector that sums to one and holds the propensity."""
    if db_url.startswith("sqlite"):
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    for table in ("outcomes", "rewards"):
        orphans = connection.execute(
            sa.text(
                f"SELECT count(*) FROM {table} t LEFT JOIN decisions d ON d.id = t.decision_id "
                "WHERE d.id IS NULL"
            )
        ).scalar_one()
        assert orphans == 0, f"{table} without their decision"
    rows = connection.execute(
        sa.text(
            "SELECT id, CAST(context AS TEXT) AS context, CAST(eligible AS TEXT) AS eligible, "
            "CAST(probabilities AS TEXT) AS probabilities, chosen_offer, chosen_variant, "
            "propensity FROM decisions"
        )
    ).all()
    for row in rows:
        context = json.loads(row.context)
        eligible = json.loads(row.eligible)
        probabilities = json.loads(row.probabilities)
        assert isinstance(context, dict), row.id
        assert sorted(eligible) == sorted(probabilities), row.id
        assert abs(sum(probabilities.values()) - 1.0) < 1e-6, row.id
        chosen = (
            "no_offer" if row.chosen_offer is None else f"{row.chosen_offer}/{row.chosen_variant}"
        )
        assert probabilities[chosen] == pytest.approx(row.propensity, abs=1e-12), row.id


# --- (a) decisions and outcomes under load ---------------------------------------------------


@dataclass
class Load:
    """What the client threads sent and what they were answered, over every server life."""

    #: request_id -> the 200 answer.
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: idempotency_key -> (body, the 201/200 answer).
    outcomes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    #: Requests that got no answer (connection reset or refused by the kill), to retry.
    unanswered_decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    unanswered_outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Any other status: each is a failure.
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def answered(self) -> int:
        return len(self.decisions) + len(self.outcomes)


def _decision_body(request_id: str, customer: str) -> dict[str, Any]:
    body = dict(DECISION_BODY)
    body["customer_id"] = customer
    body["request_id"] = request_id
    return body


def _client_thread(
    url: str, key: str, load: Load, name: str, seed: int, stop: threading.Event
) -> None:
    """Decisions, and outcomes of answered decisions, until stopped or the server dies."""
    rng = random.Random(seed)
    sent = 0
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        while not stop.is_set():
            sent += 1
            with load.lock:
                known = list(load.decisions.values())
            if known and rng.random() < 0.5:
                decision = rng.choice(known)
                kind, path = "outcome", "/v1/outcomes"
                body: dict[str, Any] = {
                    "decision_id": decision["decision_id"],
                    "event": rng.choice(EVENTS),
                    "value": round(rng.uniform(0.5, 2.0), 3),
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "idempotency_key": f"{name}-o{sent}",
                }
                ident = body["idempotency_key"]
            else:
                kind, path = "decision", "/v1/decisions"
                ident = f"{name}-d{sent}"
                body = _decision_body(ident, f"{name}-c{rng.randrange(10**9)}")
            try:
                response = client.post(path, json=body)
            except httpx.HTTPError:
                with load.lock:
                    pending = (
                        load.unanswered_decisions
                        if kind == "decision"
                        else load.unanswered_outcomes
                    )
                    pending[ident] = body
                return
            with load.lock:
                if kind == "decision" and response.status_code == 200:
                    load.decisions[ident] = response.json()
                elif kind == "outcome" and response.status_code in (200, 201):
                    load.outcomes[ident] = (body, response.json())
                else:
                    load.unexpected.append(f"{path} {response.status_code} {response.text[:200]}")


def _kill(server: Server) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.handle.close()


def _retry(server: Server, key: str, load: Load) -> tuple[int, int]:
    """Send every unanswered request again with its request id or idempotency key; returns
    how many of each the server already held (answered as a replay)."""
    replayed_decisions = replayed_outcomes = 0
    with server.client(key) as client:
        for ident, body in sorted(load.unanswered_decisions.items()):
            response = client.post("/v1/decisions", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            replayed_decisions += answer["replayed"]
            load.decisions[ident] = answer
        for ident, body in sorted(load.unanswered_outcomes.items()):
            response = client.post("/v1/outcomes", json=body)
            assert response.status_code in (200, 201), response.text
            replayed_outcomes += response.status_code == 200
            load.outcomes[ident] = (body, response.json())
    return replayed_decisions, replayed_outcomes


def _check_answers_stored(db_url: str, load: Load, api_key_id: int, seed: int) -> None:
    engine = _engine(db_url)
    with engine.connect() as connection:
        _structural_checks(connection, db_url)
        decisions = {
            row.request_id: row
            for row in connection.execute(
                sa.text(
                    "SELECT id, request_id, propensity, CAST(probabilities AS TEXT) AS p, "
                    'model_version, "group", chosen_offer FROM decisions WHERE api_key_id = :k'
                ),
                {"k": api_key_id},
            )
        }
        outcomes = connection.execute(
            sa.text(
                "SELECT id, idempotency_key, decision_id, event, value FROM outcomes "
                "WHERE api_key_id = :k"
            ),
            {"k": api_key_id},
        ).all()
    engine.dispose()
    lost = [r for r in load.decisions if r not in decisions]
    assert not lost, f"seed {seed}: answered decisions lost: {lost[:5]} ({len(lost)})"
    for request_id, answer in load.decisions.items():
        row = decisions[request_id]
        assert row.id == answer["decision_id"], (seed, request_id)
        assert row.propensity == pytest.approx(answer["propensity"], abs=1e-12), seed
        assert json.loads(row.p) == pytest.approx(answer["arm_probabilities"], abs=1e-12), seed
        assert row.model_version == answer["model_version"], seed
        assert (row.group, row.chosen_offer) == (answer["group"], answer["offer"]), seed
    copies = Counter(o.idempotency_key for o in outcomes)
    assert [k for k, n in copies.items() if n > 1] == [], f"seed {seed}: outcomes stored twice"
    by_key = {o.idempotency_key: o for o in outcomes}
    lost = [k for k in load.outcomes if k not in by_key]
    assert not lost, f"seed {seed}: answered outcomes lost: {lost[:5]} ({len(lost)})"
    for ident, (body, answer) in load.outcomes.items():
        row = by_key[ident]
        assert row.id == answer["outcome_id"], (seed, ident)
        assert (row.decision_id, row.event) == (body["decision_id"], body["event"]), seed
        assert row.value == pytest.approx(body["value"]), seed


def test_answered_decisions_and_outcomes_survive_repeated_kill_9(
    db_url: str, tmp_path: Path
) -> None:
    platform = Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))
    try:
        key, _ = setup_demo(platform)
    finally:
        platform.close()
    engine = _engine(db_url)
    with engine.connect() as connection:
        api_key_id = connection.execute(sa.text("SELECT max(id) FROM api_keys")).scalar_one()
    engine.dispose()
    rng = random.Random(SEED)
    load = Load()
    started = time.monotonic()
    kills: list[str] = []
    for life in range(KILLS):
        server = _start(db_url, tmp_path / f"server-{life}.log")
        stop = threading.Event()
        target = load.answered + rng.randint(60, 160)
        threads = [
            threading.Thread(
                target=_client_thread,
                args=(server.url, key, load, f"l{life}t{t}", rng.randrange(2**32), stop),
            )
            for t in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 90
        while load.answered < target and time.monotonic() < deadline:
            alive = any(t.is_alive() for t in threads)
            assert alive, f"every client stopped early: {server.log.read_text()[-2000:]}"
            time.sleep(0.005)
        # A few milliseconds more, so that the kill lands inside requests, not between them.
        time.sleep(rng.uniform(0.0, 0.02))
        _kill(server)
        stop.set()
        for thread in threads:
            thread.join()
        assert load.answered >= target, f"seed {SEED}: the load stalled in life {life}"
        kills.append(
            f"kill {life + 1} after {load.answered} answers, "
            f"{len(load.unanswered_decisions) + len(load.unanswered_outcomes)} unanswered so far"
        )
        assert load.unexpected == [], (SEED, load.unexpected[:5])
        _check_answers_stored(db_url, load, api_key_id, SEED)

    server = _start(db_url, tmp_path / "server-final.log")
    try:
        answered_before_retry = load.answered
        replayed = _retry(server, key, load)
    finally:
        stop_server(server)
    _check_answers_stored(db_url, load, api_key_id, SEED)
    # Every outcome ever sent is now stored exactly once: the answered ones and the retried.
    engine = _engine(db_url)
    with engine.connect() as connection:
        stored_outcomes = connection.execute(
            sa.text("SELECT count(*) FROM outcomes WHERE api_key_id = :k"), {"k": api_key_id}
        ).scalar_one()
    engine.dispose()
    assert stored_outcomes == len(load.outcomes)

    platform = Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))
    try:
        report = check_integrity(platform, DEMO_EXPERIMENT_KEY, limit=100_000)
    finally:
        platform.close()
    assert report.sampled >= len(load.decisions)
    assert report.checked > 0
    assert (report.mismatched, report.unverifiable) == (0, 0), report
    print(
        f"\nseed {SEED}: {KILLS} kills survived ({'; '.join(kills)}); "
        f"{answered_before_retry} requests answered under load "
        f"({len(load.decisions)} decisions, {len(load.outcomes)} outcomes after retries); "
        f"retried {len(load.unanswered_decisions)} decisions ({replayed[0]} already stored) "
        f"and {len(load.unanswered_outcomes)} outcomes ({replayed[1]} already stored); "
        f"0 rows lost; integrity: {report.checked} vectors recomputed, {report.skipped} skipped; "
        f"{time.monotonic() - started:.0f} s"
    )


# --- (b) the reward join and the learner ----------------------------------------------------

JOIN_KEY = "durability-join"
DECISIONS = 1500
#: The horizons besides the learning one (7 days, max): for reports, and to give the join
#: enough work that kills land inside it.
REPORT_HORIZONS: list[dict[str, Any]] = [
    {"name": "click_1h", "event_weights": {"click": 1.0}, "attribution_window_hours": 1},
    {"name": "click_1d", "event_weights": {"click": 1.0}, "attribution_window_hours": 24},
    {"name": "apply_7d", "event_weights": {"apply": 1.0}, "attribution_window_hours": 168},
    {
        "name": "first_3d",
        "event_weights": {"click": 0.1, "apply": 0.5, "convert": 1.0},
        "attribution_window_hours": 72,
        "aggregation": "earliest",
    },
    {
        "name": "value_14d",
        "event_weights": {"apply": 0.5, "convert": 1.0},
        "attribution_window_hours": 336,
        "aggregation": "sum",
    },
]


def _join_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(demo_config_bytes())
    config["key"] = JOIN_KEY
    config["reward"]["report_horizons"] = REPORT_HORIZONS
    config["learning"] = {"publish_every_examples": 100}
    config["frequency_caps"] = []
    return config


def _populate(db_url: str, seed: int) -> int:
    """Decisions and outcomes made in the past on a fake clock, every horizon closed by now;
    returns how many decisions were made."""
    rng = random.Random(seed)
    clock = FakeClock(datetime.now(UTC) - timedelta(days=40))
    platform = Platform(
        Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY, durable=False), clock=clock
    )
    try:
        experiments = ExperimentService(platform)
        experiments.create(config_from_builtins(_join_config()), actor="test")
        experiments.approve(JOIN_KEY, actor="test", comment="durability test")
        experiments.change_status(JOIN_KEY, ExperimentStatus.RUNNING, actor="test")
        identity: AppIdentity = (
            ApiKeyService(platform).create("join", {Scope.DECIDE, Scope.OUTCOME}).identity
        )
        decide = DecisionService(platform)
        record = OutcomeService(platform)
        context = DECISION_BODY["context"]
        pending: list[tuple[datetime, int, str, str]] = []
        serial = 0

        def flush(until: datetime) -> None:
            nonlocal serial
            while pending and pending[0][0] <= until:
                at, _, decision_id, event = heapq.heappop(pending)
                clock.now = max(clock.now, at)
                serial += 1
                record.record(OutcomeRequest(decision_id, event, 1.0, at, f"e{serial}"), identity)

        for index in range(DECISIONS):
            moment = clock.now + timedelta(seconds=rng.uniform(60, 400))
            flush(moment)
            clock.now = moment
            decision = decide.decide(
                DecisionRequest(
                    experiment=JOIN_KEY,
                    customer_id=f"join-{rng.randrange(400)}",
                    context=context,
                    surface="home_feed",
                    consent=rng.random() < 0.9,
                ),
                identity,
            )
            if rng.random() < 0.4:
                clicked = moment + timedelta(minutes=rng.uniform(0, 90))
                heapq.heappush(pending, (clicked, index, decision.decision_id, "click"))
                if rng.random() < 0.4:
                    applied = clicked + timedelta(hours=rng.uniform(0, 100))
                    heapq.heappush(pending, (applied, index, decision.decision_id, "apply"))
                    if rng.random() < 0.6:
                        converted = applied + timedelta(hours=rng.uniform(0, 200))
                        heapq.heappush(pending, (converted, index, decision.decision_id, "convert"))
        flush(datetime.max.replace(tzinfo=UTC))
    finally:
        platform.close()
    assert clock.now < datetime.now(UTC) - timedelta(days=15)  # every horizon has passed
    return DECISIONS


def _copy_database(db_url: str, tmp_path: Path) -> tuple[str, str | None]:
    """A copy of the database for the clean run: (url, PostgreSQL database name to drop)."""
    if db_url.startswith("sqlite"):
        source = Path(sa.make_url(db_url).database or "")
        target = tmp_path / "clean.db"
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copy(f"{source}{suffix}", f"{target}{suffix}")
        return f"sqlite:///{target}", None
    assert PG_ADMIN_URL is not None
    source_name = sa.make_url(db_url).database
    name = f"{source_name}_clean"
    drop_pg_database(name)
    admin = sa.create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{source_name}"')
    admin.dispose()
    return _pg_url(name), name


def _learner(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    """`bandit-platform learner` as a process of its own."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
    }
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "bandit_platform.cli", "learner", "--interval", "0.2"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def _run_to_completion(db_url: str) -> None:
    """One whole learner pass in this process, as `bandit-platform learner --once` runs it;
    retried while a killed holder's lease is being released."""
    platform = Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))
    runner = LearnerRunner(platform, interval_seconds=0.2)
    try:
        for _ in range(300):
            if runner.step() is not None:
                return
            time.sleep(0.2)
        raise AssertionError("the learner lease was never released")
    finally:
        runner.lease.release()
        platform.close()


def _progress(engine: sa.Engine) -> tuple[int, int, str | None]:
    """Rewards in the ledger, snapshots published, and who holds the learner lease."""
    with engine.connect() as connection:
        rewards = connection.execute(sa.text("SELECT count(*) FROM rewards")).scalar_one()
        snapshots = connection.execute(sa.text("SELECT count(*) FROM model_snapshots")).scalar_one()
        holder = connection.execute(sa.text("SELECT holder FROM learner_leases")).scalar()
    return int(rewards), int(snapshots), holder


def _ledger(db_url: str) -> dict[tuple[str, str], tuple[float, str, int, bool]]:
    engine = _engine(db_url)
    with engine.connect() as connection:
        _structural_checks(connection, db_url)
        rows = connection.execute(
            sa.text(
                "SELECT decision_id, horizon, reward, source, outcome_count, learnable FROM rewards"
            )
        ).all()
    engine.dispose()
    ledger = {
        (r.decision_id, r.horizon): (r.reward, r.source, r.outcome_count, r.learnable) for r in rows
    }
    assert len(ledger) == len(rows), "two ledger rows for one (decision, horizon)"
    return ledger


def _check_snapshots(db_url: str) -> tuple[int, int, int]:
    """Every snapshot verifies, loads, and has learned exactly the learnable rewards of the
    learning horizon up to its cursor; returns (snapshots, newest examples_seen, newest cursor)."""
    engine = _engine(db_url)
    with engine.connect() as connection:
        experiment_id = connection.execute(
            sa.text("SELECT id FROM experiments WHERE key = :k"), {"k": JOIN_KEY}
        ).scalar_one()
        learnable = [
            r.id
            for r in connection.execute(
                sa.text(
                    "SELECT id FROM rewards WHERE experiment_id = :e AND horizon = 'primary' "
                    "AND learnable ORDER BY id"
                ),
                {"e": experiment_id},
            )
        ]
        snapshots = connection.execute(
            sa.text(
                "SELECT version, arguments, checksum, size_bytes, data, examples_seen, "
                "last_reward_id FROM model_snapshots WHERE experiment_id = :e ORDER BY version"
            ),
            {"e": experiment_id},
        ).all()
    engine.dispose()
    assert [s.version for s in snapshots] == list(range(1, len(snapshots) + 1))
    for snapshot in snapshots:
        data = bytes(snapshot.data)
        assert hashlib.sha256(data).hexdigest() == snapshot.checksum, snapshot.version
        assert len(data) == snapshot.size_bytes, snapshot.version
        arguments = snapshot.arguments
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        ContextualBanditModel(list(arguments), model_data=data)
        assert snapshot.last_reward_id <= (learnable[-1] if learnable else 0), snapshot.version
        learned = sum(1 for i in learnable if i <= snapshot.last_reward_id)
        assert snapshot.examples_seen == learned, (snapshot.version, snapshot.examples_seen)
    newest = snapshots[-1]
    return len(snapshots), newest.examples_seen, newest.last_reward_id


def test_reward_join_and_learner_survive_repeated_kill_9(db_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    decisions = _populate(db_url, SEED)
    expected_rewards = decisions * (1 + len(REPORT_HORIZONS))
    clean_url, clean_name = _copy_database(db_url, tmp_path)
    try:
        _run_to_completion(clean_url)
        clean = _ledger(clean_url)
        _, clean_examples, _ = _check_snapshots(clean_url)
    finally:
        if clean_name is not None:
            drop_pg_database(clean_name)
    assert len(clean) == expected_rewards

    rng = random.Random(SEED)
    log = tmp_path / "learner.log"
    moments: list[str] = []
    watcher = read_only(_engine(db_url))  # its reads never take SQLite's write lock
    for kill in range(KILLS):
        rewards_before, snapshots_before, _ = _progress(watcher)
        process = _learner(db_url, log)
        # Most kills land inside the join (at a seeded share of the ledger); the last one
        # after the join, at a seeded delay, while the learner learns or publishes.
        in_join = kill < KILLS - 1 and rewards_before < expected_rewards
        target = rewards_before + rng.randint(1, max(1, expected_rewards - rewards_before - 1))
        delay = rng.uniform(0.0, 0.4)
        deadline = time.monotonic() + READY_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            rewards, _, holder = _progress(watcher)
            if holder != f"{socket.gethostname()}:{process.pid}":
                pass  # still starting: not yet inside a pass
            elif (in_join and rewards >= target) or (not in_join and rewards >= expected_rewards):
                break
            time.sleep(0.002)
        if not in_join:
            time.sleep(delay)
        assert process.poll() is None, f"the learner exited:\n{log.read_text()[-3000:]}"
        process.send_signal(signal.SIGKILL)
        process.wait()
        rewards, snapshots, _ = _progress(watcher)
        moments.append(
            f"kill {kill + 1}: {rewards}/{expected_rewards} rewards, "
            f"{snapshots - snapshots_before} snapshots published in that life"
        )
        # After each kill: no duplicate and nothing half written.
        ledger = _ledger(db_url)
        assert all(clean[k] == v for k, v in ledger.items()), f"seed {SEED}: {moments}"
        _check_snapshots(db_url)
    watcher.dispose()

    _run_to_completion(db_url)
    ledger = _ledger(db_url)
    assert ledger.keys() == clean.keys(), f"seed {SEED}: {moments}"
    differing = [k for k in clean if ledger[k] != clean[k]]
    assert differing == [], f"seed {SEED}: {differing[:5]}"
    count, examples, cursor = _check_snapshots(db_url)
    assert examples == clean_examples > 0
    print(
        f"\nseed {SEED}: {KILLS} kills of the learner survived ({'; '.join(moments)}); "
        f"{len(ledger)} ledger rows equal to a clean run's, {count} snapshots verified, "
        f"the newest has learned {examples} rewards up to reward id {cursor}; "
        f"{time.monotonic() - started:.0f} s"
    )
