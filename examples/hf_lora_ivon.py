"""LoRA adapters trained with IVON through a Hugging Face Trainer (``varsmooth.integrations.hf.IVONTrainer``).

The default builds a tiny Llama-style causal LM from a config (no download), adds LoRA adapters with PEFT and
fine-tunes them on a synthetic repeated-token task: offline, CPU, seconds. It then evaluates the posterior mean and
the posterior predictive (``predictive_samples``). ``--real NAME_OR_PATH --text FILE`` loads a pretrained causal LM
and its tokenizer with ``from_pretrained`` (from your local cache or path; the script never asks for a download
itself) and fine-tunes on the text file with the IVON-LoRA recipe (Cong et al., 2024; docs/large-models.md).

    python examples/hf_lora_ivon.py
    python examples/hf_lora_ivon.py --real meta-llama/Llama-2-7b-hf --text my_corpus.txt --bf16
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from varsmooth.integrations.hf import IVONTrainer

# IVON-LoRA (Cong et al., 2024), Llama-2-7B: lr 0.03 without lr rescaling, hess_init 3e-4 or 1e-3, ess 1e6-1e8 by
# task, clip_radius 1e-3, beta2 0.99999, no weight decay, LoRA r 8 / alpha 16 / dropout 0.1, batch 4, linear decay.
RECIPE = dict(learning_rate=0.03, ivon=dict(ess=1e7, hess_init=3e-4, clip_radius=1e-3, beta2=0.99999, rescale_lr=False),
              lora=dict(r=8, lora_alpha=16, lora_dropout=0.1), batch_size=4, scheduler="linear")  # fmt: skip
TINY = dict(learning_rate=2.0, ivon=dict(ess=1e5, hess_init=0.1, beta2=0.999),
            lora=dict(r=8, lora_alpha=16, lora_dropout=0.0), batch_size=8, scheduler="cosine")  # fmt: skip


def tiny_model(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0)  # fmt: skip
    return LlamaForCausalLM(cfg)


def tiny_data(n: int, length: int, seed: int) -> list[dict]:
    """Windows of a cycle through 12 distinct tokens (the next token is a function of the current one). On a random
    base the adapters lower the loss in a few steps; the example shows the mechanics, it is not a benchmark."""
    g = torch.Generator().manual_seed(seed)
    stream = (torch.randperm(31, generator=g)[:12] + 1).repeat(length // 12 + 3)
    return [{"input_ids": stream[i % 12 : i % 12 + length], "labels": stream[i % 12 : i % 12 + length]}
            for i in range(n)]  # fmt: skip


def text_blocks(path: str, tokenizer, length: int) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        ids = torch.tensor(tokenizer(f.read())["input_ids"])
    blocks = ids[: len(ids) // length * length].view(-1, length)
    if len(blocks) == 0:
        raise SystemExit(f"hf_lora_ivon: error: --text {path!r} has fewer than {length} tokens")
    return [{"input_ids": b, "labels": b} for b in blocks]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real", metavar="NAME_OR_PATH", help="a pretrained causal LM (local path or cached name)")
    p.add_argument("--text", help="with --real: a UTF-8 text file to fine-tune on")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps")
    p.add_argument("--length", type=int, default=24, help="tokens per sequence")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (one posterior sample each step)")
    p.add_argument("--predictive-samples", type=int, default=4, help="posterior samples at evaluation")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=None, help="checkpoints (default: a temporary folder)")
    a = p.parse_args(argv)
    if a.real and not (a.text and os.path.isfile(a.text)):
        p.error("--real needs --text FILE (an existing UTF-8 text file)")

    if a.real:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        setup = RECIPE
        tokenizer = AutoTokenizer.from_pretrained(a.real)
        base = AutoModelForCausalLM.from_pretrained(a.real, dtype=torch.bfloat16 if a.bf16 else None)
        data = text_blocks(a.text, tokenizer, a.length)
        targets = ["q_proj", "v_proj"]
    else:
        setup = TINY
        base, data = tiny_model(a.seed), tiny_data(96, a.length, a.seed)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", target_modules=targets, **setup["lora"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"trainable (LoRA) parameters: {trainable:,} of {sum(p.numel() for p in model.parameters()):,}")

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=a.output_dir or tmp, max_steps=a.steps, per_device_train_batch_size=setup["batch_size"],
            per_device_eval_batch_size=16, gradient_accumulation_steps=a.grad_accum,
            learning_rate=setup["learning_rate"], lr_scheduler_type=setup["scheduler"], warmup_steps=a.steps // 10,
            weight_decay=0.0, max_grad_norm=1.0, bf16=a.bf16, seed=a.seed, logging_steps=max(1, a.steps // 10),
            save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        )  # fmt: skip
        trainer = IVONTrainer(model=model, args=args, train_dataset=data, eval_dataset=data[:32],
                              ivon_kwargs=setup["ivon"])  # fmt: skip
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        trainer.predictive_samples = 0
        at_mean = trainer.evaluate()["eval_loss"]
        trainer.predictive_samples = a.predictive_samples
        predictive = trainer.evaluate()["eval_loss"] if a.predictive_samples else float("nan")
    print(f"train loss: first {losses[0]:.4f}, last {losses[-1]:.4f}")
    print(f"eval NLL: posterior mean {at_mean:.4f}, predictive ({a.predictive_samples} samples) {predictive:.4f}")
    return {"losses": losses, "eval_mean": at_mean, "eval_predictive": predictive}


if __name__ == "__main__":
    main()
