"""The same 16-run CPU sweep through ``--jobs 2`` and through ``--executor ray`` (a local Ray cluster of 2 CPUs),
wall time side by side in one run, and Ray's overhead per run.

The grid: ``noisy-accuracy --preset smoke`` on the bundled digits, 4 seeds x (ERM, LS, SAM, IVON) = 16 runs of
``--epochs`` epochs. Both sweeps are the CLI in a fresh process (same start-up: Python, torch, the data); the Ray
one connects through ``RAY_ADDRESS`` to a cluster this script starts first (its start is timed on its own: a cluster
is started once and serves many sweeps). Both keep 2 runs going at a time, so

    overhead per run = (wall_ray - wall_jobs) * 2 / 16      (slot-seconds each run costs Ray beyond --jobs)

and the overhead relative to a run is that over a run's slot time under ``--jobs 2`` (``wall_jobs * 2 / 16``: the
run with its data loading and evaluation; the training loop alone is ``time_s`` in result.json). The two
sweeps' results are checked equal. Ray's cost is per run (a task submitted, a worker started and varsmooth imported
once per worker, the result returned), so its relative overhead falls as runs get longer.

    nice python benchmarks/sweep_executors.py                # 1-epoch runs: the fixed per-run overhead (~2 min)
    nice python benchmarks/sweep_executors.py --epochs 100   # runs of about 20 s on 2 CPUs (estimated ~8 min)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 16


def grid(epochs: int) -> list[str]:
    return ["run", "noisy-accuracy", "--preset", "smoke", "--seeds", "0", "1", "2", "3", "--set",
            "corruptions=[symmetric:0.4]", "--set", "alphas=[0.5]", "--set", "rhos=[0.05]", "--set",
            "ess_factors=[1.0]", "--set", f"epochs={epochs}", "--no-progress"]  # fmt: skip


def sweep(argv: list[str], out: Path, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "varsmooth.cli", *argv, "--out", str(out)], env=env,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(argv[-4:])}):\n{proc.stderr[-2000:]}")
    return wall


def metrics(out: Path) -> dict:
    """Every run's metrics without its wall time."""
    found = {}
    for p in sorted((out / "runs").glob("*/result.json")):
        m = json.loads(p.read_text())["metrics"]
        m.pop("time_s", None)
        found[p.parent.name] = m
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1,
                    help="epochs per run (1: ~6 s runs, mostly start-up and evaluation; 100: ~20 s)")
    ap.add_argument("--repeats", type=int, default=1, help="sweeps per executor (medians quoted)")
    args = ap.parse_args()
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    start_s = time.perf_counter() - t0
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    walls: dict[str, list[float]] = {"jobs": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for name, flags in (("jobs", ["--jobs", "2"]), ("ray", ["--executor", "ray"])):
                out = Path(tmp) / f"{name}{k}"
                walls[name].append(sweep([*grid(args.epochs), *flags], out, env))
            a, b = metrics(Path(tmp) / f"jobs{k}"), metrics(Path(tmp) / f"ray{k}")
            if a != b or len(a) != RUNS:
                raise SystemExit("the two executors' results differ")
    ray.shutdown()
    wj, wr = statistics.median(walls["jobs"]), statistics.median(walls["ray"])
    run_s = wj * 2 / RUNS  # a run's slot time under --jobs 2
    per_run = (wr - wj) * 2 / RUNS
    print(f"# sweep_executors: {RUNS} runs of {args.epochs} epoch(s), 2 at a time, median of {args.repeats}; "
          f"command: python benchmarks/sweep_executors.py --epochs {args.epochs} --repeats {args.repeats}")
    print("| executor | wall time (s) | ratio to --jobs 2 |")
    print("|---|---|---|")
    print(f"| --jobs 2 | {wj:.1f} | 1.00 |")
    print(f"| --executor ray (local cluster, 2 CPUs) | {wr:.1f} | {wr / wj:.2f} |")
    print(f"\nevery sweep (s): --jobs 2 {[round(w, 1) for w in walls['jobs']]}, "
          f"ray {[round(w, 1) for w in walls['ray']]}")
    print(f"run slot time under --jobs 2 (wall * 2 / {RUNS}): {run_s:.2f} s")
    print(f"Ray overhead per run: {per_run:.2f} s ({100 * per_run / run_s:.1f}% of this run time; "
          f"{100 * per_run / 20:.1f}% of a 20 s run)")
    print(f"Ray cluster start (once, not in the sweep times): {start_s:.1f} s")
    print("results of the two executors: equal")


if __name__ == "__main__":
    main()
