#!/usr/bin/env bash
# One command: install everything, then run the linters, the type checker and the whole test
# suite. PostgreSQL tests run when TEST_DATABASE_URL is set
# (e.g. postgresql://postgres@127.0.0.1:5432/test); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== pytest"
# One BLAS thread per test worker: the workers already use every core, and multi-threaded
# BLAS on small matrices only adds contention.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
exec .venv/bin/pytest -n "${PYTEST_WORKERS:-2}" "$@"
