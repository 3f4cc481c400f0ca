"""How a run computes on its device: mixed precision, the memory layout of images and ``torch.compile``.

``precision`` (:class:`varsmooth.engine.TrainConfig`):

- ``fp32``: everything in float32 (the default);
- ``bf16``: forward passes (and the loss) under ``torch.autocast(dtype=torch.bfloat16)``: matrix products and
  convolutions in bfloat16, reductions, softmax and the loss in float32. Gradients arrive in float32 (the
  parameters stay float32), so no loss scaling is needed; runs on CPU and CUDA;
- ``fp16``: autocast to float16 with a ``torch.amp.GradScaler`` (dynamic loss scaling: a step whose gradients
  overflow is skipped and the scale halved). IVON takes the scaler through its own ``step`` (it unscales its
  accumulated sums, :mod:`varsmooth.optim.ivon`); SAM unscales before its ascent step. CUDA only.

In every case the parameters and the optimizer state (momentum, IVON's ``h``) stay float32. Evaluation runs
under the same autocast. Channels-last: on CUDA, a model with 2-d convolutions is stored channels-last and its
input images are converted after augmentation (:func:`uses_channels_last`). ``compile``: the model's forward is
``torch.compile``d (backend ``inductor``, or ``$VARSMOOTH_COMPILE_BACKEND``, e.g. ``aot_eager`` where no C
compiler is at hand); IVON's posterior samples replace the parameters' storage, not their shapes, so the model
compiles once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil

import torch
from torch import nn

from ..errors import InputError

__all__ = ["PRECISIONS", "check_precision", "check_runtime", "autocast", "grad_scaler", "uses_channels_last",
           "compile_model", "compile_backend"]  # fmt: skip

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: object) -> str:
    """``name`` if it is one of :data:`PRECISIONS`; else InputError."""
    if name not in PRECISIONS:
        raise InputError(f"precision={name!r} is not allowed; use one of {', '.join(PRECISIONS)}")
    return name


def compile_backend() -> str:
    """The ``torch.compile`` backend of ``--compile``: ``$VARSMOOTH_COMPILE_BACKEND``, default ``inductor``."""
    return os.environ.get("VARSMOOTH_COMPILE_BACKEND", "inductor")


def check_runtime(precision: str, compile: bool, device: torch.device) -> None:
    """InputError when ``device`` cannot run ``precision`` or torch cannot compile here (before anything runs)."""
    if precision == "fp16" and device.type != "cuda":
        raise InputError(f"precision='fp16' needs a CUDA device (loss scaling), this run's device is {device.type}; "
                         "use bf16 or fp32")  # fmt: skip
    if precision == "bf16":
        ok = torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type in ("cpu", "mps")
        if not ok:
            raise InputError(f"precision='bf16' is not supported on {device}; use fp32")
    if compile:
        backend = compile_backend()
        if not torch._dynamo.is_dynamo_supported():
            raise InputError("--compile: torch.compile is not supported on this Python/platform; leave it out")
        if backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise InputError(f"--compile: unknown torch.compile backend {backend!r} (VARSMOOTH_COMPILE_BACKEND)")
        if backend == "inductor":
            if device.type == "cuda" and importlib.util.find_spec("triton") is None:
                raise InputError("--compile on CUDA needs triton, which is not installed; leave --compile out")
            if device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
                raise InputError("--compile on CPU needs a C++ compiler (inductor), none was found; leave --compile "
                                 "out or set VARSMOOTH_COMPILE_BACKEND=aot_eager")  # fmt: skip


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    # no cast cache: IVON's samples swap the parameters' storage, which the cache (keyed by tensor) would not see,
    # so every sample inside one autocast region would run with the first one's weights
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision], cache_enabled=False)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16, else None."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether a run stores ``model`` and its input images channels-last: on CUDA, for models with 2-d convolutions."""
    return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` with :func:`compile_backend`; the result shares ``model``'s parameters."""
    return torch.compile(model, backend=compile_backend())
