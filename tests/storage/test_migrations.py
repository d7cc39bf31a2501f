"""The schema is created only by the migrations, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bandit_platform.storage.database import (
    alembic_config,
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from bandit_platform.storage.tables import SQLModel
from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """An empty database (no tables)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if PG_ADMIN_URL is None:
        pytest.skip("TEST_DATABASE_URL is not set")
    name = "bandit_migrations_" + str(abs(hash(request.node.nodeid)) % 10**8)
    yield create_pg_database(name)
    drop_pg_database(name)


def test_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert heads == [head_revision()]


def test_migrations_match_the_tables(empty_url: str) -> None:
    upgrade(empty_url)
    engine = create_engine(empty_url, pool_size=1)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")
    engine = create_engine(empty_url, pool_size=1)
    tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    engine.dispose()
    upgrade(empty_url)
    engine = create_engine(empty_url, pool_size=1)
    assert set(SQLModel.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys_full_sync_and_secure_delete(
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url, pool_size=1)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        # Erased context is overwritten, not left in free space (docs/privacy.md).
        assert connection.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    engine.dispose()


def test_foreign_keys_are_enforced(db_url: str) -> None:
    engine = create_engine(db_url, pool_size=1)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO outcomes (decision_id, api_key_id, event, value, occurred_at, "
                "received_at, idempotency_key, request_hash, late) VALUES ('missing', 1, "
                "'click', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'k', 'h', false)"
            )
        )
    engine.dispose()


def test_rows_written_at_the_previous_revision_survive_upgrade_and_downgrade(
    empty_url: str,
) -> None:
    upgrade(empty_url, "0001")
    engine = create_engine(empty_url, pool_size=1)
    now = "2026-11-01 09:00:00+00:00"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO experiments (id, key, name, status, version, salt, config, "
                "created_at, updated_at) VALUES (1, 'e', 'E', 'running', 1, 's', '{}', :t, :t)"
            ),
            {"t": now},
        )
        connection.execute(
            sa.text(
                "INSERT INTO model_snapshots (experiment_id, version, arguments, checksum, "
                "examples_seen, size_bytes, data, created_at) "
                "VALUES (1, 1, '[]', 'c', 0, 1, :d, :t)"
            ),
            {"d": b"x", "t": now},
        )
    engine.dispose()
    upgrade(empty_url)
    engine = create_engine(empty_url, pool_size=1)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT key FROM experiments")).scalar_one() == "e"
        snapshot = connection.execute(
            sa.text("SELECT version, last_reward_id, note FROM model_snapshots")
        ).one()
        assert tuple(snapshot) == (1, 0, "")
    engine.dispose()
    downgrade(empty_url, "0001")
    engine = create_engine(empty_url, pool_size=1)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM model_snapshots")).scalar() == 1
    engine.dispose()


@pytest.mark.postgres
def test_growing_ids_are_64_bit_on_postgresql(postgres_session_url: str) -> None:
    """SQLite's INTEGER is 64-bit already; PostgreSQL's integer is not."""
    engine = create_engine(postgres_session_url, pool_size=1)
    columns = {
        (table, column["name"]): column["type"]
        for table in ("outcomes", "rewards", "audit_log", "model_snapshots", "counters")
        for column in sa.inspect(engine).get_columns(table)
    }
    engine.dispose()
    for key in [
        ("outcomes", "id"),
        ("rewards", "id"),
        ("audit_log", "id"),
        ("model_snapshots", "last_reward_id"),
        ("counters", "value"),
    ]:
        assert isinstance(columns[key], sa.BigInteger), key


#: Rows written at revision 0007, by table: what must survive 0007 -> head -> 0007.
_ROWS_0007: dict[str, list[dict[str, object]]] = {
    "experiments": [
        {
            "id": 1,
            "key": "e",
            "name": "E",
            "status": "running",
            "version": 1,
            "salt": "s",
            "config": '{"key": "e"}',
            "created_at": "2026-11-01 09:00:00+00:00",
            "updated_at": "2026-11-01 09:00:00+00:00",
            "approved_version": 1,
        }
    ],
    "api_keys": [
        {
            "id": 7,
            "name": "app",
            "prefix": "bp_abc",
            "key_hash": "h" * 64,
            "scopes": "decide outcome",
            "created_at": "2026-11-01 09:00:00+00:00",
        }
    ],
    "users": [
        {
            "id": 3,
            "username": "analyst",
            "password_hash": "scrypt$fake",  # pragma: allowlist secret
            "role": "viewer",
            "created_at": "2026-11-01 09:00:00+00:00",
        }
    ],
    "decisions": [
        {
            "id": f"d-{index}",
            "experiment_id": 1,
            "experiment_version": 1,
            "api_key_id": 7,
            "request_id": f"r-{index}",
            "customer_key": f"k{index}",
            "surface": "home_feed",
            "group": "bandit",
            "reason": "bandit",
            "context": '{"profile": {"age_band": "25_34"}}',
            "eligible": '["no_offer", "savings/standard"]',
            "probabilities": '{"no_offer": 0.25, "savings/standard": 0.75}',
            "chosen_offer": "savings",
            "chosen_variant": "standard",
            "propensity": 0.75,
            "model_version": 1,
            "learnable": True,
            "explanation": "x",
            "request_hash": "q" * 64,
            "created_at": f"2026-11-01 10:0{index}:00+00:00",
        }
        for index in range(2)
    ],
    "outcomes": [
        {
            "id": index + 1,
            "decision_id": f"d-{index}",
            "api_key_id": 7,
            "event": "click",
            "value": 1.5,
            "occurred_at": "2026-11-01 11:00:00+00:00",
            "received_at": "2026-11-01 11:00:01+00:00",
            "idempotency_key": f"o-{index}",
            "request_hash": "o" * 64,
            "late": False,
        }
        for index in range(2)
    ],
    "rewards": [
        {
            "id": index + 1,
            "decision_id": f"d-{index}",
            "experiment_id": 1,
            "horizon": "primary",
            "reward": 1.5,
            "source": "outcomes",
            "outcome_count": 1,
            "learnable": True,
            "closed_at": "2026-11-09 11:00:00+00:00",
        }
        for index in range(2)
    ],
}


def _keys_and_values(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Per table, every row's identifying and value columns (JSON compared parsed)."""
    columns = {
        "experiments": "id, key, status, version, approved_version",
        "api_keys": "id, prefix, key_hash, scopes",  # pragma: allowlist secret
        "users": "id, username, password_hash, role",
        "decisions": "id, request_id, propensity, model_version, "
        "CAST(probabilities AS TEXT) AS probabilities",
        "outcomes": "id, decision_id, event, value, idempotency_key",
        "rewards": "id, decision_id, horizon, reward, source",
    }
    found: dict[str, list[tuple[object, ...]]] = {}
    with engine.connect() as connection:
        for table, selected in columns.items():
            rows = connection.execute(sa.text(f"SELECT {selected} FROM {table} ORDER BY id")).all()
            found[table] = [
                tuple(
                    json.loads(v) if name == "probabilities" else v
                    for name, v in r._mapping.items()
                )
                for r in rows
            ]
    return found


def test_data_written_at_0007_survives_upgrade_to_head_and_downgrade(empty_url: str) -> None:
    upgrade(empty_url, "0007")
    engine = create_engine(empty_url, pool_size=1)
    with engine.begin() as connection:
        for table, rows in _ROWS_0007.items():
            names = list(rows[0])
            quoted = ", ".join(f'"{n}"' for n in names)
            values = ", ".join(f":{n}" for n in names)
            connection.execute(sa.text(f"INSERT INTO {table} ({quoted}) VALUES ({values})"), rows)
    before = _keys_and_values(engine)
    engine.dispose()
    assert {table: len(rows) for table, rows in before.items()} == {
        table: len(rows) for table, rows in _ROWS_0007.items()
    }

    upgrade(empty_url)
    engine = create_engine(empty_url, pool_size=1)
    assert current_revision(engine) == head_revision()
    assert _keys_and_values(engine) == before
    engine.dispose()

    downgrade(empty_url, "0007")
    engine = create_engine(empty_url, pool_size=1)
    assert current_revision(engine) == "0007"
    assert _keys_and_values(engine) == before
    engine.dispose()
