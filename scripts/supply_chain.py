"""Judges the supply-chain checks of `scripts/audit.sh` (standard library only).

    python scripts/supply_chain.py vulnerabilities PIP_AUDIT_JSON IGNORE_FILE
    python scripts/supply_chain.py secrets SCAN_JSON BASELINE_JSON

`vulnerabilities` reads `pip-audit --format json` and fails (exit 1) on any known
vulnerability that the ignore file does not list with a reason and an expiry date still in the
future; an expired or malformed entry fails too. Dependencies the vulnerability service could
not look up are listed; they fail the check only with `BANDIT_AUDIT_REQUIRE_ALL=1`.

`secrets` compares a `detect-secrets scan` with the reviewed baseline and fails on every
finding that the baseline does not hold (same file, type and hashed secret).

Ignore file lines: `<vulnerability id> <YYYY-MM-DD expiry> <reason>`; `#` starts a comment.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Ignore:
    """A known vulnerability accepted until `expires`, for `reason`."""

    vulnerability: str
    expires: date
    reason: str


def parse_ignores(text: str) -> tuple[dict[str, Ignore], list[str]]:
    """The ignore entries by vulnerability id, and the problems of malformed lines."""
    entries: dict[str, Ignore] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3:
            problems.append(f"line {number}: expected '<id> <YYYY-MM-DD> <reason>': {raw!r}")
            continue
        vulnerability, expiry, reason = parts
        try:
            expires = date.fromisoformat(expiry)
        except ValueError:
            problems.append(f"line {number}: {expiry!r} is not a date (YYYY-MM-DD)")
            continue
        entries[vulnerability] = Ignore(vulnerability, expires, reason.strip())
    return entries, problems


def _version_in(reason: str) -> str:
    """pip-audit names a skipped distribution's version only in its reason: `name (1.2)`."""
    match = re.search(r"\(([^()]+)\)\s*$", reason)
    return match.group(1) if match else "?"


def judge_vulnerabilities(
    report: dict[str, Any], ignores: dict[str, Ignore], today: date, *, require_all: bool
) -> tuple[list[str], list[str]]:
    """(failures, notes) for a pip-audit JSON report."""
    failures: list[str] = []
    notes: list[str] = []
    audited = 0
    unaudited: list[str] = []
    for dependency in report.get("dependencies", []):
        reason = dependency.get("skip_reason")
        version = dependency.get("version") or _version_in(reason or "")
        name = f"{dependency['name']} {version}"
        if reason is not None:
            if "editable" not in reason:  # the project itself is installed editable
                unaudited.append(name)
            continue
        audited += 1
        for vulnerability in dependency.get("vulns", []):
            ids = [vulnerability["id"], *vulnerability.get("aliases", [])]
            fixed = ", ".join(vulnerability.get("fix_versions", [])) or "no fixed version"
            entry = next((ignores[i] for i in ids if i in ignores), None)
            if entry is None:
                failures.append(f"{name}: {vulnerability['id']} (fixed in {fixed})")
            elif entry.expires < today:
                failures.append(
                    f"{name}: {vulnerability['id']} ignored until {entry.expires}, which has "
                    f"passed ({entry.reason})"
                )
            else:
                notes.append(
                    f"{name}: {vulnerability['id']} accepted until {entry.expires}: {entry.reason}"
                )
    notes.insert(0, f"{audited} installed distributions looked up in the vulnerability service")
    if unaudited and audited == 0:
        notes.append(
            "WARNING: the vulnerability service knew none of the installed distributions; "
            "this machine's package index does not serve vulnerability data, so NO "
            "dependency was checked for known vulnerabilities in this run"
        )
    if unaudited:
        message = (
            f"{len(unaudited)} distributions could not be looked up (not known to the "
            f"service at these versions): {', '.join(unaudited)}"
        )
        (failures if require_all else notes).append(message)
    return failures, notes


def _secret_keys(results: dict[str, list[dict[str, Any]]]) -> set[tuple[str, str, str]]:
    return {
        (filename, secret["type"], secret["hashed_secret"])
        for filename, secrets in results.items()
        for secret in secrets
    }


def new_secrets(scan: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Findings of the scan that the baseline does not hold, as `file:line type`."""
    known = _secret_keys(baseline.get("results", {}))
    found: list[str] = []
    for filename, secrets in sorted(scan.get("results", {}).items()):
        for secret in secrets:
            if (filename, secret["type"], secret["hashed_secret"]) not in known:
                found.append(f"{filename}:{secret.get('line_number', '?')} {secret['type']}")
    return found


def _load(path: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(Path(path).read_text())
    return loaded


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in {"vulnerabilities", "secrets"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, first, second = argv
    if command == "vulnerabilities":
        ignore_path = Path(second)
        ignores, problems = parse_ignores(ignore_path.read_text() if ignore_path.exists() else "")
        failures, notes = judge_vulnerabilities(
            _load(first),
            ignores,
            datetime.now(UTC).date(),
            require_all=os.environ.get("BANDIT_AUDIT_REQUIRE_ALL") == "1",
        )
        failures = [f"{ignore_path}: {p}" for p in problems] + failures
        for note in notes:
            print(f"  {note}")
        for failure in failures:
            print(f"  FAIL {failure}")
        print(f"  {len(ignores)} accepted vulnerabilities listed in {ignore_path}")
        return 1 if failures else 0
    scan = _load(first)
    found = new_secrets(scan, _load(second))
    files = len(scan.get("results", {}))
    if not found:
        print(f"  {files} files with findings, all reviewed in {second}")
    for finding in found:
        print(f"  FAIL possible secret not in {second}: {finding}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
