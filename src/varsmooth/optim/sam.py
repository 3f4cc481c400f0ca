"""Sharpness-Aware Minimization (SAM) around any base optimizer, with the adaptive variant (ASAM).

SAM: Foret, Kleiner, Mobahi, Neyshabur (2020), "Sharpness-Aware Minimization for Efficiently Improving
Generalization" (ICLR 2021). ASAM: Kwon, Kim, Park, Choi (2021), "ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks" (ICML 2021).

One SAM step at weights ``w`` with loss ``L``, ``g = grad L(w)`` (all parameters of all groups together):

    T_w  = diag(|w|) (adaptive, ASAM)  or  I (SAM)
    e_w  = rho * T_w^2 g / ||T_w g||_2                       (first_step: w <- w + e_w, old w kept in state)
    g_s  = grad L(w + e_w)                                   (the closure, at the perturbed weights)
    w    <- base_step(w, g_s)                                (second_step: restore w, then the base optimizer)

``rho = 0`` gives ``e_w = 0`` and the base optimizer's update exactly (bitwise). ``rho`` and ``adaptive`` may differ
per parameter group; the norm in the denominator is over all parameters that have a gradient.

BatchNorm: the two forward passes of a step would update the running statistics twice, the second time at the
perturbed weights. Call :func:`disable_running_stats` before the second forward and :func:`enable_running_stats`
after it, so the statistics are updated once per step, from the first forward at the unperturbed weights.

Usage::

    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    enable_running_stats(model)
    loss_fn(model(x), y).backward()
    opt.first_step(zero_grad=True)
    disable_running_stats(model)
    loss_fn(model(x), y).backward()
    opt.second_step(zero_grad=True)

or, with the first backward already done, ``opt.step(closure)`` where the closure re-evaluates the loss at the
perturbed weights, calls ``backward()`` and returns the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["SAM", "disable_running_stats", "enable_running_stats"]


class SAM(torch.optim.Optimizer):
    """SAM / ASAM wrapping ``base_optimizer_cls(params, **base_kwargs)``.

    The base optimizer is built on this optimizer's ``param_groups`` and both share the same group dicts, so an LR
    scheduler attached to either one drives both. ``state_dict()`` holds SAM's own state (the saved weights
    between the two steps) and the base optimizer's state.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        base_optimizer_cls: a ``torch.optim.Optimizer`` subclass, e.g. ``torch.optim.SGD``.
        rho: neighbourhood radius, >= 0.
        adaptive: use ASAM's scale-invariant perturbation (``T_w = |w|``).
        **base_kwargs: passed to ``base_optimizer_cls`` (``lr``, ``momentum``, ``weight_decay``, ...).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ):
        if not (isinstance(rho, int | float) and rho >= 0.0):  # also rejects NaN
            raise ValueError(f"Invalid rho value: {rho!r} (must be >= 0)")
        if not isinstance(adaptive, bool):
            raise ValueError(f"Invalid adaptive value: {adaptive!r} (must be True or False)")
        if not (isinstance(base_optimizer_cls, type) and issubclass(base_optimizer_cls, torch.optim.Optimizer)):
            raise ValueError(f"Invalid base_optimizer_cls: {base_optimizer_cls!r} (must be an Optimizer class)")
        super().__init__(params, dict(rho=float(rho), adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        # share the very same list of group dicts (the base optimizer filled in its own defaults in them)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    def _perturbation_norm(self) -> torch.Tensor:
        """``||T_w g||_2`` over all parameters with a gradient (0-dim tensor, no host sync)."""
        norms = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                t = p.grad * p.abs() if group["adaptive"] else p.grad
                norms.append(torch.linalg.vector_norm(t, dtype=torch.promote_types(t.dtype, torch.float32)))
        if not norms:
            return torch.zeros(())
        device = norms[0].device
        dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
        return torch.linalg.vector_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the worst-case neighbour ``w + e_w``; keep ``w`` in ``self.state[p]["old_p"]``."""
        norm = self._perturbation_norm()
        # rho / norm, with 0 gradients giving e_w = 0 rather than 0/0
        inv_norm = 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "old_p" in state:
                    state["old_p"].copy_(p)
                else:
                    state["old_p"] = p.detach().clone()
                scale = (group["rho"] * inv_norm).to(device=p.device, dtype=p.dtype)
                e_w = p.grad * p.square() if group["adaptive"] else p.grad
                p.add_(e_w * scale)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and apply the base optimizer with the gradient taken at ``w + e_w``."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or "old_p" not in self.state[p]:
                    continue
                p.copy_(self.state[p]["old_p"])
        self.base_optimizer.step()
        # second_step is the real update: let an LR scheduler attached to SAM see that a step happened
        self._opt_called = True
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM step; call it after ``loss.backward()`` at the current weights.

        ``closure`` re-evaluates the loss at the perturbed weights, calls ``backward()`` and returns the loss; it
        is called once, after the gradients were zeroed. Returns the closure's loss (the loss at ``w + e_w``).
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that re-evaluates the loss and calls backward()")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"sam": super().state_dict(), "base_optimizer": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["sam"])
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        # both loads built fresh group dicts: share them again
        self.param_groups = self.base_optimizer.param_groups


# --------------------------------------------------------------------------------------------------- BatchNorm
_SAVED = "_varsmooth_sam_track_running_stats"


def disable_running_stats(model: nn.Module) -> None:
    """Stop BatchNorm layers from updating running statistics (call before SAM's second forward).

    In training mode the layers still normalise with batch statistics. Rather than setting the momentum to 0
    (which would still count the batch in ``num_batches_tracked`` and so skew ``momentum=None`` cumulative
    averages, and turn a NaN batch mean into NaN statistics), this switches off ``track_running_stats``, which
    skips the update entirely; :func:`enable_running_stats` restores it.
    """
    for m in model.modules():
        if isinstance(m, _BatchNorm) and not hasattr(m, _SAVED):
            setattr(m, _SAVED, m.track_running_stats)
            m.track_running_stats = False


def enable_running_stats(model: nn.Module) -> None:
    """Undo :func:`disable_running_stats` (call before the first forward of a step)."""
    for m in model.modules():
        if isinstance(m, _BatchNorm) and hasattr(m, _SAVED):
            m.track_running_stats = getattr(m, _SAVED)
            delattr(m, _SAVED)
