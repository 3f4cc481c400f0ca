"""Tiny transformers built from configs and a learnable token task, shared by the hf tests and their DDP worker."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

PATTERN = [1, 5, 3, 7, 2, 9, 4, 11]


def tiny_gpt2(seed: int = 0, dtype=torch.float32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=16, n_positions=32, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    return GPT2LMHeadModel(cfg).to(dtype)


def repeated_sequence(n: int = 64, length: int = 16) -> list[dict]:
    """A learnable task: every example is a window of one repeated 8-token pattern. The first label (never a
    causal LM's target) is -100, so every count of target tokens agrees (the Trainer's num_items_in_batch, the
    model's mean)."""
    seq, out = torch.tensor(PATTERN * 8), []
    for i in range(n):
        ids = seq[i % 8 : i % 8 + length]
        out.append({"input_ids": ids, "labels": torch.cat([torch.tensor([-100]), ids[1:]])})
    return out
