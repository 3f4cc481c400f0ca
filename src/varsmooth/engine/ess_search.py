"""IVON's ess chosen by the tool (``ess: "auto"``): every candidate trains the whole schedule; the noisy validation
split at its end picks one.

ess sets the posterior width ``sigma^2 = 1 / (ess (h + delta))`` (the paper's Alg. 1) and so how much label noise
IVON induces; the best value depends on the data, the corruption and the length of training, and the paper's
``ess = N`` can be far from it. A validation split carved from the *noisy* training pool ranks the candidates
without touching the test set.

Rule: with ``k`` candidate factors ``f`` of the training-set size N (``ess_grid``) and a schedule of ``E`` epochs
(``schedule_epochs``), each candidate trains to ``e = min(E, epochs)`` with the learning-rate schedule and the
Hessian horizon of the full run, and is scored there on the validation split. The best one *is* the final run, so no
epoch is trained twice: the search costs ``k e + (epochs - e)`` epochs, ``k`` runs of training (3 with the default
grid, the cost of a small LS alpha grid). Why the end and not earlier rungs: a network fits its flipped labels late
in training, when the learning rate decays; a rung at ``E/4`` or ``E/2`` (successive halving, the rule before) sees
candidates still level and drops the one that resists memorization (docs/experiments/ivon-defaults.md,
"What the search chooses").

Score (``ess_score``): ``"val_acc"`` (the default) ranks by accuracy of the posterior mean on the noisy labels,
the predictor whose test accuracy is reported, ties by lower predictive NLL; ``"val_pred_acc"`` by accuracy of the
posterior predictive (ties: lower NLL); ``"val_pred_nll"`` by predictive NLL (ties: higher accuracy). On noisy
labels the accuracy of a predictor whose errors go to other classes is ``(1 - p)`` times its clean accuracy under
symmetric noise plus a constant; under pair-flip noise at rate ``p`` a predictor that has memorized a flip predicts the
pair class, which the noisy label names with probability ``p``, so noisy accuracy is ``p + (1 - 2p)`` times the
clean accuracy: monotone, compressed by ``1 - 2p``. NLL instead rewards spreading mass between a class and its pair,
which a wide posterior does whether or not its argmax is right, so it can rank a candidate that memorized above one
that did not.

Layout: candidates are ordinary run folders ``OUT/ess-search/f<factor>/``; the winner's checkpoint is copied to
``OUT`` and finished there, so ``OUT`` is a complete run folder whose ``config.json`` holds the numeric ess and the
search record (``ess_search``: grid, the rung with every candidate's scores, the choice, the cost in epochs and
runs). Everything resumes: finished candidates are not retrained. A candidate that diverges scores worst and is
recorded as such.

With ``progress`` on, the search says first what it will cost (:func:`planned_cost`, in runs of training) and shows
one progress bar on stderr over its trainings (one per candidate, then the final run).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import InputError, file_error
from ..io import atomic_write, read_json, write_json
from ..lock import hold
from .trainconfig import RESUME_FREE

__all__ = ["SEARCH_DIR", "planned_cost", "rank_key", "rung_epochs", "search_ess"]

SEARCH_DIR = "ess-search"
# recorded per candidate; the test accuracies are never ranked on, they show afterwards what a choice was worth
SCORED = ("val_acc", "val_pred_acc", "val_pred_nll", "val_nll", "sigma_median", "test_acc", "test_pred_acc")

# run_fn(cfg, out, callbacks=..., record=..., warn=...) -> TrainResult: one run at a fixed ess (varsmooth.engine.train)
RunFn = Callable[..., Any]


def rung_epochs(schedule_epochs: int, epochs: int, candidates: int) -> list[int]:
    """The epochs at which candidates are scored: the end of the run (``min(schedule_epochs, epochs)``); none when
    there is a single candidate."""
    return [max(1, min(schedule_epochs, epochs))] if candidates > 1 else []


def planned_cost(schedule_epochs: int, epochs: int, candidates: int) -> tuple[list[int], list[int], int]:
    """``(rung epochs, candidates scored at each, total epochs trained)`` of a search over ``candidates`` factors
    whose final run trains to ``epochs`` on a schedule of ``schedule_epochs``: the cost known before it starts."""
    rungs = rung_epochs(schedule_epochs, epochs, candidates)
    cost = sum(e * candidates for e in rungs)
    return rungs, [candidates] * len(rungs), cost + epochs - (rungs[-1] if rungs else 0)


def _candidate(cfg, factor: float, n_train: int, epochs: int, final: bool = False):
    """A candidate's config; only the final run predicts over the whole training set at its end."""
    return dataclasses.replace(
        cfg,
        ess=float(factor * n_train),
        ess_factor=float(factor),
        epochs=int(epochs),
        save_train_predictions=cfg.save_train_predictions and final,
    )


def rank_key(scores: dict, by: str) -> tuple[float, float]:
    """Sort key, best first: ``by`` = "val_pred_nll" ranks by lower predictive NLL then higher predictive accuracy;
    "val_acc" and "val_pred_acc" by that higher accuracy then lower predictive NLL; missing or non-finite values rank
    last."""
    acc, nll = scores.get("val_pred_acc" if by == "val_pred_nll" else by), scores.get("val_pred_nll")
    acc = -math.inf if acc is None or not math.isfinite(acc) else float(acc)
    nll = math.inf if nll is None or not math.isfinite(nll) else float(nll)
    return (nll, -acc) if by == "val_pred_nll" else (-acc, nll)


def _fingerprint(cfg) -> dict:
    """What a search's rungs depend on: the config without the options that may change on resume."""
    return {k: v for k, v in json.loads(json.dumps(cfg.to_dict(), default=str)).items() if k not in RESUME_FREE}


def _finished_rungs(state_file: Path, cfg, factors: list[float]) -> list[dict]:
    """The rungs a previous call of the same search recorded in ``state_file`` ([] if none or another search)."""
    if not state_file.exists():
        return []
    state = read_json(state_file, keys=("config", "grid", "rungs"))  # InputError naming the file when foreign
    rungs = state["rungs"]
    if not isinstance(rungs, list) or not all(isinstance(r, dict) and {"epochs", "scores", "kept"} <= set(r)
                                              for r in rungs):  # fmt: skip
        raise file_error(state_file, "its rungs are not a list of {epochs, scores, kept}")
    same = state.get("config") == _fingerprint(cfg) and state.get("grid") == [f"{f:g}" for f in factors]
    return list(rungs) if same else []


def _score_rung(cfg, factors, n_train, epochs, root: Path, run_fn: RunFn, callbacks, diverged, bar) -> dict[str, dict]:
    """Train each candidate factor to ``epochs`` (resuming its folder) and read its validation scores."""
    scores: dict[str, dict[str, Any]] = {}
    for f in factors:
        folder = root / SEARCH_DIR / f"f{f:g}"
        try:
            cand = _candidate(cfg, f, n_train, epochs)
            with hold(folder, what="ess-search candidate folder"):
                metrics = run_fn(cand, folder, callbacks=copy.deepcopy(list(callbacks)), warn=False).metrics
            scores[f"{f:g}"] = {k: metrics.get(k) for k in SCORED}
        except diverged as err:
            scores[f"{f:g}"] = {**dict.fromkeys(SCORED), "diverged": str(err)}
        bar.update(1)
    return scores


def search_ess(
    cfg,
    n_train: int,
    out: Path | None,
    run_fn: RunFn,
    *,
    callbacks: Sequence = (),
    diverged: type[BaseException] = RuntimeError,
):
    """Choose ``ess`` for the finalized ``cfg`` (``cfg.ess == "auto"``) and train the final run; returns its result.

    ``cfg.ess_grid``: the candidate factors of ``n_train``. Candidates run with deep copies of ``callbacks``; the
    final run restores the winner's callback states into ``callbacks`` themselves (through the checkpoint), so a
    stateful callback ends holding the winner's whole run. ``diverged``: the exception a diverging run raises.
    ``out`` None: the candidates and the final run live in a temporary folder that is removed afterwards.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("ess='auto' runs in one process; under torchrun give a number (--ess or --ess-factor)")
    if cfg.val_fraction <= 0:
        raise InputError("ess='auto' chooses ess on a validation split; set val_fraction > 0 or give a number")
    factors = list(dict.fromkeys(float(f) for f in cfg.ess_grid))
    planned, sizes, planned_epochs = planned_cost(cfg.schedule_epochs, cfg.epochs, len(factors))
    if cfg.progress:
        sys.stderr.write(
            f"varsmooth: ess auto: {len(factors)} candidates (ess = {', '.join(f'{f:g}' for f in factors)} x N), "
            f"each trained to epoch {planned[0] if planned else cfg.epochs} and ranked by {cfg.ess_score} on the "
            f"validation split; this costs {planned_epochs} epochs, {planned_epochs / cfg.epochs:g} runs of training\n"
        )
    bar = tqdm(total=sum(sizes) + 1, desc="ess auto", unit="run", disable=not cfg.progress, leave=False)
    with bar, tempfile.TemporaryDirectory(prefix="varsmooth-ess-") as tmp:
        root = Path(tmp) if out is None else out
        state_file = root / SEARCH_DIR / "search.json"
        done = _finished_rungs(state_file, cfg, factors)  # a re-run reuses the rung already scored
        rungs, chosen = [], factors[0]
        if planned:  # on the schedule's length, so a run stopped early and continued chooses the same
            (epochs,) = planned
            if done and done[0]["epochs"] == epochs:
                rung = done[0]
                bar.update(len(factors))
            else:
                rung = {"epochs": epochs, "scores": _score_rung(cfg, factors, n_train, epochs, root, run_fn,
                                                                callbacks, diverged, bar)}  # fmt: skip
                best = min(factors, key=lambda f: rank_key(rung["scores"][f"{f:g}"], cfg.ess_score))  # first of ties
                rung["kept"] = [f"{best:g}"]
            chosen = next(f for f in factors if f"{f:g}" == rung["kept"][0])
            rungs.append(rung)
            if out is not None:  # progress: a killed search resumes after its scored rung
                write_json(state_file, {"config": _fingerprint(cfg), "grid": [f"{f:g}" for f in factors],
                                        "rungs": rungs})  # fmt: skip
        record = {
            "grid": [f"{f:g}" for f in factors],
            "n_train": int(n_train),
            "score": cfg.ess_score,
            "rungs": rungs,
            "chosen_factor": chosen,
            "chosen_ess": float(chosen * n_train),
            "cost_epochs": planned_epochs,  # the candidates' epochs, then the winner's from its rung to the end
            "cost_runs": planned_epochs / cfg.epochs,
        }
        final = root if out is not None else root / "final"
        winner = root / SEARCH_DIR / f"f{chosen:g}" / "checkpoint.pt"
        if rungs and not (final / "checkpoint.pt").exists() and winner.exists():
            final.mkdir(parents=True, exist_ok=True)
            atomic_write(final / "checkpoint.pt", winner.read_bytes())
        if out is not None:
            write_json(state_file, {"config": _fingerprint(cfg), **record})
        result = run_fn(_candidate(cfg, chosen, n_train, cfg.epochs, final=True), final, callbacks=callbacks,
                        record={"ess_search": record})  # fmt: skip
        bar.update(1)
        result.metrics.update(ess_factor_chosen=chosen, ess_search_cost_runs=record["cost_runs"])
        if out is None:
            result = dataclasses.replace(result, out=None)
    return result
