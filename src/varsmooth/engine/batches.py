"""The batches of a training epoch and the epoch's running totals, kept on the device.

:class:`TrainBatches`: an in-memory dataset (one feature tensor: MNIST-like sets, CIFAR) moves to the device once,
with the labels trained on; each epoch's order is copied there once, and every batch is indexed (and augmented,
:func:`varsmooth.data.transforms.augment_batch`) on the device. A lazy image dataset (a map-style dataset) loads
its batches in ``num_workers`` DataLoader processes into pinned memory (CUDA) and copies them without blocking.
On CUDA, a model with convolutions gets its images channels-last.

:class:`EpochTotals`: each step's loss and correct count, written on the device and read once, at the end of the
epoch (with the first non-finite loss, for the divergence check): no step waits for the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..data.transforms import augment_batch
from .parallel import DistContext
from .rundata import RunData, fetch

__all__ = ["TrainBatches", "EpochTotals"]


class _Batches(torch.utils.data.Dataset):
    """Item i: the stacked features of batch i (for DataLoader worker processes on lazy image datasets)."""

    def __init__(self, features, index_batches):
        self.features, self.index_batches = features, index_batches

    def __len__(self):
        return len(self.index_batches)

    def __getitem__(self, i):
        return fetch(self.features, self.index_batches[i])


class TrainBatches:
    """The training examples of ``run`` as batches ``(x, y)`` on ``device`` (see the module docstring)."""

    def __init__(self, run: RunData, device: torch.device, *, num_workers: int = 0, augment: str | None = None,
                 channels_last: bool = False):  # fmt: skip
        features = run.data.train.features
        self.device, self.num_workers, self.augment = device, num_workers, augment
        self.pin = device.type == "cuda"
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.resident = isinstance(features, torch.Tensor)
        self.labels = torch.from_numpy(run.labels).to(device)
        self.pool_index = run.pool_index
        if self.resident:  # once per run
            self.features = features.to(device)
            self.rows = torch.from_numpy(run.pool_index).to(device)
        else:
            self.features = features

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.pin and not t.is_pinned():
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def epoch(self, shards: list[tuple[torch.Tensor, float]], generator: torch.Generator) -> Iterator[tuple]:
        """``(x, y)`` on the device for each shard ``(local positions (B,) in the pool, scale)`` of an epoch."""
        sizes = [len(local) for local, _ in shards]
        positions = self._to_device(torch.cat([local for local, _ in shards]))  # one copy per epoch
        if self.resident:
            parts = (self.features[self.rows[pos]] for pos in positions.split(sizes))
        else:
            index = [self.pool_index[local.numpy()] for local, _ in shards]
            data = _Batches(self.features, index)
            if self.num_workers == 0:
                parts = (self._to_device(data[i]) for i in range(len(data)))
            else:
                parts = (x.to(self.device, non_blocking=True) for x in torch.utils.data.DataLoader(
                    data, batch_size=None, shuffle=False, num_workers=self.num_workers, pin_memory=self.pin))
        for x, pos in zip(parts, positions.split(sizes), strict=True):
            if self.augment:
                x = augment_batch(x, self.augment, generator)
            yield x.contiguous(memory_format=self.format) if x.dim() == 4 else x, self.labels[pos]


class EpochTotals:
    """Per-step loss and correct count of one epoch, written into tensors on the device: ``add`` never reads a value
    back; ``read`` does, once, at the end of the epoch."""

    def __init__(self, device: torch.device, steps: int):
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.loss = torch.zeros(steps, dtype=dtype, device=device)  # mean loss of each step's (local) batch
        self.correct = torch.zeros(steps, dtype=dtype, device=device)
        self.count = np.zeros(steps)  # examples per step (known on the host)

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.count[step] = len(y)
        if len(y):
            self.loss[step] = loss.detach()
            self.correct[step] = (logits.argmax(1) == y).sum()

    def read(self, dist: DistContext, params_finite: torch.Tensor) -> dict:
        """The epoch's ``loss``, ``acc`` (over all ranks), the first step with a non-finite loss and that loss
        (``bad_step``, ``bad_loss``; None when every loss was finite) and whether the parameters are finite: one
        read-back from the device."""
        both = torch.cat([self.loss, self.correct, params_finite.reshape(1).to(self.loss.dtype)]).cpu().numpy()
        n = len(self.count)
        loss, correct, finite = both[:n], both[n : 2 * n], bool(both[-1])
        bad = np.flatnonzero(~np.isfinite(loss) & (self.count > 0))
        first = dist.gather_objects((int(bad[0]), float(loss[bad[0]])) if len(bad) else None)
        first = min((b for b in first if b is not None), default=(None, None))
        total = dist.sum(torch.tensor([float(loss @ self.count), float(correct.sum()), float(self.count.sum())],
                                      dtype=torch.float64)).numpy()  # fmt: skip
        count = max(total[2], 1.0)
        return {"loss": float(total[0] / count), "acc": float(total[1] / count), "bad_step": first[0],
                "bad_loss": first[1], "params_finite": finite}  # fmt: skip
