"""The HTTP runner agrees with the in-process runner; the server's simulation mode.

The agreement test runs one small config twice, in-process and against a real server
process in simulation mode, with a learner pass every simulated hour and models published
during the run, and requires the same truth and the same decision log, bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import httpx
import msgspec
import polars as pl
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from polars.testing import assert_frame_equal

import simulators.runner as runner
from bandit_platform.api.app import create_app
from bandit_platform.cli import main, setup_demo
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import Scope
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.platform import Platform
from bandit_platform.service.simulation import SimulationClock, seeded_ids, simulation_platform
from bandit_platform.settings import Settings
from bandit_platform.storage.database import upgrade
from simulators.runner import (
    PolicySpec,
    SimulationConfig,
    SimulationResult,
    SimulationServer,
    run_simulation,
)
from tests.conftest import PSEUDONYM_KEY, REPO

Client = TestClient[Litestar]
#: ~450 decisions over 12 simulated days: rewards wait 7 days, so models publish mid-run.
AGREE = SimulationConfig(
    name="agree",
    seed=11,
    customers=70,
    days=12,
    max_decisions=500,
    learn_every_hours=1.0,
    publish_every_examples=25,
)
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DECISION: dict[str, Any] = {
    name: value
    for name, value in json.loads((REPO / "examples/requests/decision.json").read_text()).items()
    if name != "request_id"  # each request here is a new decision, not a retry
}


# --- the HTTP runner against the in-process runner -----------------------------------------


@pytest.fixture(scope="module")
def both_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[SimulationResult, float]]:
    runs: dict[str, tuple[SimulationResult, float]] = {}
    for transport in ("in_process", "http"):
        config = msgspec.structs.replace(AGREE, transport=transport)
        started = time.perf_counter()
        result = run_simulation(config, tmp_path_factory.mktemp(transport))
        runs[transport] = (result, time.perf_counter() - started)
    print(
        f"\n{runs['in_process'][0].decisions} decisions: in-process "
        f"{runs['in_process'][1]:.1f} s, http {runs['http'][1]:.1f} s"
    )
    return runs


@pytest.mark.system
def test_http_and_in_process_runs_agree(
    both_runs: dict[str, tuple[SimulationResult, float]],
) -> None:
    local, _ = both_runs["in_process"]
    remote, _ = both_runs["http"]
    assert local.decisions > 300
    # Models were published and served during the run, not only at its end.
    assert local.truth["model_version"].n_unique() >= 3
    assert_frame_equal(local.truth, remote.truth, check_exact=True)
    assert (local.outcomes, local.realised_reward) == (remote.outcomes, remote.realised_reward)

    key = f"sim-{AGREE.name}"
    local_log = pl.read_parquet(local.directory / f"{key}.parquet")
    remote_log = pl.read_parquet(remote.directory / f"{key}.parquet")
    columns = [
        "decision_id",
        "chosen_offer",
        "chosen_variant",
        "propensity",
        "probabilities",
        "model_version",
    ]
    assert_frame_equal(local_log.select(columns), remote_log.select(columns), check_exact=True)
    # ... and everything else, times and rewards included.
    assert_frame_equal(local_log, remote_log, check_exact=True)
    dsjson = f"{key}.dsjson"
    assert (local.directory / dsjson).read_bytes() == (remote.directory / dsjson).read_bytes()


@pytest.mark.system
def test_http_run_used_the_server_and_stopped_it(
    both_runs: dict[str, tuple[SimulationResult, float]],
) -> None:
    remote, _ = both_runs["http"]
    log = (remote.directory / "server.log").read_text()
    assert "SIMULATION MODE" in log
    assert log.count("POST /v1/decisions") == remote.decisions
    assert "POST /v1/simulation/learn" in log
    assert "Finished server process" in log  # stopped (gracefully) before the export
    assert json.loads((remote.directory / "summary.json").read_text())["transport"] == "http"


@pytest.mark.system
def test_server_is_stopped_when_the_run_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    upgrade(url)
    settings = Settings(database_url=url, pseudonym_key=PSEUDONYM_KEY, durable=False)
    server = SimulationServer(settings, 3, START, tmp_path / "server.log")

    def failing_run() -> None:
        with server:
            assert httpx.get(f"{server.url}/health/ready").status_code == 200
            raise RuntimeError("the loop failed")

    with pytest.raises(RuntimeError, match="the loop failed"):
        failing_run()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health/live", timeout=2)


@pytest.mark.parametrize(
    "kind", sorted(set(get_args(runner.PolicyKind)) - runner.HTTP_POLICIES) or ["none"]
)
def test_http_transport_refuses_research_baselines(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if kind == "none":  # no baseline exists yet: pretend `uniform` were one
        monkeypatch.setattr(runner, "HTTP_POLICIES", frozenset({"bandit"}))
        kind = "uniform"
    policy = msgspec.convert({"kind": kind}, PolicySpec)
    config = SimulationConfig(name="b", policy=policy, transport="http")
    with pytest.raises(ValueError, match="runs only in-process"):
        run_simulation(config, tmp_path)
    assert not (tmp_path / "simulation.db").exists()


def test_transport_is_read_from_the_run_file(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text('name = "x"\ntransport = "http"\n')
    assert SimulationConfig.from_toml(run_file).transport == "http"
    run_file.write_text('name = "x"\ntransport = "carrier-pigeon"\n')
    with pytest.raises(Exception, match="transport"):
        SimulationConfig.from_toml(run_file)


def test_simulate_command_takes_a_transport(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[SimulationConfig] = []

    def fake_run(config: SimulationConfig, directory: Path, **_: Any) -> None:
        seen.append(config)
        raise ValueError("stop here")

    monkeypatch.setattr(runner, "run_simulation", fake_run)
    run_file = tmp_path / "run.toml"
    run_file.write_text('name = "x"\n')
    assert main(["simulate", str(run_file), "--transport", "http"]) == 2
    assert main(["simulate", str(run_file)]) == 2
    assert [c.transport for c in seen] == ["http", "in_process"]


# --- simulation mode of the server ----------------------------------------------------------


@pytest.fixture
def simulation_settings(sqlite_url: str) -> Settings:
    return Settings(
        database_url=sqlite_url,
        pseudonym_key=PSEUDONYM_KEY,
        simulation_seed=7,
        simulation_start=START,
        model_refresh_seconds=None,
    )


@pytest.fixture
def simulation_client(simulation_settings: Settings) -> Iterator[Client]:
    platform = simulation_platform(simulation_settings)
    secret, _ = setup_demo(platform)
    app = create_app(simulation_settings, platform)
    with TestClient(app=app, raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = secret
        yield client


def test_simulation_clock_drives_the_decisions(simulation_client: Client) -> None:
    ids = seeded_ids(7)
    first = simulation_client.post("/v1/decisions", json=DECISION).json()
    assert first["decision_id"] == ids()
    assert datetime.fromisoformat(first["created_at"]) == START
    later = START + timedelta(hours=5, microseconds=7)
    answer = simulation_client.put("/v1/simulation/clock", json={"now": later.isoformat()})
    assert answer.status_code == 200, answer.text
    assert datetime.fromisoformat(answer.json()["now"]) == later
    second = simulation_client.post("/v1/decisions", json=DECISION).json()
    assert second["decision_id"] == ids()
    assert datetime.fromisoformat(second["created_at"]) == later
    # Another offset is the same instant; the same time again is not backwards.
    same = later.astimezone(timezone(timedelta(hours=2)))
    assert simulation_client.put("/v1/simulation/clock", json={"now": same.isoformat()}).is_success


@pytest.mark.parametrize(
    ("now", "why"),
    [
        ("2026-03-02T09:00:00", "timezone"),
        ("2026-03-02T07:59:59Z", "backwards"),
        ("next tuesday", ""),
        (12, ""),
    ],
)
def test_simulation_clock_rejects_bad_times(simulation_client: Client, now: Any, why: str) -> None:
    response = simulation_client.put("/v1/simulation/clock", json={"now": now})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["field"] == "now"
    assert why in body["detail"]
    decision = simulation_client.post("/v1/decisions", json=DECISION).json()
    assert datetime.fromisoformat(decision["created_at"]) == START  # the clock did not move


def test_simulation_clock_rejects_unknown_fields(simulation_client: Client) -> None:
    response = simulation_client.put(
        "/v1/simulation/clock", json={"now": START.isoformat(), "speed": 2}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "speed"


def test_simulation_learn_runs_one_pass(simulation_client: Client) -> None:
    # The experiment's salt is random: ask for customers until one is in the bandit group
    # (holdout and incumbent-rule decisions are not learnable).
    for index in range(100):
        body = {**DECISION, "customer_id": f"{DECISION['customer_id']}-{index}"}
        decision = simulation_client.post("/v1/decisions", json=body).json()
        if decision["reason"] == "bandit":
            break
    assert decision["reason"] == "bandit"
    assert decision["model_version"] == 1
    response = simulation_client.post("/v1/simulation/learn")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "rewards_closed": 0,
        "examples_learned": {},
        "snapshots_published": {},
    }
    # A week and a bit later the reward closes (default reward) and is learned.
    week = START + timedelta(days=8)
    assert simulation_client.put("/v1/simulation/clock", json={"now": week.isoformat()}).is_success
    report = simulation_client.post("/v1/simulation/learn").json()
    assert report["rewards_closed"] >= 1
    assert report["examples_learned"] == {DEMO_EXPERIMENT_KEY: 1}


def test_simulation_routes_need_the_manage_scope(
    simulation_client: Client, simulation_settings: Settings
) -> None:
    platform = Platform(simulation_settings)
    try:
        weak = ApiKeyService(platform).create("app", {Scope.DECIDE, Scope.OUTCOME}).secret
    finally:
        platform.close()
    headers = {"X-API-Key": weak}
    clock = simulation_client.put(
        "/v1/simulation/clock", json={"now": START.isoformat()}, headers=headers
    )
    assert clock.status_code == 403
    assert simulation_client.post("/v1/simulation/learn", headers=headers).status_code == 403
    del simulation_client.headers["X-API-Key"]
    assert simulation_client.post("/v1/simulation/learn").status_code == 401


def test_simulation_routes_do_not_exist_without_simulation_mode(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, pseudonym_key=PSEUDONYM_KEY)
    platform = Platform(settings)
    secret, _ = setup_demo(platform)
    app = create_app(settings, platform)
    assert "/v1/simulation/clock" not in app.openapi_schema.paths  # type: ignore[operator]
    with TestClient(app=app, raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = secret
        clock = client.put("/v1/simulation/clock", json={"now": START.isoformat()})
        assert clock.status_code == 404
        assert client.post("/v1/simulation/learn").status_code == 404
        assert client.app.state.simulation is None


def test_simulation_mode_needs_a_simulation_clock(simulation_settings: Settings) -> None:
    platform = Platform(simulation_settings)  # the wall clock
    try:
        with pytest.raises(ValueError, match="SimulationClock"):
            create_app(simulation_settings, platform)
    finally:
        platform.close()


def test_simulation_settings_from_the_environment() -> None:
    env = {
        "DATABASE_URL": "sqlite:///:memory:",
        "BANDIT_PSEUDONYM_KEY": PSEUDONYM_KEY.decode(),
        "BANDIT_SIMULATION_SEED": "42",
        "BANDIT_SIMULATION_START": "2026-03-02T08:00:00+00:00",
    }
    settings = Settings.from_environment(env)
    assert settings.simulation_seed == 42
    assert settings.simulation_start == START
    assert settings.run_learner is False
    assert settings.model_refresh_seconds is None
    production = Settings.from_environment({**env, "BANDIT_SIMULATION_SEED": ""})
    assert production.simulation_seed is None
    assert production.run_learner is True
    with pytest.raises(ValueError, match="BANDIT_LEARNER=off"):
        Settings.from_environment({**env, "BANDIT_LEARNER": "on"})
    with pytest.raises(ValueError, match="timezone"):
        Settings.from_environment({**env, "BANDIT_SIMULATION_START": "2026-03-02T08:00:00"})


def test_simulation_clock_tells_wall_time_until_first_set() -> None:
    clock = SimulationClock()
    before = datetime.now(UTC)
    assert before <= clock() <= datetime.now(UTC)
    assert clock.set(START) == START  # the first set may go anywhere, backwards included
    assert clock() == START


def test_a_server_in_simulation_mode_refuses_more_than_one_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each worker would keep its own simulated clock and decision-id sequence."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'sim.db'}")
    monkeypatch.setenv("BANDIT_SIMULATION_SEED", "3")
    monkeypatch.setenv("BANDIT_LEARNER", "off")
    assert main(["serve", "--workers", "2"]) == 2
    assert "one worker only" in capsys.readouterr().err
