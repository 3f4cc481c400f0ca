"""What logging to TensorBoard and MLflow adds to a run's time (varsmooth.loggers; target: under 2%).

The cpu demo's IVON run (bundled MNIST subset, MLP 784-256-256-10, 40% symmetric noise, batch 128, 8 predictive
samples, a 10% validation split; a fixed ess so every run does the same work), ``--epochs`` epochs, run ``--pairs``
times without and with ``loggers=["tensorboard", "mlflow"]``, interleaved (the order alternates), each in a fresh run
folder of one sweep folder (as ``varsmooth run --log``: one MLflow store for the sweep, created by a warm-up run
first). Prints the median wall time of each, their ratio, and the time spent inside the logger callback itself
(timed around every call: the overhead without the machine's noise), and, separately, what creating a new local
MLflow store costs once (a ``varsmooth train --log mlflow`` run makes one in its folder; a sweep makes one).

    nice python benchmarks/logging_overhead.py                 # the cpu demo's 20 epochs, 3 pairs (~4 min)
    nice python benchmarks/logging_overhead.py --epochs 5 --pairs 2   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from varsmooth import loggers as lg
from varsmooth.data import load_dataset
from varsmooth.engine import TrainConfig, train
from varsmooth.io import write_json


class Timed:
    """Seconds spent inside RunLogger's engine-facing methods: per epoch (``__call__``, ``on_batch``) and at the end
    (``done``: the figures, the final values, waiting for the MLflow worker to finish)."""

    def __init__(self) -> None:
        self.seconds = {"epochs": 0.0, "end": 0.0}
        for name, part in (("__call__", "epochs"), ("on_batch", "epochs"), ("done", "end")):
            setattr(lg.RunLogger, name, self._wrap(getattr(lg.RunLogger, name), part))

    def _wrap(self, fn, part):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - t0

        return timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="epochs per run (the cpu demo: 20)")
    p.add_argument("--pairs", type=int, default=3, help="runs without and with the loggers, interleaved")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist-subset")
    base = dict(method="ivon", ess_factor=1.0, corruption="symmetric:0.4", model="mlp", epochs=args.epochs,
                batch_size=128, val_fraction=0.1, test_samples=8, save_train_predictions=False, progress=False,
                device="cpu", seed=0)  # fmt: skip
    timer = Timed()
    with tempfile.TemporaryDirectory(prefix="varsmooth-logbench-") as tmp:
        sweep = Path(tmp) / "sweep"
        sweep.mkdir()
        write_json(sweep / "config.json", {"experiment": "logging-overhead"})  # runs/NAME of a sweep: one store
        t0 = time.perf_counter()
        train(TrainConfig(**{**base, "epochs": 1, "loggers": ["tensorboard", "mlflow"]}), sweep / "runs" / "warmup",
              data=data)  # fmt: skip  (imports tensorboard and mlflow, creates the sweep's store)
        warmup = time.perf_counter() - t0
        times: dict[str, list[float]] = {"off": [], "on": []}
        logger_s: dict[str, list[float]] = {"epochs": [], "end": []}
        for i in range(args.pairs):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                loggers = ["tensorboard", "mlflow"] if mode == "on" else []
                before = dict(timer.seconds)
                t0 = time.perf_counter()
                train(TrainConfig(**{**base, "loggers": loggers}), sweep / "runs" / f"{mode}{i}", data=data)
                times[mode].append(time.perf_counter() - t0)
                if mode == "on":
                    for part in logger_s:
                        logger_s[part].append(timer.seconds[part] - before[part])
                print(f"pair {i} {mode}: {times[mode][-1]:.2f} s", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        from varsmooth.loggers.mlflow import MlflowBackend

        backend = MlflowBackend()
        backend.open(lg.RunContext.of(Path(tmp) / "lone", {"method": "ivon"}))
        backend.close("FINISHED")  # waits for the worker
        store = time.perf_counter() - t0
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    per_epoch = statistics.median(logger_s["epochs"]) / args.epochs
    end = statistics.median(logger_s["end"])
    print(f"cpu demo IVON run, {args.epochs} epochs, {args.pairs} interleaved pairs (torch {torch.__version__}, "
          f"1 thread; {sys.platform})")  # fmt: skip
    print("| | median run time (s) | runs (s) |")
    print("|---|---:|---|")
    print(f"| no logger | {off:.2f} | {', '.join(f'{t:.2f}' for t in times['off'])} |")
    print(f"| tensorboard + mlflow | {on:.2f} | {', '.join(f'{t:.2f}' for t in times['on'])} |")
    print(f"wall-time ratio (median on / median off): {on / off:.4f} ({100 * (on / off - 1):+.2f}%)")
    print(f"time inside the logger (medians): {1000 * per_epoch:.1f} ms per epoch "
          f"({100 * per_epoch * args.epochs / off:.2f}% of the run without logger), {end:.3f} s at the end "
          f"({100 * end / off:.2f}%); together {100 * (per_epoch * args.epochs + end) / off:.2f}%")  # fmt: skip
    print(f"once per process and store: warm-up run (imports, the sweep's store) {warmup:.2f} s; "
          f"a new local MLflow store {store:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
