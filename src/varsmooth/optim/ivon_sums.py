"""IVON's per-step sums (``grad_sum`` = sum_s g_s, ``hess_sum`` = sum_s g_s e_s or g_s^2): taking a sample's
gradients into them (and undoing a take, for a micro-batch that continues a sample), across processes (one
all-reduce over ranks: data-parallel training equals one process with all ranks' samples), and across loss scales
(unscaling with a finite check under ``torch.amp.GradScaler``)."""

from __future__ import annotations

import sys
import weakref

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .ivon_shard import local


def dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_seed() -> int:
    """A seed distinct per rank and reproducible: from ``SeedSequence((torch.initial_seed(), rank))``."""
    seed = np.random.SeedSequence((torch.initial_seed(), dist.get_rank())).generate_state(1, np.uint64)[0]
    return int(seed) >> 1


def all_reduce_sums(groups: list[dict], states: list[list[dict]]) -> None:
    """Sum the gradient/Hessian sums, the groups' sample counts and the has-gradient flags over ranks: one flat
    all-reduce per (device, dtype) of the state. ``states[i]``: the states of the trainable params of group i."""
    buckets: dict[tuple, list[dict]] = {}
    for s in (s for group_states in states for s in group_states):
        if not s["has_grad"]:  # scratch: contributes zero here, may have a gradient elsewhere
            s["grad_sum"].zero_(), s["hess_sum"].zero_()
        buckets.setdefault((s["hess"].device, s["hess"].dtype), []).append(s)
    for i, ((device, dtype), bucket) in enumerate(buckets.items()):
        sums = [s[k] for s in bucket for k in ("grad_sum", "hess_sum")]
        counts = [float(g["samples"]) for g in groups] if i == 0 else []
        flags = torch.tensor(counts + [float(s["has_grad"]) for s in bucket], device=device, dtype=dtype)
        buf = torch.cat([t.reshape(-1) for t in sums] + [flags])
        dist.all_reduce(buf)
        *parts, flags = buf.split([t.numel() for t in sums] + [len(flags)])
        torch._foreach_copy_(sums, [v.view_as(t) for v, t in zip(parts, sums, strict=True)])
        flags = flags.tolist()
        for g, c in zip(groups, flags[: len(counts)], strict=False):
            g["samples"] = round(c)
        for s, f in zip(bucket, flags[len(counts) :], strict=True):
            s["has_grad"] = f > 0.5


def unscale_sums(states: list[dict], grad_scale: Tensor | None, found_inf: Tensor | float | None,
                 gradsq: bool) -> bool:  # fmt: skip
    """Divide the sums of ``states`` by the loss scale s (``hess_sum`` by s^2 for gradsq), in place; return False
    when any of them, or the scaler's ``found_inf``, is not finite (the step must then be skipped).

    The scaler's own check sees only ``p.grad``, the last sample; the sums hold every sample of the step.
    """
    inv = 1.0 / float(grad_scale) if grad_scale is not None else 1.0
    by_device: dict[torch.device, tuple[list[Tensor], list[Tensor]]] = {}
    for s in states:
        gsums, hsums = by_device.setdefault(s["grad_sum"].device, ([], []))
        gsums.append(s["grad_sum"])
        hsums.append(s["hess_sum"])
    finite = found_inf is None or float(found_inf) == 0
    for device, (gsums, hsums) in by_device.items():
        flag = torch.zeros((), device=device)
        for sums, c in ((gsums, inv), (hsums, inv * inv if gradsq else inv)):
            torch._amp_foreach_non_finite_check_and_unscale_(sums, flag, torch.full((), c, device=device))
        finite = finite and flag.item() == 0
    return finite


@torch.no_grad()
def take(plan: list, state: dict, price: bool, foreach: bool, sign: int = 1) -> None:
    """Add (``sign`` 1) or subtract (-1) the gradients in ``p.grad`` to the step's sums: grad_sum += g and
    hess_sum += g e (price) or g^2 (gradsq), where e is the bucket's current noise. Adding to a sum that holds no
    gradient of this step (``has_grad`` False) overwrites it. Counts one sample per param group (``samples``).
    ``plan``: the (bucket, group) pairs of the sample. Undoing the only sample of a step marks the sums unused
    instead of subtracting, so that the next take overwrites them exactly."""
    only = {id(g): g["samples"] == 1 for _, g in plan}  # undoing the step's only sample: the sums go unused
    for group in {id(g): g for _, g in plan}.values():
        group["samples"] += sign
    for b, group in plan:
        ps, states = b.owners, [state[p] for p in b.owners]
        idx = [i for i, p in enumerate(ps) if p.grad is not None]
        if any(ps[i].grad.is_sparse for i in idx):
            raise RuntimeError("IVON does not support sparse gradients")
        if sign < 0 and only[id(group)]:
            for i in idx:
                states[i]["has_grad"] = False
            continue
        split = {fresh: [i for i in idx if states[i]["has_grad"] != fresh] for fresh in (True, False)}
        for fresh, sel in split.items():
            if not sel:
                continue
            g = [local(ps[i].grad) for i in sel]
            gsum, hsum, e = ([b.views[k][i] for i in sel] for k in ("grad_sum", "hess_sum", "noise"))
            if sign < 0:  # undo an earlier take of these same gradients (not fresh: they are in the sums)
                torch._foreach_sub_(gsum, g)
                torch._foreach_sub_(hsum, torch._foreach_mul(e if price else g, g))
            elif not foreach:
                for gi, gs, hs, ei in zip(g, gsum, hsum, e, strict=True):
                    (gs.copy_ if fresh else gs.add_)(gi)
                    (hs.copy_ if fresh else hs.add_)(ei * gi if price else gi * gi)
            elif fresh:
                torch._foreach_copy_(gsum, g)
                torch._foreach_copy_(hsum, e if price else g)
                torch._foreach_mul_(hsum, g)
            else:
                torch._foreach_add_(gsum, g)
                torch._foreach_addcmul_(hsum, e if price else g, g)
            for i in sel:
                states[i]["has_grad"] = True


def mid_step() -> bool:
    """True inside accelerate's gradient accumulation on a micro-batch that does not end the optimizer step
    (its ``GradientState.sync_gradients`` is False; accelerate then skips ``optimizer.step()``)."""
    state = sys.modules.get("accelerate.state")
    if state is None or not getattr(state.GradientState, "_shared_state", None):
        return False
    return not state.GradientState().sync_gradients


class Block:
    """One open ``sampled_params`` block: its buckets, the swapped-out means and whether it continues a sample."""

    def __init__(self, plan: list, swapped: list, generator, continued: bool):
        self.plan, self.swapped, self.generator, self.continued = plan, swapped, generator, continued


def grad_marks(params: list[Tensor]) -> list[tuple]:
    """What ``grads_untouched`` compares: each parameter's gradient tensor (weakly) and its version."""
    return [(p, None if p.grad is None else weakref.ref(p.grad), p.grad is not None and p.grad._version)
            for p in params]  # fmt: skip


def grads_untouched(marks: list[tuple]) -> bool:
    """True when every ``p.grad`` is still the tensor ``grad_marks`` saw, unchanged (nothing cleared it)."""
    return all((p.grad is None) if ref is None else (ref() is p.grad and p.grad._version == v)
               for p, ref, v in marks)  # fmt: skip
