"""Batches of a training epoch: the feature rows of each batch of pool positions.

Lazy image datasets (map-style datasets of tensors) load their batches in ``num_workers`` DataLoader processes.
"""

from __future__ import annotations

import torch

from .rundata import fetch

__all__ = ["loader"]


class _Batches(torch.utils.data.Dataset):
    """Item i: the stacked features of batch i (for DataLoader worker processes on lazy image datasets)."""

    def __init__(self, features, index_batches):
        self.features, self.index_batches = features, index_batches

    def __len__(self):
        return len(self.index_batches)

    def __getitem__(self, i):
        return fetch(self.features, self.index_batches[i])


def loader(features, index_batches, num_workers: int):
    """An iterable of the stacked features of each batch of ``index_batches`` (rows of ``features``)."""
    data = _Batches(features, index_batches)
    if num_workers == 0:
        return (data[i] for i in range(len(data)))
    return torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=num_workers)
