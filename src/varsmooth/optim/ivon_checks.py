r"""What IVON refuses, so that no non-finite value enters its weights or state.

Hyperparameters (``validate_group``, at construction and for every added param group). Besides the ranges of
``ivon-opt`` (lr >= 0, ess > 0, hess_init > 0, beta1 in [0, 1), beta2 in [0, 1], weight_decay >= 0,
clip_radius > 0), every value is finite and the two float32 bounds below hold. The state is at least float32, and
IVON computes in it 1 / sigma = sqrt(lambda (h + delta)) and the Hessian step's constant
0.5 (1 - beta2)^2 lambda (``ivon_functional``):

    lambda (h0 + delta) >= FLOAT32_TINY    below it 1 / sigma underflows to 0 and the first sample is inf
                                           (ess = 1e-300 went non-finite in two steps this way)
    lambda (h0 + delta) <= FLOAT32_MAX / 4 near FLOAT32_MAX 1 / sigma^2 overflows; so does the Hessian step's
                                           constant, which torch refuses to convert to float32 (ess = 1e300);
                                           the factor 4 leaves room for h's cap (``hess_cap``) above h0

Gradients (``hessian_inputs_finite``): before an update IVON checks the step's Hessian estimates h_hat (from the
sums sum_s g_s e_s for "price", sum_s g_s^2 for "gradsq"), which are non-finite whenever any gradient of the step
is (inf * e and NaN * e are non-finite, also for e = 0) or h_hat overflows. Such a step is skipped and counted,
as under a GradScaler (``IVON.step``). The update itself caps h where lambda (h + delta) would overflow
(``hess_cap``): with finite h_hat and these bounds, h, sigma and the momentum stay finite.

Loaded state (``check_loaded_state``): a state dict must come from an IVON over parameters of the same number and
shapes; anything else (another model, an SGD or Adam state) is refused at ``load_state_dict`` with a ValueError
naming what differs, not at the next step.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.distributed as dist
from torch import Tensor

from .ivon_shard import local

FLOAT32_TINY = torch.finfo(torch.float32).tiny  # smallest normal float32
FLOAT32_MAX = torch.finfo(torch.float32).max
PRECISION_MAX = FLOAT32_MAX / 4  # leaves room for h to grow to its cap, 2x above h0 at least (``hess_cap``)

_RANGES = {
    "lr": (lambda v: 0.0 <= v < math.inf, ">= 0 and finite"),
    "ess": (lambda v: 0.0 < v < math.inf, "> 0 and finite"),
    "hess_init": (lambda v: 0.0 < v < math.inf, "> 0 and finite"),
    "beta1": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "beta2": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "weight_decay": (lambda v: 0.0 <= v < math.inf, ">= 0 and finite"),
    "clip_radius": (lambda v: 0.0 < v, "> 0 (inf: no clipping)"),
}


def validate_group(g: dict) -> None:
    """Raise ``ValueError("Invalid X: ...")`` for the first hyperparameter of group ``g`` outside its range."""
    for name, (ok, allowed) in _RANGES.items():
        v = g[name]
        try:
            number = isinstance(v, numbers.Real | Tensor) and not isinstance(v, bool)
            good = number and ok(float(v))  # comparisons are False for NaN
        except (TypeError, ValueError, RuntimeError):
            good = False
        if not good:
            raise ValueError(f"Invalid {name}: {v!r} (must be {allowed})")
    precision = float(g["ess"]) * (float(g["hess_init"]) + float(g["weight_decay"]))
    if not FLOAT32_TINY <= precision <= PRECISION_MAX:
        raise ValueError(
            f"Invalid ess: {g['ess']!r} (ess * (hess_init + weight_decay) = {precision:.3g} must lie in "
            f"[{FLOAT32_TINY:.3g}, {PRECISION_MAX:.3g}], where 1 / sigma^2 is a finite, non-zero float32)"
        )


def hessian_inputs_finite(terms: list[tuple[Tensor, Tensor | float]], every_rank: bool = False) -> bool:
    """True when every (hess_sum, factor) pair gives a finite sum_i factor_i hess_sum_i: one reduction per
    bucket and one host sync in all. With the factor 1 / sigma (price) or lambda (gradsq), the summands are
    S h_hat, so this is False exactly when a gradient of the step was NaN or inf or some h_hat overflowed (or,
    harmlessly, when their sum overflowed: such a step would blow up h anyway). ``every_rank``: all-reduce the
    answer (ranks holding shards or synchronised sums must skip together)."""
    by_device: dict[torch.device, list[Tensor]] = {}
    for hs, factor in terms:
        v = torch.dot(hs, factor) if isinstance(factor, Tensor) else hs.sum() * factor
        by_device.setdefault(hs.device, []).append(v.reshape(1))
    ok = all(bool(torch.cat(v).isfinite().all()) for v in by_device.values())
    if every_rank:
        flag = torch.tensor([float(ok)], device=terms[0][0].device if terms else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        ok = bool(flag.item() > 0.5)
    return ok


def hess_cap(group: dict, dtype: torch.dtype) -> float:
    """The largest h with lambda (h + delta) finite in ``dtype``: the update caps h there, so that a finite
    h_hat whose Hessian step overflows (a huge ``ess``) leaves sigma > 0 instead of an inf in the state."""
    return torch.finfo(dtype).max / (2 * group["ess"]) - group["weight_decay"]


def check_loaded_state(state_dict: dict, groups: list[dict], state_keys: tuple[str, ...]) -> None:
    """Refuse a state dict that is not IVON's state for these param groups (count, shapes, keys, finiteness)."""
    if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
        raise ValueError("Invalid state_dict: not an optimizer state dict (needs 'state' and 'param_groups')")
    saved = state_dict["param_groups"]
    if len(saved) != len(groups):
        raise ValueError(f"Invalid state_dict: {len(saved)} param groups, this optimizer has {len(groups)}")
    for gi, (sg, g) in enumerate(zip(saved, groups, strict=True)):
        if len(sg["params"]) != len(g["params"]):
            raise ValueError(
                f"Invalid state_dict: param group {gi} holds {len(sg['params'])} parameters, "
                f"this optimizer's holds {len(g['params'])}"
            )
        missing = [k for k in _RANGES if k not in sg]
        if missing:
            raise ValueError(f"Invalid state_dict: param group {gi} lacks IVON's {missing} (another optimizer's?)")
        validate_group(sg)
        for i, p in zip(sg["params"], g["params"], strict=True):
            s = state_dict["state"].get(i)
            if not s:
                continue
            unknown = sorted(set(s) - {"step", "has_grad", *state_keys})
            if unknown or "hess" not in s:
                raise ValueError(f"Invalid state_dict: parameter {i} has state {sorted(s)}, not IVON's")
            for k in state_keys:
                v = s.get(k)
                if v is None:
                    continue
                if not isinstance(v, Tensor) or tuple(v.shape) != tuple(p.shape):
                    shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                    raise ValueError(
                        f"Invalid state_dict: parameter {i} {k} has shape {shape}, the parameter {tuple(p.shape)}"
                    )
                if k in ("hess", "momentum") and not bool(torch.isfinite(local(v)).all()):
                    raise ValueError(f"Invalid state_dict: parameter {i} {k} is not finite")
