"""Data-parallel training across processes started by ``torchrun`` (``torch.distributed``), without DDP's wrapper.

Every rank holds the full model and sees the same global batch order; rank r trains on the r-th contiguous shard
(``torch.tensor_split``) of each global batch. Each rank scales its local mean loss by ``n_r * W / n`` (``n_r`` its
shard size, ``n`` the global batch, ``W`` the world size), so the *average* over ranks of the local gradients is
exactly the gradient of the global batch's mean loss, even when the last batch does not split evenly. SGD-based
methods average gradients with one flat ``all_reduce``; IVON averages its own gradient and Hessian statistics
(``sync=True``), each rank drawing its own posterior sample (so W ranks act as W Monte Carlo samples, each on its
shard). BatchNorm running statistics are per rank during an epoch and taken from rank 0 before evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's part of a global batch of indices and its loss scale ``n_r * W / n``."""
        if not self.active:
            return batch, 1.0
        local = torch.tensor_split(batch, self.world_size)[self.rank]
        return local, len(local) * self.world_size / max(len(batch), 1)

    def mean_grads(self, params: list[nn.Parameter]) -> None:
        """Replace every gradient by its mean over ranks (one flat all-reduce)."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world_size)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of a CPU tensor over ranks (through the backend's device), returned on the CPU."""
        if self.active:
            on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else values.device
            buf = values.to(on, copy=True)
            dist.all_reduce(buf)
            values = buf.cpu()
        return values

    def gather_rows(self, rows: torch.Tensor, total: int) -> torch.Tensor:
        """Concatenate every rank's ``rows`` (its shard of a batch of ``total`` rows) in rank order."""
        if not self.active:
            return rows
        sizes = [len(s) for s in torch.tensor_split(torch.arange(total), self.world_size)]
        padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
        padded[: len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

    def gather_objects(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_model(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if self.active:
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_from_env(device: torch.device) -> DistContext:
    """A context for this process: single-process unless ``WORLD_SIZE`` > 1 (set by ``torchrun``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        here = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), initialized_here=here)
