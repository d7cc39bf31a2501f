"""Simulation studies run from the web UI: an exploration-planning what-if for an experiment.

A job writes a study file built from a template and the experiment's traffic split, runs
`bandit-platform study FILE --scale S --workers 1 --out DIR` in a subprocess (one job at a
time per process), and leaves `report.md`, `results.json` and the SVG charts in its folder
under the jobs directory (beside an SQLite database, else the system's temporary folder;
never in the repository).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy.engine import make_url

from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound

#: A job's state.
JobState = Literal["running", "done", "failed"]
#: Job ids are 16 hex characters.
_JOB_ID: Final = re.compile(r"^[0-9a-f]{16}$")
#: Files of a finished job the UI may serve.
_SERVED: Final = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,60}\.svg$")
#: Customers of the full-size planning study (`experiments/planning/study.toml`: ~0.5 visits
#: per customer and day).
_PLANNING_CUSTOMERS: Final = 1000


@dataclass(frozen=True)
class StudyTemplate:
    """A study the UI offers.

    Attributes:
        key: identifier in forms and folders.
        title: what the page calls it.
        epsilons: the exploration rates compared (one arm each, epsilon-greedy).
        seeds: the seeds every arm runs with.
        weeks: the week cuts at which the lift interval is reported.
        scale: multiplies customers and decisions of the full-size study.
        days: simulated days.
        learn_every_hours: how often the simulated learner publishes a model (fewer passes
            run faster; the full study learns hourly).
    """

    key: str
    title: str
    epsilons: tuple[float, ...]
    seeds: tuple[int, ...]
    weeks: tuple[float, ...]
    scale: float
    days: int = 56
    learn_every_hours: float = 1.0

    def runs(self) -> int:
        """Simulations in the study (arms x seeds)."""
        return len(self.epsilons) * len(self.seeds)


TEMPLATES: Final = {
    t.key: t
    for t in (
        StudyTemplate(
            key="planning-quick",
            title=(
                "Exploration planning, quick look: 2 rates, 2 seeds, 3 weeks at 2% of the "
                "traffic, a model every 12 hours (about half a minute)"
            ),
            epsilons=(0.05, 0.2),
            seeds=(1, 2),
            weeks=(1.0, 2.0),
            scale=0.02,
            days=21,
            learn_every_hours=12.0,
        ),
        StudyTemplate(
            key="planning",
            title=(
                "Exploration planning: 5 rates, 2 seeds, 8 weeks at 5% of the traffic, a model "
                "every 6 hours (a few minutes)"
            ),
            epsilons=(0.02, 0.05, 0.1, 0.2, 0.4),
            seeds=(1, 2),
            weeks=(1.0, 2.0, 4.0, 8.0),
            scale=0.05,
            days=56,
            learn_every_hours=6.0,
        ),
    )
}


@dataclass(frozen=True)
class StudyJob:
    """A study job as the UI shows it.

    Attributes:
        id: the job's id (a folder name).
        experiment: the experiment whose traffic split the study used.
        template: the template's key.
        state: `running`, `done` or `failed`.
        started_at: when it started.
        seconds: how long it ran (so far).
        traffic: the holdout / A-B / bandit percentages simulated.
        log_tail: the last lines of its output (progress, or the error).
    """

    id: str
    experiment: str
    template: str
    state: JobState
    started_at: datetime
    seconds: float
    traffic: dict[str, int]
    log_tail: str


def jobs_directory(database_url: str) -> Path:
    """Where jobs live: `studies/` beside an SQLite database file, else a temporary folder."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "studies"
    return Path(tempfile.gettempdir()) / "bandit-platform-studies"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def study_toml(template: StudyTemplate, experiment: str, traffic: dict[str, int]) -> str:
    """The study file of `template` with the experiment's traffic split."""
    lines = [
        f"# Exploration planning for {experiment}, from the web UI.",
        'name = "planning"',
        'kind = "planning"',
        "question = "
        + json.dumps(
            f"With {experiment}'s split ({traffic['holdout']}% holdout, {traffic['ab']}% A-B, "
            f"{traffic['bandit']}% bandit): for each exploration rate, how much reward does "
            "exploring cost per 1,000 decisions, and how wide is the 95% interval of the lift "
            "over the holdout after each week cut?"
        ),
        f"seeds = {_toml_value(template.seeds)}",
        f"weeks = {_toml_value(template.weeks)}",
        "checkpoints = [10000, 25000]",
        "",
        "[run]",
        f"customers = {_PLANNING_CUSTOMERS}",
        f"days = {template.days}",
        f"learn_every_hours = {template.learn_every_hours!r}",
        f"traffic = {_toml_value(traffic)}",
    ]
    for epsilon in template.epsilons:
        policy = {"kind": "bandit", "explorer": {"kind": "epsilon_greedy", "epsilon": epsilon}}
        lines += [
            "",
            "[[arms]]",
            f'label = "epsilon {epsilon:g}"',
            f"policy = {_toml_value(policy)}",
        ]
    return "\n".join(lines) + "\n"


def planning_traffic(config: dict[str, Any]) -> dict[str, int]:
    """The experiment's split, or 10% holdout and 90% bandit when it has no holdout (the
    planning study measures the lift over the holdout)."""
    traffic = config.get("traffic") or {}
    split = {g: int(traffic.get(g, 0)) for g in ("holdout", "ab", "bandit")}
    if split["holdout"] <= 0 or split["bandit"] <= 0 or sum(split.values()) != 100:
        return {"holdout": 10, "ab": 0, "bandit": 90}
    return split


class StudyRunner:
    """Starts study jobs (one at a time) and reports on them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._running: subprocess.Popen[bytes] | None = None

    def start(
        self, experiment: str, config: dict[str, Any], template_key: str, actor: str
    ) -> StudyJob:
        """Start `template_key` for `experiment` (whose config gives the traffic split).

        Raises:
            InvalidInput: no such template.
            Conflict: a job is still running.
        """
        template = TEMPLATES.get(template_key)
        if template is None:
            raise InvalidInput("no such study template", field="template")
        with self._lock:
            if self._running is not None and self._running.poll() is None:
                raise Conflict("a study is running; wait until it finishes")
            job_id = secrets.token_hex(8)
            folder = self.directory / job_id
            folder.mkdir(parents=True)
            traffic = planning_traffic(config)
            (folder / "study.toml").write_text(study_toml(template, experiment, traffic))
            meta = {
                "experiment": experiment,
                "template": template.key,
                "traffic": traffic,
                "actor": actor,
                "started_at": datetime.now(UTC).isoformat(),
                "started": time.time(),
            }
            (folder / "job.json").write_text(json.dumps(meta))
            command = [
                sys.executable,
                "-m",
                "bandit_platform.cli",
                "study",
                str(folder / "study.toml"),
                "--workers",
                "1",
                "--scale",
                f"{template.scale:g}",
                "--out",
                str(folder / "out"),
            ]
            log = (folder / "log.txt").open("wb")
            process = subprocess.Popen(  # noqa: S603 - a fixed command, no shell
                command, stdout=log, stderr=subprocess.STDOUT, cwd=folder
            )
            log.close()
            self._running = process
            threading.Thread(target=self._wait, args=(process, folder), daemon=True).start()
        return self.job(job_id)

    @staticmethod
    def _wait(process: subprocess.Popen[bytes], folder: Path) -> None:
        code = process.wait()
        (folder / "exit.json").write_text(json.dumps({"code": code, "ended": time.time()}))

    def _folder(self, job_id: str) -> Path:
        folder = self.directory / job_id
        if not _JOB_ID.match(job_id) or not (folder / "job.json").is_file():
            raise NotFound("no such study job", field="job")
        return folder

    def job(self, job_id: str) -> StudyJob:
        """The job's state.

        Raises:
            NotFound: no such job.
        """
        folder = self._folder(job_id)
        meta = json.loads((folder / "job.json").read_text())
        ended = folder / "exit.json"
        state: JobState = "running"
        end = time.time()
        if ended.is_file():
            exit_ = json.loads(ended.read_text())
            end = float(exit_["ended"])
            ok = exit_["code"] == 0 and (folder / "out" / "report.md").is_file()
            state = "done" if ok else "failed"
        log = (
            (folder / "log.txt").read_text(errors="replace")
            if (folder / "log.txt").exists()
            else ""
        )
        return StudyJob(
            id=job_id,
            experiment=str(meta["experiment"]),
            template=str(meta["template"]),
            state=state,
            started_at=datetime.fromisoformat(meta["started_at"]),
            seconds=max(0.0, end - float(meta["started"])),
            traffic=dict(meta["traffic"]),
            log_tail="\n".join(log.strip().splitlines()[-8:]),
        )

    def jobs(self) -> list[StudyJob]:
        """Every job, newest first."""
        if not self.directory.is_dir():
            return []
        found = [self.job(p.name) for p in self.directory.iterdir() if _JOB_ID.match(p.name)]
        return sorted(found, key=lambda j: j.started_at, reverse=True)

    def report(self, job_id: str) -> str:
        """The finished job's `report.md`.

        Raises:
            NotFound: no such job, or it has no report (yet).
        """
        path = self._folder(job_id) / "out" / "report.md"
        if not path.is_file():
            raise NotFound("this study has no report yet", field="job")
        return path.read_text()

    def chart(self, job_id: str, name: str) -> Path:
        """The path of one SVG chart of a finished job.

        Raises:
            NotFound: no such job or chart.
        """
        path = self._folder(job_id) / "out" / name
        if not _SERVED.match(name) or not path.is_file():
            raise NotFound("no such chart", field="name")
        return path


__all__ = [
    "TEMPLATES",
    "StudyJob",
    "StudyRunner",
    "StudyTemplate",
    "jobs_directory",
    "planning_traffic",
    "study_toml",
]
