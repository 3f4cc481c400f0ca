"""GPT-2 with IVON in a nanoGPT-style loop (Shen et al., 2024, Sec. 4.1.1; docs/large-models.md has the recipe).

The default is a tiny model on a synthetic repeated-token stream: offline, CPU, seconds. ``--real`` switches to
GPT-2 small (124M, built from a config, trained from scratch) with the authors' recipe; it then needs a token file
in nanoGPT's format (``--data train.bin``: uint16 GPT-2 token ids, e.g. from nanoGPT's openwebtext/prepare.py) and
a GPU to be practical.

    python examples/gpt2_ivon.py                         # tiny, synthetic, CPU
    python examples/gpt2_ivon.py --real --data train.bin --device cuda

Each optimizer step draws one posterior sample, shared by its ``grad_accum`` micro-batches: IVON's update of one
batch of grad_accum * batch_size sequences. (The authors' script drew one sample per micro-batch instead: an MC
average over grad_accum samples; both are IVON, see the README's "Gradient accumulation".)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from varsmooth.optim import IVON


@dataclass
class Config:
    # model (tiny default; --real: GPT-2 small, 12 layers, 12 heads, width 768, context 1024, vocab 50304)
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads
    n_embd: int = 32  # width
    block_size: int = 16  # context length (tokens per sequence)
    vocab_size: int = 64  # tokens
    # data
    data: str = ""  # nanoGPT token file (uint16); empty: a synthetic repeated stream
    batch_size: int = 8  # sequences per micro-batch
    grad_accum: int = 2  # micro-batches per optimizer step (one posterior sample per step)
    # IVON (tiny defaults that learn in seconds; --real: the authors' GPT-2 recipe, see REAL)
    learning_rate: float = 3.0  # peak lr (recipe: small 300, medium 200, large 150); rescale_lr: x (h0 + wd)
    ess: float = 1e6  # effective sample size lambda: sigma^2 = 1 / (ess (h + wd)) (recipe: 1e10)
    hess_init: float = 0.01  # initial Hessian h0 (recipe: 1e-3)
    beta1: float = 0.9  # gradient momentum
    beta2: float = 0.999  # Hessian momentum (recipe: 0.99999)
    clip_radius: float = float("inf")  # elementwise clip of the preconditioned update (recipe: 1e-3)
    weight_decay: float = 1e-6  # prior precision delta, on matrices and embeddings only (as nanoGPT)
    grad_clip: float = 1.0  # clip the gradient norm inside the sample (0: off)
    # schedule: linear warm-up, cosine decay to min_lr
    max_iters: int = 30  # optimizer steps (recipe: 100,000)
    warmup_iters: int = 3  # warm-up steps (recipe: 2,000)
    min_lr: float = 0.0  # final lr (recipe: 0)
    # system
    device: str = "cpu"  # cpu, cuda, cuda:1, ...
    dtype: str = "float32"  # float32 or bfloat16 (autocast)
    seed: int = 0  # model init, data and IVON's noise
    log_interval: int = 10  # steps between log lines


# GPT-2 small as in team-approx-bayes/ivon-experiments gpt2/train_ivon.py + gpt2/config/train_gpt2_small_ivon.py:
# batch 20 x 1024 tokens, 3 micro-batches per GPU on 8 GPUs = 24 per step
REAL = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, batch_size=20, grad_accum=24,
            learning_rate=300.0, ess=1e10, hess_init=1e-3, beta2=0.99999, clip_radius=1e-3, weight_decay=1e-6,
            max_iters=100_000, warmup_iters=2000, min_lr=0.0, dtype="bfloat16")  # fmt: skip


def get_lr(it: int, cfg: Config) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` at ``max_iters`` (nanoGPT's schedule)."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    ratio = (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0))) * (cfg.learning_rate - cfg.min_lr)


def token_stream(cfg: Config) -> np.ndarray:
    if cfg.data:
        return np.memmap(cfg.data, dtype=np.uint16, mode="r")
    rng = np.random.default_rng(cfg.seed)
    motif = rng.integers(0, cfg.vocab_size, size=16)  # a 16-token motif repeated: learnable in seconds
    return np.tile(motif, 4096 // 16)


def get_batch(tokens: np.ndarray, cfg: Config, rng: np.random.Generator) -> torch.Tensor:
    starts = rng.integers(0, len(tokens) - cfg.block_size, size=cfg.batch_size)
    x = np.stack([tokens[s : s + cfg.block_size].astype(np.int64) for s in starts])
    return torch.from_numpy(x).to(cfg.device)


def train(cfg: Config) -> list[float]:
    """Train and return the loss of every step (mean over its micro-batches)."""
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                       n_positions=cfg.block_size, vocab_size=cfg.vocab_size, bos_token_id=0,
                                       eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))  # fmt: skip
    model.to(cfg.device)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings decay; biases, norms do not
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    opt = IVON([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
               lr=cfg.learning_rate, ess=cfg.ess, hess_init=cfg.hess_init, beta1=cfg.beta1, beta2=cfg.beta2,
               clip_radius=cfg.clip_radius, generator=gen)  # fmt: skip
    autocast = (torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16)
                if cfg.dtype == "bfloat16" else nullcontext())  # fmt: skip
    tokens, rng, losses = token_stream(cfg), np.random.default_rng(cfg.seed), []
    t0 = time.time()
    for it in range(cfg.max_iters):
        for group in opt.param_groups:
            group["lr"] = get_lr(it, cfg)
        step_loss = 0.0
        with opt.sampled_params(train=True):  # one posterior sample for the whole step
            opt.zero_grad(set_to_none=True)
            for _ in range(cfg.grad_accum):
                x = get_batch(tokens, cfg, rng)
                with autocast:
                    loss = model(input_ids=x, labels=x).loss / cfg.grad_accum
                loss.backward()
                step_loss += loss.item()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(step_loss)
        if it % cfg.log_interval == 0 or it == cfg.max_iters - 1:
            print(f"iter {it}: loss {step_loss:.4f}, lr {get_lr(it, cfg):.3g}, {time.time() - t0:.1f}s")
    return losses


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real", action="store_true", help="GPT-2 small with the authors' recipe (needs --data)")
    for f in dataclasses.fields(Config):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    ns = p.parse_args(argv)
    overrides = {f.name: getattr(ns, f.name) for f in dataclasses.fields(Config) if getattr(ns, f.name) is not None}
    cfg = Config(**{**(REAL if ns.real else {}), **overrides})
    if ns.real and not cfg.data:
        p.error("--real needs --data PATH (a nanoGPT uint16 token file; nothing is downloaded)")
    if cfg.data and not os.path.isfile(cfg.data):
        p.error(f"--data {cfg.data!r}: no such file")
    return cfg


def main(argv: list[str] | None = None) -> list[float]:
    losses = train(parse_args(argv))
    print(f"loss: first step {losses[0]:.4f}, last step {losses[-1]:.4f}")
    return losses


if __name__ == "__main__":
    main()
