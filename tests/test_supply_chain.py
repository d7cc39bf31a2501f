"""The supply-chain checks of `scripts/audit.sh`: how vulnerability reports are judged against
`.audit-ignore`, and the secrets scan against `.secrets.baseline` (offline: no PyPI)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _supply_chain() -> ModuleType:
    spec = importlib.util.spec_from_file_location("supply_chain", REPO / "scripts/supply_chain.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


sc = _supply_chain()
TODAY = date(2026, 11, 30)


def _report(*dependencies: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(dependencies), "fixes": []}


def _vulnerable(name: str, vuln: str, aliases: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0",
        "vulns": [{"id": vuln, "aliases": aliases or [], "fix_versions": ["1.1"]}],
    }


def test_a_known_vulnerability_fails_unless_accepted_until_a_future_date() -> None:
    report = _report(_vulnerable("jinja2", "PYSEC-2026-1", ["CVE-2026-11"]), {"name": "ok"})
    failures, _ = sc.judge_vulnerabilities(report, {}, TODAY, require_all=False)
    assert failures == ["jinja2 1.0: PYSEC-2026-1 (fixed in 1.1)"]

    ignores, problems = sc.parse_ignores("CVE-2026-11 2026-12-31 no fix reachable from litestar\n")
    assert problems == []
    failures, notes = sc.judge_vulnerabilities(report, ignores, TODAY, require_all=False)
    assert failures == []
    assert any("accepted until 2026-12-31: no fix reachable" in n for n in notes)

    expired, _ = sc.parse_ignores("PYSEC-2026-1 2026-11-29 waiting for upstream")
    failures, _ = sc.judge_vulnerabilities(report, expired, TODAY, require_all=False)
    assert len(failures) == 1
    assert "has passed" in failures[0]


def test_ignore_entries_need_an_expiry_date_and_a_reason() -> None:
    ignores, problems = sc.parse_ignores(
        "# a comment\n\nPYSEC-1 2026-12-01\nPYSEC-2 soon because\nPYSEC-3 2027-01-01 fine # why\n"
    )
    assert list(ignores) == ["PYSEC-3"]
    assert ignores["PYSEC-3"].reason == "fine"
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4"]


def test_distributions_the_service_does_not_know_are_listed_or_fail_when_required() -> None:
    report = _report(
        {"name": "numpy", "skip_reason": "Dependency not found on PyPI: numpy (2.4.6)"},
        {"name": "bandit-platform", "skip_reason": "distribution marked as editable"},
        {"name": "httpx", "version": "0.28.1", "vulns": []},
    )
    failures, notes = sc.judge_vulnerabilities(report, {}, TODAY, require_all=False)
    assert failures == []
    assert notes[0].startswith("1 installed distributions looked up")
    assert "numpy 2.4.6" in notes[1]
    assert "bandit-platform" not in notes[1]
    failures, _ = sc.judge_vulnerabilities(report, {}, TODAY, require_all=True)
    assert len(failures) == 1
    assert "numpy 2.4.6" in failures[0]


def test_the_committed_baseline_holds_only_reviewed_false_positives_of_existing_files() -> None:
    baseline = json.loads((REPO / ".secrets.baseline").read_text())
    assert baseline["results"], "the baseline is expected to hold the reviewed test fixtures"
    for filename, secrets in baseline["results"].items():
        assert (REPO / filename).is_file(), filename
        assert all(s["is_secret"] is False for s in secrets), filename


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_secrets_scan_fails_when_a_new_secret_appears(tmp_path: Path) -> None:
    """A copy of the files the baseline names passes; a planted AWS-style key fails it."""
    copy = tmp_path / "repo"
    baseline = json.loads((REPO / ".secrets.baseline").read_text())
    for relative in [*baseline["results"], "scripts/audit.sh", "scripts/supply_chain.py"]:
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, copy / relative)
    shutil.copy(REPO / ".secrets.baseline", copy / ".secrets.baseline")
    (copy / ".venv").symlink_to(REPO / ".venv")
    (copy / ".gitignore").write_text(".venv\n")
    _git(copy, "init", "-q")
    _git(copy, "add", "-A")

    def scan() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/audit.sh", "--secrets-only"],
            cwd=copy,
            capture_output=True,
            text=True,
            timeout=300,
        )

    clean = scan()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "all reviewed in .secrets.baseline" in clean.stdout

    # Split so that this file itself holds no key-shaped string.
    access_key = "AKIA" + "J7TQ2MZX4VBN8KLP"
    (copy / "bandit_platform").mkdir(exist_ok=True)
    (copy / "bandit_platform/cloud.py").write_text(f'STORAGE_KEY_ID = "{access_key}"\n')
    _git(copy, "add", "-A")
    planted = scan()
    assert planted.returncode == 1, planted.stdout + planted.stderr
    assert "bandit_platform/cloud.py:1 AWS Access Key" in planted.stdout
