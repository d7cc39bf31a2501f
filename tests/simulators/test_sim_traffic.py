"""The demo's simulated traffic: `bandit-platform demo` fills a new demo experiment with data."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bandit_platform.cli import main
from bandit_platform.demo import demo_config


def query(database: Path, sql: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(database)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_the_demo_plays_simulated_customers_into_a_new_experiment_and_stops_at_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "demo.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    for name in ("BANDIT_PSEUDONYM_KEY", "BANDIT_SIMULATION_SEED"):
        monkeypatch.delenv(name, raising=False)
    before = datetime.now(UTC)
    arguments = ["demo", "--setup-only", "--traffic-customers", "80", "--traffic-days", "3"]
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert "simulated traffic:" in output

    ((decisions,),) = query(database, "SELECT count(*) FROM decisions")
    assert decisions > 100
    assert f"simulated traffic: {decisions} decisions" in output
    groups = dict(query(database, 'SELECT "group", count(*) FROM decisions GROUP BY 1'))
    assert set(groups) == {"holdout", "ab", "bandit"}
    # Outcomes were joined and learned: rewards closed, model versions published.
    ((rewards,),) = query(database, "SELECT count(*) FROM rewards WHERE horizon = 'primary'")
    assert rewards == decisions  # every window closed: the visits end a window before now
    ((outcomes,),) = query(database, "SELECT count(*) FROM outcomes")
    assert outcomes > 0
    ((versions,),) = query(database, "SELECT max(version) FROM model_snapshots")
    assert isinstance(versions, int)
    assert versions > 1

    # Nothing lies in the future, and the visits span the days asked for, ending one reward
    # window before now.
    window = demo_config().reward.learning_horizon().attribution_window_hours
    ((first, last),) = query(database, "SELECT min(created_at), max(created_at) FROM decisions")
    ((latest_outcome,),) = query(database, "SELECT max(occurred_at) FROM outcomes")
    after = datetime.now(UTC)
    stamps = [datetime.fromisoformat(str(s)).replace(tzinfo=UTC) for s in (first, last)]
    assert datetime.fromisoformat(str(latest_outcome)).replace(tzinfo=UTC) <= after
    assert stamps[1] <= before - timedelta(hours=window) + timedelta(minutes=1)
    assert timedelta(days=2) < stamps[1] - stamps[0] <= timedelta(days=3)

    # The traffic's own API key is revoked; a second start plays no more traffic.
    ((revoked,),) = query(
        database, "SELECT revoked_at IS NOT NULL FROM api_keys WHERE name = 'demo-traffic'"
    )
    assert revoked == 1
    assert main(["demo", "--setup-only"]) == 0
    assert "simulated traffic" not in capsys.readouterr().out
    assert query(database, "SELECT count(*) FROM decisions") == [(decisions,)]
