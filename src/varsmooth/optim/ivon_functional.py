r"""IVON's posterior update (Shen et al., 2024, Alg. 1), written twice: a readable per-parameter reference and a
multi-tensor version with fewer passes over memory. Both apply, per parameter, with S = ``samples`` accumulated
MC samples, e_s ~ N(0, I) the standardised noise of sample s and sigma = 1 / sqrt(lambda (h + delta)):

    g_hat = (1/S) sum_s g_s                                   (``grad_sum`` = sum_s g_s)
    h_hat = (1/S) sum_s g_s (theta_s - m) / sigma^2 = (1/S) sum_s g_s e_s / sigma      ("price"; ``hess_sum``
          [or lambda (1/S) sum_s g_s^2                        ("gradsq")]                = sum_s g_s e_s or g_s^2)
    g <- beta1 g + (1 - beta1) g_hat
    h <- beta2 h + (1 - beta2) h_hat + 0.5 (1 - beta2)^2 (h - h_hat)^2 / (h + delta)     (beta2 < 1)
    m <- m - alpha' clip((g / (1 - beta1^t) + delta m) / (h + delta), -r, r)

with alpha' = alpha (h0 + delta) under ``rescale_lr`` and no debiasing without ``debias``; h is capped where
lambda (h + delta) would overflow its dtype (``ivon_checks.hess_cap``), which never binds for sane values. The
multi-tensor version rewrites the Hessian step through u = (h - h_hat) / sqrt(lambda (h + delta)), so that

    h <- h - (1 - beta2) u sqrt(lambda (h + delta)) + 0.5 (1 - beta2)^2 lambda u^2

is two fused multiply-adds, and it reuses the consumed sums as scratch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .ivon_checks import hess_cap
from .ivon_shard import is_sharded, like, local

STATE_KEYS = ("momentum", "hess", "grad_sum", "hess_sum")


@dataclass(eq=False)
class Bucket:
    """The trainable params of one group sharing (device, dtype) and flat buffers holding their optimizer state.

    ``owners`` are the parameters (the keys of the optimizer's state); ``params`` the tensors the arithmetic
    writes: the parameters themselves, or for DTensor parameters their local shards (``ivon_shard``).

    ``flat[k]`` for k in :data:`STATE_KEYS` backs ``state[p][k]`` (views); ``noise`` (e), ``scale``
    (1 / sigma = sqrt(lambda (h + delta)), valid while ``scale_key`` matches) and ``sample`` (theta, parameter
    dtype) are scratch. Whole-bucket arithmetic runs on the flat buffers, one kernel per operation.
    """

    params: list[Tensor]
    flat: dict[str, Tensor]
    owners: list[Tensor] = field(default_factory=list)
    scale_key: tuple | None = None
    views: dict[str, list[Tensor]] = field(default_factory=dict)

    def __post_init__(self):
        self.owners = self.owners or list(self.params)
        sizes = [p.numel() for p in self.params]
        for name, buf in self.flat.items():
            self.views[name] = [v.view_as(p) for v, p in zip(buf.split(sizes), self.params, strict=True)]

    def lists(self, idx: list[int], whole: bool) -> dict[str, list[Tensor]]:
        """Per-key tensor lists over the params ``idx``: the flat buffer itself when ``whole``, else views."""
        if whole:
            return {k: [v] for k, v in self.flat.items()}
        return {k: [v[i] for i in idx] for k, v in self.views.items()}


def build_buckets(params: list[Tensor], locs: list[Tensor], index: list[int], state: dict, hess_init: float
                  ) -> list[Bucket]:  # fmt: skip
    """Bucket the trainable ``params`` (their local tensors ``locs``, their positions ``index`` in the optimizer)
    by (device, dtype, sharded); copy any existing ``state[p]`` values into fresh flat buffers, or initialise them
    (lazily, like torch optimizers), and make ``state[p][k]`` views of those buffers (DTensors over the views for
    DTensor parameters)."""
    keyed: dict[tuple, list[int]] = {}
    for i, (p, q) in enumerate(zip(params, locs, strict=True)):
        keyed.setdefault((q.device, p.dtype, is_sharded(p)), []).append(i)
    buckets = []
    for (device, dtype, sharded), sel in keyed.items():
        n, sdt = sum(locs[i].numel() for i in sel), torch.promote_types(dtype, torch.float32)
        flat = {k: torch.empty(n, device=device, dtype=sdt) for k in (*STATE_KEYS, "noise", "scale")}
        flat["sample"] = torch.empty(n, device=device, dtype=dtype)  # theta, or for shards the saved mean
        b = Bucket([locs[i] for i in sel], flat, owners=[params[i] for i in sel])
        b.sharded, b.index, b.held = sharded, [index[i] for i in sel], []
        for j, p in enumerate(b.owners):
            s = state[p]
            if not s:
                s.update(step=0, has_grad=False)  # the sums hold this step's values only while has_grad
            init = {"momentum": 0.0, "hess": hess_init, "grad_sum": 0.0, "hess_sum": 0.0}
            for k in STATE_KEYS:
                old, view = s.get(k), b.views[k][j]
                view.copy_(local(old)) if isinstance(old, Tensor) else view.fill_(init[k])
                s[k] = like(view, p)
            b.held.append(s["hess"])
        buckets.append(b)
    return buckets


@torch.no_grad()
def write_sample(b: Bucket, group: dict, hess: list[Tensor], e: Tensor, foreach: bool, swapped: list) -> None:
    """theta = m + e / sqrt(lambda (h + delta)) into the params of bucket ``b``; ``swapped`` gets what
    ``restore_means`` needs. Plain params get theta as their ``.data``; shards (``ivon_shard``) are written in
    place, since FSDP2 gathers the shard's memory, and their mean is kept in the ``sample`` scratch."""
    if foreach:  # theta = m + e / scale, written into the sample scratch
        refresh_scale(b, group)
        torch.div(e, b.flat["scale"], out=b.flat["sample"])
        torch._foreach_add_(b.views["sample"], b.params)
        thetas = b.views["sample"]
    else:
        ess, wd = group["ess"], group["weight_decay"]
        thetas = [(p + e / (ess * (h + wd)).sqrt()).to(p.dtype)
                  for p, h, e in zip(b.params, hess, b.views["noise"], strict=True)]  # fmt: skip
    if b.sharded:
        thetas = [t.clone() for t in thetas] if foreach else thetas
        torch._foreach_copy_(b.views["sample"], b.params)
        torch._foreach_copy_(b.params, thetas)
        swapped.extend((p, m, True) for p, m in zip(b.params, b.views["sample"], strict=True))
    else:
        for p, theta in zip(b.owners, thetas, strict=True):
            swapped.append((p, p.data, False))
            p.data = theta


def restore_means(swapped: list) -> None:
    """Undo ``write_sample``: the means back into the parameters."""
    for p, mean, inplace in swapped:
        if inplace:
            p.copy_(mean)
        else:
            p.data = mean
    swapped.clear()


def coefficients(group: dict, step: int) -> tuple[float, float]:
    """(alpha', 1 - beta1^t): the step size after ``rescale_lr`` and the debiasing divisor."""
    lr = group["lr"] * (group["hess_init"] + group["weight_decay"]) if group["rescale_lr"] else group["lr"]
    return lr, (1.0 - group["beta1"] ** step) if group["debias"] else 1.0


@torch.no_grad()
def update_reference(params: list[Tensor], states: list[dict], group: dict, samples: int, price: bool) -> None:
    """The update, one parameter at a time, exactly as written in the module docstring."""
    b1, b2, wd, ess, r = (group[k] for k in ("beta1", "beta2", "weight_decay", "ess", "clip_radius"))
    for p, s in zip(params, states, strict=True):  # p: the parameter or its local shard, as the state below
        h, mom, gs, hs = (local(s[k]) for k in ("hess", "momentum", "grad_sum", "hess_sum"))
        m, g_hat = p.to(h.dtype), gs / samples
        if price:
            h_hat = (ess * (h + wd)).sqrt() * hs / samples
        else:
            h_hat = ess * hs / samples
        mom.mul_(b1).add_(g_hat, alpha=1 - b1)
        if b2 < 1:  # beta2 = 1: fixed covariance, h stays at hess_init
            h.copy_(b2 * h + (1 - b2) * h_hat + 0.5 * (1 - b2) ** 2 * (h - h_hat) ** 2 / (h + wd))
            h.clamp_(max=hess_cap(group, h.dtype))
        s["step"] += 1
        lr, bias = coefficients(group, s["step"])
        p.copy_(m - lr * ((mom / bias + wd * m) / (h + wd)).clamp(-r, r))


@torch.no_grad()
def update_multi(b: Bucket, states: list[dict], idx: list[int], group: dict, samples: int, price: bool) -> None:
    """The same update for the params ``idx`` of bucket ``b`` with fused multi-tensor ops.

    Needs ``b.flat["scale"]`` = sqrt(lambda (h + delta)) for the current h (the sampling step leaves it there)
    and leaves it there for the updated h. When every param of the bucket is updated at the same step count the
    state arithmetic runs on the flat buffers.
    """
    b1, b2, wd, ess, r = (group[k] for k in ("beta1", "beta2", "weight_decay", "ess", "clip_radius"))
    steps = [states[i]["step"] + 1 for i in idx]
    whole = len(idx) == len(b.params) and len(set(steps)) == 1
    t, v = b.lists(idx, whole), b.lists(idx, False)
    mom, h, gs, hs, sc = t["momentum"], t["hess"], t["grad_sum"], t["hess_sum"], t["scale"]
    if samples == 1:
        torch._foreach_lerp_(mom, gs, 1 - b1)
    else:
        torch._foreach_mul_(mom, b1)
        torch._foreach_add_(mom, gs, alpha=(1 - b1) / samples)
    if b2 < 1:  # hs <- -u = (h_hat - h) / sqrt(lambda (h + delta)), then the two multiply-adds
        if price:  # h_hat / scale = hess_sum / S
            if samples != 1:
                torch._foreach_mul_(hs, 1 / samples)
            torch._foreach_addcdiv_(hs, h, sc, value=-1.0)
        else:
            torch._foreach_mul_(hs, ess / samples)
            torch._foreach_sub_(hs, h)
            torch._foreach_div_(hs, sc)
        torch._foreach_addcmul_(h, hs, sc, value=1 - b2)
        torch._foreach_addcmul_(h, hs, hs, value=0.5 * (1 - b2) ** 2 * ess)
        torch._foreach_clamp_max_(h, hess_cap(group, h[0].dtype))
    _plus(gs, h, wd, whole)  # the gradient sums are consumed: gs <- h + delta
    for i, step in zip(idx, steps, strict=True):
        states[i]["step"] = step
    lr = coefficients(group, steps[0])[0]
    inv_bias = [1.0 / coefficients(group, s)[1] for s in steps]
    ps, hw, mv = [b.params[i] for i in idx], v["grad_sum"], v["momentum"]
    if math.isinf(r) and all(p.dtype == m.dtype for p, m in zip(ps, mv, strict=True)):
        if wd != 0:  # m <- m - alpha' delta m / (h + delta), then m <- m - alpha' g_bar / (h + delta)
            torch._foreach_addcdiv_(ps, ps, hw, value=-lr * wd)
        torch._foreach_addcdiv_(ps, mv, hw, [-lr * c for c in inv_bias])
    else:  # clipping or low-precision params: the whole step in state precision (hess_sum is free now)
        u = v["hess_sum"]
        torch._foreach_copy_(u, ps)
        torch._foreach_mul_(u, wd)
        torch._foreach_add_(u, torch._foreach_mul(mv, inv_bias))
        torch._foreach_div_(u, hw)
        if not math.isinf(r):
            torch._foreach_clamp_min_(u, -r)
            torch._foreach_clamp_max_(u, r)
        torch._foreach_add_(ps, u, alpha=-lr)
    if b2 < 1:  # leave 1 / sigma = sqrt(lambda (h + delta)) for the next sample
        if whole:
            torch.sqrt(gs[0].mul_(ess), out=sc[0])
        else:
            torch._foreach_mul_(gs, ess)
            torch._foreach_copy_(sc, gs)
            torch._foreach_sqrt_(sc)


def _plus(out: list[Tensor], src: list[Tensor], c: float, whole: bool) -> None:
    """out <- src + c (one kernel per flat buffer)."""
    if whole:
        torch.add(src[0], c, out=out[0])
    else:
        torch._foreach_copy_(out, src)
        torch._foreach_add_(out, c)


def refresh_scale(b: Bucket, group: dict) -> None:
    """b.flat["scale"] <- sqrt(lambda (h + delta)) unless it is already valid for the current h."""
    key = (group["ess"], group["weight_decay"], id(b.flat["hess"]), b.flat["hess"]._version)
    if b.scale_key != key:
        sc = b.flat["scale"]
        torch.add(b.flat["hess"], group["weight_decay"], out=sc).mul_(group["ess"]).sqrt_()
        b.scale_key = key


def mark_scale_valid(b: Bucket, group: dict) -> None:
    b.scale_key = (group["ess"], group["weight_decay"], id(b.flat["hess"]), b.flat["hess"]._version)
