r"""IVON in a Hugging Face ``transformers.Trainer``: ``IVONTrainer``.

``IVONTrainer`` is ``transformers.Trainer`` with IVON (``varsmooth.optim.IVON``) as its optimizer and nothing else
changed in the user's script::

    trainer = IVONTrainer(model=model, args=TrainingArguments(learning_rate=0.1, ...), train_dataset=train,
                          ivon_kwargs={"hess_init": 0.1, "beta2": 0.99995})
    trainer.train()

Where each setting comes from:

- ``learning_rate``, ``weight_decay`` (IVON's delta, the prior precision; biases and norms get 0 as in the Trainer),
  ``lr_scheduler_type``, warm-up, ``max_grad_norm``, ``bf16``/``fp16`` and ``gradient_accumulation_steps`` come from
  ``TrainingArguments``; ``ess`` (lambda) defaults to ``len(train_dataset)``, the number of training examples;
  every other IVON option goes through ``ivon_kwargs``.
- Noise comes from the optimizer's own ``torch.Generator`` seeded with ``args.seed``, so it is part of the
  optimizer's ``state_dict`` and a run resumed from a checkpoint draws what the uninterrupted run draws. Every
  process seeds it alike, so under DDP all ranks train at the same sample and DDP's gradient average is the gradient
  at that sample over the global batch.

One sample per optimizer step. The first micro-batch of a step opens ``IVON.sampled_params(train=True)``; the block
stays open over the step's ``gradient_accumulation_steps`` micro-batches (their gradients add up in ``p.grad`` as
usual, each loss scaled by the Trainer) and over the Trainer's clipping, and closes in a step pre-hook of the
optimizer, just before ``IVON.step()``. So the update is IVON's update of one batch of k*B at one posterior sample
(mode (b) of the README's gradient accumulation), and clipping acts on what IVON accumulates. Hence ``mc_samples``
must be 1: more samples per step mean more passes, which the Trainer's loop does not make.

Evaluation. ``predictive_samples=S > 0`` makes ``evaluate``/``predict`` use the posterior predictive
``p(y|x) = mean_s softmax(f_{theta_s}(x))``, theta_s = m + sigma e_s, drawn from a generator re-seeded with
``args.seed`` at each evaluation (so evaluations are reproducible and never move the training noise). The returned
"logits" are ``log p(y|x)`` (their softmax is the predictive), and the loss is the predictive's negative
log-likelihood ``-mean log p(y_i|x_i)`` over the labelled tokens (shifted by one for causal LMs, ``-100``
ignored). ``S = 0`` (default) evaluates the mean m, as the plain Trainer does.

PEFT. Only parameters with ``requires_grad`` go to IVON (as in the Trainer); IVON samples and updates only those,
so frozen base weights are never touched.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Trainer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..optim import IVON

__all__ = ["IVONTrainer", "predictive_nll"]

_FROM_ARGS = {"lr": "learning_rate", "weight_decay": "weight_decay", "params": "the model"}
_CAUSAL_LMS = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
_IVON_OPTIONS = set(inspect.signature(IVON.__init__).parameters) - {"self", "params"}


class _Discard(Exception):
    """Thrown into an open ``sampled_params`` block to restore the mean without accumulating its gradients."""


def predictive_nll(log_probs: Tensor, labels: Tensor, *, shift: bool, ignore_index: int = -100) -> Tensor:
    """``-mean log p(y_i)`` over the labels that are not ``ignore_index``; ``log_probs`` is (..., V), labels (...).
    ``shift=True`` scores token t+1 with the prediction at t (causal language models)."""
    if shift:
        log_probs, labels = log_probs[..., :-1, :], labels[..., 1:]
    return F.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), labels.reshape(-1).long(), ignore_index=ignore_index)


class IVONTrainer(Trainer):
    """``transformers.Trainer`` that trains with IVON; see the module docstring.

    Args (besides those of ``Trainer``):
        ivon_kwargs: IVON options other than ``lr`` and ``weight_decay`` (which come from ``TrainingArguments``),
            e.g. ``{"ess": 1e10, "hess_init": 1e-3, "beta2": 0.99999, "clip_radius": 1e-3}``. ``ess`` defaults to
            ``len(train_dataset)``; ``generator`` defaults to one seeded with ``args.seed``.
        predictive_samples: posterior samples S for ``evaluate``/``predict`` (0: evaluate the mean).
    Raises ``ValueError``/``TypeError`` naming a misplaced or unknown option.
    """

    def __init__(self, *args, ivon_kwargs: dict[str, Any] | None = None, predictive_samples: int = 0, **kwargs):
        ivon_kwargs = dict(ivon_kwargs or {})
        for key in ivon_kwargs:
            if key in _FROM_ARGS:
                raise ValueError(f"Invalid ivon_kwargs key {key!r}: IVONTrainer takes it from {_FROM_ARGS[key]}")
            if key not in _IVON_OPTIONS:
                raise TypeError(f"Invalid ivon_kwargs key {key!r} (IVON options: {', '.join(sorted(_IVON_OPTIONS))})")
        if ivon_kwargs.get("mc_samples", 1) != 1:
            raise ValueError(
                f"Invalid mc_samples: {ivon_kwargs['mc_samples']!r} (IVONTrainer trains one posterior sample per "
                "optimizer step; must be 1)"
            )
        if isinstance(predictive_samples, bool) or not isinstance(predictive_samples, int) or predictive_samples < 0:
            raise ValueError(f"Invalid predictive_samples: {predictive_samples!r} (must be an int >= 0)")
        self.ivon_kwargs, self.predictive_samples = ivon_kwargs, predictive_samples
        self._block = None  # the open sampled_params(train=True) block of the current optimizer step
        self._hooked: IVON | None = None  # the IVON instance whose step pre-hook closes the block
        self._eval_generator: torch.Generator | None = None
        super().__init__(*args, **kwargs)

    # ---------------------------------------------------------------- optimizer
    @property
    def ivon(self) -> IVON:
        """The IVON optimizer under the Trainer's wrappers (accelerate's ``AcceleratedOptimizer``)."""
        opt = self.optimizer
        while opt is not None and not isinstance(opt, IVON) and hasattr(opt, "optimizer"):
            opt = opt.optimizer
        if not isinstance(opt, IVON):
            raise TypeError(f"IVONTrainer needs an IVON optimizer, got {type(opt).__name__}")
        return opt

    def ivon_options(self, model: nn.Module | None = None) -> dict[str, Any]:
        """The keyword arguments IVON is built with (besides the param groups, whose weight decay is per group)."""
        opts = {"lr": self.args.learning_rate, **self.ivon_kwargs}
        if "ess" not in opts:
            if self.train_dataset is None or not hasattr(self.train_dataset, "__len__"):
                raise ValueError("Invalid ess: train_dataset has no length; pass ivon_kwargs={'ess': ...}")
            opts["ess"] = float(len(self.train_dataset))
        if "generator" not in opts:
            model = self.model if model is None else model
            device = next((p.device for p in model.parameters() if p.requires_grad), torch.device("cpu"))
            opts["generator"] = torch.Generator(device=device)
            opts["generator"].manual_seed(self.args.seed)
        return opts

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:  # the Trainer's param groups (decay / no decay, trainable only), built as IVON
            self.optimizer_cls_and_kwargs = (IVON, self.ivon_options(model))
        super().create_optimizer(model)
        self._hook(self.ivon)
        return self.optimizer

    def _hook(self, ivon: IVON) -> None:
        if self._hooked is not ivon:
            ivon.register_step_pre_hook(lambda *_: self._close_block(keep=True))
            self._hooked = ivon

    # ---------------------------------------------------------------- one sample per optimizer step
    def _close_block(self, keep: bool) -> None:
        block, self._block = self._block, None
        if block is None:
            return
        if keep:
            block.__exit__(None, None, None)  # restores the mean; the gradients in p.grad join IVON's sums
        else:
            block.__exit__(_Discard, _Discard(), None)  # restores the mean; the sample's gradients are dropped

    def training_step(self, model: nn.Module, inputs, num_items_in_batch=None) -> Tensor:
        """The Trainer's step at the posterior sample of the current optimizer step (drawn at its first
        micro-batch)."""
        if self._block is None:
            ivon = self.ivon
            self._hook(ivon)  # an optimizer passed through ``optimizers=`` too
            block = ivon.sampled_params(train=True)
            block.__enter__()
            self._block = block
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        except BaseException:
            self._close_block(keep=False)
            raise

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:  # stopped between micro-batches of a step: put the mean back, drop the partial step
            self._close_block(keep=False)

    # ---------------------------------------------------------------- posterior predictive
    def evaluation_loop(self, *args, **kwargs):
        if self.predictive_samples:
            ivon = self.ivon if self.optimizer is not None else None
            if ivon is None:
                raise ValueError("Invalid predictive_samples: no IVON posterior yet (train, or resume, first)")
            device = next(p.device for g in ivon.param_groups for p in g["params"] if p.requires_grad)
            self._eval_generator = torch.Generator(device=device)
            self._eval_generator.manual_seed(self.args.seed)
        return super().evaluation_loop(*args, **kwargs)

    def _is_causal_lm(self, model: nn.Module) -> bool:
        model = self.accelerator.unwrap_model(model)
        if hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        return getattr(model, "loss_type", None) == "ForCausalLM" or type(model).__name__ in _CAUSAL_LMS

    def prediction_step(self, model: nn.Module, inputs, prediction_loss_only: bool, ignore_keys=None):
        if not self.predictive_samples:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        ivon, total, sample_losses, labels, rest = self.ivon, None, [], None, ()
        for _ in range(self.predictive_samples):
            with ivon.sampled_params(train=False, generator=self._eval_generator):
                loss, logits, labels = super().prediction_step(model, inputs, False, ignore_keys)
            if isinstance(logits, tuple):
                logits, rest = logits[0], logits[1:]
            probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
            total = probs if total is None else total + probs
            if loss is not None:
                sample_losses.append(loss)
        log_p = (total / self.predictive_samples).log()
        loss = None
        if isinstance(labels, Tensor) and labels.shape == log_p.shape[:-1]:
            loss = predictive_nll(log_p, labels.to(log_p.device), shift=self._is_causal_lm(model))
        elif sample_losses:  # labels the predictive cannot be scored against: the samples' mean loss
            loss = torch.stack(sample_losses).mean()
        if prediction_loss_only:
            return loss, None, None
        return loss, ((log_p, *rest) if rest else log_p), labels
