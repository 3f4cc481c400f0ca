"""IVONTrainer (varsmooth.integrations.hf) on tiny transformers built from configs (never downloaded)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # configs only: nothing is ever downloaded

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from _hf_tiny import repeated_sequence, tiny_gpt2  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments  # noqa: E402

from varsmooth.integrations.hf import IVONTrainer, predictive_nll  # noqa: E402
from varsmooth.optim import IVON  # noqa: E402


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg)  # fmt: skip


def args(tmp_path, **kw) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=8, learning_rate=1.0,
                report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1, seed=0,
                dataloader_num_workers=0, max_grad_norm=1.0)  # fmt: skip
    return TrainingArguments(**{**base, **kw})


IVON_KW = {"hess_init": 0.1, "beta2": 0.999, "ess": 1e5}


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_loss_curve_goes_down_on_a_repeated_sequence(tmp_path):
    model = tiny_gpt2()
    a = args(tmp_path, max_steps=30, warmup_steps=3, lr_scheduler_type="cosine")
    trainer = IVONTrainer(model=model, args=a, train_dataset=repeated_sequence(), ivon_kwargs=IVON_KW)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 30
    assert losses[0] > 2.0  # ~ log(16): the untrained model
    assert sum(losses[-3:]) / 3 < 0.15 * losses[0], losses
    assert isinstance(trainer.ivon, IVON) and trainer.ivon.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-2)


def test_settings_come_from_training_arguments(tmp_path):
    data = repeated_sequence(48)
    trainer = IVONTrainer(model=tiny_gpt2(), args=args(tmp_path, learning_rate=0.25, weight_decay=1e-3),
                          train_dataset=data, ivon_kwargs={"hess_init": 0.5, "clip_radius": 1e-3})  # fmt: skip
    ivon = trainer.create_optimizer()
    decay, no_decay = ivon.param_groups
    assert decay["lr"] == 0.25 and decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert all(g["ess"] == 48.0 and g["hess_init"] == 0.5 and g["clip_radius"] == 1e-3 for g in ivon.param_groups)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all("bias" in names[id(p)] or "ln_" in names[id(p)] for p in no_decay["params"])


@pytest.mark.parametrize(
    "kw, err",
    [({"ivon_kwargs": {"lr": 0.1}}, ValueError), ({"ivon_kwargs": {"weight_decay": 0.1}}, ValueError),
     ({"ivon_kwargs": {"betas": 0.9}}, TypeError), ({"ivon_kwargs": {"mc_samples": 2}}, ValueError),
     ({"predictive_samples": -1}, ValueError), ({"predictive_samples": 1.5}, ValueError)],
)  # fmt: skip
def test_bad_options_raise_naming_the_value(tmp_path, kw, err):
    key = next(iter(kw.get("ivon_kwargs", kw)))
    with pytest.raises(err, match=key):
        IVONTrainer(model=tiny_gpt2(), args=args(tmp_path), train_dataset=repeated_sequence(8), **kw)


def _reference_weights(steps: int, k: int, B: int, one_sample_per_step: bool, decay_names) -> dict:
    """Plain IVON on the batches the Trainer sees (sequential sampler): k micro-batches of B per step, sharing one
    sample (``one_sample_per_step``) or drawing one each (README mode (a))."""
    model, data = tiny_gpt2(dtype=torch.float64), repeated_sequence(64)
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay_names], "weight_decay": 0.0},
        {"params": [p for n, p in model.named_parameters() if n not in decay_names], "weight_decay": 0.0},
    ]
    gen = torch.Generator().manual_seed(0)
    opt = IVON(groups, lr=1.0, ess=1e3, hess_init=0.1, beta2=0.999, generator=gen)  # fmt: skip
    for s in range(steps):
        batch = data[s * k * B : (s + 1) * k * B]
        ids = torch.stack([b["input_ids"] for b in batch])
        chunks = ids.chunk(k)
        if one_sample_per_step:
            with opt.sampled_params(train=True):
                opt.zero_grad()
                model(input_ids=ids, labels=ids).loss.backward()  # one batch of k * B
        else:
            opt.zero_grad()
            for c in chunks:
                with opt.sampled_params(train=True):
                    opt.zero_grad()
                    model(input_ids=c, labels=c).loss.backward()
        opt.step()
    return weights(model)


def test_accumulation_shares_one_sample_per_step_float64(tmp_path):
    """k=2 micro-batches of B=4 with one sample per step == IVON on one batch of 8 (float64, to rounding)."""
    steps, k, B = 3, 2, 4
    model = tiny_gpt2(dtype=torch.float64)
    a = args(tmp_path, per_device_train_batch_size=B, gradient_accumulation_steps=k, max_steps=steps,
             train_sampling_strategy="sequential", max_grad_norm=0.0, lr_scheduler_type="constant")  # fmt: skip
    trainer = IVONTrainer(model=model, args=a, train_dataset=repeated_sequence(64),
                          ivon_kwargs={"ess": 1e3, "hess_init": 0.1, "beta2": 0.999})  # fmt: skip
    trainer.train()
    got, decay_names = weights(model), set(trainer.get_decay_parameter_names(model))
    want = _reference_weights(steps, k, B, True, decay_names)
    per_micro_batch = _reference_weights(steps, k, B, False, decay_names)
    err = max((got[n] - want[n]).abs().max().item() for n in got)
    gap = max((per_micro_batch[n] - want[n]).abs().max().item() for n in got)
    assert err < 1e-10, err
    assert gap > 1e-4, gap  # a sample per micro-batch would be told apart


def test_resume_continues_as_the_uninterrupted_run(tmp_path):
    """6 steps straight (checkpoint at 3) vs a new trainer resumed from that checkpoint: identical bits on CPU
    (same ops in the same order: the weights, IVON's state with its generator, the scheduler, the data order and
    the RNG all come back from the checkpoint)."""
    kw = dict(max_steps=6, gradient_accumulation_steps=2, per_device_train_batch_size=4, save_strategy="steps",
              save_steps=3, warmup_steps=2, lr_scheduler_type="cosine")  # fmt: skip
    data = repeated_sequence(40)
    straight = IVONTrainer(model=tiny_gpt2(), args=args(tmp_path / "a", **kw), train_dataset=data, ivon_kwargs=IVON_KW)
    straight.train()
    ckpt = tmp_path / "a" / "out" / "checkpoint-3"
    assert (ckpt / "optimizer.pt").is_file()

    resumed = IVONTrainer(model=tiny_gpt2(seed=1), args=args(tmp_path / "b", **kw), train_dataset=data,
                          ivon_kwargs=IVON_KW)  # fmt: skip
    resumed.train(resume_from_checkpoint=str(ckpt))
    a, b = weights(straight.model), weights(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    sa, sb = straight.ivon.state_dict(), resumed.ivon.state_dict()
    assert torch.equal(sa["generators"]["cpu"], sb["generators"]["cpu"])
    assert all(torch.equal(sa["state"][i]["hess"], sb["state"][i]["hess"]) for i in sa["state"])

    # the checkpoint's noise generator matters: resumed with another generator state, the run differs
    sd = torch.load(ckpt / "optimizer.pt", weights_only=True)
    sd["generators"]["cpu"] = torch.Generator().manual_seed(123).get_state()
    torch.save(sd, ckpt / "optimizer.pt")
    other = IVONTrainer(model=tiny_gpt2(), args=args(tmp_path / "c", **kw), train_dataset=data, ivon_kwargs=IVON_KW)
    other.train(resume_from_checkpoint=str(ckpt))
    c = weights(other.model)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_lora_trains_adapters_only_and_frozen_weights_never_move(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    before = weights(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    a = args(tmp_path, max_steps=5, learning_rate=0.5)
    trainer = IVONTrainer(model=model, args=a, train_dataset=repeated_sequence(), ivon_kwargs=IVON_KW)
    trainer.train()
    after = weights(model)
    in_ivon = {id(p) for g in trainer.ivon.param_groups for p in g["params"]}
    assert in_ivon == {id(p) for n, p in model.named_parameters() if n in trainable}
    assert all(torch.equal(before[n], after[n]) for n in before if n not in trainable)  # bit-identical
    lora_b = [n for n in trainable if "lora_B" in n]
    assert all(before[n].abs().max() == 0 and after[n].abs().max() > 0 for n in lora_b)


def test_bf16_trains_with_float32_state(tmp_path):
    model = tiny_gpt2()
    before = weights(model)
    trainer = IVONTrainer(model=model, args=args(tmp_path, max_steps=3, bf16=True), train_dataset=repeated_sequence(),
                          ivon_kwargs=IVON_KW)  # fmt: skip
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert all(s["hess"].dtype == torch.float32 for s in trainer.ivon.state.values())
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_posterior_predictive_evaluation(tmp_path):
    data = repeated_sequence(16)
    trainer = IVONTrainer(model=tiny_gpt2(), args=args(tmp_path, max_steps=4, per_device_eval_batch_size=16),
                          train_dataset=data, eval_dataset=data, ivon_kwargs={**IVON_KW, "ess": 50.0},
                          predictive_samples=3)  # fmt: skip
    trainer.train()
    model, ivon = trainer.model, trainer.ivon
    mean_weights, gen_state = weights(model), ivon.state_dict()["generators"]["cpu"]

    # by hand: 3 samples from a generator seeded with args.seed, softmax averaged, next-token NLL
    ids = torch.stack([d["input_ids"] for d in data])
    g, probs = torch.Generator().manual_seed(0), 0
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            with ivon.sampled_params(generator=g):
                probs = probs + torch.softmax(model(input_ids=ids).logits.float(), -1)
        mean_nll = model(input_ids=ids, labels=ids).loss.item()
    log_p = (probs / 3).log()
    want = torch.nn.functional.nll_loss(log_p[:, :-1].reshape(-1, 16), ids[:, 1:].reshape(-1)).item()

    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(want, rel=1e-5)
    assert abs(metrics["eval_loss"] - mean_nll) > 1e-3  # sigma is not negligible here: not the mean's loss
    out = trainer.predict(data)
    assert torch.allclose(torch.as_tensor(out.predictions), log_p, atol=1e-5)
    assert out.metrics["test_loss"] == pytest.approx(want, rel=1e-5)  # re-seeded: evaluations repeat
    assert all(torch.equal(mean_weights[n], p) for n, p in model.named_parameters())  # the mean is back
    assert torch.equal(ivon.state_dict()["generators"]["cpu"], gen_state)  # training noise untouched

    trainer.predictive_samples = 0
    assert trainer.evaluate()["eval_loss"] == pytest.approx(mean_nll, rel=1e-5)


def test_predictive_nll_matches_cross_entropy_of_logits():
    logits, labels = torch.randn(2, 5, 7, dtype=torch.float64), torch.randint(0, 7, (2, 5))
    labels[0, 3] = -100
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert predictive_nll(logits.log_softmax(-1), labels, shift=True).item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.slow  # spawns 2 processes that import transformers (~15-35 s)
def test_ddp_two_ranks_share_one_sample_and_equal_one_process(tmp_path):
    """2 CPU ranks (gloo, torch.distributed.run) with micro-batches of 4 == one process with batches of 8 (float64):
    every rank draws the same sample, so DDP's averaged gradient is the gradient at that sample over the global
    batch."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from _hf_ddp_worker import DDP_IVON

    here = Path(__file__).resolve().parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path]), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(here / "_hf_ddp_worker.py"), str(out), "3", "4"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    model = tiny_gpt2(dtype=torch.float64)
    a = args(tmp_path, per_device_train_batch_size=8, max_steps=3, train_sampling_strategy="sequential",
             max_grad_norm=0.0, lr_scheduler_type="constant")  # fmt: skip
    IVONTrainer(model=model, args=a, train_dataset=repeated_sequence(64), ivon_kwargs=DDP_IVON).train()
    one = weights(model)
    init = weights(tiny_gpt2(dtype=torch.float64))
    assert max((ddp[n] - one[n]).abs().max().item() for n in one) < 1e-10
    assert max((init[n] - one[n]).abs().max().item() for n in one) > 1e-3  # it trained


def test_ess_needs_a_sized_dataset_or_an_explicit_value(tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(repeated_sequence(8))

    trainer = IVONTrainer(model=tiny_gpt2(), args=args(tmp_path), train_dataset=Stream())
    with pytest.raises(ValueError, match="ess"):
        trainer.create_optimizer()
    trainer = IVONTrainer(model=tiny_gpt2(), args=args(tmp_path), train_dataset=Stream(), ivon_kwargs={"ess": 7.0})
    assert trainer.create_optimizer().param_groups[0]["ess"] == 7.0


def test_predictive_for_sequence_classification_scores_unshifted_labels(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=16, n_positions=16, num_labels=3, pad_token_id=0,
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2ForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(1)
    data = [{"input_ids": torch.randint(1, 16, (8,), generator=g), "labels": torch.tensor(i % 3)} for i in range(24)]
    trainer = IVONTrainer(model=model, args=args(tmp_path, max_steps=2, per_device_eval_batch_size=24),
                          train_dataset=data, eval_dataset=data, ivon_kwargs={**IVON_KW, "ess": 30.0},
                          predictive_samples=2)  # fmt: skip
    trainer.train()
    out = trainer.predict(data)
    log_p, labels = torch.as_tensor(out.predictions), torch.as_tensor(out.label_ids)
    assert log_p.shape == (24, 3) and torch.allclose(log_p.exp().sum(-1), torch.ones(24, dtype=log_p.dtype))
    want = torch.nn.functional.nll_loss(log_p, labels).item()
    assert out.metrics["test_loss"] == pytest.approx(want, rel=1e-5)
