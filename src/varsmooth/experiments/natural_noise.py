"""Natural label noise: ERM, LS, SAM and IVON on datasets whose training labels are noisy as given (paper Fig. 9;
Sec. 4.3.3: Clothing1M with ResNet-50).

Label sources, in this order:

1. ``noisy_labels``: a label file aligned with the dataset's training split (CIFAR-10N/100N ``.pt`` with
   ``noisy_labels_key`` such as ``worse_label``, or ``.npy`` / ``.csv``), e.g. ``--set noisy_labels=PATH``;
2. a dataset that carries its own noisy labels (``clothing1m``, read from ``--data-dir``);
3. ``stand_in``: **a stand-in, not natural noise** — the experiment writes ``stand_in_labels.npy`` into its output
   folder by corrupting the dataset's training labels with the synthetic spec ``stand_in`` (seeded by
   ``stand_in_seed``) and then trains from that file exactly as from a CIFAR-N file. The ``smoke`` and ``cpu``
   presets use it (bundled digits / MNIST) so the label-file pipeline runs without the real CIFAR-N or Clothing1M
   files; their numbers say nothing about natural noise.

Per seed: ERM, LS over ``alphas``, SAM over ``rhos``, IVON over ``ess_factors`` x ``hess_inits``, with the paper
and fair protocols of :mod:`.selection`. Outputs as in ``noisy-accuracy`` (the setting column ``corruption`` holds the
label source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.corruption import corrupt_labels, parse_corruption, transition_matrix
from ..errors import InputError
from ..io import atomic_open
from .common import load_cached
from .comparison import run_comparison
from .grids import require_data

ID = "natural-noise"
DESCRIPTION = "Fig. 9: natural label noise (Clothing1M or CIFAR-N label files; a seeded stand-in file on CPU)"
NATURAL_DATASETS = ("clothing1m",)


def write_stand_in(cfg: dict[str, Any], out: Path) -> Path:
    """Write ``out/stand_in_labels.npy``: the training labels corrupted by ``cfg["stand_in"]`` (seeded)."""
    data = load_cached({k: cfg.get(k) for k in ("dataset", "data_dir")} | {"data_options": cfg.get("data_options")})
    spec = parse_corruption(str(cfg["stand_in"]))
    if spec.kind.value == "none":
        raise InputError("stand_in='none' gives no label noise; use a synthetic spec such as class-dependent:0.1:0.05")
    labels = data.train.labels.numpy().astype(np.int64)
    noisy, _ = corrupt_labels(labels, transition_matrix(spec, data.num_classes), seed=int(cfg.get("stand_in_seed", 0)))
    path = out.resolve() / "stand_in_labels.npy"
    with atomic_open(path, "wb") as f:
        np.save(f, noisy.astype(np.int64), allow_pickle=False)
    return path


def label_source(cfg: dict[str, Any], out: Path) -> tuple[str, dict[str, Any]]:
    """``(name of the label source, TrainConfig options)``; writes the stand-in file when that is the source."""
    if cfg.get("noisy_labels"):
        path = Path(str(cfg["noisy_labels"])).expanduser()
        if not path.is_file():
            raise InputError(f"noisy_labels={str(path)!r} does not exist; give a CIFAR-N .pt, .npy or .csv file")
        key = cfg.get("noisy_labels_key")
        name = f"file:{path.name}" + (f":{key}" if key else "")
        return name, {"noisy_labels": str(path.resolve()), "noisy_labels_key": key}
    if str(cfg.get("dataset", "")).lower() in NATURAL_DATASETS:
        return str(cfg["dataset"]), {}
    if cfg.get("stand_in"):
        path = write_stand_in(cfg, out)
        return f"stand-in {cfg['stand_in']}", {"noisy_labels": str(path)}
    raise InputError(
        f"natural-noise needs noisy labels: {cfg.get('dataset')!r} has none of its own; pass --set noisy_labels=FILE "
        "(e.g. CIFAR-10_human.pt with --set noisy_labels_key=worse_label) or --set stand_in=class-dependent:0.1:0.05"
    )


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    from . import Runtime

    require_data(cfg)
    source, options = label_source(cfg, out)
    run_cfg = dict(cfg)
    run_cfg["train"] = {**(cfg.get("train") or {}), **options}
    summary = run_comparison(run_cfg, out, runtime or Runtime(), [(source, "none", {})], setting="corruption",
                               relabel={"corruption": source}, figure="Fig. 9")  # fmt: skip
    return {"label_source": source, "stand_in": bool(cfg.get("stand_in")) and "stand-in" in source, **summary}
