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

Where large models train (``docs/ivon-at-scale.md``): under accelerate's gradient accumulation the micro-batches
of a step share one sample (the rule is in ``sampled_params``); FSDP2's DTensor parameters are sampled and updated
shard by shard, with noise defined on the full shape (``ivon_shard``). A step whose h_hat is not finite (a NaN or
inf gradient) is skipped and counted in ``skipped_steps``; hyperparameters and loaded state are checked
(``ivon_checks``).
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from .ivon_checks import check_loaded_state, hessian_inputs_finite, validate_group
from .ivon_functional import (
    STATE_KEYS,
    Bucket,
    build_buckets,
    mark_scale_valid,
    refresh_scale,
    restore_means,
    update_multi,
    update_reference,
    write_sample,
)
from .ivon_shard import fill_sharded_noise, is_sharded, like, local
from .ivon_sums import (
    Block,
    all_reduce_sums,
    dist_on,
    grad_marks,
    grads_untouched,
    mid_step,
    rank_seed,
    take,
    unscale_sums,
)
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
    Raises ``ValueError`` naming the first invalid hyperparameter (bounds: ``ivon_checks``).
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
        validate_group(defaults)
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"Invalid mc_samples: {mc_samples!r} (must be an int >= 1)")
        if hess_approx not in {h.value for h in HessApprox}:
            raise ValueError(f"Invalid hess_approx: {hess_approx!r} (must be 'price' or 'gradsq')")
        self.mc_samples, self.hess_approx = mc_samples, HessApprox(hess_approx)
        self.sync, self.foreach = sync, foreach is not False
        self._generators: dict[torch.device, torch.Generator] = {}
        if generator is not None:
            self._generators[generator.device] = generator
        # sharded noise (ivon_shard): a seed shared by the ranks and the count of samples drawn
        self._noise_seed = generator.initial_seed() if generator is not None else torch.initial_seed()
        self._draws = 0
        self._shard_gens: dict[torch.device, torch.Generator] = {}
        self._scratch: dict[int, tuple] = {}  # group index -> (param signature, buckets)
        self._sampling = self._closure_sampling = False
        self._block: Block | None = None
        self._taken: list | None = None  # the gradients the last train block took, while nobody cleared them
        self._warned_nonfinite = False
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        validate_group(self.param_groups[-1])

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because their gradients were not finite (``GradScaler`` skips included)."""
        return self.param_groups[0].get("skipped_steps", 0)

    # ---------------------------------------------------------------- state, buckets, noise
    def _buckets(self, gi: int, group: dict) -> list[Bucket]:
        """The buckets of group ``gi`` (``ivon_functional.build_buckets``), rebuilt when its params change or their
        state was replaced (a loaded state dict)."""
        params = [p for p in group["params"] if p.requires_grad]
        locs = [local(p) for p in params]
        sig = tuple((id(p), id(q), p.dtype, q.device, p.shape) for p, q in zip(params, locs, strict=True))
        cached = self._scratch.get(gi)
        if (
            cached is not None
            and cached[0] == sig
            and all(self.state[p].get("hess") is h for b in cached[1] for p, h in zip(b.owners, b.held, strict=True))
        ):
            return cached[1]
        first = sum(len(g["params"]) for g in self.param_groups[:gi])
        index = {id(p): first + i for i, p in enumerate(group["params"])}
        if self.sync and any(is_sharded(p) for p in params):
            raise ValueError("Invalid sync: True with DTensor (FSDP2) parameters; FSDP2 already averages gradients")
        buckets = build_buckets(params, locs, [index[id(p)] for p in params], self.state, group["hess_init"])
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

    def _draw(self, b: Bucket, override: torch.Generator | None) -> Tensor:
        if not b.sharded:
            return self.draw_noise(b.flat["noise"], self._generator(b.flat["noise"].device, override))
        device = b.flat["noise"].device
        gen = self._shard_gens.get(device) or self._shard_gens.setdefault(device, torch.Generator(device=device))
        seed = override.initial_seed() if override is not None else self._noise_seed
        for p, out, j in zip(b.owners, b.views["noise"], b.index, strict=True):
            fill_sharded_noise(out, p, seed, self._draws, j, gen)
        return b.flat["noise"]

    # ---------------------------------------------------------------- sampling
    @contextmanager
    def sampled_params(self, train: bool = False, generator: torch.Generator | None = None) -> Iterator[None]:
        """Replace every trainable parameter by a posterior sample ``m + sigma * e`` inside the block.

        With ``train=True`` the gradients in ``p.grad`` at the end of the block are accumulated for the next
        ``step()`` (a parameter whose ``grad`` is None contributes zero). The mean is restored when the block exits,
        also when it raises (the sample is then discarded). ``generator`` overrides the noise source once.
        Inside ``step(closure)`` the closure's own block joins the one ``step`` opened for it.

        Micro-batches (see ``docs/ivon-at-scale.md``): a train block continues the previous train block's sample
        when that block ended inside accelerate's gradient accumulation on a micro-batch that does not end the
        step (``accelerator.accumulate``: ``sync_gradients`` False), no ``step()`` came since, and ``p.grad``
        still holds, untouched, the gradients that block took. It then has the same weights, and ``p.grad`` at its
        end (the running total) replaces what the previous block took. ``opt.zero_grad()`` inside such a block
        makes it a new sample, drawn at that moment. Elsewhere every train block is a new sample.
        """
        if self._sampling:
            if not self._closure_sampling:
                raise RuntimeError("sampled_params() blocks cannot be nested")
            if generator is not None:
                raise ValueError("Invalid generator: inside step(closure) the sample is already drawn")
            yield
            return
        continued = train and self._continues()
        if not train:
            self._taken = None  # the noise buffers are redrawn: a later block cannot continue the last sample
        self._sampling = True
        blk = self._block = Block([], [], generator, continued)
        try:
            blk.plan = self._sample(generator, blk.swapped, draw=not continued)
            if continued:
                take(blk.plan, self.state, self.hess_approx is HessApprox.PRICE, self.foreach, sign=-1)
            yield
        except BaseException:
            if blk.continued:  # the sample is discarded: give back what the earlier micro-batches contributed
                take(blk.plan, self.state, self.hess_approx is HessApprox.PRICE, self.foreach)
            raise
        finally:
            restore_means(blk.swapped)
            self._sampling, self._block = False, None
        if train:
            take(blk.plan, self.state, self.hess_approx is HessApprox.PRICE, self.foreach)
            self._taken = grad_marks([p for b, _ in blk.plan for p in b.owners]) if mid_step() else None

    def _continues(self) -> bool:
        """Whether a new train block is a micro-batch of the last block's sample (``sampled_params``)."""
        pending = any(g["samples"] for g in self.param_groups)
        return pending and self._taken is not None and grads_untouched(self._taken)

    @torch.no_grad()
    def _sample(self, generator, swapped: list, draw: bool = True) -> list:
        """Write theta = m + e / sqrt(lambda (h + delta)) into the parameters (``ivon_functional.write_sample``):
        fresh noise e when ``draw``, else the noise of the last sample (a continued sample)."""
        plan = []
        for gi, group in enumerate(self.param_groups):
            for b in self._buckets(gi, group):
                e = self._draw(b, generator) if draw else b.flat["noise"]
                write_sample(b, group, [local(self.state[o]["hess"]) for o in b.owners], e, self.foreach, swapped)
                plan.append((b, group))
        if draw and any(b.sharded for b, _ in plan):
            self._draws += 1
        return plan

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's; inside a block that continued a sample it also turns the block into a new sample."""
        blk = self._block
        if blk is not None and blk.continued:
            with torch.no_grad():
                take(blk.plan, self.state, self.hess_approx is HessApprox.PRICE, self.foreach)  # undo the undo
                restore_means(blk.swapped)
                blk.plan, blk.continued = self._sample(blk.generator, blk.swapped), False
        self._taken = None
        super().zero_grad(set_to_none=set_to_none)

    # ---------------------------------------------------------------- update
    @torch.no_grad()
    def step(self, closure=None):
        """Update the posterior from the samples accumulated since the last step.

        ``closure`` (as for torch optimizers, e.g. under Lightning) computes the loss and its gradients; it is
        called ``mc_samples`` times, each inside ``sampled_params(train=True)`` (a closure that opens that block
        itself, as for ivon-opt, joins it; with samples already accumulated it is called as is), and the mean of
        its return values is returned. A step whose sums are not finite (a NaN or inf gradient in any sample) is
        skipped and counted in ``skipped_steps``: h, momentum, the mean and the step counts stay (warned once;
        under ``torch.amp.GradScaler``, ``scaler.step(opt)``, the sums are unscaled first and skips are silent).
        """
        loss = None
        if closure is not None:
            loss = self._run_closure(closure)
        if all(g["samples"] == 0 for g in self.param_groups):
            raise RuntimeError(
                "IVON.step() needs gradients: run `with opt.sampled_params(train=True):` first (or pass a closure)"
            )
        self._taken = None
        if self.sync and dist_on():
            all_reduce_sums(self.param_groups, [[self.state[p] for b in self._buckets(gi, g) for p in b.owners]
                                                for gi, g in enumerate(self.param_groups)])  # fmt: skip
        scaled = getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None
        if not self._unscale_or_skip() or not self._finite():
            self._discard(skipped=True)
            if not scaled and not self._warned_nonfinite:
                self._warned_nonfinite = True
                msg = "IVON skipped a step whose gradients are not finite (NaN or inf); weights and state are unchanged"
                warnings.warn(msg + ", opt.skipped_steps counts such steps", RuntimeWarning, stacklevel=2)
            return loss
        price = self.hess_approx is HessApprox.PRICE
        for gi, group in enumerate(self.param_groups):
            for b in self._buckets(gi, group) if group["samples"] else []:
                states = [self.state[p] for p in b.owners]
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

    def _finite(self) -> bool:
        """Whether this step's h_hat is finite (on every rank when shards or sync are in play)."""
        terms, buckets, price = [], [], self.hess_approx is HessApprox.PRICE
        for gi, g in enumerate(self.param_groups):
            for b in self._buckets(gi, g) if g["samples"] else []:
                refresh_scale(b, g) if price else None
                terms.append((b.flat["hess_sum"], b.flat["scale"] if price else g["ess"]))
                buckets.append(b)
        return hessian_inputs_finite(terms, every_rank=dist_on() and (self.sync or any(b.sharded for b in buckets)))

    def _run_closure(self, closure):
        """Call ``closure`` ``mc_samples`` times, each inside a sample unless samples are already pending (the
        caller sampled itself, e.g. Lightning's manual optimization, which passes a do-nothing closure)."""
        losses, sample = [], all(g["samples"] == 0 for g in self.param_groups)
        for _ in range(self.mc_samples):
            self._taken = None  # each call is a new sample
            with torch.enable_grad(), self.sampled_params(train=True) if sample else nullcontext():
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
        states = [{k: local(s[k]) for k in ("grad_sum", "hess_sum")} for s in self._summed_states()]
        return unscale_sums(states, grad_scale, found_inf, self.hess_approx is HessApprox.GRADSQ)

    def _discard(self, skipped: bool = False) -> None:
        for s in self._summed_states():
            s["has_grad"] = False
            if skipped:  # no non-finite value stays behind, not even in the scratch sums
                local(s["grad_sum"]).zero_(), local(s["hess_sum"]).zero_()
        for group in self.param_groups:
            group["samples"] = 0
            if skipped:
                group["skipped_steps"] = group.get("skipped_steps", 0) + 1

    # ---------------------------------------------------------------- posterior, state dict
    @torch.no_grad()
    def posterior_std(self) -> dict[nn.Parameter, Tensor]:
        """sigma = 1 / sqrt(ess (h + weight_decay)) of every trainable parameter (the mean is the parameter)."""
        out = {}
        for gi, group in enumerate(self.param_groups):
            for p in (p for b in self._buckets(gi, group) for p in b.owners):
                out[p] = (group["ess"] * (self.state[p]["hess"] + group["weight_decay"])).rsqrt()
        return out

    def state_dict(self) -> dict:
        sd = super().state_dict()
        scratch = ("grad_sum", "hess_sum")  # between steps the sums are scratch: leave them out
        for i, s in sd["state"].items():
            # a shard's state is a view into a flat buffer: saved as a DTensor over a copy (torch.save cannot
            # pickle a DTensor over a view at an offset)
            s = {k: like(local(v).clone(), v) if is_sharded(v) else v for k, v in s.items()}
            sd["state"][i] = {k: v for k, v in s.items() if k not in scratch or s.get("has_grad", True)}
        sd["generators"] = {str(d): g.get_state() for d, g in self._generators.items()}
        sd["noise"] = {"seed": self._noise_seed, "draws": self._draws}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state from ``state_dict()``; a state of other parameters or of another optimizer raises a
        ValueError here (``ivon_checks.check_loaded_state``), before anything changes."""
        check_loaded_state(state_dict, self.param_groups, STATE_KEYS)
        state_dict = dict(state_dict)
        generators, noise = state_dict.pop("generators", {}), state_dict.pop("noise", None)
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
            self._generators.setdefault(dev, torch.Generator(device=dev)).set_state(st.cpu())
        if noise is not None:
            self._noise_seed, self._draws = int(noise["seed"]), int(noise["draws"])
        self._scratch.clear()
        self._taken = None
