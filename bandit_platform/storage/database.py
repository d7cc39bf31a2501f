"""Engines, durability settings and migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

#: The Alembic scripts: the top-level `alembic/` folder of the source tree.
MIGRATIONS = Path(__file__).resolve().parents[2] / "alembic"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs given in the common `postgresql://` form."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_connect(
    dbapi_connection: Any, _record: Any, *, foreign_keys: bool, durable: bool = True
) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own handling defers it).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; synchronous=FULL fsyncs the WAL on every commit,
    # so an answered decision survives a power cut, not only a process kill.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
    cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Freed space is overwritten with zeros, so that a context erased by a consent withdrawal
    # does not linger in the file's free pages (docs/privacy.md).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


#: Execution option of a read-only engine view: its SQLite transactions take no write lock.
READ_ONLY = "bandit_read_only"


def _sqlite_begin(connection: sa.Connection) -> None:
    # Writers take the write lock at the start of the transaction, so that read-check-write
    # sequences (frequency caps, idempotency) are serialised across threads and processes;
    # readers (a view made with `read_only`) begin deferred and never block a writer in WAL.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def read_only(engine: sa.Engine) -> sa.Engine:
    """A view of the engine for sessions that only read (same pool)."""
    return engine.execution_options(**{READ_ONLY: True})


def create_engine(
    url: str, *, pool_size: int = 10, foreign_keys: bool = True, durable: bool = True
) -> sa.Engine:
    """An engine with the platform's durability settings for the URL's database.

    `foreign_keys=False` is for SQLite migrations only: rebuilding a table that other tables
    reference is impossible with the checks on; `_migrate` checks the keys afterwards.
    `durable=False` skips SQLite's fsync on commit: for offline simulations only, never for
    a service that answers.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            hide_parameters=True,
        )
        on_connect = functools.partial(_sqlite_connect, foreign_keys=foreign_keys, durable=durable)
        sa.event.listen(engine, "connect", on_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    # hide_parameters: a logged database error never shows customer keys or context values.
    return sa.create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True
    )


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the URL, without an ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def _migrate(url: str, step: Callable[[Config], None]) -> None:
    engine = create_engine(url, pool_size=1, foreign_keys=False)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            step(config)
            if connection.dialect.name == "sqlite":
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (creating it if it is a new SQLite file)."""
    _migrate(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision`."""
    _migrate(url, lambda config: command.downgrade(config, revision))


def head_revision() -> str:
    """The single head of the migration scripts."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
