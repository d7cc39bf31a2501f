"""Off-policy evaluation at scale: IPS + SNIPS + DR with normal intervals on a 10M-row log.

Run: `.venv/bin/python benchmarks/ope_scale.py [--rows 10000000] [--repeat 3] [--json out.json]`

A seeded synthetic log (reward, logged propensity, target probability, q_logged, q_target) is
written to a temporary directory as Parquet (and as `.npy` arrays for the in-memory paths).
Each path then runs in a fresh subprocess, so that its peak memory (`ru_maxrss` of the child)
is its own:

1. **numpy (baseline)**: a plain numpy implementation on arrays already in memory
   (`np.load` of the arrays is outside the timer): weights, IPS terms, SNIPS's delta-method
   terms and DR terms, their means and standard deviations, ESS and the largest weight.
2. **aggregate (Parquet)**: `aggregate.ope_moments` on `pl.scan_parquet` of the log with the
   streaming engine, then `estimates_from_moments`: the whole path, reading the file included.
3. **ope.py (in memory)**: `ope.ips`, `ope.snips`, `ope.dr` (normal intervals) on the arrays
   already in memory, with their validation and diagnostics (skip with `--no-ope`).

Wall time is the best of `--repeat` runs in the child. Peak memory is the child's
`ru_maxrss`; the child's RSS after its imports (before touching the data) is reported too, and
the difference is what the path itself added. The estimates of every path must agree with the
baseline's to 1e-9 (relative). Goals: time <= 2x numpy, and the Parquet path's peak <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import platform as host
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from polars._typing import ParquetCompression

FloatArray = npt.NDArray[np.float64]
COLUMNS = ("reward", "propensity", "target", "q_logged", "q_target")
ESTIMATORS = ("IPS", "SNIPS", "DR")
#: Goals of the performance issue.
TIME_RATIO_GOAL = 2.0
PEAK_MB_GOAL = 500.0
#: Relative agreement of the estimates of every path with the baseline's.
AGREEMENT = 1e-9
Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975), so the baseline imports numpy only


def generate(rows: int, seed: int, directory: Path, compression: str) -> None:
    """Write the synthetic log as `log.parquet` and one `<column>.npy` per column.

    Five offers; the logging policy plays a random offer with propensity p in [0.1, 1]; the
    target policy gives it probability pi in [0, 1]; the reward is Bernoulli with a mean that
    depends on the decision; the reward model is that mean plus noise.
    """
    import polars as pl

    rng = np.random.default_rng(seed)
    propensity = rng.uniform(0.1, 1.0, rows)
    target = rng.uniform(0.0, 1.0, rows)
    mean = rng.uniform(0.05, 0.35, rows)
    reward = (rng.random(rows) < mean).astype(np.float64)
    q_logged = np.clip(mean + rng.normal(0.0, 0.05, rows), 0.0, 1.0)
    q_target = np.clip(mean + rng.normal(0.0, 0.05, rows), 0.0, 1.0)
    arrays = dict(zip(COLUMNS, (reward, propensity, target, q_logged, q_target), strict=True))
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
    codec = cast("ParquetCompression", compression)
    pl.DataFrame(arrays).write_parquet(directory / "log.parquet", compression=codec)


# ---------------------------------------------------------------------------------------------
# the paths (each runs in a child process)


def numpy_estimates(
    reward: FloatArray,
    propensity: FloatArray,
    target: FloatArray,
    q_logged: FloatArray,
    q_target: FloatArray,
) -> dict[str, dict[str, float]]:
    """The baseline: plain numpy IPS, SNIPS and DR with 95% normal intervals."""
    n = reward.shape[0]
    w = target / propensity
    sum_w = float(w.sum())
    ess = sum_w**2 / float(np.dot(w, w))
    largest = float(w.max())
    wr = w * reward
    theta = float(wr.sum()) / sum_w
    terms = {
        "IPS": wr,
        "SNIPS": (wr - theta * w) / (sum_w / n),
        "DR": q_target + w * (reward - q_logged),
    }
    result: dict[str, dict[str, float]] = {}
    for name, values in terms.items():
        value = theta if name == "SNIPS" else float(values.mean())
        half = Z95 * float(values.std(ddof=1)) / math.sqrt(n)
        result[name] = {
            "value": value,
            "lower": value - half,
            "upper": value + half,
            "ess": ess,
            "max_weight": largest,
        }
    return result


def _as_dict(estimates: Any) -> dict[str, dict[str, float]]:
    return {
        e.name: {
            "value": e.value,
            "lower": e.lower,
            "upper": e.upper,
            "ess": e.effective_sample_size,
            "max_weight": e.max_weight,
        }
        for e in estimates
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _hwm_mb() -> float:
    """The peak RSS of this process's address space (VmHWM), a cross-check of ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    return math.nan


def worker(path: str, directory: Path, repeat: int) -> dict[str, Any]:
    """Run one path `repeat` times in this (fresh) process; time, memory and estimates."""
    run: Callable[[], dict[str, dict[str, float]]]
    if path == "aggregate":
        import polars as pl

        from bandit_platform.evaluation.aggregate import estimates_from_moments, ope_moments

        baseline = _rss_mb()

        def run() -> dict[str, dict[str, float]]:
            moments = ope_moments(
                pl.scan_parquet(directory / "log.parquet"),
                reward="reward",
                propensity="propensity",
                target="target",
                q_logged="q_logged",
                q_target="q_target",
            )
            return _as_dict(estimates_from_moments(moments))

    elif path == "numpy":
        baseline = _rss_mb()
        r, p, t, ql, qt = (np.load(directory / f"{name}.npy") for name in COLUMNS)

        def run() -> dict[str, dict[str, float]]:
            return numpy_estimates(r, p, t, ql, qt)

    else:
        from bandit_platform.evaluation import ope

        baseline = _rss_mb()
        r, p, t, ql, qt = (np.load(directory / f"{name}.npy") for name in COLUMNS)

        def run() -> dict[str, dict[str, float]]:
            return _as_dict((ope.ips(r, p, t), ope.snips(r, p, t), ope.dr(r, p, t, ql, qt)))

    seconds: list[float] = []
    estimates: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        estimates = run()
        seconds.append(time.perf_counter() - started)
    return {
        "path": path,
        "seconds": min(seconds),
        "all_seconds": seconds,
        "peak_mb": _rss_mb(),
        "vm_hwm_mb": _hwm_mb(),
        "baseline_mb": baseline,
        "estimates": estimates,
    }


def _child(*arguments: str) -> str:
    # Linux carries the parent's peak RSS into a child's ru_maxrss (fork, then exec keeps the
    # larger of the two), so the parent never holds the data: even the log is generated by a
    # child, and the parent stays at the size of a bare interpreter with numpy.
    completed = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, __file__, *arguments],
        check=True,
        capture_output=True,
        text=True,
    )
    return completed.stdout


def measure(path: str, directory: Path, repeat: int) -> dict[str, Any]:
    """Run `worker` for one path in a fresh interpreter and read its JSON answer."""
    answer = _child("--worker", path, "--data", str(directory), "--repeat", str(repeat))
    result: dict[str, Any] = json.loads(answer)
    return result


def agreement(
    estimates: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]
) -> float:
    """Largest relative difference of any reported number from the reference's."""
    worst = 0.0
    for name in ESTIMATORS:
        for key, expected in reference[name].items():
            got = estimates[name][key]
            worst = max(worst, abs(got - expected) / max(abs(expected), 1e-300))
    return worst


def machine() -> dict[str, str]:
    """nproc, CPU model, Python and polars versions."""
    import os

    import polars as pl

    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": host.python_version(),
        "polars": pl.__version__,
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--compression",
        default="zstd",
        choices=["zstd", "lz4", "snappy", "uncompressed"],
        help="Parquet codec of the log (zstd: the export's default)",
    )
    parser.add_argument("--no-ope", action="store_true", help="skip the ope.py path")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "generate":
        generate(args.rows, args.seed, args.data, args.compression)
        print(json.dumps(machine()))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.repeat)))
        return

    paths = ["numpy", "aggregate"] + ([] if args.no_ope else ["ope"])
    with tempfile.TemporaryDirectory(prefix="ope-scale-") as scratch:
        directory = Path(scratch)
        info = json.loads(
            _child(
                "--worker",
                "generate",
                "--data",
                scratch,
                "--rows",
                str(args.rows),
                "--seed",
                str(args.seed),
                "--compression",
                args.compression,
            )
        )
        parquet_mb = (directory / "log.parquet").stat().st_size / 2**20
        results = {path: measure(path, directory, args.repeat) for path in paths}

    base = results["numpy"]
    rows = []
    all_agree = True
    for result in results.values():
        ratio = result["seconds"] / base["seconds"]
        difference = agreement(result["estimates"], base["estimates"])
        agrees = difference <= AGREEMENT
        all_agree &= agrees
        result |= {"ratio": ratio, "max_relative_difference": difference, "agrees": agrees}
        rows.append(result)
    parquet = results["aggregate"]
    goals = {
        "time <= 2x numpy (Parquet path)": parquet["ratio"] <= TIME_RATIO_GOAL,
        "peak <= 500 MB (Parquet path)": parquet["peak_mb"] <= PEAK_MB_GOAL,
        "estimates agree": all_agree,
    }

    print(f"# OPE at scale, {time.strftime('%Y-%m-%d')}, {args.rows:,} rows, best of {args.repeat}")
    print(
        f"nproc {info['nproc']}, {info['cpu']}, python {info['python']}, polars {info['polars']}, "
        f"numpy {info['numpy']}; Parquet {parquet_mb:.0f} MiB ({args.compression})"
    )
    print(
        f"{'path':<12}{'seconds':>9}{'x numpy':>9}{'peak MB':>9}{'imports MB':>12}"
        f"{'added MB':>10}  {'max rel diff':>12}"
    )
    for row in rows:
        print(
            f"{row['path']:<12}{row['seconds']:>9.3f}{row['ratio']:>9.2f}{row['peak_mb']:>9.0f}"
            f"{row['baseline_mb']:>12.0f}{row['peak_mb'] - row['baseline_mb']:>10.0f}"
            f"  {row['max_relative_difference']:>12.1e}"
        )
    for label, ok in goals.items():
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    print(
        "estimates (numpy): "
        + ", ".join(
            f"{name} {base['estimates'][name]['value']:.5f} "
            f"[{base['estimates'][name]['lower']:.5f}, {base['estimates'][name]['upper']:.5f}]"
            for name in ESTIMATORS
        )
    )
    if args.json:
        summary = {
            "date": time.strftime("%Y-%m-%d"),
            "rows": args.rows,
            "repeat": args.repeat,
            "seed": args.seed,
            "compression": args.compression,
            "parquet_mib": parquet_mb,
            "machine": info,
            "paths": rows,
            "goals": goals,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
