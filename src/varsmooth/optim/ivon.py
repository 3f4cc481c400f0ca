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

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["IVON", "HessApprox", "predictive_probs"]


class HessApprox(str, enum.Enum):
    PRICE = "price"
    GRADSQ = "gradsq"


def _state_dtype(p: Tensor) -> torch.dtype:
    return torch.promote_types(p.dtype, torch.float32)


class IVON(torch.optim.Optimizer):
    """Improved Variational Online Newton; see the module docstring for the update and the loop."""

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
        self._buffers: dict[int, tuple] = {}  # group index -> (signature, buckets); scratch, not state
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
        allowed = {"beta1": "[0, 1)", "beta2": "[0, 1]", "lr": ">= 0", "weight_decay": ">= 0"}
        for name, ok in checks.items():
            if not ok:  # also catches NaN
                raise ValueError(f"Invalid {name}: {g[name]!r} (must be {allowed.get(name, '> 0')})")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._validate(self.param_groups[-1])

    # ---------------------------------------------------------------- state and noise
    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:  # lazy, like torch optimizers: parameters may move before first use
            dt = _state_dtype(p)
            state["step"] = 0
            state["momentum"] = torch.zeros_like(p, dtype=dt, memory_format=torch.preserve_format)
            state["hess"] = torch.full_like(p, group["hess_init"], dtype=dt, memory_format=torch.preserve_format)
            state["grad_sum"] = torch.zeros_like(state["momentum"])
            state["hess_sum"] = torch.zeros_like(state["momentum"])
            state["has_grad"] = False
        return state

    def _buckets(self, gi: int, group: dict) -> list[dict]:
        """Trainable params of a group split by (device, dtype), each with flat noise/sample scratch buffers."""
        params = [p for p in group["params"] if p.requires_grad]
        sig = tuple((id(p), p.dtype, p.device, p.shape) for p in params)
        cached = self._buffers.get(gi)
        if cached is not None and cached[0] == sig:
            return cached[1]
        keyed: dict[tuple, list[Tensor]] = {}
        for p in params:
            keyed.setdefault((p.device, p.dtype), []).append(p)
        buckets = []
        for (device, dtype), ps in keyed.items():
            sizes = [p.numel() for p in ps]
            noise = torch.empty(sum(sizes), device=device, dtype=torch.promote_types(dtype, torch.float32))
            sample = torch.empty(sum(sizes), device=device, dtype=dtype)
            views = lambda flat: [v.view_as(p) for v, p in zip(flat.split(sizes), ps)]  # noqa: E731
            buckets.append(dict(params=ps, noise=noise, noise_views=views(noise), sample=sample,
                                sample_views=views(sample), device=device))  # fmt: skip
        self._buffers[gi] = (sig, buckets)
        return buckets

    def _generator(self, device: torch.device, override: torch.Generator | None) -> torch.Generator | None:
        if override is not None:
            if override.device.type != device.type:
                raise ValueError(f"Invalid generator: on {override.device}, parameters on {device}")
            return override
        gen = self._generators.get(device)
        if gen is None and self.sync and dist.is_available() and dist.is_initialized():
            seed = int(np.random.SeedSequence((torch.initial_seed(), dist.get_rank())).generate_state(1, np.uint64)[0])
            gen = self._generators[device] = torch.Generator(device=device)
            gen.manual_seed(seed >> 1)
        return gen

    def draw_noise(self, flat: Tensor, generator: torch.Generator | None) -> Tensor:
        """Fill ``flat`` with standard normal noise (one call per bucket; ``ivon-opt``'s order)."""
        return flat.normal_(generator=generator)

    # ---------------------------------------------------------------- sampling
    @contextmanager
    def sampled_params(self, train: bool = False, generator: torch.Generator | None = None) -> Iterator[None]:
        """Replace every trainable parameter by a posterior sample ``m + sigma * e`` inside the block.

        With ``train=True`` the gradients found in ``p.grad`` at the end of the block are accumulated for the next
        ``step()`` (a parameter whose ``grad`` is None contributes zero). The mean is restored when the block exits,
        also when it raises (the sample is then discarded). ``generator`` overrides the noise source once.
        """
        if self._sampling:
            raise RuntimeError("sampled_params() blocks cannot be nested")
        self._sampling = True
        swapped: list[tuple[Tensor, Tensor]] = []
        try:
            plan = self._sample(generator, swapped)
            yield
        except BaseException:
            for p, mean in swapped:
                p.data = mean
            self._sampling = False
            raise
        for p, mean in swapped:
            p.data = mean
        self._sampling = False
        if train:
            self._accumulate(plan)

    @torch.no_grad()
    def _sample(self, generator, swapped) -> list:
        plan = []
        for gi, group in enumerate(self.param_groups):
            ess, wd = group["ess"], group["weight_decay"]
            for b in self._buckets(gi, group):
                ps, states = b["params"], [self._state(p, group) for p in b["params"]]
                self.draw_noise(b["noise"], self._generator(b["device"], generator))
                if self.foreach:  # noise = e / sqrt(ess (h + wd)); sample = m + noise, written into scratch
                    scale = torch._foreach_add([s["hess"] for s in states], wd)
                    torch._foreach_mul_(scale, ess)
                    torch._foreach_sqrt_(scale)
                    torch._foreach_div_(b["noise_views"], scale)
                    b["sample"].copy_(b["noise"])
                    torch._foreach_add_(b["sample_views"], [p.data for p in ps])
                    samples = b["sample_views"]
                else:
                    samples = []
                    for e, s, p in zip(b["noise_views"], states, ps):
                        e.div_((ess * (s["hess"] + wd)).sqrt())
                        samples.append((p.data + e).to(p.dtype))
                for p, theta in zip(ps, samples):
                    swapped.append((p, p.data))
                    p.data = theta
                plan.append((group, ps, states, b["noise_views"]))
        return plan

    @torch.no_grad()
    def _accumulate(self, plan: list) -> None:
        zero_fill = self.sync and dist.is_available() and dist.is_initialized()  # ranks must reduce alike
        for group, ps, states, noise in plan:
            group["samples"] += 1
            idx = [i for i, p in enumerate(ps) if p.grad is not None or zero_fill]
            for i in idx:
                states[i]["has_grad"] = True
            idx = [i for i in idx if ps[i].grad is not None]
            if not idx:
                continue
            if any(ps[i].grad.is_sparse for i in idx):
                raise RuntimeError("IVON does not support sparse gradients")
            grads = [ps[i].grad for i in idx]
            gsum, hsum = [states[i]["grad_sum"] for i in idx], [states[i]["hess_sum"] for i in idx]
            noise = [noise[i] for i in idx]
            second = noise if self.hess_approx is HessApprox.PRICE else grads
            if self.foreach:
                torch._foreach_add_(gsum, grads)
                torch._foreach_addcmul_(hsum, second, grads)
            else:
                for a, b, x, g in zip(gsum, hsum, second, grads):
                    a.add_(g)
                    b.add_(x * g)

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
            raise RuntimeError("IVON.step() needs gradients from `with opt.sampled_params(train=True):` first")
        if self.sync and dist.is_available() and dist.is_initialized():
            self._all_reduce()
        for gi, group in enumerate(self.param_groups):
            n = group["samples"]
            for b in self._buckets(gi, group) if n else []:
                todo = [(p, s) for p in b["params"] if (s := self._state(p, group))["has_grad"]]
                if todo:
                    ps, states = map(list, zip(*todo))
                    (self._update_foreach if self.foreach else self._update_reference)(group, ps, states, n)
            group["samples"] = 0
        return loss

    def _coefficients(self, group: dict, step: int) -> tuple[float, float]:
        lr = group["lr"] * (group["hess_init"] + group["weight_decay"]) if group["rescale_lr"] else group["lr"]
        return lr, (1.0 - group["beta1"] ** step) if group["debias"] else 1.0

    def _update_reference(self, group: dict, ps: list[Tensor], states: list[dict], n: int) -> None:
        b1, b2, wd, ess, r = (group[k] for k in ("beta1", "beta2", "weight_decay", "ess", "clip_radius"))
        for p, s in zip(ps, states):
            h, mom, m = s["hess"], s["momentum"], p.data.to(s["hess"].dtype)
            g_hat = s["grad_sum"] / n
            if self.hess_approx is HessApprox.PRICE:
                h_hat = ess * (h + wd) * s["hess_sum"] / n  # mean of g * (theta - m) / sigma^2
            else:
                h_hat = ess * s["hess_sum"] / n
            mom.mul_(b1).add_(g_hat, alpha=1 - b1)
            if b2 < 1:  # beta2 = 1: fixed covariance, h stays at hess_init
                h.copy_(b2 * h + (1 - b2) * h_hat + 0.5 * (1 - b2) ** 2 * (h - h_hat) ** 2 / (h + wd))
            s["step"] += 1
            lr, bias = self._coefficients(group, s["step"])
            delta = ((mom / bias + wd * m) / (h + wd)).clamp(-r, r)
            p.data.copy_(m - lr * delta)
            s["grad_sum"].zero_(), s["hess_sum"].zero_()
            s["has_grad"] = False

    def _update_foreach(self, group: dict, ps: list[Tensor], states: list[dict], n: int) -> None:
        b1, b2, wd, ess, r = (group[k] for k in ("beta1", "beta2", "weight_decay", "ess", "clip_radius"))
        hs, moms, m = [s["hess"] for s in states], [s["momentum"] for s in states], [p.data for p in ps]
        gsum, hsum = [s["grad_sum"] for s in states], [s["hess_sum"] for s in states]
        if n != 1:
            torch._foreach_div_(gsum, n)
        torch._foreach_lerp_(moms, gsum, 1 - b1)
        if b2 < 1:
            hw = torch._foreach_add(hs, wd)
            if self.hess_approx is HessApprox.PRICE:  # d = h - h_hat, h_hat = ess (h + wd) hess_sum / n
                d = torch._foreach_addcmul(hs, hsum, hw, value=-ess / n)
            else:
                d = torch._foreach_add(hs, hsum, alpha=-ess / n)
            torch._foreach_add_(hs, d, alpha=-(1 - b2))  # b2 h + (1 - b2) h_hat
            torch._foreach_mul_(d, d)
            torch._foreach_addcdiv_(hs, d, hw, value=0.5 * (1 - b2) ** 2)
        for s in states:
            s["step"] += 1
            s["has_grad"] = False
        coef = [self._coefficients(group, s["step"]) for s in states]
        lr = coef[0][0]
        upd = torch._foreach_div(moms, [c[1] for c in coef])
        if wd != 0:
            torch._foreach_add_(upd, m, alpha=wd)
        hw = torch._foreach_add(hs, wd)
        if math.isinf(r):
            torch._foreach_addcdiv_(m, upd, hw, value=-lr)
        else:
            torch._foreach_div_(upd, hw)
            torch._foreach_clamp_min_(upd, -r)
            torch._foreach_clamp_max_(upd, r)
            torch._foreach_add_(m, upd, alpha=-lr)
        torch._foreach_zero_(gsum)
        torch._foreach_zero_(hsum)

    # ---------------------------------------------------------------- distributed
    def _all_reduce(self) -> None:
        """Sum gradient/Hessian sums and sample counts over ranks: one flat all-reduce per (device, dtype)."""
        flat: dict[tuple, list[Tensor]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    s = self._state(p, group)
                    flat.setdefault((p.device, s["hess"].dtype), []).extend([s["grad_sum"], s["hess_sum"]])
        counts = torch.tensor([float(g["samples"]) for g in self.param_groups], dtype=torch.float64)
        for i, ((device, dtype), tensors) in enumerate(flat.items()):
            extra = [counts.to(device=device, dtype=dtype)] if i == 0 else []
            buf = torch.cat([t.reshape(-1) for t in tensors + extra])
            dist.all_reduce(buf)
            torch._foreach_copy_(tensors, [v.view_as(t) for v, t in zip(buf.split([t.numel() for t in tensors]), tensors)])
            if i == 0:
                for g, c in zip(self.param_groups, buf[-len(counts) :].tolist()):
                    g["samples"] = int(round(c))

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
        sd["generators"] = {str(d): g.get_state() for d, g in self._generators.items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        generators = state_dict.pop("generators", {})
        super().load_state_dict(state_dict)
        # torch casts state to the parameter dtype; keep ours at >= float32 and independent of the input dict
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for k, v in state_dict["state"].get(i, {}).items():
                if isinstance(v, Tensor):
                    self.state[p][k] = v.to(device=p.device, dtype=_state_dtype(p), copy=True)
        for d, st in generators.items():
            dev = torch.device(d)
            if dev not in self._generators:
                self._generators[dev] = torch.Generator(device=dev)
            self._generators[dev].set_state(st)


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
        if samples == 0:
            return torch.softmax(model(x), dim=-1)
        total = None
        for _ in range(samples):
            with opt.sampled_params(train=False, generator=generator):
                probs = torch.softmax(model(x).float(), dim=-1)
            total = probs if total is None else total + probs
        return total / samples
    finally:
        model.train(was_training)
