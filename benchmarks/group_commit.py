"""Group commit against one transaction per decision, in-process, on SQLite and PostgreSQL.

Run:

    .venv/bin/python benchmarks/group_commit.py [--threads 8] [--decisions 300]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

For each database (a fresh SQLite file with `synchronous=FULL`, and a PostgreSQL database
created for the run and dropped at its end when `--postgres` is given) and each setting of
`group_commit`, the demo experiment is set up on a fresh database and `--threads` threads each
make `--decisions` decisions through `DecisionService.decide` (new customers, the example
context). Prints decisions/s and database commits per decision (counted with an engine event).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bandit_platform.cli import setup_demo
from bandit_platform.domain.access import AppIdentity
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionRequest, DecisionService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage.database import normalise_url, upgrade

CONTEXT: dict[str, dict[str, object]] = {
    "profile": {
        "products_held": ["checking"],
        "credit_score_band": "good",
        "income_band": "middle",
    },
    "cash_flow": {"balance": 2500.0},
    "trigger": {"event": "paycheck_deposit"},
}


def measure(url: str, group_commit: bool, threads: int, decisions: int) -> tuple[float, float]:
    upgrade(url)
    settings = Settings(
        database_url=url,
        pseudonym_key=b"benchmark-pseudonym-key-0123456789",  # pragma: allowlist secret
        group_commit=group_commit,
    )
    platform = Platform(settings)
    try:
        secret, _ = setup_demo(platform)
        app = ApiKeyService(platform).verify(secret)
        assert app is not None
        service = DecisionService(platform)
        commits = [0]
        lock = threading.Lock()

        def count(_: Any) -> None:
            with lock:
                commits[0] += 1

        def play(thread: int, identity: AppIdentity) -> None:
            for index in range(decisions):
                service.decide(
                    DecisionRequest(
                        experiment="banking-offers-demo",
                        customer_id=f"bench-{thread}-{index}",
                        context=CONTEXT,
                        surface="home_feed",
                        consent=True,
                    ),
                    identity,
                )

        play(-1, app)  # warm up: the model and the compiled configuration are loaded
        sa.event.listen(platform.engine, "commit", count)
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(play, t, app) for t in range(threads)]:
                future.result()
        elapsed = time.perf_counter() - started
        sa.event.remove(platform.engine, "commit", count)
    finally:
        platform.close()
    total = threads * decisions
    return total / elapsed, commits[0] / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--decisions", type=int, default=300, help="per thread")
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server (optional)")
    args = parser.parse_args()

    databases: list[tuple[str, bool, str]] = []
    admin: sa.Engine | None = None
    with tempfile.TemporaryDirectory() as folder:
        for group_commit in (False, True):
            path = Path(folder) / f"bench-{group_commit}.db"
            databases.append(("sqlite", group_commit, f"sqlite:///{path}"))
        names: list[str] = []
        if args.postgres:
            admin = sa.create_engine(normalise_url(args.postgres), isolation_level="AUTOCOMMIT")
            for group_commit in (False, True):
                name = f"bench_group_commit_{uuid.uuid4().hex[:8]}"
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                names.append(name)
                pg_url = sa.make_url(normalise_url(args.postgres)).set(database=name)
                databases.append(
                    ("postgresql", group_commit, pg_url.render_as_string(hide_password=False))
                )
        try:
            for database, group_commit, url in databases:
                rate, per = measure(url, group_commit, args.threads, args.decisions)
                print(
                    f"{database:10} group_commit={group_commit!s:5} {rate:8.0f} decisions/s "
                    f"{per:6.3f} commits/decision"
                )
        finally:
            if admin is not None:
                with admin.connect() as connection:
                    for name in names:
                        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.dispose()


if __name__ == "__main__":
    main()
