#!/usr/bin/env bash
# Supply-chain checks, after the tests (`.ci/run`); needs only ./.venv and access to PyPI.
#   1. pip-audit: every distribution installed in ./.venv (the locked dependencies) against
#      PyPI's vulnerability data; a known vulnerability fails unless `.audit-ignore` accepts it
#      with a reason and an expiry date that has not passed.
#   2. detect-secrets: the files git tracks, against the reviewed false positives in
#      `.secrets.baseline`; any other finding fails.
# `--secrets-only` runs the second check alone (offline).
# Refresh the baseline after reviewing a new false positive:
#   .venv/bin/detect-secrets scan -n --exclude-files "<EXCLUDE below>" > .secrets.baseline
# then mark the reviewed entries `"is_secret": false`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Generated study output (numbers only), the lock file (hashes) and images.
EXCLUDE='^experiments/.*/results\.json$|^uv\.lock$|\.(png|jpg|ico)$|^\.secrets\.baseline$'
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
started=$SECONDS

if [ "${1:-}" != "--secrets-only" ]; then
  echo "== pip-audit: installed distributions in .venv against the PyPI vulnerability service"
  # Exit status 1 means vulnerabilities were found; they are judged below with the ignore file.
  .venv/bin/pip-audit --vulnerability-service pypi --skip-editable --progress-spinner off \
    --desc off --timeout 15 --format json --output "$work/audit.json" >"$work/audit.log" 2>&1 || true
  if [ ! -s "$work/audit.json" ]; then
    cat "$work/audit.log"
    echo "  FAIL pip-audit did not produce a report"
    status=1
  else
    .venv/bin/python scripts/supply_chain.py vulnerabilities "$work/audit.json" .audit-ignore \
      || status=1
  fi
fi

echo "== detect-secrets: tracked files against .secrets.baseline"
echo "  $(git ls-files | grep -Evc "$EXCLUDE") tracked files scanned (excluded: $EXCLUDE)"
.venv/bin/detect-secrets scan -n --exclude-files "$EXCLUDE" >"$work/secrets.json"
.venv/bin/python scripts/supply_chain.py secrets "$work/secrets.json" .secrets.baseline || status=1

echo "== supply chain: $([ "$status" = 0 ] && echo ok || echo FAILED) in $((SECONDS - started)) s"
exit "$status"
