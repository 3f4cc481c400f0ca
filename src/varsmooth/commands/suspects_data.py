"""``varsmooth suspects --data FILE_OR_DIR --out DIR``: label issues in the user's own data, with no code.

Reads the data (:func:`varsmooth.data.userdata.load_user_data`: ``.npz``, ``.npy`` + ``--labels``, ``.csv`` with
``--label-column``, or an image folder), trains one IVON run on every example (an MLP on features, standardised per
column; a small CNN, ``cnn3``, on images; :func:`varsmooth.detect.fit_probs`; ``--ess auto`` chooses IVON's ess on a
10% noisy validation split), scores each example from the
probabilities its training steps computed (``step_probs``) and writes into ``DIR``:

- ``suspects.csv``: every example, most suspect first: ``rank, index`` (row of the data; for images also ``file``),
  ``given_label, suggested_label`` (most probable class), ``score`` (1 - quality; higher = more suspect),
  ``quality`` (:func:`varsmooth.detect.label_quality_scores`, in [0, 1]), ``flagged`` (1 for the examples
  :func:`varsmooth.detect.find_label_issues` flags: the confident-joint count) and, for named classes,
  ``given_name, suggested_name``;
- ``suspects.png``: the ``--top`` most suspect images (image data only);
- ``report.md``: a report section (the rule, the counts, the top suspects); ``summary.json``: the same as data.

Progress goes to stderr, a short summary to stdout. Bad input: one line ``varsmooth: error: ...`` (exit 2), and
nothing is written (every input is read and checked before training).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ..engine.trainconfig import check_device
from ..errors import InputError
from ..io import check_folder
from ..models import MODELS

_QUALITY = {"margin": "normalized_margin", "predictive": "self_confidence"}
_REPORT_TOP = 20


def main_data(args: argparse.Namespace) -> int:
    from ..data.userdata import load_user_data
    from ..detect import as_labeled_data, find_label_issues, fit_probs, label_quality_scores, rank_suspects

    method = args.score or "margin"
    if method not in _QUALITY:
        raise InputError(f"--score {method!r} is not available with --data; allowed: {', '.join(_QUALITY)}")
    epochs = 10 if args.epochs is None else args.epochs
    samples = 8 if args.samples is None else args.samples
    for name, value in (("epochs", epochs), ("samples", samples)):
        if value < 1:
            raise InputError(f"--{name} must be >= 1, got {value}")
    if args.top < 0:
        raise InputError(f"--top must be >= 0, got {args.top}")
    if not 0 <= args.seed <= 2**31 - 1:
        raise InputError(f"--seed {args.seed} is not allowed; give an integer in [0, 2**31 - 1]")
    for name in ("data_dir", "dataset"):
        if getattr(args, name) is not None:
            raise InputError(f"--{name.replace('_', '-')} goes with a checkpoint, not with --data (which names the "
                             "data itself)")  # fmt: skip
    train_options = _ess_options(args.ess)
    if args.model is not None and args.model not in MODELS:
        raise InputError(f"--model {args.model!r} is not a model; allowed: {', '.join(MODELS)}")
    check_device(args.device)
    check_folder(args.out)  # a file in the way: refused before the data are read and a model trained
    user = load_user_data(args.data, labels=args.labels, label_column=args.label_column, image_size=args.image_size)
    data = as_labeled_data(user.features, user.labels, num_classes=len(user.class_names), class_names=user.class_names)
    model = args.model or ("cnn3" if user.is_image else "mlp")
    n, k = len(user.labels), len(user.class_names)
    sys.stderr.write(f"varsmooth: {args.data}: {n} examples, {k} classes; training one IVON run ({model}, "
                     f"{epochs} epochs)\n")  # fmt: skip
    fit = fit_probs(user.labels, data=data, model=model, epochs=epochs, seed=args.seed, samples=samples,
                    predictive=False, train_options=train_options, progress=not args.no_progress,
                    device=args.device)  # fmt: skip
    quality = label_quality_scores(fit.labels, fit.step_probs, method=_QUALITY[method])
    flagged = find_label_issues(fit.labels, fit.step_probs, rank_by=_QUALITY[method])
    rows = _rows(user, fit.step_probs, quality, flagged, rank_suspects(-quality))
    out = Path(args.out)
    written = _write(out, rows, user, data, fit, method, int(flagged.sum()), args)
    print(f"{args.data}: {n} examples, {int(flagged.sum())} flagged as label issues "
          f"({100 * flagged.mean():.1f}%; confident-joint count), ranked by {_QUALITY[method]}")  # fmt: skip
    for row in rows[: min(5, len(rows))]:
        print(f"  #{row['rank']}: index {row['index']}, given {row['given_label']}, "
              f"suggested {row['suggested_label']}, score {row['score']:.4f}")  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _ess_options(ess) -> dict:
    """IVON's training options for ``--ess``: a positive number, a factor of N (``16N``) or ``auto``."""
    if ess is None:
        return {}
    text = str(ess).strip()
    try:
        if text == "auto":
            return {"ess": "auto", "val_fraction": 0.1}
        value = float(text[:-1] or 1) if text.endswith("N") else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"--ess {ess!r} is invalid; give a positive number, a factor of N (16N) or 'auto'")
    return {"ess_factor": value} if text.endswith("N") else {"ess": value}


def _rows(user, probs: np.ndarray, quality: np.ndarray, flagged: np.ndarray, order: np.ndarray) -> list[dict]:
    suggested = probs.argmax(axis=1)
    named = user.class_names != [str(c) for c in range(len(user.class_names))]
    rows = []
    for rank, i in enumerate(order, start=1):
        row = {"rank": rank, "index": int(i)}
        if user.files is not None:
            row["file"] = user.files[i]
        row.update(given_label=int(user.labels[i]), suggested_label=int(suggested[i]), score=float(1.0 - quality[i]),
                   quality=float(quality[i]), flagged=int(flagged[i]))  # fmt: skip
        if named:
            row.update(given_name=user.class_names[user.labels[i]], suggested_name=user.class_names[suggested[i]])
        rows.append(row)
    return rows


def _write(out: Path, rows: list[dict], user, data, fit, method: str, n_flagged: int, args) -> list[Path]:
    from ..io import atomic_write, write_csv, write_json

    written = [out / "suspects.csv"]
    write_csv(written[0], rows)
    if user.is_image and args.top > 0:
        from ..engine.rundata import fetch
        from ..plots import image_grid

        head = rows[: args.top]
        names = user.class_names
        labels = [f"{names[r['given_label']]}->{names[r['suggested_label']]}" for r in head]
        title = f"most suspect examples ({_QUALITY[method]}; given->suggested, score)"
        images = fetch(data.train.features, [r["index"] for r in head])
        written.append(image_grid(images, [r["score"] for r in head], out / "suspects.png", labels=labels,
                                  title=title))  # fmt: skip
    summary = {
        "data": str(args.data),
        "kind": user.kind,
        "n_examples": len(rows),
        "classes": user.class_names,
        "n_flagged": n_flagged,
        "rule": "confident joint: N - trace of the calibrated confident joint of step_probs; the lowest-quality "
        "examples are flagged",
        "quality": _QUALITY[method],
        "config": fit.config.to_dict(),
        "train_acc_final": fit.result.history[-1].get("train_acc") if fit.result.history else None,
    }
    written.append(out / "summary.json")
    write_json(written[-1], summary)
    written.append(out / "report.md")
    atomic_write(written[-1], _report(rows, summary))
    return written


def _report(rows: list[dict], summary: dict) -> str:
    cfg = summary["config"]
    n, m = summary["n_examples"], summary["n_flagged"]
    lines = [
        "## Label issues",
        "",
        f"`{summary['data']}` ({summary['kind']}): {n} examples, {len(summary['classes'])} classes. One IVON run "
        f"({cfg['model']}, {cfg['epochs']} epochs, ess {cfg['ess']}, beta2 {cfg['beta2']}); each example is "
        f"scored by the {summary['quality']} of the probabilities its training steps computed, averaged over the run.",
        "",
        f"**{m} flagged ({100 * m / max(n, 1):.1f}%)**: the confident-joint estimate of the number of label errors "
        "(Northcutt et al. 2021), taken from the lowest quality up. Every example, ranked: `suspects.csv`.",
        "",
        "| rank | index | given | suggested | score |",
        "|---|---|---|---|---|",
    ]
    for r in rows[:_REPORT_TOP]:
        given = r.get("given_name", r["given_label"])
        sugg = r.get("suggested_name", r["suggested_label"])
        where = r.get("file", r["index"])
        lines.append(f"| {r['rank']} | {where} | {given} | {sugg} | {r['score']:.4f} |")
    return "\n".join(lines) + "\n"
