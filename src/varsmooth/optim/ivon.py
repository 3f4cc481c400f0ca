r"""IVON: Improved Variational Online Newton (Shen et al., 2024).

Shen, Daheim, Cong, Nickl, Marconi, Bazan, Yokota, Gurevych, Cremers, Khan, Möllenhoff.
"Variational Learning is Effective for Large Deep Networks", ICML 2024 (Alg. 1; paper App. A.2).

IVON learns a diagonal Gaussian posterior q(theta) = N(m, diag(sigma^2)) with sigma^2 = 1 / (lambda (h + delta)).
Per step t, with learning rate alpha, effective sample size lambda (``ess``), weight decay delta:

    theta_s = m + sigma * e_s,   e_s ~ N(0, I),   s = 1..S                      (S = mc_samples)
    g_hat = mean_s grad(theta_s)
    h_hat = mean_s grad(theta_s) * (theta_s - m) / sigma^2                     ("price" reparameterisation)
          [or lambda * mean_s grad(theta_s)^2                                   ("gradsq")]
    g <- beta1 g + (1 - beta1) g_hat
    h <- beta2 h + (1 - beta2) h_hat + 0.5 (1 - beta2)^2 (h - h_hat)^2 / (h + delta)
    g_bar = g / (1 - beta1^t)                                                   (debias)
    m <- m - alpha' clip((g_bar + delta m) / (h + delta), -r, r),  alpha' = (h0 + delta) alpha   (rescale_lr)

``beta2 = 1`` keeps h at ``hess_init`` (fixed covariance, paper Fig. 6). The constructor and training loop match
the public ``ivon-opt`` package, so code switches by changing the import::

    for x, y in loader:
        for _ in range(mc_samples):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                loss_fn(model(x), y).backward()
        opt.step()

Two implementations share sampling and bookkeeping: a readable per-parameter reference path (``foreach=False``)
and the default multi-tensor path (``torch._foreach_*`` ops per bucket of same device/dtype parameters). Noise for
a bucket is drawn with one ``normal_`` call into a reusable buffer whose views feed the parameters; parameters
themselves are never flattened. All state lives in ``self.state`` (``step``, ``momentum``, ``hess`` and the
per-step sums ``grad_sum``, ``hess_sum``) and the param groups (``samples`` = MC samples accumulated so far), in
the parameter's device and dtype promoted to at least float32.

Noise source. By default noise comes from the device's global RNG, in the same order as ``ivon-opt`` (one draw
of group size per param group), so ``torch.manual_seed`` reproduces its noise exactly. ``generator=`` (constructor)
makes the optimizer draw from its own ``torch.Generator``, whose state is then part of ``state_dict()``;
``sampled_params(generator=...)`` overrides the source for one sample. Distributed: with ``sync=True`` and an
initialised process group, a rank without a generator creates one seeded with
``SeedSequence((torch.initial_seed(), rank))`` so every rank draws different noise; ``step()`` all-reduces the
gradient and Hessian sums and the sample counts in one flat call per (device, dtype), so N ranks with S samples
each equal one process with N*S samples. Keep DDP's own gradient sync off while sampling (``model.no_sync()``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["IVON", "HessApprox", "predictive_probs"]


class HessApprox(str, enum.Enum):
    PRICE = "price"  # E[g (theta - m)] / sigma^2 (reparameterisation)
    GRADSQ = "gradsq"  # ess * E[g^2]


def _state_dtype(p: Tensor) -> torch.dtype:
    return torch.promote_types(p.dtype, torch.float32)


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass(eq=False)
class _Bucket:
    """Scratch for the trainable params of one group sharing (device, dtype); not state, rebuilt on demand."""

    params: list[Tensor]
    noise: Tensor  # flat: e ~ N(0, 1), then sigma * e, then sigma * e * grad
    sample: Tensor  # flat, parameter dtype: theta = m + sigma * e
    scale: Tensor  # flat: sqrt(ess (h + wd)) = 1 / sigma, valid while `scale_key` matches
    scale_key: tuple | None = None
    views: dict[str, list[Tensor]] = field(default_factory=dict)

    def __post_init__(self):
        sizes = [p.numel() for p in self.params]
        for name in ("noise", "sample", "scale"):
            flat = getattr(self, name).split(sizes)
            self.views[name] = [v.view_as(p) for v, p in zip(flat, self.params, strict=True)]


class IVON(torch.optim.Optimizer):
    """Improved Variational Online Newton; see the module docstring for the update, the loop and the noise.

    Args (as in ``ivon-opt``; all but ``mc_samples``, ``hess_approx`` and ``sync`` can be set per param group):
        lr: learning rate alpha (>= 0). ess: effective sample size lambda (> 0), usually the training-set size.
        hess_init: initial h0 (> 0). beta1 in [0, 1), beta2 in [0, 1] (1 = fixed h). weight_decay: delta (>= 0).
        mc_samples: samples per step used by ``step(closure)``. hess_approx: "price" or "gradsq".
        clip_radius: elementwise clip of the preconditioned update (> 0). sync: all-reduce statistics over ranks.
        debias: divide g by (1 - beta1^t). rescale_lr: use alpha (h0 + delta) as the step size.
        foreach: True/None = multi-tensor path, False = per-parameter reference path (same results).
        generator: a ``torch.Generator`` for the noise (its state goes into ``state_dict``); default: global RNG.
    Raises ``ValueError`` naming the first invalid hyperparameter.
    """

    def __init__(
        self,
        params,
        lr: float,
        ess: float,
        hess_init: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99999,
        weight_decay: float = 1e-4,
        mc_samples: int = 1,
        hess_approx: str = "price",
        clip_radius: float = float("inf"),
        sync: bool = False,
        debias: bool = True,
        rescale_lr: bool = True,
        *,
        foreach: bool | None = None,
        generator: torch.Generator | None = None,
    ):
        defaults = dict(
            lr=lr, ess=ess, hess_init=hess_init, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
            clip_radius=clip_radius, debias=debias, rescale_lr=rescale_lr, samples=0,
        )  # fmt: skip
        self._validate(defaults)
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"Invalid mc_samples: {mc_samples!r} (must be an int >= 1)")
        if hess_approx not in {h.value for h in HessApprox}:
            raise ValueError(f"Invalid hess_approx: {hess_approx!r} (must be 'price' or 'gradsq')")
        self.mc_samples, self.hess_approx = mc_samples, HessApprox(hess_approx)
        self.sync, self.foreach = sync, foreach is not False
        self._generators: dict[torch.device, torch.Generator] = {}
        if generator is not None:
            self._generators[generator.device] = generator
        self._scratch: dict[int, tuple] = {}  # group index -> (param signature, buckets)
        self._sampling = False
        super().__init__(params, defaults)

    @staticmethod
    def _validate(g: dict) -> None:
        checks = {
            "lr": 0.0 <= g["lr"] < math.inf, "ess": 0.0 < g["ess"] < math.inf,
            "hess_init": 0.0 < g["hess_init"] < math.inf, "beta1": 0.0 <= g["beta1"] < 1.0,
            "beta2": 0.0 <= g["beta2"] <= 1.0, "weight_decay": 0.0 <= g["weight_decay"] < math.inf,
            "clip_radius": 0.0 < g["clip_radius"],
        }  # fmt: skip
        allowed = {"beta1": "in [0, 1)", "beta2": "in [0, 1]", "lr": ">= 0", "weight_decay": ">= 0"}
        for name, ok in checks.items():
            if not ok:  # comparisons are False for NaN too
                raise ValueError(f"Invalid {name}: {g[name]!r} (must be {allowed.get(name, '> 0')})")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._validate(self.param_groups[-1])

    # ---------------------------------------------------------------- state, scratch, noise
    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:  # lazy, like torch optimizers
            dt = _state_dtype(p)
            state["step"] = 0
            state["momentum"] = torch.zeros_like(p, dtype=dt, memory_format=torch.preserve_format)
            state["hess"] = torch.full_like(p, group["hess_init"], dtype=dt, memory_format=torch.preserve_format)
            state["has_grad"] = False  # grad_sum / hess_sum hold this step's sums only while True
        if "grad_sum" not in state:  # sums are left out of state_dict() between steps
            state["grad_sum"] = torch.zeros_like(state["momentum"])
            state["hess_sum"] = torch.zeros_like(state["momentum"])
        return state

    def _buckets(self, gi: int, group: dict) -> list[_Bucket]:
        params = [p for p in group["params"] if p.requires_grad]
        sig = tuple((id(p), p.dtype, p.device, p.shape) for p in params)
        cached = self._scratch.get(gi)
        if cached is not None and cached[0] == sig:
            return cached[1]
        keyed: dict[tuple, list[Tensor]] = {}
        for p in params:
            keyed.setdefault((p.device, p.dtype), []).append(p)
        buckets = []
        for (device, dtype), ps in keyed.items():
            n, sdt = sum(p.numel() for p in ps), torch.promote_types(dtype, torch.float32)
            noise, scale, sample = (torch.empty(n, device=device, dtype=dt) for dt in (sdt, sdt, dtype))
            buckets.append(_Bucket(ps, noise=noise, sample=sample, scale=scale))
        self._scratch[gi] = (sig, buckets)
        return buckets

    def _generator(self, device: torch.device, override: torch.Generator | None) -> torch.Generator | None:
        if override is not None:
            if override.device.type != device.type:
                raise ValueError(f"Invalid generator: on {override.device}, parameters on {device}")
            return override
        gen = self._generators.get(device)
        if gen is None and self.sync and _dist_on():  # distinct, reproducible noise per rank
            seed = np.random.SeedSequence((torch.initial_seed(), dist.get_rank())).generate_state(1, np.uint64)[0]
            gen = self._generators[device] = torch.Generator(device=device)
            gen.manual_seed(int(seed) >> 1)
        return gen

    def draw_noise(self, flat: Tensor, generator: torch.Generator | None) -> Tensor:
        """Fill ``flat`` (one bucket) with N(0, 1) noise; one call per bucket, in ivon-opt's order."""
        return flat.normal_(generator=generator)

    # ---------------------------------------------------------------- sampling
    @contextmanager
    def sampled_params(self, train: bool = False, generator: torch.Generator | None = None) -> Iterator[None]:
        """Replace every trainable parameter by a posterior sample ``m + sigma * e`` inside the block.

        With ``train=True`` the gradients in ``p.grad`` at the end of the block are accumulated for the next
        ``step()`` (a parameter whose ``grad`` is None contributes zero). The mean is restored when the block exits,
        also when it raises (the sample is then discarded). ``generator`` overrides the noise source once.
        """
        if self._sampling:
            raise RuntimeError("sampled_params() blocks cannot be nested")
        self._sampling, swapped = True, []
        try:
            plan = self._sample(generator, swapped)
            yield
        finally:
            for p, mean in swapped:
                p.data = mean
            self._sampling = False
        if train:
            self._accumulate(plan)

    @torch.no_grad()
    def _sample(self, generator, swapped: list) -> list:
        plan = []
        for gi, group in enumerate(self.param_groups):
            ess, wd = group["ess"], group["weight_decay"]
            for b in self._buckets(gi, group):
                ps, states = b.params, [self._state(p, group) for p in b.params]
                self.draw_noise(b.noise, self._generator(b.noise.device, generator))
                if self.foreach:  # noise = e / sqrt(ess (h + wd)); theta = m + noise, written into scratch
                    key = self._scale_key(group, states)
                    if b.scale_key != key:
                        scale = b.views["scale"]
                        torch._foreach_copy_(scale, [s["hess"] for s in states])
                        torch._foreach_add_(scale, wd)
                        torch._foreach_mul_(scale, ess)
                        torch._foreach_sqrt_(scale)
                        b.scale_key = key
                    torch._foreach_div_(b.views["noise"], b.views["scale"])
                    b.sample.copy_(b.noise)
                    torch._foreach_add_(b.views["sample"], ps)
                    thetas = b.views["sample"]
                else:
                    thetas = []
                    for e, s, p in zip(b.views["noise"], states, ps, strict=True):
                        e.div_((ess * (s["hess"] + wd)).sqrt())
                        thetas.append((p + e).to(p.dtype))
                for p, theta in zip(ps, thetas, strict=True):
                    swapped.append((p, p.data))
                    p.data = theta
                plan.append((ps, states, b.views["noise"], group))
        return plan

    @staticmethod
    def _scale_key(group: dict, states: list[dict]) -> tuple:
        return group["ess"], group["weight_decay"], tuple((id(s["hess"]), s["hess"]._version) for s in states)

    @torch.no_grad()
    def _accumulate(self, plan: list) -> None:
        price = self.hess_approx is HessApprox.PRICE
        for ps, states, noise, group in plan:
            group["samples"] += 1
            idx = [i for i, p in enumerate(ps) if p.grad is not None]
            if any(ps[i].grad.is_sparse for i in idx):
                raise RuntimeError("IVON does not support sparse gradients")
            if not self.foreach:
                for i in idx:
                    s, g = states[i], ps[i].grad
                    if not s["has_grad"]:
                        s["grad_sum"].zero_(), s["hess_sum"].zero_()
                    s["grad_sum"].add_(g)
                    s["hess_sum"].add_(noise[i] * g if price else g * g)
                    s["has_grad"] = True
                continue
            fresh_idx = [i for i in idx if not states[i]["has_grad"]]
            for fresh, sel in ((True, fresh_idx), (False, [i for i in idx if states[i]["has_grad"]])):
                if not sel:  # first gradient of this step: copy into the sums, else add
                    continue
                g, gsum, hsum = (
                    [ps[i].grad for i in sel],
                    *([states[i][k] for i in sel] for k in ("grad_sum", "hess_sum")),
                )
                if price:
                    torch._foreach_mul_(nz := [noise[i] for i in sel], g)  # the noise scratch is free now
                    (torch._foreach_copy_ if fresh else torch._foreach_add_)(hsum, nz)
                elif fresh:
                    torch._foreach_copy_(hsum, g)
                    torch._foreach_mul_(hsum, g)
                else:
                    torch._foreach_addcmul_(hsum, g, g)
                (torch._foreach_copy_ if fresh else torch._foreach_add_)(gsum, g)
                for i in sel:
                    states[i]["has_grad"] = True

    # ---------------------------------------------------------------- update
    @torch.no_grad()
    def step(self, closure=None):
        """Update the posterior from the samples accumulated since the last step (``closure`` as in ivon-opt:
        called ``mc_samples`` times, it must open ``sampled_params(train=True)`` itself)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = sum(closure() for _ in range(self.mc_samples)) / self.mc_samples
        if all(g["samples"] == 0 for g in self.param_groups):
            raise RuntimeError("IVON.step() needs gradients: run `with opt.sampled_params(train=True):` first")
        if self.sync and _dist_on():
            self._all_reduce()
        for gi, group in enumerate(self.param_groups):
            for b in self._buckets(gi, group) if group["samples"] else []:
                states = [self._state(p, group) for p in b.params]
                idx = [i for i, s in enumerate(states) if s["has_grad"]]  # no gradient at all: skip, like torch
                if idx:
                    (self._update_foreach if self.foreach else self._update_reference)(group, b, states, idx)
                    for i in idx:
                        states[i]["has_grad"] = False
            group["samples"] = 0
        return loss

    def _coefficients(self, group: dict, step: int) -> tuple[float, float]:
        lr = group["lr"] * (group["hess_init"] + group["weight_decay"]) if group["rescale_lr"] else group["lr"]
        return lr, (1.0 - group["beta1"] ** step) if group["debias"] else 1.0

    def _update_reference(self, group: dict, b: _Bucket, states: list[dict], idx: list[int]) -> None:
        b1, b2, wd, ess, r, n = (group[k] for k in ("beta1", "beta2", "weight_decay", "ess", "clip_radius", "samples"))
        for i in idx:
            p, s = b.params[i], states[i]
            h, mom, m = s["hess"], s["momentum"], p.to(s["hess"].dtype)
            g_hat = s["grad_sum"] / n
            if self.hess_approx is HessApprox.PRICE:  # mean of g (theta - m) / sigma^2
                h_hat = ess * (h + wd) * s["hess_sum"] / n
            else:
                h_hat = ess * s["hess_sum"] / n
            mom.mul_(b1).add_(g_hat, alpha=1 - b1)
            if b2 < 1:  # beta2 = 1: fixed covariance, h stays at hess_init
                h.copy_(b2 * h + (1 - b2) * h_hat + 0.5 * (1 - b2) ** 2 * (h - h_hat) ** 2 / (h + wd))
            s["step"] += 1
            lr, bias = self._coefficients(group, s["step"])
            p.copy_(m - lr * ((mom / bias + wd * m) / (h + wd)).clamp(-r, r))

    def _update_foreach(self, group: dict, b: _Bucket, states: list[dict], idx: list[int]) -> None:
        b1, b2, wd, ess, r, n = (group[k] for k in ("beta1", "beta2", "weight_decay", "ess", "clip_radius", "samples"))
        ps, states = [b.params[i] for i in idx], [states[i] for i in idx]
        hs, moms, gsum, hsum = ([s[k] for s in states] for k in ("hess", "momentum", "grad_sum", "hess_sum"))
        if n == 1:
            torch._foreach_lerp_(moms, gsum, 1 - b1)
        else:
            torch._foreach_mul_(moms, b1)
            torch._foreach_add_(moms, gsum, alpha=(1 - b1) / n)
        if b2 < 1:  # the sums are consumed; reuse them as scratch: gsum <- h + wd, hsum <- d = h - h_hat
            torch._foreach_copy_(gsum, hs)
            torch._foreach_add_(gsum, wd)
            if self.hess_approx is HessApprox.PRICE:
                torch._foreach_mul_(hsum, gsum)
            torch._foreach_mul_(hsum, -ess / n)
            torch._foreach_add_(hsum, hs)
            torch._foreach_add_(hs, hsum, alpha=-(1 - b2))  # b2 h + (1 - b2) h_hat
            torch._foreach_mul_(hsum, hsum)
            torch._foreach_div_(hsum, gsum)
            torch._foreach_add_(hs, hsum, alpha=0.5 * (1 - b2) ** 2)
        for s in states:
            s["step"] += 1
        coef = [self._coefficients(group, s["step"]) for s in states]
        hw, u = [b.views["scale"][i] for i in idx], gsum  # hw <- h + wd, u <- (g / bias + wd m) / hw
        torch._foreach_copy_(hw, hs)
        torch._foreach_add_(hw, wd)
        torch._foreach_copy_(u, moms)
        torch._foreach_mul_(u, [1 / c[1] for c in coef])
        if wd != 0:
            torch._foreach_add_(u, ps, alpha=wd)
        torch._foreach_div_(u, hw)
        if not math.isinf(r):
            torch._foreach_clamp_min_(u, -r)
            torch._foreach_clamp_max_(u, r)
        torch._foreach_add_(ps, u, alpha=-coef[0][0])
        torch._foreach_mul_(hw, ess)  # leave 1 / sigma for the next sample
        torch._foreach_sqrt_(hw)
        b.scale_key = self._scale_key(group, states) if len(idx) == len(b.params) else None

    # ---------------------------------------------------------------- distributed
    def _all_reduce(self) -> None:
        """Sum the gradient/Hessian sums, sample counts and has-gradient flags over ranks: one flat all-reduce
        per (device, dtype) of the state."""
        buckets: dict[tuple, list[dict]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    s = self._state(p, group)
                    if not s["has_grad"]:  # scratch: contributes zero here, may have a gradient elsewhere
                        s["grad_sum"].zero_(), s["hess_sum"].zero_()
                    buckets.setdefault((p.device, s["hess"].dtype), []).append(s)
        for i, ((device, dtype), states) in enumerate(buckets.items()):
            sums = [s[k] for s in states for k in ("grad_sum", "hess_sum")]
            counts = [float(g["samples"]) for g in self.param_groups] if i == 0 else []
            flags = torch.tensor(counts + [float(s["has_grad"]) for s in states], device=device, dtype=dtype)
            buf = torch.cat([t.reshape(-1) for t in sums] + [flags])
            dist.all_reduce(buf)
            *parts, flags = buf.split([t.numel() for t in sums] + [len(flags)])
            torch._foreach_copy_(sums, [v.view_as(t) for v, t in zip(parts, sums, strict=True)])
            flags = flags.tolist()
            for g, c in zip(self.param_groups, flags[: len(counts)], strict=False):
                g["samples"] = round(c)
            for s, f in zip(states, flags[len(counts) :], strict=True):
                s["has_grad"] = f > 0.5

    # ---------------------------------------------------------------- posterior, state dict
    @torch.no_grad()
    def posterior_std(self) -> dict[nn.Parameter, Tensor]:
        """sigma = 1 / sqrt(ess (h + weight_decay)) of every trainable parameter (the mean is the parameter)."""
        out = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    out[p] = (group["ess"] * (self._state(p, group)["hess"] + group["weight_decay"])).rsqrt()
        return out

    def state_dict(self) -> dict:
        sd = super().state_dict()
        scratch = ("grad_sum", "hess_sum")  # between steps the sums are scratch: leave them out
        for i, s in sd["state"].items():
            if not s.get("has_grad", True):
                sd["state"][i] = {k: v for k, v in s.items() if k not in scratch}
        sd["generators"] = {str(d): g.get_state() for d, g in self._generators.items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        generators = state_dict.pop("generators", {})
        super().load_state_dict(state_dict)
        # torch casts state to the parameter dtype; keep ours at >= float32, and not shared with the input dict
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params, strict=True):
            for k, v in state_dict["state"].get(i, {}).items():
                if isinstance(v, Tensor):
                    self.state[p][k] = v.to(device=p.device, dtype=_state_dtype(p), copy=True)
        for d, st in generators.items():
            dev = torch.device(d)
            self._generators.setdefault(dev, torch.Generator(device=dev)).set_state(st)
        self._scratch.clear()


def _softmax(logits: Tensor) -> Tensor:
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


@torch.no_grad()
def predictive_probs(
    model: nn.Module, opt: IVON, x: Tensor, samples: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """Posterior predictive ``mean_s softmax(model_{theta_s}(x))``, shape (B, K), over ``samples`` draws.

    The model runs in eval mode without gradients; its training flag and the posterior mean are restored.
    ``samples=0`` evaluates the mean only.
    """
    if samples < 0:
        raise ValueError(f"Invalid samples: {samples!r} (must be >= 0)")
    was_training = model.training
    model.eval()
    try:
        total = None
        for _ in range(samples):
            with opt.sampled_params(train=False, generator=generator):
                probs = _softmax(model(x))
            total = probs if total is None else total + probs
        return _softmax(model(x)) if samples == 0 else total / samples
    finally:
        model.train(was_training)
