r"""IVON on sharded parameters (DTensors, e.g. FSDP2's ``fully_shard``): each rank samples and updates its shard.

A DTensor parameter p holds on each rank a local shard, a view of the memory that FSDP2 all-gathers before a
forward pass. IVON computes on those local shards only: its state tensors are views of flat local buffers,
exposed in ``self.state[p]`` as DTensors with p's mesh and placements (so ``state_dict()`` holds the shards as
torch's own optimizers do under FSDP2, and ``torch.distributed.checkpoint`` can save and reshard them); sampling
writes m + sigma * e into the local shard in place (and restores the saved mean), since FSDP2 reads the shard's
memory, not ``p.data``.

One sample for the whole model, whatever the world size. The noise of a sharded parameter is defined on its full
(global) shape, flattened row-major, in chunks of ``CHUNK`` elements: chunk c of the parameter with index j (its
position in the optimizer's param groups) at draw n (the optimizer's count of samples drawn) is
``torch.randn(CHUNK)`` from a generator seeded with ``chunk_seed(seed, n, j, c)`` (the last chunk shorter). A
rank draws only the chunks its shard overlaps and slices them, so the gathered sample is m + sigma * e with e the
same full-shape draw on 1 or N ranks, and the work per rank is its shard plus at most two partial chunks per
parameter. Shards must be row ranges of the flattened parameter (sharding on dim 0, as FSDP2 does).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

CHUNK = 1 << 16
_MASK = (1 << 64) - 1


def is_sharded(t) -> bool:
    return isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """The local tensor of a DTensor (a view of its memory, no autograd), else ``t`` itself."""
    if isinstance(t, DTensor):
        with torch.no_grad():
            return t.to_local()
    return t


def like(view: Tensor, p: Tensor) -> Tensor:
    """``view`` (a local state tensor of parameter p) as p's kind of tensor: a DTensor shard when p is one."""
    if isinstance(p, DTensor):
        return DTensor.from_local(view, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                  stride=p.stride())  # fmt: skip
    return view


def flat_offset(p: DTensor) -> int:
    """Where p's local shard starts in p flattened (row-major); refuses shards that are not one flat range."""
    local_shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    if tuple(local_shape[1:]) != tuple(p.shape[1:]):
        raise NotImplementedError(
            f"IVON samples DTensor parameters sharded on dim 0 (FSDP2); got placements {p.placements} for shape "
            f"{tuple(p.shape)}"
        )
    row = 1
    for n in p.shape[1:]:
        row *= n
    return offset[0] * row if len(offset) else 0


def chunk_seed(seed: int, draw: int, index: int, chunk: int) -> int:
    """A 63-bit seed mixed from the four integers (splitmix64 rounds)."""
    z = seed & _MASK
    for v in (draw, index, chunk):
        z = (z ^ (v & _MASK)) + 0x9E3779B97F4A7C15 & _MASK
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK
        z ^= z >> 31
    return z >> 1


def fill_sharded_noise(out: Tensor, p: DTensor, seed: int, draw: int, index: int, gen: torch.Generator) -> None:
    """Fill ``out`` (p's local shard shape) with p's part of the full-shape noise of draw ``draw``."""
    n, start = p.numel(), flat_offset(p)
    flat, stop = out.view(-1), start + out.numel()
    for c in range(start // CHUNK, (stop - 1) // CHUNK + 1 if stop > start else start // CHUNK):
        lo, hi = c * CHUNK, min((c + 1) * CHUNK, n)
        gen.manual_seed(chunk_seed(seed, draw, index, c))
        e = torch.randn(hi - lo, generator=gen, device=out.device, dtype=out.dtype)
        a, b = max(lo, start), min(hi, stop)
        flat[a - start : b - start] = e[a - lo : b - lo]
