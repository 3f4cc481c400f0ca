"""Posterior predictive of an IVON-trained model: the softmax averaged over weight samples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .ivon import IVON

__all__ = ["predictive_probs"]


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
