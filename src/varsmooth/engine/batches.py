"""The batches of a training epoch and the epoch's running totals, kept on the device.

:class:`TrainBatches`: an in-memory dataset (one feature tensor: MNIST-like sets, CIFAR) moves to the device once,
with the labels trained on; each epoch's order is copied there once, and every batch is indexed (and augmented,
:func:`varsmooth.data.transforms.augment_batch`) on the device. A lazy image dataset (a map-style dataset) loads
its batches in ``num_workers`` DataLoader processes into pinned memory (CUDA) and copies them without blocking.
On CUDA, a model with convolutions gets its images channels-last.

:class:`EpochTotals`: the loss sum, correct count and the first non-finite step of an epoch, accumulated on the
device and read once, at the end of the epoch: no step waits for the device.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    """Running sums of one epoch on the device: ``add`` per step never reads a value back; ``read`` once."""

    def __init__(self, device: torch.device):
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(2, dtype=self.dtype, device=device)  # loss * n, correct
        self.first_bad = torch.full((2,), -1.0, dtype=self.dtype, device=device)  # step, loss of the first NaN/inf
        self.count = 0  # examples (known on the host)

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        self.count += n
        if n == 0:
            return
        loss = loss.detach().to(self.dtype)
        self.sums += torch.stack([loss * n, (logits.argmax(1) == y).sum().to(self.dtype)])
        first = (~torch.isfinite(loss)) & (self.first_bad[0] < 0)
        self.first_bad = torch.stack([torch.where(first, float(step), self.first_bad[0]),
                                      torch.where(first, loss, self.first_bad[1])])  # fmt: skip

    def read(self, dist: DistContext, params_finite: torch.Tensor) -> dict:
        """The epoch's ``loss``, ``acc`` (over all ranks), the first non-finite step and its loss (``bad_step``,
        ``bad_loss``; None when every loss was finite) and whether the parameters are finite: one read-back."""
        local = torch.cat([self.sums, self.first_bad, params_finite.reshape(1).to(self.dtype)]).cpu().numpy()
        loss_sum, correct, bad_step, bad_loss, finite = local.tolist()
        bad = dist.gather_objects((bad_step, bad_loss))
        bad = [b for b in bad if b[0] >= 0]
        total = dist.sum(torch.tensor([loss_sum, correct, float(self.count)], dtype=torch.float64)).numpy()
        n = max(total[2], 1.0)
        first = min(bad) if bad else (None, None)
        return {"loss": float(total[0] / n), "acc": float(total[1] / n), "bad_step": first[0],
                "bad_loss": first[1], "params_finite": bool(finite)}  # fmt: skip
