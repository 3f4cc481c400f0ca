"""``varsmooth suspects CHECKPOINT --out DIR``: rank every training example of an IVON run by how suspect it is.

``varsmooth suspects --data FILE_OR_DIR --out DIR`` does the same for the user's own data, with no code: it trains one
IVON run on it first (:mod:`varsmooth.commands.suspects_data`).

Example: ``varsmooth train --dataset mnist --data-dir D --method ivon --corruption symmetric:0.2 --out runs/ivon``,
then ``varsmooth suspects runs/ivon --data-dir D --out runs/ivon/suspects``. Writes into ``DIR``:

- ``suspects.csv``: one row per training example, most suspect first (:func:`varsmooth.detect.rank_suspects`),
  columns ``rank, index`` (into the dataset's training split), ``given_label, predicted_label`` (argmax of the
  posterior predictive), ``score`` (the ``--score`` score; higher = more suspect), ``p_given`` (posterior
  predictive probability of the given label), every score of :class:`varsmooth.detect.ScoreMethod`, and
  ``true_label, is_noisy`` when the labels were flipped synthetically, ``is_val`` when the run held out some;
- ``suspects.png``: the ``--top`` most suspect images with given->predicted label and score (image data only);
- ``summary.json``: the checkpoint, its config, the options, and AUROC / AP / precision at k of every score
  against the known flips when there are any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import check_folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..detect import ScoreMethod

    methods = ", ".join(m.value for m in ScoreMethod)
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="run folder of an IVON training run (with checkpoint.pt), or the file; or give --data")
    p.add_argument("--data", default=None, metavar="FILE_OR_DIR",
                   help="your own data instead of a checkpoint: .npz (X/features, y/labels), .npy features with "
                   "--labels, .csv with a label column, or a folder of class subfolders of images")
    p.add_argument("--labels", default=None, metavar="FILE.npy", help="--data .npy: the labels (N,)")
    p.add_argument("--label-column", default="label", help="--data .csv: the label column (default: label)")
    p.add_argument("--model", default=None, help="--data: the model (default: mlp on features, cnn3 on images)")
    p.add_argument("--epochs", type=int, default=None, help="--data: epochs of the IVON run (default: 10)")
    p.add_argument("--ess", default=None, help="--data: IVON's ess: a number, a factor of N (16N), or 'auto' (chosen "
                   "on a 10%% noisy validation split, whose examples are scored out-of-sample); default: N")
    p.add_argument("--image-size", type=int, default=None, help="--data images: resize to this side (default: "
                   "the first image's size)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files (default: the run's)")
    p.add_argument("--dataset", default=None, help="score this dataset's training split instead")
    p.add_argument("--samples", type=int, default=None,
                   help="posterior predictive samples (default: 32 for a checkpoint, 8 for --data)")
    p.add_argument("--top", type=int, default=64, help="images in the suspects grid (default: 64; 0: none)")
    p.add_argument("--score", default=None,
                   help=f"rank by: {methods} (default: predictive; --data: margin or predictive, default margin)")
    # deprecated spelling of --score (0.1.0), kept hidden for one version; says so on stderr when used
    p.add_argument("--method", dest="score_deprecated", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the posterior samples (--data: also of the training run)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (--data: the training run's)")


def main(args: argparse.Namespace) -> int:
    deprecated = getattr(args, "score_deprecated", None) is not None
    if deprecated:
        if args.score is not None:
            raise InputError("give --score only (--method is its deprecated spelling)")
        args.score = args.score_deprecated
    rc = _main(args)
    if deprecated:  # after the work, so that bad input stays one line
        sys.stderr.write("varsmooth: warning: suspects --method is deprecated; use --score\n")
    return rc


def _main(args: argparse.Namespace) -> int:
    from ..detect import ScoreMethod, score_checkpoint

    if (args.checkpoint is None) == (args.data is None):
        raise InputError("give a CHECKPOINT or --data FILE_OR_DIR (exactly one)")
    if args.data is not None:
        from .suspects_data import main_data

        return main_data(args)
    for name in ("labels", "model", "epochs", "image_size", "ess"):
        if getattr(args, name) is not None:
            raise InputError(f"--{name.replace('_', '-')} goes with --data, not with a checkpoint")
    args.samples = 32 if args.samples is None else args.samples
    method = ScoreMethod.parse(args.score or ScoreMethod.PREDICTIVE)
    for name in ("samples", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.top < 0:
        raise InputError(f"--top must be >= 0, got {args.top}")
    check_folder(args.out)  # a file in the way: refused before the (slow) scoring
    scored = score_checkpoint(
        args.checkpoint, data_dir=args.data_dir, dataset=args.dataset, samples=args.samples,
        batch_size=args.batch_size, seed=args.seed, device=args.device,
    )  # fmt: skip
    out = Path(args.out)
    written = write_suspects(scored, out, method=method, top=args.top, options=vars(args))
    rows = suspect_rows(scored, method)
    print(f"scored {len(rows)} examples of {args.checkpoint} (epoch {scored.epoch}) by {method.value}")
    for row in rows[: min(5, len(rows))]:
        print(f"  #{row['rank']}: index {row['index']}, given {row['given_label']}, "
              f"predicted {row['predicted_label']}, score {row['score']:.4f}")  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def suspect_rows(scored, method) -> list[dict]:
    """One dict per example of a :class:`varsmooth.detect.ScoredRun`, most suspect first."""
    from ..detect import ScoreMethod, rank_suspects

    method = ScoreMethod.parse(method)
    order = rank_suspects(scored.scores[method.value])
    pred = scored.probs_pred
    predicted = pred.argmax(axis=1)
    p_given = pred[np.arange(len(scored.labels)), scored.labels]
    rows = []
    for rank, i in enumerate(order, start=1):
        row = {
            "rank": rank,
            "index": int(scored.index[i]),
            "given_label": int(scored.labels[i]),
            "predicted_label": int(predicted[i]),
            "score": float(scored.scores[method.value][i]),
            "p_given": float(p_given[i]),
        }
        row.update({name: float(s[i]) for name, s in scored.scores.items()})
        if scored.clean_labels is not None:
            row["true_label"] = int(scored.clean_labels[i])
            row["is_noisy"] = int(scored.clean_labels[i] != scored.labels[i])
        if scored.is_val.any():
            row["is_val"] = int(scored.is_val[i])
        rows.append(row)
    return rows


def write_suspects(scored, out: Path, *, method, top: int = 64, options: dict | None = None) -> list[Path]:
    """Write ``suspects.csv``, ``suspects.png`` (images, ``top`` > 0) and ``summary.json`` into ``out``."""
    from ..detect import ScoreMethod, detection_metrics
    from ..io import write_csv, write_json

    method = ScoreMethod.parse(method)
    rows = suspect_rows(scored, method)
    written = [out / "suspects.csv"]
    write_csv(written[0], rows)
    data = scored.data
    if top > 0 and len(data.input_shape) in (2, 3) and rows:
        from ..engine.rundata import fetch
        from ..plots import image_grid

        head = rows[:top]
        images = fetch(data.train.features, [r["index"] for r in head])
        names = data.class_names
        labels = [f"{names[r['given_label']]}->{names[r['predicted_label']]}" for r in head]
        title = f"most suspect training examples ({method.value}; given->predicted, score)"
        written.append(image_grid(images, [r["score"] for r in head], out / "suspects.png", labels=labels,
                                  title=title))  # fmt: skip
    summary = {
        "checkpoint_epoch": scored.epoch,
        "config": scored.config.to_dict(),
        "score": method.value,
        "options": {k: v for k, v in (options or {}).items() if k != "func"},
        "n_examples": len(rows),
    }
    if scored.clean_labels is not None:
        truth = scored.clean_labels != scored.labels
        summary["n_flipped"] = int(truth.sum())
        if 0 < truth.sum() < truth.size:
            summary["detection"] = {name: detection_metrics(truth, s) for name, s in scored.scores.items()}
    written.append(out / "summary.json")
    write_json(written[-1], summary)
    return written
