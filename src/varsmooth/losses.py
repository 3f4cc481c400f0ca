"""Label-smoothing losses: uniform label smoothing (LS) and Online Label Smoothing (OLS).

**LS** (Szegedy et al. 2016; the paper's Eq. 1). The one-hot label ``y_i`` is replaced by

    y'_i = (1 - alpha) y_i + alpha u,        u = (1/K, ..., 1/K),

and the loss is the cross-entropy ``-sum_k y'_ik log softmax(f_i)_k``, averaged over the batch.

**OLS** (Zhang et al. 2021, "Delving Deep into Label Smoothing", IEEE TIP 30:5984-5996; the paper's Eq. 3-4,
following the PyTorch port the paper used, github.com/ankandrew/online-label-smoothing-pt). A K x K matrix ``S``
of soft labels, row ``c`` being the soft label of class ``c``. During epoch t, for each training example i whose
argmax prediction equals its given label ``y_i``, its softmax is added to an accumulator row,

    A[y_i] += softmax(f_i),        n[y_i] += 1,

and at the end of the epoch ``S <- A / n`` row by row (a class with ``n = 0`` gets the uniform row ``u``), after
which ``A`` and ``n`` are reset. Epoch t trains with the matrix from epoch t - 1:

    loss_i = alpha * CE(f_i, y_i) + (1 - alpha) * (-sum_k S[y_i, k] log softmax(f_i)_k),   alpha = 0.5.

The first epoch uses LS-initialised rows ``S = (1 - s) I + s/K`` with ``s = init_smoothing``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

__all__ = ["label_smoothing_cross_entropy", "OnlineLabelSmoothing"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_unit(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{name}={value!r} is not allowed; it must be a number in [0, 1]")
    return float(value)


def _check_batch(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise InputError(
            f"logits must be (B, K) and targets (B,); got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if num_classes is not None and logits.shape[1] != num_classes:
        raise InputError(f"logits have {logits.shape[1]} classes; this loss was built for {num_classes}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise InputError(f"targets must be integer class indices; got dtype {targets.dtype}")


def label_smoothing_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float, *, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against ``(1 - alpha) y + alpha u`` (Eq. 1).

    ``logits``: (B, K) float; ``targets``: (B,) int class indices in [0, K); ``alpha`` in [0, 1] (0 is plain CE,
    1 is CE against the uniform label). ``reduction``: "mean" (default, a scalar), "sum", or "none" ((B,)).
    """
    alpha = _check_unit("alpha", alpha)
    if reduction not in _REDUCTIONS:
        raise InputError(f"reduction={reduction!r} is not allowed; allowed: {', '.join(_REDUCTIONS)}")
    _check_batch(logits, targets)
    # torch's label_smoothing uses exactly Eq. 1: (1 - alpha) CE + alpha * mean_k(-log p_k).
    return F.cross_entropy(logits, targets.long(), label_smoothing=alpha, reduction=reduction)


class OnlineLabelSmoothing(nn.Module):
    """Online Label Smoothing (Zhang et al. 2021) -- see the module docstring for the equations.

    Buffers (moved by ``.to(device)``, saved by ``state_dict()``): ``matrix`` (K, K) float64, the soft labels used
    by :meth:`loss` this epoch; ``accumulator`` (K, K) float64 and ``counts`` (K,) int64, this epoch's sums so
    far; ``epochs`` () int64, the number of :meth:`end_epoch` calls. Saving mid-epoch and loading restores all
    of them, so a resumed run continues bitwise. Move it to the model's device with ``.to(device)`` (it also
    works across devices, at the cost of a copy per call).

    Typical loop::

        ols = OnlineLabelSmoothing(num_classes)
        for epoch in ...:
            for x, y in loader:
                logits = model(x)
                loss = ols.loss(logits, y)
                ols.accumulate(logits, y)
                ...
            ols.end_epoch()
    """

    matrix: torch.Tensor
    accumulator: torch.Tensor
    counts: torch.Tensor
    epochs: torch.Tensor

    def __init__(self, num_classes: int, alpha: float = 0.5, init_smoothing: float = 0.1):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise InputError(f"num_classes={num_classes!r} is not allowed; it must be an integer >= 2")
        self.num_classes = num_classes
        self.alpha = _check_unit("alpha", alpha)
        self.init_smoothing = _check_unit("init_smoothing", init_smoothing)
        k, s = num_classes, self.init_smoothing
        init = (1.0 - s) * torch.eye(k, dtype=torch.float64) + s / k
        self.register_buffer("matrix", init)
        self.register_buffer("accumulator", torch.zeros(k, k, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(k, dtype=torch.int64))
        self.register_buffer("epochs", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, alpha={self.alpha}, init_smoothing={self.init_smoothing}"

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Rows of :attr:`matrix` for ``targets`` (B,): (B, K) float64, on the matrix's device."""
        return self.matrix[targets.long().to(self.matrix.device)]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
        """``alpha * CE(logits, targets) + (1 - alpha) * CE(logits, matrix[targets])``.

        ``logits``: (B, K); ``targets``: (B,) ints. ``reduction``: "mean" (a scalar), "sum" or "none" ((B,)).
        """
        if reduction not in _REDUCTIONS:
            raise InputError(f"reduction={reduction!r} is not allowed; allowed: {', '.join(_REDUCTIONS)}")
        _check_batch(logits, targets, self.num_classes)
        log_p = F.log_softmax(logits, dim=1)
        targets = targets.long()
        hard = -log_p.gather(1, targets[:, None]).squeeze(1)
        soft = -(self.soft_targets(targets).to(device=log_p.device, dtype=log_p.dtype) * log_p).sum(1)
        per_example = self.alpha * hard + (1.0 - self.alpha) * soft
        if reduction == "mean":
            return per_example.mean()
        return per_example.sum() if reduction == "sum" else per_example

    forward = loss

    @torch.no_grad()
    def accumulate(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add softmax(logits) of the correctly predicted examples to their class row (no gradient)."""
        _check_batch(logits, targets, self.num_classes)
        targets = targets.long().to(self.accumulator.device)
        logits = logits.detach().to(self.accumulator.device)
        correct = logits.argmax(dim=1) == targets
        # masks instead of selecting rows: no count of correct rows is read back from the device
        probs = torch.where(correct[:, None], torch.softmax(logits.to(torch.float64), dim=1), 0.0)
        self.accumulator.index_add_(0, targets, probs)
        self.counts.index_add_(0, targets, correct.to(self.counts.dtype))

    @torch.no_grad()
    def end_epoch(self) -> None:
        """``matrix <- accumulator / counts`` row-wise (uniform row where counts = 0); reset the sums."""
        n = self.counts.to(torch.float64)[:, None]
        uniform = torch.full_like(self.matrix, 1.0 / self.num_classes)
        self.matrix.copy_(torch.where(n > 0, self.accumulator / n.clamp_min(1.0), uniform))
        self.accumulator.zero_()
        self.counts.zero_()
        self.epochs += 1
