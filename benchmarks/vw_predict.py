"""Vowpal Wabbit's share of a decision: the adapter's predict against a fresh parse of every line.

Run: `.venv/bin/python benchmarks/vw_predict.py [--decisions N] [--repeat R] [--explorer NAME]`

Both paths score the demo experiment's arms for the same realistic contexts (customers of the
simulator's world, validated against the demo's allow-list, with a random eligible subset of
about ten of its thirteen arms per decision) on the same trained model:

- **old**: the public API (kept here as `reference_predict`): build every text line, parse each
  through `vowpal_wabbit_next`'s public `TextFormatParser`, `Workspace.predict_one`.
- **new**: `ContextualBanditModel.predict`: every line parsed and predicted through VW's core,
  without the wrapper's label-type lookups, under the model's lock.

Each path runs all decisions in turn, the two interleaved, best of `--repeat` runs. The
per-decision time includes building the text lines and mapping VW's scores back to the arms,
i.e. everything the adapter adds to a decision. The probability vectors of the two paths must be
equal, bit for bit. The script also times the pieces of the new path (line building, the shared
parse, the lock) on the same data.
"""

from __future__ import annotations

import argparse
import datetime
import platform as host
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import cast

import vowpal_wabbit_next as vw
from vowpal_wabbit_next import _core

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import (
    RND,
    Bagging,
    Cover,
    EpsilonGreedy,
    Explorer,
    Softmax,
    SquareCB,
    SynthCover,
    validate_config,
)
from bandit_platform.features.context import (
    Namespaces,
    arm_namespaces,
    context_namespaces,
    validate_context,
)
from bandit_platform.policies.vw_adapter import (
    ContextualBanditModel,
    _line,
    _without_random_seed,
    example_lines,
    model_arguments,
)
from simulators.population import TRIGGERS
from simulators.world import World

EXPLORERS: dict[str, Explorer] = {
    "epsilon": EpsilonGreedy(),
    "softmax": Softmax(),
    "squarecb": SquareCB(),
    "bag": Bagging(),
    "cover": Cover(),
    "rnd": RND(),
    "synthcover": SynthCover(),
}


def reference_predict(
    workspace: vw.Workspace,
    parser: vw.TextFormatParser,
    shared: Namespaces,
    actions: Sequence[Namespaces],
) -> list[float]:
    """The adapter's predict before the cache: every line parsed by the public API."""
    lines = example_lines(shared, actions)
    scores = workspace.predict_one([parser.parse_line(line) for line in lines])
    probabilities = [0.0] * len(actions)
    for index, probability in cast(list[tuple[int, float]], scores):
        probabilities[int(index)] = float(probability)
    return probabilities


def decisions(n: int, seed: int) -> list[tuple[Namespaces, list[Namespaces]]]:
    """Realistic decisions: (shared namespaces, eligible arms' namespaces)."""
    experiment = validate_config(demo_config())
    arms = [arm_namespaces(experiment, arm.key) for arm in experiment.arms]
    world = World(2_000, seed=seed, days=60)
    rng = random.Random(seed)
    result = []
    for _ in range(n):
        customer = world.customer_state(rng.randrange(2_000), rng.randrange(60))
        context = validate_context(customer.context(rng.choice(TRIGGERS)), experiment)
        eligible = [*rng.sample(arms[:-1], rng.randint(8, 12)), arms[-1]]  # no_offer always
        result.append((context_namespaces(context.values), eligible))
    return result


def trained(explorer: Explorer, data: list[tuple[Namespaces, list[Namespaces]]]) -> bytes:
    """Model bytes after learning one pass over the decisions with random rewards."""
    model = ContextualBanditModel(model_arguments(explorer, seed=3))
    rng = random.Random(5)
    for shared, actions in data:
        chosen = rng.randrange(len(actions))
        model.learn(shared, actions, chosen, float(rng.random() < 0.2), 1.0 / len(actions))
    return model.serialize()


def timed(run: Callable[[int], object], n: int, results: list[float]) -> Callable[[], None]:
    """One pass over the n decisions, appending the microseconds per call to `results`."""

    def once() -> None:
        started = time.perf_counter()
        for i in range(n):
            run(i)
        results.append((time.perf_counter() - started) / n * 1e6)

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--explorer", choices=sorted(EXPLORERS), default="epsilon")
    args = parser.parse_args()

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"date:    {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = f"{len(names)} x {names[0]}" if names else host.processor()
    print(
        f"machine: {host.machine()}, {cpu}, Python {host.python_version()}, "
        f"vowpal-wabbit-next {metadata.version('vowpal-wabbit-next')}"
    )

    explorer = EXPLORERS[args.explorer]
    data = decisions(args.decisions, seed=11)
    arms = sum(len(actions) for _, actions in data) / len(data)
    print(f"explorer {args.explorer}, {len(data)} decisions, {arms:.1f} arms per decision")
    model_data = trained(explorer, data)
    arguments = model_arguments(explorer, seed=3)
    # Two loads of the same bytes: each path has its own workspace, in the same state.
    old_model = vw.Workspace(_without_random_seed(arguments), model_data=model_data)
    old_parser = vw.TextFormatParser(old_model)
    new_model = ContextualBanditModel(arguments, model_data=model_data)

    old = [reference_predict(old_model, old_parser, shared, actions) for shared, actions in data]
    new = [new_model.predict(shared, actions) for shared, actions in data]
    agree = old == new
    print(f"predictions identical (bit for bit): {agree}")

    timings: dict[str, list[float]] = {
        name: []
        for name in ("old", "new", "lines", "shared line", "shared parse", "predict", "lock")
    }
    core = new_model._core
    lock = threading.Lock()
    shared_lines = [_line(shared, "shared") for shared, _ in data]

    with new_model._lock:
        parsed = [new_model._examples(shared, actions) for shared, actions in data]

    def with_lock(i: int) -> None:
        with lock:
            pass

    runs = [
        timed(
            lambda i: reference_predict(old_model, old_parser, *data[i]), len(data), timings["old"]
        ),
        timed(lambda i: new_model.predict(*data[i]), len(data), timings["new"]),
        timed(lambda i: example_lines(*data[i]), len(data), timings["lines"]),
        timed(lambda i: _line(data[i][0], "shared"), len(data), timings["shared line"]),
        timed(
            lambda i: _core._parse_line_text(core, shared_lines[i]),
            len(data),
            timings["shared parse"],
        ),
        timed(lambda i: core.predict_multi_ex_one(parsed[i]), len(data), timings["predict"]),
        timed(with_lock, len(data), timings["lock"]),
    ]
    for _ in range(args.repeat):
        for run in runs:
            run()

    best = {name: min(values) for name, values in timings.items()}
    print(f"\nper decision, best of {args.repeat} (us):")
    print(f"  old path (fresh parse of every line, public API) {best['old']:8.1f}")
    print(f"  new path (ContextualBanditModel.predict)          {best['new']:8.1f}")
    print(f"  ratio new/old                                     {best['new'] / best['old']:8.2f}")
    print("pieces, for reference:")
    print(f"  building all text lines (example_lines)           {best['lines']:8.1f}")
    print(f"  building the shared line                          {best['shared line']:8.1f}")
    print(f"  parsing the shared line (VW core)                 {best['shared parse']:8.1f}")
    print(f"  VW predict alone (every example already parsed)   {best['predict']:8.1f}")
    vw_share = best["new"] - best["lines"]
    print(f"  new path minus building the lines (VW's share)    {vw_share:8.1f}")
    print(f"  an uncontended lock acquire + release             {best['lock']:8.2f}")
    if not agree:
        raise SystemExit("the paths' predictions differ")


if __name__ == "__main__":
    main()
