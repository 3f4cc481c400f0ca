r"""What IVON refuses, so that no non-finite value enters its weights or state.

Hyperparameters (``validate_group``, at construction and for every added param group). Besides the ranges of
``ivon-opt`` (lr >= 0, ess > 0, hess_init > 0, beta1 in [0, 1), beta2 in [0, 1], weight_decay >= 0,
clip_radius > 0), every value is finite and the two float32 bounds below hold. The state is at least float32, and
IVON computes in it 1 / sigma = sqrt(lambda (h + delta)) and the Hessian step's constant
0.5 (1 - beta2)^2 lambda (``ivon_functional``):

    lambda (h0 + delta) >= FLOAT32_TINY    below it 1 / sigma underflows to 0 and the first sample is inf
                                           (ess = 1e-300 went non-finite in two steps this way)
    lambda (h0 + delta) <= FLOAT32_MAX     above it 1 / sigma^2 overflows; so does the Hessian step's constant,
                                           which torch refuses to convert to float32 (ess = 1e300)

Gradients (``sums_finite``): before an update IVON checks the step's Hessian sums (sum_s g_s e_s for "price",
sum_s g_s^2 for "gradsq"), which are non-finite whenever any gradient of the step is (inf * e and NaN * e are
non-finite, also for e = 0). Such a step is skipped and counted, as under a GradScaler (``IVON.step``).

Loaded state (``check_loaded_state``): a state dict must come from an IVON over parameters of the same number and
shapes; anything else (another model, an SGD or Adam state) is refused at ``load_state_dict`` with a ValueError
naming what differs, not at the next step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .ivon_shard import local

FLOAT32_TINY = torch.finfo(torch.float32).tiny  # smallest normal float32
FLOAT32_MAX = torch.finfo(torch.float32).max

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
            good = not isinstance(v, bool) and ok(float(v))  # comparisons are False for NaN
        except (TypeError, ValueError, RuntimeError):
            good = False
        if not good:
            raise ValueError(f"Invalid {name}: {v!r} (must be {allowed})")
    precision = float(g["ess"]) * (float(g["hess_init"]) + float(g["weight_decay"]))
    if not FLOAT32_TINY <= precision <= FLOAT32_MAX:
        raise ValueError(
            f"Invalid ess: {g['ess']!r} (ess * (hess_init + weight_decay) = {precision:.3g} must lie in "
            f"[{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}], where 1 / sigma^2 is a finite, non-zero float32)"
        )


def sums_finite(hess_sums: list[Tensor]) -> bool:
    """True when every flat Hessian-sum buffer is finite: one reduction per buffer and one host sync in all.

    A sum of finite values that overflows reads as non-finite too: such a step would overflow h anyway."""
    if not hess_sums:
        return True
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in hess_sums:
        by_device.setdefault(t.device, []).append(t.sum(dtype=t.dtype).reshape(1))
    return all(bool(torch.cat(v).isfinite().all()) for v in by_device.values())


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
