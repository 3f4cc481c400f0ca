"""Training methods as strategy objects: ``erm``, ``ls``, ``ols``, ``sam``, ``ivon``, ``ivon-fixed-h``.

A method owns the optimizer and defines one training step and prediction; :mod:`varsmooth.engine.train` is the one loop
that drives all of them. Losses are means over the (local) batch.

- ``erm``: cross-entropy, SGD with momentum.
- ``ls`` (Szegedy et al. 2016; the paper's Eq. 1): cross-entropy against ``(1 - alpha) y + alpha u``, SGD.
- ``ols`` (Zhang et al. 2021): ``alpha CE(y) + (1 - alpha) CE(S[y])`` with the soft-label matrix ``S`` of the
  previous epoch, built from the training-mode softmax of correctly predicted examples; SGD. The step feeds every
  training example's logits to ``OnlineLabelSmoothing.accumulate`` once per epoch; ``end_epoch`` normalises.
- ``sam`` (Foret et al. 2020): ascent step ``w + rho g / ||g||`` (adaptive: ``rho T_w^2 g / ||T_w g||``), gradient
  there, SGD step from ``w``. BatchNorm running statistics are updated by the first forward pass only.
- ``ivon`` (Shen et al. 2024; the paper's Alg. 1): per step, ``mc_samples`` draws ``theta = m + sigma e`` with
  ``sigma = 1 / sqrt(ess (h + delta))``, gradient and Hessian estimate at each, one update of ``m, h``. Prediction
  at the mean ``m`` and as the posterior predictive ``(1/S) sum_s softmax(f(theta_s))``.
- ``ivon-fixed-h``: IVON with ``beta2 = 1`` (h frozen at ``hess_init``; the paper's Fig. 6 ablation).

Every forward pass runs under the run's autocast (:mod:`.precision`: ``bf16``, ``fp16``); with ``fp16`` the
backward passes are loss-scaled and the optimizer steps through a ``torch.amp.GradScaler`` (SAM unscales before
its ascent step, IVON unscales its accumulated sums). Parameters and optimizer state stay float32.

Under ``torchrun`` the SGD methods average gradients over ranks (:mod:`varsmooth.engine.parallel`) and IVON averages its
own statistics (``sync=True``); DDP's wrapper is not used, so nothing syncs while IVON samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..losses import OnlineLabelSmoothing, label_smoothing_cross_entropy
from ..optim import IVON
from ..optim.ivon import predictive_probs
from ..optim.sam import SAM as SAMOptimizer
from ..optim.sam import disable_running_stats, enable_running_stats
from .parallel import DistContext
from .precision import autocast, grad_scaler

if TYPE_CHECKING:
    from .trainconfig import TrainConfig

__all__ = ["METHODS", "Method", "StepOutput", "build_method", "hessian_warning", "method_defaults"]


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar: mean loss over the local batch (before the data-parallel scale), detached
    logits: torch.Tensor  # (B, K) training-mode logits of the step (IVON: at its first sample), detached, float32


class Method:
    """Base strategy: plain cross-entropy with SGD + momentum. Subclasses override ``loss`` or ``train_step``."""

    name = "erm"
    variational = False
    # TrainConfig values this method fills in where the config has None: chosen for MNIST-scale CPU runs (MLP,
    # batch 128, ~10 epochs). The paper's SGD baselines (App. C.2): lr 0.05, weight decay 1e-3, x0.1 at epochs
    # 100 and 150 of 200 -- plain TrainConfig values.
    defaults: ClassVar[dict[str, Any]] = {"lr": 0.05, "weight_decay": 5e-4, "schedule": "step"}

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        num_train: int,
        num_classes: int,
        dist: DistContext | None = None,
        generator: torch.Generator | None = None,
    ):
        self.model, self.cfg, self.num_classes = model, cfg, num_classes
        self.num_train = num_train
        self.dist = dist or DistContext()
        self.generator = generator
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self.scaler = grad_scaler(cfg.precision, self.device)  # fp16 only
        self.optimizer = self.build_optimizer()
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def build_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.SGD(self.params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def set_lr_factor(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # an empty data-parallel shard contributes a zero gradient (its scale is 0 too)
        return self.loss(logits, targets) if len(targets) else logits.sum() * 0.0

    def autocast(self):
        """The run's autocast context (a no-op for fp32)."""
        return autocast(self.cfg.precision, self.device)

    def _backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with fp16 through the loss scaler (a step with non-finite gradients is skipped)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def _forward_backward(self, x, y, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.model(x)
            loss = self._loss(logits, y)
        self._backward(loss * scale)
        self.dist.mean_grads(self.params)
        return loss.detach().float(), logits.detach().float()

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, *, scale: float = 1.0, global_batch: int | None = None
    ) -> StepOutput:
        """One optimizer step on the local batch ``x`` (B, ...) with labels ``y`` (B,).

        Under data parallelism ``x`` is this rank's shard of a global batch of ``global_batch`` examples and
        ``scale`` = ``B * world_size / global_batch`` (see :mod:`varsmooth.engine.parallel`).
        """
        loss, logits = self._forward_backward(x, y, scale)
        self._step(self.optimizer)
        return StepOutput(loss, logits)

    def end_epoch(self) -> None:
        """Called once after the last step of every epoch."""

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax (B, K) of the model at its current (mean) parameters, in eval mode."""
        was = self.model.training
        self.model.eval()
        try:
            with self.autocast():
                logits = self.model(x)
            return torch.softmax(logits.float(), dim=1)
        finally:
            self.model.train(was)

    def predictive_proba(self, x: torch.Tensor, samples: int, generator: torch.Generator | None = None):
        """Posterior predictive (B, K); for point-estimate methods the same as :meth:`predict_proba`."""
        return self.predict_proba(x)

    def stats(self) -> dict[str, float]:
        """Scalar diagnostics recorded with each epoch's metrics."""
        return {}

    def state_dict(self) -> dict:
        scaler = {} if self.scaler is None else {"scaler": self.scaler.state_dict()}
        return {"optimizer": self.optimizer.state_dict(), **scaler}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.base_lrs = list(state.get("base_lrs", self.base_lrs))


class LS(Method):
    name = "ls"
    defaults = {**Method.defaults, "alpha": 0.1}

    def loss(self, logits, targets):
        return label_smoothing_cross_entropy(logits, targets, self.cfg.alpha)


class OLS(Method):
    name = "ols"
    defaults = {**Method.defaults, "alpha": 0.5}  # weight of the hard label

    def __init__(self, model: nn.Module, cfg: TrainConfig, **kw):
        super().__init__(model, cfg, **kw)
        self.ols = OnlineLabelSmoothing(self.num_classes, alpha=cfg.alpha, init_smoothing=cfg.ols_init_smoothing)
        self.ols.to(next(model.parameters()).device)

    def loss(self, logits, targets):
        return self.ols.loss(logits, targets)

    def train_step(self, x, y, *, scale=1.0, global_batch=None):
        out = super().train_step(x, y, scale=scale)
        # every rank accumulates the whole global batch, so the matrix stays identical across ranks
        n = global_batch if global_batch is not None else len(y)
        self.ols.accumulate(self.dist.gather_rows(out.logits, n), self.dist.gather_rows(y, n))
        return out

    def end_epoch(self):
        self.ols.end_epoch()

    def state_dict(self):
        return {**super().state_dict(), "ols": self.ols.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.ols.load_state_dict(state["ols"])


class SAM(Method):
    name = "sam"
    defaults = {**Method.defaults, "rho": 0.05}

    def build_optimizer(self):
        c = self.cfg
        return SAMOptimizer(
            self.params,
            torch.optim.SGD,
            rho=c.rho,
            adaptive=c.adaptive,
            lr=c.lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
        )

    def train_step(self, x, y, *, scale=1.0, global_batch=None):
        opt = self.optimizer
        enable_running_stats(self.model)
        loss, logits = self._forward_backward(x, y, scale)
        if self.scaler is not None:
            self.scaler.unscale_(opt)  # the ascent step needs the true gradient norm
        opt.first_step(zero_grad=True)
        disable_running_stats(self.model)  # BatchNorm statistics: first pass only
        try:
            with self.autocast():
                perturbed = self._loss(self.model(x), y)
            self._backward(perturbed * scale)
            self.dist.mean_grads(self.params)
            if self.scaler is None:
                opt.second_step(zero_grad=True)
            else:  # back to w, then the base step through the scaler (skipped when either pass overflowed)
                with torch.no_grad():
                    for p in (p for g in opt.param_groups for p in g["params"] if p.grad is not None):
                        p.copy_(opt.state[p]["old_p"])  # as SAM.second_step
                self._step(opt.base_optimizer)
                opt.zero_grad()
        finally:
            enable_running_stats(self.model)
        return StepOutput(loss, logits)


class IVONMethod(Method):
    name = "ivon"
    variational = True
    # paper (CIFAR-10): lr 0.2, wd 1e-3, h0 0.9, beta2 1 - 1e-5, ess = N, 5 warm-up epochs then cosine; here beta2
    # and ess are left to the run's length and data (trainconfig.finalize_config)
    defaults = {"lr": 0.5, "weight_decay": 5e-4, "schedule": "cosine", "hess_init": 0.5}

    def build_optimizer(self):
        c = self.cfg
        kwargs = dict(
            lr=c.lr,
            ess=c.ess,
            hess_init=c.hess_init,
            beta1=c.beta1,
            beta2=c.beta2,
            weight_decay=c.weight_decay,
            mc_samples=c.mc_samples,
            clip_radius=float("inf") if c.clip_radius is None else c.clip_radius,
            sync=self.dist.active,
            generator=self.generator,
        )
        return IVON(self.params, **kwargs)

    def train_step(self, x, y, *, scale=1.0, global_batch=None):
        opt, losses, first = self.optimizer, [], None
        for _ in range(self.cfg.mc_samples):
            with opt.sampled_params(train=True):
                opt.zero_grad(set_to_none=True)
                with self.autocast():
                    logits = self.model(x)
                    loss = self._loss(logits, y)
                self._backward(loss * scale)
            losses.append(loss.detach().float())
            first = logits.detach().float() if first is None else first
        self._step(opt)  # fp16: the scaler hands IVON grad_scale and found_inf (optim/ivon.py)
        return StepOutput(torch.stack(losses).mean(), first)

    @torch.no_grad()
    def predictive_proba(self, x, samples, generator=None):
        was = self.model.training
        try:
            with self.autocast():
                return predictive_probs(self.model, self.optimizer, x, samples=samples, generator=generator).float()
        finally:
            self.model.train(was)

    def posterior_std(self) -> dict[nn.Parameter, torch.Tensor]:
        return self.optimizer.posterior_std()

    def stats(self):
        """Posterior diagnostics: quantiles of sigma and of h / h0 over all weights, and ``hess_init_weight``.

        ``hess_init_weight`` = ``beta2 ** t`` after t steps is the weight the Hessian average still gives to h0
        (the EMA part of its update; the second-order correction is small): above 1/2, h has not yet moved half
        of the way to the data's curvature and sigma is set mostly by ``hess_init`` and ``ess``
        (see :func:`hessian_warning`).
        """
        opt, sig, ratio = self.optimizer, [], []
        steps, beta2 = 0, 1.0
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p, {})
                if "hess" not in state:
                    continue
                h = state["hess"].detach().double().reshape(-1)
                sig.append((group["ess"] * (h + group["weight_decay"])).rsqrt().cpu())
                ratio.append((h / group["hess_init"]).cpu())
                steps, beta2 = max(steps, int(state["step"])), float(group["beta2"])
        out = {"ess": float(self.cfg.ess), "beta2": beta2, "hess_init_weight": beta2**steps}
        if not sig:
            return out
        sig_np, ratio_np = torch.cat(sig).numpy(), torch.cat(ratio).numpy()
        out.update(sigma_mean=float(sig_np.mean()), sigma_min=float(sig_np.min()), sigma_max=float(sig_np.max()))
        for q, name in ((0.05, "q05"), (0.5, "median"), (0.95, "q95")):
            out[f"sigma_{name}"] = float(np.quantile(sig_np, q))
            out[f"h_ratio_{name}"] = float(np.quantile(ratio_np, q))
        return out


def hessian_warning(stats: dict) -> str | None:
    """One line when IVON's Hessian has not moved from h0 (``hess_init_weight`` > 1/2 while beta2 < 1), else None.

    This is the failure of short runs with ``beta2 = 1 - 1e-5``: the posterior width never adapts to the data."""
    weight, beta2 = stats.get("hess_init_weight"), stats.get("beta2", 1.0)
    if weight is None or beta2 >= 1.0 or weight <= 0.5:
        return None
    return (
        f"IVON's Hessian has not moved: after this run h0 still weighs {weight:.2f} in h "
        f"(median h/h0 {stats.get('h_ratio_median', float('nan')):.3f}, beta2={beta2:g}), so sigma is set by "
        "hess_init and ess, not by the data; leave beta2 unset (the Hessian horizon) or use beta2 <= 1 - 2/steps"
    )


class IVONFixedH(IVONMethod):
    name = "ivon-fixed-h"


_CLASSES: dict[str, type[Method]] = {
    "erm": Method,
    "ls": LS,
    "ols": OLS,
    "sam": SAM,
    "ivon": IVONMethod,
    "ivon-fixed-h": IVONFixedH,
}
METHODS: tuple[str, ...] = tuple(_CLASSES)


def check_method(name: str) -> str:
    if name not in _CLASSES:
        raise InputError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return name


def method_defaults(name: str) -> dict[str, Any]:
    """The defaults of method ``name`` (:attr:`Method.defaults`: lr, weight_decay, schedule, method options)."""
    return dict(_CLASSES[check_method(name)].defaults)


def build_method(
    name: str,
    model: nn.Module,
    cfg: TrainConfig,
    *,
    num_train: int,
    num_classes: int,
    dist: DistContext | None = None,
    generator: torch.Generator | None = None,
) -> Method:
    """The strategy object for method ``name`` (one of :data:`METHODS`) training ``model``.

    ``cfg`` is a resolved :class:`varsmooth.engine.TrainConfig` (lr, weight_decay, momentum and the method's
    options filled in); ``generator`` drives IVON's weight noise when the optimizer accepts one.
    """
    return _CLASSES[check_method(name)](
        model, cfg, num_train=num_train, num_classes=num_classes, dist=dist, generator=generator
    )
