"""Simulated decisions with learning per second, in-process, against bare VW on the same examples.

Run: `.venv/bin/python benchmarks/simulator_throughput.py [--decisions N] [--repeat R]`

1. **Simulator**: `run_simulation` of the demo experiment's epsilon-greedy bandit: every
   decision goes through `DecisionService` (consent, eligibility, caps, sticky split, VW
   predict, seeded draw, the decision row on SQLite), the world's ground-truth response,
   outcomes through `OutcomeService`, and an hourly (simulated) learner pass that closes
   rewards, learns and publishes snapshots. Wall time of the loop, first answer to last.
2. **Bare VW (baseline)**: a `vowpal_wabbit_next.Workspace` with the same arguments, fed the
   same decisions from the run's log (the same context and eligible arms, the logged chosen
   arm, propensity and closed reward): parse the text lines, `predict_one`, parse the
   labelled lines, `learn_one`. Nothing else.

Both are measured in the same process, one after the other; the ratio (simulator rate / bare
rate) is what the goal is stated in (>= 0.5). Best of `--repeat` runs of each.

With `--profile`, one more run under cProfile splits the simulator's time by component (the
decision path, outcomes, the learner pass, the simulator's own ground truth); cProfile slows
everything, so only the shares mean something.
"""

from __future__ import annotations

import argparse
import cProfile
import platform as host
import pstats
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import vowpal_wabbit_next as vw

from bandit_platform.domain.config import config_from_builtins, validate_config
from bandit_platform.features.context import arm_namespaces, context_namespaces
from bandit_platform.policies.vw_adapter import example_lines, model_arguments
from simulators.runner import SimulationConfig, run_simulation

GOAL = 0.5


def simulate(decisions: int, directory: Path) -> tuple[float, Path]:
    """Run the simulation; return (seconds of the decision loop, database path).

    The loop is timed from the first decision's answer to the last one's (the progress
    callback), so the one-off setup, the export and the closing learner pass after the last
    visit are left out; the hourly learner passes and every outcome during the run are in."""
    config = SimulationConfig(
        name="benchmark",
        seed=11,
        customers=max(2_000, decisions // 2),
        days=60,
        max_decisions=decisions,
    )
    marks: dict[int, float] = {}

    def progress(done: int, total: int) -> None:
        if done in (1, total):
            marks[done] = time.perf_counter()

    result = run_simulation(config, directory, progress=progress)
    assert result.decisions == decisions, result.decisions
    return marks[decisions] - marks[1], directory / "simulation.db"


def logged_examples(database: Path) -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """VW arguments and, per logged bandit decision, its unlabelled and labelled text lines."""
    connection = sqlite3.connect(database)
    try:
        (config_text,) = connection.execute("SELECT config FROM experiments").fetchone()
        compiled = validate_config(config_from_builtins(msgspec.json.decode(config_text)))
        rewards = dict(
            connection.execute("SELECT decision_id, reward FROM rewards WHERE horizon='primary'")
        )
        rows = connection.execute(
            "SELECT id, context, eligible, chosen_offer, chosen_variant, propensity "
            "FROM decisions WHERE reason = 'bandit' ORDER BY created_at"
        ).fetchall()
    finally:
        connection.close()
    examples: list[tuple[list[str], list[str]]] = []
    for decision_id, context, eligible, offer, variant, propensity in rows:
        keys: list[str] = msgspec.json.decode(eligible)
        chosen = keys.index("no_offer" if offer is None else f"{offer}/{variant}")
        shared = context_namespaces(msgspec.json.decode(context))
        actions = [arm_namespaces(compiled, key) for key in keys]
        reward = float(rewards.get(decision_id, 0.0))
        examples.append(
            (
                example_lines(shared, actions),
                example_lines(shared, actions, (chosen, -reward, float(propensity))),
            )
        )
    return model_arguments(compiled.config.explorer), examples


def bare_vw(arguments: list[str], examples: list[tuple[list[str], list[str]]]) -> float:
    """Seconds for VW alone to parse, predict and learn every example."""
    workspace = vw.Workspace(arguments)
    parser = vw.TextFormatParser(workspace)
    started = time.perf_counter()
    for unlabelled, labelled in examples:
        workspace.predict_one([parser.parse_line(line) for line in unlabelled])
        workspace.learn_one([parser.parse_line(line) for line in labelled])
    return time.perf_counter() - started


#: Components of a simulated decision, by the function whose cumulative time they are.
COMPONENTS = {
    "decision path (DecisionService.decide)": ("service/decisions.py", "decide"),
    "outcomes (OutcomeService.record)": ("service/outcomes.py", "record"),
    "learner passes (close rewards, learn, publish)": ("service/learner.py", "run_once"),
    "ground truth: expected rewards": ("simulators/response.py", "expected_reward"),
    "ground truth: sampled outcomes": ("simulators/response.py", "sample_outcomes"),
    "world: customer states and situations": ("simulators/world.py", "customer_states"),
    "export (Parquet + dsjson)": ("service/export.py", "export_log"),
}


def profile(decisions: int, directory: Path) -> list[tuple[str, float]]:
    """Share of the run's time spent in each component (cumulative, under cProfile)."""
    profiler = cProfile.Profile()
    profiler.enable()
    simulate(decisions, directory)
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = max(entry[3] for entry in raw.values())
    shares = []
    for label, (path, function) in COMPONENTS.items():
        spent = sum(
            entry[3]
            for (file, _, name), entry in raw.items()
            if file.endswith(path) and name == function
        )
        shares.append((label, spent / total))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also split the time by part")
    args = parser.parse_args()

    simulated: list[float] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(args.repeat):
            seconds, database = simulate(args.decisions, Path(scratch) / f"run-{attempt}")
            simulated.append(seconds)
        arguments, examples = logged_examples(database)
        bare = [bare_vw(arguments, examples) for _ in range(args.repeat)]
        shares = profile(args.decisions, Path(scratch) / "profiled") if args.profile else []
    sim_rate = (args.decisions - 1) / min(simulated)
    bare_rate = len(examples) / min(bare)
    results = {
        "simulated decisions": args.decisions,
        "of which bandit (VW) decisions": len(examples),
        "simulator, decisions/s (with learning)": f"{sim_rate:,.0f}",
        "bare VW predict+learn, examples/s": f"{bare_rate:,.0f}",
        "ratio simulator / bare VW": f"{sim_rate / bare_rate:.2f}",
        "goal": f">= {GOAL:.2f}",
    }
    print(f"# Simulator throughput, {time.strftime('%Y-%m-%d')}, {host.node()}")
    print(f"python {host.python_version()}, {host.machine()}, best of {args.repeat}")
    for name, value in results.items():
        print(f"{name:45s} {value}")
    if shares:
        print("\nshare of the simulator's time (cProfile, cumulative):")
        for label, share in shares:
            print(f"  {label:50s} {100 * share:5.1f}%")


if __name__ == "__main__":
    main()
