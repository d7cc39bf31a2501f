#!/usr/bin/env bash
# Installs everything the project needs into ./.venv from pyproject.toml and uv.lock.
# Needs only Python 3.11+ and network access to PyPI. Safe to run again: it is quick when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
UV_VERSION="0.13.8"

if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/" >&2
  "$PYTHON" -m venv .tools
  .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

export UV_PYTHON_DOWNLOADS=never
.tools/bin/uv sync --frozen --python "$PYTHON" --quiet
