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

Outside the explicit loop, ``step(closure)`` runs a torch-style closure inside ``sampled_params(train=True)``
``mc_samples`` times (so Lightning's automatic optimization samples unchanged), and ``scaler.step(opt)`` of
``torch.amp.GradScaler`` has IVON unscale its accumulated sums and skip a non-finite step (``ivon_sums``).

Two implementations share sampling and bookkeeping (``ivon_functional``): a readable per-parameter reference path
(``foreach=False``) and the default multi-tensor path. The trainable params of a group are bucketed by (device,
dtype); a bucket's state lives in flat buffers (one per state key) and ``self.state[p]`` holds views of them, so
whole-bucket arithmetic is one kernel per operation while parameters themselves are never flattened. Noise for a
bucket is drawn with one ``normal_`` call. State per parameter: ``step``, ``momentum``, ``hess``, ``has_grad`` and,
while a step is being accumulated, the sums ``grad_sum`` = sum_s g_s and ``hess_sum`` = sum_s g_s e_s (price) or
sum_s g_s^2 (gradsq); the param groups count ``samples``. State tensors have the parameter's device and its dtype
promoted to at least float32; ``state_dict()`` round-trips them exactly.

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
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from .ivon_functional import (
    STATE_KEYS,
    Bucket,
    mark_scale_valid,
    refresh_scale,
    update_multi,
    update_reference,
)
from .ivon_sums import all_reduce_sums, dist_on, rank_seed, unscale_sums
from .predictive import predictive_probs  # noqa: F401  (re-exported: varsmooth.optim.ivon.predictive_probs)

__all__ = ["IVON", "HessApprox", "predictive_probs"]


class HessApprox(str, enum.Enum):
    PRICE = "price"  # E[g (theta - m)] / sigma^2 (reparameterisation)
    GRADSQ = "gradsq"  # ess * E[g^2]


def _state_dtype(p: Tensor) -> torch.dtype:
    return torch.promote_types(p.dtype, torch.float32)


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

    _step_supports_amp_scaling = True  # GradScaler.step sets grad_scale / found_inf and calls step()

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
        self._sampling = self._closure_sampling = False
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

    # ---------------------------------------------------------------- state, buckets, noise
    def _buckets(self, gi: int, group: dict) -> list[Bucket]:
        """The buckets of group ``gi``; (re)built when its params change or their state was replaced (a loaded
        state dict): state values are then copied into fresh flat buffers and ``self.state`` holds views."""
        params = [p for p in group["params"] if p.requires_grad]
        sig = tuple((id(p), p.dtype, p.device, p.shape) for p in params)
        cached = self._scratch.get(gi)
        if cached is not None and cached[0] == sig and all(
            self.state[p].get("hess") is h for b in cached[1] for p, h in zip(b.params, b.views["hess"], strict=True)
        ):
            return cached[1]
        keyed: dict[tuple, list[Tensor]] = {}
        for p in params:
            keyed.setdefault((p.device, p.dtype), []).append(p)
        buckets = []
        for (device, dtype), ps in keyed.items():
            n, sdt = sum(p.numel() for p in ps), torch.promote_types(dtype, torch.float32)
            flat = {k: torch.empty(n, device=device, dtype=sdt) for k in (*STATE_KEYS, "noise", "scale")}
            flat["sample"] = torch.empty(n, device=device, dtype=dtype)
            b = Bucket(ps, flat)
            for i, p in enumerate(ps):
                state = self.state[p]
                if not state:  # lazy, like torch optimizers
                    state.update(step=0, has_grad=False)  # the sums hold this step's values only while has_grad
                init = {"momentum": 0.0, "hess": group["hess_init"], "grad_sum": 0.0, "hess_sum": 0.0}
                for k in STATE_KEYS:
                    old, view = state.get(k), b.views[k][i]
                    view.copy_(old) if isinstance(old, Tensor) else view.fill_(init[k])
                    state[k] = view
            buckets.append(b)
        self._scratch[gi] = (sig, buckets)
        return buckets

    def _generator(self, device: torch.device, override: torch.Generator | None) -> torch.Generator | None:
        if override is not None:
            if override.device.type != device.type:
                raise ValueError(f"Invalid generator: on {override.device}, parameters on {device}")
            return override
        gen = self._generators.get(device)
        if gen is None and self.sync and dist_on():  # distinct, reproducible noise per rank
            gen = self._generators[device] = torch.Generator(device=device)
            gen.manual_seed(rank_seed())
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
        Inside ``step(closure)`` the closure's own block joins the one ``step`` opened for it.
        """
        if self._sampling:
            if not self._closure_sampling:
                raise RuntimeError("sampled_params() blocks cannot be nested")
            if generator is not None:
                raise ValueError("Invalid generator: inside step(closure) the sample is already drawn")
            yield
            return
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
                e = self.draw_noise(b.flat["noise"], self._generator(b.flat["noise"].device, generator))
                if self.foreach:  # theta = m + e / scale, written into the sample scratch
                    refresh_scale(b, group)
                    torch.div(e, b.flat["scale"], out=b.flat["sample"])
                    torch._foreach_add_(b.views["sample"], b.params)
                    thetas = b.views["sample"]
                else:
                    thetas = [
                        (p + e / (ess * (self.state[p]["hess"] + wd)).sqrt()).to(p.dtype)
                        for p, e in zip(b.params, b.views["noise"], strict=True)
                    ]
                for p, theta in zip(b.params, thetas, strict=True):
                    swapped.append((p, p.data))
                    p.data = theta
                plan.append((b, group))
        return plan

    @torch.no_grad()
    def _accumulate(self, plan: list) -> None:
        """grad_sum += g and hess_sum += g e (price) or g^2 (gradsq); the first sample of a step overwrites."""
        price = self.hess_approx is HessApprox.PRICE
        for b, group in plan:
            group["samples"] += 1
            ps, states = b.params, [self.state[p] for p in b.params]
            idx = [i for i, p in enumerate(ps) if p.grad is not None]
            if any(ps[i].grad.is_sparse for i in idx):
                raise RuntimeError("IVON does not support sparse gradients")
            split = {fresh: [i for i in idx if states[i]["has_grad"] != fresh] for fresh in (True, False)}
            for fresh, sel in split.items():
                if not sel:
                    continue
                g = [ps[i].grad for i in sel]
                gsum, hsum, e = ([b.views[k][i] for i in sel] for k in ("grad_sum", "hess_sum", "noise"))
                if not self.foreach:
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

    # ---------------------------------------------------------------- update
    @torch.no_grad()
    def step(self, closure=None):
        """Update the posterior from the samples accumulated since the last step.

        ``closure`` (as for torch optimizers, e.g. under Lightning) computes the loss and its gradients; it is
        called ``mc_samples`` times, each inside ``sampled_params(train=True)`` (a closure that opens that block
        itself, as for ivon-opt, joins it; with samples already accumulated it is called as is), and the mean of
        its return values is returned. Under ``torch.amp.GradScaler`` (``scaler.step(opt)``) the sums are unscaled
        here and a step whose sums are not finite is skipped: h, momentum, the mean and the step counts stay.
        """
        loss = None
        if closure is not None:
            loss = self._run_closure(closure)
        if all(g["samples"] == 0 for g in self.param_groups):
            raise RuntimeError(
                "IVON.step() needs gradients: run `with opt.sampled_params(train=True):` first (or pass a closure)"
            )
        if self.sync and dist_on():
            all_reduce_sums(self.param_groups, [[self.state[p] for b in self._buckets(gi, g) for p in b.params]
                                                for gi, g in enumerate(self.param_groups)])  # fmt: skip
        if not self._unscale_or_skip():
            self._discard()
            return loss
        price = self.hess_approx is HessApprox.PRICE
        for gi, group in enumerate(self.param_groups):
            for b in self._buckets(gi, group) if group["samples"] else []:
                states = [self.state[p] for p in b.params]
                idx = [i for i, s in enumerate(states) if s["has_grad"]]  # no gradient at all: skip, like torch
                if not idx:
                    continue
                if self.foreach:
                    refresh_scale(b, group)
                    update_multi(b, states, idx, group, group["samples"], price)
                    mark_scale_valid(b, group)
                else:
                    update_reference([b.params[i] for i in idx], [states[i] for i in idx], group, group["samples"],
                                     price)  # fmt: skip
                for i in idx:
                    states[i]["has_grad"] = False
            group["samples"] = 0
        return loss

    def _run_closure(self, closure):
        """Call ``closure`` ``mc_samples`` times, each inside a sample unless samples are already pending (the
        caller sampled itself, e.g. Lightning's manual optimization, which passes a do-nothing closure)."""
        losses, sample = [], all(g["samples"] == 0 for g in self.param_groups)
        for _ in range(self.mc_samples):
            with torch.enable_grad(), (self.sampled_params(train=True) if sample else nullcontext()):
                self._closure_sampling = sample
                try:
                    losses.append(closure())
                finally:
                    self._closure_sampling = False
        losses = [v for v in losses if v is not None]
        return sum(losses) / len(losses) if losses else None

    def _summed_states(self) -> list[dict]:
        """The states whose sums hold gradients of this step."""
        return [self.state[p] for g in self.param_groups for p in g["params"]
                if p.requires_grad and self.state[p].get("has_grad")]  # fmt: skip

    def _unscale_or_skip(self) -> bool:
        """GradScaler support (``scaler.step`` sets ``grad_scale`` and ``found_inf``): unscale the sums in place;
        False when they or the scaler's ``found_inf`` are not finite."""
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        if grad_scale is None and found_inf is None:
            return True
        return unscale_sums(self._summed_states(), grad_scale, found_inf, self.hess_approx is HessApprox.GRADSQ)

    def _discard(self) -> None:
        for s in self._summed_states():
            s["has_grad"] = False
        for group in self.param_groups:
            group["samples"] = 0

    # ---------------------------------------------------------------- posterior, state dict
    @torch.no_grad()
    def posterior_std(self) -> dict[nn.Parameter, Tensor]:
        """sigma = 1 / sqrt(ess (h + weight_decay)) of every trainable parameter (the mean is the parameter)."""
        out = {}
        for gi, group in enumerate(self.param_groups):
            for p in (p for b in self._buckets(gi, group) for p in b.params):
                out[p] = (group["ess"] * (self.state[p]["hess"] + group["weight_decay"])).rsqrt()
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

