"""Label-error detection: one IVON training run vs cleanlab (5-fold cross-validation / in-sample) vs the loss.

On MNIST (``--data-dir`` with the IDX files; without it the bundled 5,000-image ``mnist-subset``) with known
synthetic flips (symmetric and pair-flip, several seeds), every pipeline scores each training example
(higher = more suspect) and is judged against the true flips by AUROC, average precision and precision at
k = the true number of flips (sklearn.metrics), with its wall-clock and CPU time:

- ``ivon-step``: one IVON run; ``1 - mean p_step[y]``, the probability of the given label that each training
  step computes anyway (at IVON's sampled weights), averaged over all epochs (:class:`EpochScorer`, free);
- ``ivon-pred``: the same run; ``1 - p_pred[y]`` with the posterior predictive over ``--samples`` draws,
  averaged over the epochs ``--score-epochs`` (costs the extra forward passes, timed);
- ``ivon-margin``: the same run and predictive; ``max_{k != y} p_pred[k] - p_pred[y]`` (normalized margin);
- ``ivon-noise``: the same run; ``||eps||`` of the expected IVON label noise (the paper's Fig. 3 order);
- ``cleanlab-cv``: ``cleanlab.rank.get_label_quality_scores`` (default: self-confidence) on K-fold
  cross-validated probabilities from K ERM trainings of the same model through the same engine; also the
  precision / recall of ``cleanlab.filter.find_label_issues``; ``cleanlab-cv-margin``: the same probabilities
  ranked with ``method="normalized_margin"``;
- ``cleanlab-insample`` (``-margin``): the same cleanlab calls on in-sample probabilities of one ERM run;
- ``erm-loss``: the same ERM run; per-example training loss in the final epoch (as computed by its steps);
- ``erm-step``: the same ERM run; ``1 - mean p_step[y]`` over all epochs (the ERM analogue of ``ivon-step``).
- ``ivon-step-margin`` / ``erm-step-margin``: normalized margin of the mean per-step softmax (``step_probs``) of
  the IVON / ERM run, free; the default of :func:`varsmooth.detect.find_label_issues` given features; flagged
  count: the confident-joint rule of :mod:`varsmooth.detect.api` on those probabilities;
- ``aum``: area under the margin (Pleiss et al. 2020) and ``forgetting``: forgetting events (Toneva et al. 2019),
  both from the ERM run's steps (:class:`varsmooth.detect.TrainingDynamics`; AUM checked against the ``aum`` package
  in the tests).

``--dataset`` takes several datasets into one table: registered names, ``.npz`` files (read through the loader of
``varsmooth suspects --data``) or ``synthetic-features`` (sklearn's ``make_classification``, 5,000 x 32, 10 classes,
written to an .npz and read back through that loader). ``compare.md`` puts the anchors side by side. Results of
this version (every anchor, three datasets, five noises, 3 seeds): ``benchmarks/results/label_errors_anchors.md``.
The table below is from the previous version (10,000 MNIST images, two noises).

All runs share the model, batch size and the engine's default optimiser settings per method; every ERM training
(cleanlab-cv's K, the in-sample run) has ``--epochs``, the IVON run ``--ivon-epochs`` (default: the same).
``--cv-epochs E ...`` also runs cleanlab-cv with its K trainings shortened to E epochs (``cleanlab-cv@Eep``), so a
shortened IVON run can be set against an equally shortened CV; time ratios are always to cleanlab-cv at
``--epochs``. IVON's settings are chosen *before* the reported seeds are looked at: ``--calibrate`` trains IVON on
a held-out seed (its own flips; ``--calibration-seed``) for each ess factor in ``--ess-grid`` and keeps the one
with the best mean average precision of ``ivon-step`` and ``ivon-pred`` over the noise settings; otherwise
``--ess-factor``. Test labels are never used for any choice (the test accuracy printed is a diagnostic).

Results (2-core CPU shared with other jobs, ``--threads 1``; MNIST IDX, 10,000 random training images, MLP
784-256-256-10, batch 128, ERM trainings 10 epochs; AUROC / AP are means over seeds; time = median over seeds and
both noises of the wall-time ratio to cleanlab-cv at 10 epochs (``/ cv``) or to cleanlab-cv@Eep with E = the IVON
epochs (``/ cv@E``), same seed and noise; the CPU-time ratios agree within 0.01). ess chosen on seed 1000: 16 N
(the top of the grid) for 3 and 5 IVON epochs::

    python benchmarks/label_errors.py --data-dir /path/to/mnist --train-subset 10000 --seeds 0 1 2 \
        --calibrate --threads 1 --ivon-epochs 3 --cv-epochs 3 --out runs/bench-label-errors
    # then --seeds 3 4 5; then --ivon-epochs 5 --cv-epochs 5 with --seeds 0 1 2 3 4 5 and --seeds 6 7 8;
    # then --epochs 3 (every training 3 epochs) with --seeds 0 1 2

    pipeline (epochs)            seeds  sym 20% AUROC / AP  pair 20% AUROC / AP  time / cv  time / cv@E
    ivon-step (IVON 3)           0-2    0.9945 / 0.9776     0.9609 / 0.7478      0.16       0.51
                                 3-5    0.9940 / 0.9780     0.9617 / 0.7356      0.16       0.51
    ivon-pred (IVON 3)           0-2    0.9960 / 0.9837     0.9689 / 0.7759      0.19       0.61
                                 3-5    0.9956 / 0.9843     0.9694 / 0.7677      0.19       0.61
    ivon-margin (IVON 3)         0-2    0.9952 / 0.9794     0.9858 / 0.9244      0.19       0.61
                                 3-5    0.9945 / 0.9786     0.9870 / 0.9271      0.19       0.61
    ivon-step (IVON 5)           0-2    0.9962 / 0.9844     0.9743 / 0.8173      0.26       0.52
                                 3-5    0.9959 / 0.9854     0.9753 / 0.8099      0.27       0.52
                                 6-8    0.9963 / 0.9860     0.9769 / 0.8216      0.26       0.53
    ivon-pred (IVON 5)           0-2    0.9967 / 0.9865     0.9798 / 0.8590      0.29       0.58
                                 3-5    0.9963 / 0.9873     0.9817 / 0.8560      0.30       0.59
                                 6-8    0.9969 / 0.9884     0.9826 / 0.8622      0.30       0.59
    ivon-margin (IVON 5)         0-2    0.9966 / 0.9855     0.9878 / 0.9517      0.29       0.58
                                 3-5    0.9959 / 0.9849     0.9906 / 0.9585      0.30       0.59
                                 6-8    0.9967 / 0.9871     0.9907 / 0.9586      0.30       0.59
    cleanlab-cv (10)             0-2    0.9951 / 0.9766     0.9580 / 0.7289      1
                                 3-5    0.9952 / 0.9799     0.9590 / 0.7244      1
                                 6-8    0.9961 / 0.9821     0.9608 / 0.7269      1
    cleanlab-cv-margin (10)      0-2    0.9942 / 0.9731     0.9744 / 0.8726      1
                                 3-5    0.9941 / 0.9747     0.9757 / 0.8721      1
                                 6-8    0.9948 / 0.9762     0.9772 / 0.8703      1
    cleanlab-cv@3ep              0-2    0.9953 / 0.9789     0.9540 / 0.7007      0.31
                                 3-5    0.9951 / 0.9806     0.9554 / 0.6938      0.31
    cleanlab-cv-margin@3ep       0-2    0.9937 / 0.9711     0.9795 / 0.8918      0.31
                                 3-5    0.9932 / 0.9719     0.9804 / 0.8851      0.31
    cleanlab-cv@5ep              0-2    0.9956 / 0.9802     0.9552 / 0.7042      0.50
                                 3-5    0.9954 / 0.9815     0.9559 / 0.6945      0.50
                                 6-8    0.9958 / 0.9833     0.9579 / 0.7042      0.50
    cleanlab-cv-margin@5ep       0-2    0.9941 / 0.9734     0.9792 / 0.8862      0.50
                                 3-5    0.9937 / 0.9735     0.9799 / 0.8779      0.50
                                 6-8    0.9943 / 0.9758     0.9821 / 0.8851      0.50
    cleanlab-insample (10)       0-2    0.9953 / 0.9847     0.9776 / 0.9309      0.27
    cleanlab-insample-margin(10) 0-2    0.9959 / 0.9861     0.9774 / 0.9582      0.27
    erm-step (10)                0-2    0.9969 / 0.9883     0.9878 / 0.9264      0.26
                                 3-5    0.9967 / 0.9889     0.9899 / 0.9318      0.26
    cleanlab-insample-margin(3)  0-2    0.9956 / 0.9812     0.9861 / 0.9332      ~0.08      0.27
    erm-step (3)                 0-2    0.9946 / 0.9790     0.9642 / 0.7656      ~0.08      0.26

Findings. *Cost*: an IVON epoch costs ~2.0-2.1x an ERM (SGD) epoch of this MLP here (whole runs: 0.36-0.38 vs
0.17-0.19 CPU s per 10,000-image epoch; not ~6x as an earlier version of this note said), and 5-fold CV trains 5 x
0.8 N examples per epoch, so an IVON run of E epochs costs about E / 20 of 10-epoch CV: a third allows E <= 6. *3
IVON epochs* (fixed a priori from that budget, with margin): the goal is **not** met. ``ivon-step`` loses to
cleanlab-cv on symmetric AUROC (both seed sets) and to cleanlab-cv-margin on pair-flip; ``ivon-pred`` beats
cleanlab's default (self-confidence) CV ranking in every cell but not cleanlab-cv-margin's pair-flip AUROC / AP;
``ivon-margin`` loses symmetric AUROC and AP on seeds 3-5. *5 IVON epochs* (chosen after 3 fell short, from the
time budget alone, before any 5-epoch result was seen; seeds 6-8 run afterwards as a fresh check): ``ivon-margin``
beats both cleanlab-cv rankings -- at 10 epochs and shortened to 5 -- on AUROC and AP in every cell of every seed
set, at a median 0.29-0.30 of CV's wall time (CPU-time ratio <= 0.32 on every seed and noise; wall up to 0.35 once,
on a busier machine); ``ivon-step`` (0.26-0.27) and ``ivon-pred`` beat cleanlab's default ranking but not
cleanlab-cv-margin on pair-flip (AP; ``ivon-step`` AUROC too, by < 0.001). *Shortened CV*: cleanlab-cv at 3 or 5
epochs is about as good as at 10 (margin ranking better on pair-flip), so IVON's lead is not from an under-trained
CV; but shortened CV is cheap too: IVON at E epochs takes 0.51-0.61 of CV at E epochs, not a third. *What buys the
time*: one training run instead of five, not IVON: at 10 epochs a single ERM run scored by its own training
dynamics (``erm-step``) or in-sample cleanlab beats cleanlab-cv in every cell at 0.26 of its time, and one 3-epoch
ERM run with ``cleanlab-insample-margin`` does at ~0.08 (seeds 0-2). IVON's own advantage showed in longer training
(earlier run below), where ERM memorises the flips and in-sample scores collapse while IVON's posterior keeps them
unfitted.

Earlier run (previous version, IVON at --epochs, not repeated here; its 10-epoch cleanlab and ERM rows reproduce
exactly above): at 10 epochs ``ivon-step`` 0.9967 / 0.9872 sym, 0.9873 / 0.9289 pair, ``ivon-margin`` 0.9952 /
0.9841, 0.9735 / 0.9508, at 0.45-0.59 of CV; at 30 epochs (ess N / 4) ``ivon-step`` 0.9955 / 0.9832, 0.9892 /
0.9652 (0.52-0.54 of CV) vs cleanlab-cv 0.9825 / 0.9235, 0.9189 / 0.6704, cleanlab-cv-margin 0.9760 / 0.8970,
0.9279 / 0.7604, cleanlab-insample 0.8785 / 0.7570, 0.8029 / 0.6392 and ``erm-step`` 0.9911 / 0.9684, 0.9716 /
0.9253; at batch 512 (10 epochs) ``ivon-step`` fell to 0.7565 pair-flip AP (``ivon-margin`` 0.9159) at 0.37-0.42.
When the model is trained with IVON anyway, detection is free (``ivon-step``) or a few % of the run (``ivon-pred``,
S = 4 at the last epoch).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from varsmooth.data import LabeledData, LabeledSplit, load_dataset
from varsmooth.data.corruption import corrupt_labels, parse_corruption, transition_matrix
from varsmooth.data.userdata import load_user_data
from varsmooth.detect import (
    EpochScorer,
    TrainingDynamics,
    as_labeled_data,
    detection_metrics,
    find_label_issues,
    label_error_scores,
)
from varsmooth.engine import TrainConfig, train
from varsmooth.io import atomic_write, write_csv, write_json

PIPELINES = (
    "ivon-step-margin", "ivon-step", "ivon-pred", "ivon-margin", "ivon-noise", "cleanlab-cv", "cleanlab-cv-margin",
    "cleanlab-insample", "cleanlab-insample-margin", "erm-loss", "erm-step", "erm-step-margin", "aum", "forgetting",
)  # fmt: skip


class Clock:
    """Wall and CPU (process) seconds; CPU time is less sensitive to other jobs sharing the machine."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class TimedScorer(EpochScorer):
    """An EpochScorer that also measures the time its epoch-end predictions take."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.wall = self.cpu = 0.0

    def __call__(self, epoch, state):
        c = Clock()
        super().__call__(epoch, state)
        w, p = c.read()
        self.wall, self.cpu = self.wall + w, self.cpu + p


class FinalLoss:
    """Per-example cross-entropy computed by the training steps of the last epoch (no extra forward pass)."""

    def __init__(self, n: int, epochs: int):
        self.loss, self.epochs = np.full(n, np.nan), epochs

    def __call__(self, epoch, state):
        pass

    def on_batch(self, epoch, *args):
        pos, out, labels = args[-3:]  # (epoch, [state,] pos, out, labels)
        if epoch == self.epochs:
            logp = torch.log_softmax(out.logits.float(), 1).gather(1, labels.view(-1, 1))
            self.loss[np.asarray(pos)] = -logp.view(-1).cpu().double().numpy()


def make_data(base: LabeledData, subset: np.ndarray, labels: np.ndarray, test: LabeledSplit | None = None):
    """A LabeledData whose training split is ``base.train[subset]`` with ``labels`` (already noisy)."""
    train_split = LabeledSplit(base.train.features[torch.from_numpy(subset)], torch.from_numpy(labels))
    return LabeledData(base.name, train_split, test if test is not None else base.test, base.num_classes,
                       base.input_shape, base.class_names)  # fmt: skip


def cleanlab_scores(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Suspicion = 1 - cleanlab label quality (self-confidence; normalized margin), find_label_issues mask."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(labels, probs)
    margin = get_label_quality_scores(labels, probs, method="normalized_margin")
    return 1.0 - quality, 1.0 - margin, find_label_issues(labels, probs, n_jobs=1)


def run_ivon(data, args, seed: int, ess_factor: float) -> dict[str, dict]:
    clock = Clock()
    scorer = TimedScorer(epochs=args.score_epochs or None, samples=args.samples, seed=seed)
    cfg = _cfg(args, "ivon", seed, ess_factor=ess_factor, test_samples=args.samples)
    res = train(cfg, None, callbacks=[scorer], data=data)
    wall, cpu = clock.read()
    labels = data.train.labels.numpy()
    acc = scorer.accumulator
    info = {"test_acc": res.metrics.get("test_pred_acc"), "ess_factor": ess_factor}
    free = {"wall_s": wall - scorer.wall, "cpu_s": cpu - scorer.cpu, **info}
    paid = {"wall_s": wall, "cpu_s": cpu, **info}
    step = scorer.step_probs()
    return {
        "ivon-step-margin": {"scores": label_error_scores(labels, None, step, method="margin"),
                             "issues": find_label_issues(labels, step), **free},
        "ivon-step": {"scores": scorer.step_scores(), **free},
        "ivon-pred": {"scores": label_error_scores(labels, acc.probs_mean, acc.probs_pred), **paid},
        "ivon-margin": {"scores": label_error_scores(labels, None, acc.probs_pred, method="margin"),
                        "issues": find_label_issues(labels, acc.probs_pred), **paid},
        "ivon-noise": {"scores": acc.scores("noise"), **paid},
    }  # fmt: skip


def run_erm(data, args, seed: int) -> dict[str, dict]:
    n = len(data.train)
    clock = Clock()
    final, dyn, tdyn = FinalLoss(n, args.epochs), EpochScorer(epochs=[], samples=1), TrainingDynamics(n)
    res = train(_cfg(args, "erm", seed, save_train_predictions=True), None, callbacks=[final, dyn, tdyn], data=data)
    wall, cpu = clock.read()
    labels = data.train.labels.numpy()
    info = {"wall_s": wall, "cpu_s": cpu, "test_acc": res.metrics.get("test_acc")}
    step = dyn.step_probs()
    out = {"erm-loss": {"scores": final.loss, **info}, "erm-step": {"scores": dyn.step_scores(), **info},
           "erm-step-margin": {"scores": label_error_scores(labels, None, step, method="margin"),
                               "issues": find_label_issues(labels, step), **info},
           "aum": {"scores": tdyn.aum_scores(), **info}, "forgetting": {"scores": tdyn.forgetting_scores(), **info}}
    # fmt: skip
    clock = Clock()
    scores, margin, issues = cleanlab_scores(labels, res.train_probs.astype(np.float64))
    w, c = clock.read()
    timing = {"wall_s": wall + w, "cpu_s": cpu + c}
    out["cleanlab-insample"] = {"scores": scores, "issues": issues, **info, **timing}
    out["cleanlab-insample-margin"] = {"scores": margin, **info, **timing}
    return out


def run_cv(data, args, seed: int, epochs: int) -> dict[str, dict]:
    n, k = len(data.train), args.folds
    labels = data.train.labels.numpy()
    folds = np.random.default_rng([seed, 7]).permutation(n) % k  # balanced random fold of each example
    probs = np.zeros((n, data.num_classes))
    clock, accs = Clock(), []
    for f in range(k):
        held, kept = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        fold_test = LabeledSplit(data.train.features[torch.from_numpy(held)], torch.from_numpy(labels[held]))
        fold = make_data(data, kept, labels[kept], test=fold_test)
        res = train(_cfg(args, "erm", seed, epochs=epochs), None, data=fold)
        probs[held] = res.test_probs
        accs.append(res.metrics.get("test_acc"))
    scores, margin, issues = cleanlab_scores(labels, probs)
    wall, cpu = clock.read()
    info = {"wall_s": wall, "cpu_s": cpu, "heldout_acc_noisy": float(np.mean(accs)), "epochs": epochs}
    return {
        cv_name("cleanlab-cv", epochs, args): {"scores": scores, "issues": issues, **info},
        cv_name("cleanlab-cv-margin", epochs, args): {"scores": margin, **info},
    }


def cv_name(pipeline: str, epochs: int, args) -> str:
    """``cleanlab-cv`` at ``--epochs`` (the reference for time ratios); ``cleanlab-cv@3ep`` when shortened."""
    return pipeline if epochs == args.epochs else f"{pipeline}@{epochs}ep"


def _cfg(args, method: str, seed: int, **kw) -> TrainConfig:
    opts = dict(dataset="bench", model=args.model, method=method, seed=seed,
                epochs=args.ivon_epochs if method == "ivon" else args.epochs,
                batch_size=args.batch_size, progress=False, save_train_predictions=False,
                eval_batch_size=1024, device=args.device, eval_every=args.eval_every or 10**6)  # fmt: skip
    if method == "ivon":
        opts.update(hess_init=args.hess_init, lr=args.ivon_lr)
    if args.weight_decay is not None:  # every method (the memorization regime: 1e-5)
        opts.update(weight_decay=args.weight_decay)
    opts.update(kw)
    return TrainConfig(**opts)


def evaluate(is_noisy: np.ndarray, result: dict) -> dict:
    row = detection_metrics(is_noisy, result["scores"])
    if "issues" in result:
        flagged = result["issues"]
        hit = (flagged & is_noisy).sum()
        row.update(issues_found=int(flagged.sum()), issues_precision=float(hit / max(flagged.sum(), 1)),
                   issues_recall=float(hit / max(is_noisy.sum(), 1)))  # fmt: skip
    row.update({k: v for k, v in result.items() if k not in ("scores", "issues")})
    return row


def one_setting(base, subset, clean, noise: str, seed: int, args, ess_factor: float, which) -> list[dict]:
    noisy, _ = corrupt_labels(clean, transition_matrix(parse_corruption(noise), base.num_classes), seed=seed)
    is_noisy = noisy != clean
    data = make_data(base, subset, noisy)
    results: dict[str, dict] = {}
    steps: list[tuple[Callable, tuple]] = []
    if any(p.startswith("ivon") for p in which):
        steps.append((run_ivon, (data, args, seed, ess_factor)))
    if any(p.startswith(("cleanlab-insample", "erm")) for p in which):
        steps.append((run_erm, (data, args, seed)))
    if any(p.startswith("cleanlab-cv") for p in which):
        steps += [(run_cv, (data, args, seed, e)) for e in args.cv_epochs]
    for fn, fargs in steps:
        results.update(fn(*fargs))
    rows = []
    names = [p for p in PIPELINES if p in which and p in results]
    names += [p for p in results if p not in PIPELINES and p.split("@")[0] in which]  # shortened CV
    for name in names:
        row = {"pipeline": name, "noise": noise, "seed": seed, "n_train": len(clean)}
        row["epochs"] = args.ivon_epochs if name.startswith("ivon") else args.epochs
        row["n_flipped"] = int(is_noisy.sum())
        row.update(evaluate(is_noisy, results[name]))
        rows.append(row)
        print(f"  {noise:>14} seed {seed} {name:>24}: AUROC {row['auroc']:.4f} "
              f"AP {row['average_precision']:.4f} P@k {row['precision_at_k']:.4f}  "
              f"wall {row['wall_s']:.1f}s cpu {row['cpu_s']:.1f}s", flush=True)  # fmt: skip
    return rows


def summarise(rows: list[dict], metrics=("auroc", "average_precision", "precision_at_k", "wall_s", "cpu_s")):
    cv = {(r.get("dataset"), r["noise"], r["seed"]): r for r in rows if r["pipeline"] == "cleanlab-cv"}
    for r in rows:  # time relative to cleanlab-cv on the same dataset, noise and seed
        ref = cv.get((r.get("dataset"), r["noise"], r["seed"]))
        r["wall_vs_cv"] = r["wall_s"] / ref["wall_s"] if ref else float("nan")
        r["cpu_vs_cv"] = r["cpu_s"] / ref["cpu_s"] if ref else float("nan")
    metrics = (*metrics, "wall_vs_cv", "cpu_vs_cv", "issues_precision", "issues_recall")
    table = []
    keys = dict.fromkeys((r.get("dataset"), r["noise"], r["pipeline"]) for r in rows)
    for dataset, noise, name in keys:
        sel = [r for r in rows if (r.get("dataset"), r["noise"], r["pipeline"]) == (dataset, noise, name)]
        out = {"dataset": dataset, "noise": noise, "pipeline": name, "seeds": len(sel)}
        for m in metrics:
            v = np.array([float(r.get(m, np.nan)) for r in sel])
            out[f"{m}_mean"], out[f"{m}_median"] = float(v.mean()), float(np.median(v))
            out[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        table.append(out)
    return table


def markdown(table: list[dict]) -> str:
    """Metrics as mean ± std over seeds; times and time ratios (to cleanlab-cv, same seed) as medians."""
    head = "| dataset | noise | pipeline | AUROC | AP | P@k | flagged: precision / recall | wall s | wall / cv |\n"
    head += "|---" * 9 + "|\n"
    lines = [
        f"| {t['dataset']} | {t['noise']} | {t['pipeline']} | {t['auroc_mean']:.4f} ± {t['auroc_std']:.4f} | "
        f"{t['average_precision_mean']:.4f} ± {t['average_precision_std']:.4f} | "
        f"{t['precision_at_k_mean']:.4f} | " + (
            f"{t['issues_precision_mean']:.3f} / {t['issues_recall_mean']:.3f}"
            if np.isfinite(t["issues_precision_mean"]) else "-"
        ) + f" | {t['wall_s_median']:.1f} | {t['wall_vs_cv_median']:.2f} |"
        for t in table
    ]
    return head + "\n".join(lines) + "\n"


COMPARE = ("ivon-step-margin", "cleanlab-cv", "cleanlab-insample-margin", "erm-step-margin", "aum", "forgetting")


def compare_markdown(table: list[dict], pipelines=COMPARE) -> str:
    """One row per dataset and noise: AUROC / AP (means over seeds) of ``pipelines`` side by side; the best AP in
    bold; then the median wall- and CPU-time ratios to cleanlab-cv of each pipeline over all settings."""
    cell = {(t["dataset"], t["noise"], t["pipeline"]): t for t in table}
    names = [p for p in pipelines if any(t["pipeline"] == p for t in table)]
    head = "| dataset | noise | " + " | ".join(names) + " |\n" + "|---" * (2 + len(names)) + "|\n"
    lines = []
    for dataset, noise in dict.fromkeys((t["dataset"], t["noise"]) for t in table):
        got = [cell.get((dataset, noise, p)) for p in names]
        best = max((t["average_precision_mean"] for t in got if t), default=np.nan)
        cells = ["-" if t is None else (f"{t['auroc_mean']:.4f} / " + (
            f"**{t['average_precision_mean']:.4f}**" if t["average_precision_mean"] == best
            else f"{t['average_precision_mean']:.4f}")) for t in got]  # fmt: skip
        lines.append(f"| {dataset} | {noise} | " + " | ".join(cells) + " |")
    ratio = [np.nanmedian([t["wall_vs_cv_median"] for t in table if t["pipeline"] == p]) for p in names]
    cpu = [np.nanmedian([t["cpu_vs_cv_median"] for t in table if t["pipeline"] == p]) for p in names]
    lines.append("| wall time / cleanlab-cv | (median) | " + " | ".join(f"{r:.2f}" for r in ratio) + " |")
    lines.append("| CPU time / cleanlab-cv | (median) | " + " | ".join(f"{r:.2f}" for r in cpu) + " |")
    return head + "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="MNIST IDX folder (default: bundled mnist-subset)")
    p.add_argument("--dataset", nargs="+", default=None,
                   help="datasets, one table: names (mnist needs --data-dir), .npz files (X, y) or synthetic-features "
                   "(sklearn's make_classification through the .npz path); default: mnist with --data-dir, else "
                   "mnist-subset")
    p.add_argument("--train-subset", type=int, default=10000, help="training examples used (random, fixed)")
    p.add_argument("--test-subset", type=int, default=1000, help="test examples for the accuracy diagnostic")
    p.add_argument("--corruption", nargs="+", default=["symmetric:0.2", "pairflip:0.2"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    p.add_argument("--model", default="mlp")
    p.add_argument("--epochs", type=int, default=10, help="epochs of every ERM training (and IVON's default)")
    p.add_argument("--ivon-epochs", type=int, default=None, help="epochs of the IVON run (default: --epochs)")
    p.add_argument("--cv-epochs", type=int, nargs="*", default=[],
                   help="also run cleanlab-cv with its K ERM trainings shortened to these epochs "
                   "(reported as cleanlab-cv@Eep; time ratios stay relative to cleanlab-cv at --epochs)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=None, help="every method's (default: each method's own)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--eval-every", type=int, default=1,
                   help="test-set diagnostics every k-th epoch (and the last); 0: the last only")
    p.add_argument("--ess-factor", type=float, default=1.0, help="IVON ess = factor * N (no --calibrate)")
    p.add_argument("--ess-grid", type=float, nargs="+", default=[16.0, 4.0, 1.0, 0.25, 0.05])
    p.add_argument("--calibrate", action="store_true", help="choose the ess factor on --calibration-seed")
    p.add_argument("--calibration-seed", type=int, default=1000)
    p.add_argument("--ivon-lr", type=float, default=None, help="default: the engine's IVON default")
    p.add_argument("--hess-init", type=float, default=None, help="default: the engine's IVON default")
    p.add_argument("--samples", type=int, default=4, help="posterior samples for ivon-pred / test accuracy")
    p.add_argument("--score-epochs", type=int, nargs="*", default=None,
                   help="epochs at which ivon-pred predicts (default: the last one)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/bench-label-errors")
    args = p.parse_args(argv)
    if args.dataset is None:
        args.dataset = ["mnist" if args.data_dir else "mnist-subset"]
    if args.ivon_epochs is None:
        args.ivon_epochs = args.epochs
    args.cv_epochs = list(dict.fromkeys([args.epochs, *args.cv_epochs]))  # the reference CV always runs
    if args.score_epochs is None:
        args.score_epochs = [args.ivon_epochs]
    return args


def load_base(name: str, args, out: Path) -> LabeledData:
    """A registered dataset, an .npz file (features-only, through the ``varsmooth suspects --data`` loader), or
    ``synthetic-features``: sklearn's ``make_classification`` written to ``out/synthetic_features.npz`` and read
    back through that same loader."""
    if name == "synthetic-features":
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=5000, n_features=32, n_informative=16, n_redundant=8, n_classes=10,
                                   n_clusters_per_class=1, class_sep=2.0, random_state=0)  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        name = str(out / "synthetic_features.npz")
        np.savez(name, X=x.astype(np.float32), y=y)
    if name.endswith(".npz"):
        user = load_user_data(name)
        data = as_labeled_data(user.features, user.labels, num_classes=len(user.class_names), name=Path(name).stem)
        return data
    return load_dataset(name, args.data_dir if name == "mnist" else None)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = []
    for dataset in args.dataset:
        base = load_base(dataset, args, out)
        rng = np.random.default_rng(12345)  # the training subset is fixed across seeds and noise settings
        n_all = len(base.train)
        subset = np.sort(rng.choice(n_all, size=min(args.train_subset, n_all), replace=False))
        test_idx = np.sort(rng.choice(len(base.test), size=min(args.test_subset, len(base.test)), replace=False))
        base.test = base.test.subset(test_idx)
        clean = base.train.labels.numpy()[subset]
        print(f"{dataset}: {len(subset)} training examples, model {args.model}, {args.epochs} epochs "
              f"(IVON {args.ivon_epochs}, CV {args.cv_epochs}), threads {torch.get_num_threads()}",
              flush=True)  # fmt: skip

        ess_factor, calibration = args.ess_factor, []
        if args.calibrate:
            for factor in args.ess_grid:
                for noise in args.corruption:
                    seed = args.calibration_seed
                    rows_c = one_setting(base, subset, clean, noise, seed, args, factor, ["ivon-step", "ivon-pred"])
                    calibration += [{**r, "ess_factor": factor} for r in rows_c]
            mean_ap = {f: float(np.mean([r["average_precision"] for r in calibration if r["ess_factor"] == f]))
                       for f in args.ess_grid}  # fmt: skip
            ess_factor = max(args.ess_grid, key=lambda f: (mean_ap[f], f))
            print(f"calibration (seed {args.calibration_seed}): mean AP by ess factor {mean_ap} -> {ess_factor}")
            write_csv(out / "calibration.csv", calibration)

        name = Path(dataset).stem if dataset.endswith(".npz") else dataset
        for seed in args.seeds:
            for noise in args.corruption:
                new = one_setting(base, subset, clean, noise, seed, args, ess_factor, args.pipelines)
                rows += [{"dataset": name, **r} for r in new]
                write_csv(out / "results.csv", rows)
    table = summarise(rows)
    write_csv(out / "table.csv", table)
    md = markdown(table)
    atomic_write(out / "table.md", md)
    atomic_write(out / "compare.md", compare_markdown(table))
    write_json(out / "settings.json", {**vars(args), "command": sys.argv})
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
