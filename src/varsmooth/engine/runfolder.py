"""The run folder of :func:`varsmooth.engine.train`: the device, the resume check, and what is written when.

A run folder ``out`` holds ``config.json`` (resolved config, seed, versions), ``metrics.jsonl``, ``checkpoint.pt``,
``final.json`` and ``arrays.npz``. :func:`resume_point` reads what a folder already holds and refuses a folder
whose run differs from the config (every option but ``RESUME_FREE``) or was trained on other labels.
``config.json`` and ``metrics.jsonl`` are written with the first checkpoint (:func:`write_header`); a run that fails
before it leaves nothing behind (:func:`remove_partial`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path

import torch

from ..errors import InputError
from ..io import atomic_open, read_json, write_json
from . import checkpoint as ckpt
from .checkpoint import Checkpoint
from .rundata import RunData
from .trainconfig import RESUME_FREE, TrainConfig

__all__ = ["device_of", "folder_config", "schedule_of_resumed", "resume_point", "files", "remove_partial",
           "write_header"]  # fmt: skip


def device_of(name: str) -> torch.device:
    """The torch device of a config's ``device`` (``auto``: CUDA when available); InputError when it is absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if dev.index is None and "LOCAL_RANK" in os.environ:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    return dev


def folder_config(out: Path) -> dict:
    """The run config recorded in ``out/config.json``; InputError naming the file when it holds none."""
    saved = read_json(out / "config.json", keys=("config",))["config"]
    if not isinstance(saved, dict):
        raise InputError(f"{out / 'config.json'} holds no run config; use another --out or delete the folder")
    return saved


def schedule_of_resumed(cfg: TrainConfig, out: Path | None) -> TrainConfig:
    """``cfg`` with the schedule length of the run in ``out`` when none was given: a resume with more epochs (or
    the same command again after one) does not stretch the schedule (its length is recorded as ``schedule_epochs``)."""
    if out is None or cfg.schedule_epochs is not None or not (out / "config.json").is_file():
        return cfg
    length = folder_config(out).get("schedule_epochs")
    if isinstance(length, int) and not isinstance(length, bool):
        return dataclasses.replace(cfg, schedule_epochs=length)
    return cfg


def _config_diff(saved: dict, new: dict) -> list[str]:
    """The options whose values differ; an option a folder from an older version does not record counts as its
    default (e.g. ``precision``: fp32)."""
    saved, new, default = (json.loads(json.dumps(d, default=str)) for d in (saved, new, TrainConfig().to_dict()))
    keys = sorted((set(saved) | set(new)) - set(RESUME_FREE))
    return [k for k in keys if saved.get(k, default.get(k)) != new.get(k)]


def resume_point(cfg: TrainConfig, out: Path | None, run: RunData) -> Checkpoint | None:
    """The checkpoint in ``out`` to resume from (None: start afresh); InputError when the folder holds another run."""
    saved = None  # the checkpoint to resume from
    saved_config = None  # what the folder says it holds (a run stopped before its first checkpoint: config.json)
    if out is not None and (out / "checkpoint.pt").exists():
        saved = ckpt.load(out / "checkpoint.pt")
        ckpt.validate(saved, cfg, out / "checkpoint.pt")  # every field, before any is used
        saved_config = saved.config
    elif out is not None and (out / "config.json").exists():
        saved_config = folder_config(out)
    if saved_config is not None:
        diff = _config_diff(saved_config, cfg.to_dict())
        if diff:
            raise InputError(
                f"{out} holds a run with a different config ({', '.join(diff)} differ); "
                "use another --out or delete the folder"
            )
    if saved is not None:
        if saved.labels is not None and saved.labels != ckpt.labels_fingerprint(run.labels, run.pool_index):
            raise InputError(f"{out} holds a run trained on different labels; use another --out")
    return saved


def files(out: Path | None) -> set[str] | None:
    """The names in ``out`` (None: absent)."""
    return None if out is None or not out.is_dir() else set(os.listdir(out))


def remove_partial(out: Path | None, before: set[str] | None) -> None:
    """After a run failed before its first checkpoint: remove the config.json and metrics.jsonl it wrote, so a failed
    command leaves nothing behind (the folders it made go with the run folder's lock, :func:`varsmooth.lock.hold`,
    when nothing else is left in them). A run with a checkpoint is kept."""
    if out is None or not out.is_dir() or (out / "checkpoint.pt").exists():
        return
    for name in ("config.json", "metrics.jsonl"):
        if before is None or name not in before:
            with contextlib.suppress(OSError):
                (out / name).unlink()


def write_header(out: Path, header: dict, history: list[dict]) -> None:
    """``config.json`` and ``metrics.jsonl`` (the history up to the checkpoint, nothing after it)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", header)
    with atomic_open(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
