"""Alembic environment: runs migrations on the connection the platform hands over."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from bandit_platform.storage.database import create_engine
from bandit_platform.storage.tables import SQLModel

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "", pool_size=1)
    with engine.begin() as own_connection:
        _run(own_connection)
    engine.dispose()


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; pass a database URL")
run_migrations()
